//! `upcache`: look inside and drive the caches of this machine from a shell, and start servers
//! for programs that cannot start one themselves (PROTOCOL.md §8).
//!
//! Every command but `serve` joins a running server and never starts one (unless `--start` is
//! given). Exit status: 0 ok, 1 not found or false, 2 usage, 3 no server (none runs, or it went
//! away), 4 any other failure (the message on standard error says what).

mod show;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use upcache::{Error, EventKind, ServerInfo, ServerInfoError, TransportKind, Ttl, UpCache};

use show::{human_bytes, write_bytes, write_table};

/// A shared in-memory key-value cache for the processes of one machine: inspect and drive
/// its caches, or start their servers.
///
/// Exit status: 0 ok, 1 not found or false, 2 usage, 3 no server, 4 other failure.
#[derive(Debug, Parser)]
#[command(name = "upcache", version)]
struct Cli {
    /// The directory of the connection files (default: the system temp dir, as the library).
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Start a server if none runs (default: only join a running one; exit 3 if none).
    #[arg(long, global = true)]
    start: bool,
    /// Print keys and values exactly as stored (default: escape what is not plain text).
    #[arg(long, global = true)]
    raw: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server of NAME in the foreground (prints its connection-file line once it
    /// listens), or start it detached with --detach.
    Serve {
        #[arg(value_parser = cache_name)]
        name: String,
        /// Start a detached server (or find the running one), print its connection-file line
        /// and exit 0.
        #[arg(long)]
        detach: bool,
        /// The transport a new server listens on.
        #[arg(long, value_enum, default_value_t = Transport::Tcp)]
        transport: Transport,
        /// How long an idle server waits for a client before it exits, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        linger: u64,
        /// Never exit when idle (stop it with `upcache shutdown NAME`).
        #[arg(long)]
        no_auto_kill: bool,
        /// The longest value the server accepts, in bytes (default 64 MiB).
        #[arg(long, value_name = "BYTES")]
        max_value: Option<u32>,
        /// The store's memory budget, in bytes (default: no limit): past it the server
        /// evicts (S3-FIFO), due keys first.
        #[arg(long, value_name = "BYTES")]
        max_memory: Option<u64>,
    },
    /// Print the value of KEY (exit 1 if it is missing).
    Get {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
    },
    /// Store VALUE under KEY; without VALUE, the whole of standard input (exactly, newline
    /// included).
    Set {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
        value: Option<OsString>,
        /// The key expires this many milliseconds from now.
        #[arg(long, value_name = "MS")]
        ttl: Option<u64>,
    },
    /// Print how many milliseconds KEY has left, or `forever` (exit 1 if it is missing).
    Ttl {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
    },
    /// Give KEY a TTL of MS milliseconds (exit 1 if it is missing).
    Expire {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
        ms: u64,
    },
    /// Take KEY's TTL away (exit 1 if it is missing or had none).
    Persist {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
    },
    /// Remove KEY (exit 1 if it did not exist).
    Del {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
    },
    /// Add BY (default 1, may be negative) to the decimal value of KEY; print the new value.
    Incr {
        #[arg(value_parser = cache_name)]
        name: String,
        key: OsString,
        #[arg(allow_negative_numbers = true)]
        by: Option<i64>,
    },
    /// Print the number of keys.
    Count {
        #[arg(value_parser = cache_name)]
        name: String,
    },
    /// Print every key, one per line, in insertion order (fetched chunk by chunk).
    Keys {
        #[arg(value_parser = cache_name)]
        name: String,
    },
    /// Print every key and value as `KEY<TAB>VALUE` lines (fetched chunk by chunk).
    Items {
        #[arg(value_parser = cache_name)]
        name: String,
    },
    /// Remove every key.
    Clear {
        #[arg(value_parser = cache_name)]
        name: String,
    },
    /// Print the changes of KEY (or of every key) as they happen, until interrupted:
    /// `set<TAB>KEY<TAB>VALUE`, `del<TAB>KEY`, `clear`, `lagged<TAB>N`.
    Watch {
        #[arg(value_parser = cache_name)]
        name: String,
        key: Option<OsString>,
    },
    /// Print the server's counters as a table (or as JSON).
    Stats {
        #[arg(value_parser = cache_name)]
        name: String,
        /// Print the counters as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the caches in the directory: name, pid, alive, transport, address, keys.
    Ls,
    /// Ask the server of NAME to exit now.
    Shutdown {
        #[arg(value_parser = cache_name)]
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Tcp,
    Unix,
}

fn cache_name(s: &str) -> Result<String, String> {
    match upcache::validate_name(s) {
        Ok(()) => Ok(s.to_owned()),
        Err(Error::InvalidName { reason, .. }) => Err(reason.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a command did not succeed, and its exit status.
#[derive(Debug)]
enum Fail {
    /// Not found, or false: status 1, nothing printed.
    No,
    /// Status 2, 3 or 4, with a message.
    Error(u8, String),
    /// Standard output was closed (`upcache keys c | head`): stop quietly.
    Closed,
}

const USAGE: u8 = 2;
const NO_SERVER: u8 = 3;
const FAILED: u8 = 4;

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NoServer { .. } | Error::ServerGone { .. } => NO_SERVER,
            Error::InvalidName { .. } | Error::InvalidOption { .. } => USAGE,
            _ => FAILED,
        };
        Fail::Error(code, e.to_string())
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Fail::Closed
        } else {
            Fail::Error(FAILED, format!("writing the output: {e}"))
        }
    }
}

fn main() -> ExitCode {
    // Without the `auto-server` feature this is how the process becomes a server that a
    // launcher started (`Builder::server_exe`); with it, it has happened before `main`.
    upcache::serve_if_requested();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) | Err(Fail::Closed) => ExitCode::SUCCESS,
        Err(Fail::No) => ExitCode::from(1),
        Err(Fail::Error(code, message)) => {
            eprintln!("upcache: {message}");
            ExitCode::from(code)
        }
    }
}

fn builder(cli: &Cli, name: &str) -> upcache::Builder {
    let b = UpCache::builder(name);
    match &cli.dir {
        Some(d) => b.dir(d),
        None => b,
    }
}

/// Joins the running server of `name` (or, with `--start`, elects and starts one).
fn open(cli: &Cli, name: &str) -> Result<UpCache, Fail> {
    Ok(builder(cli, name).join_only(!cli.start).open()?)
}

fn bytes(s: &OsString) -> &[u8] {
    s.as_encoded_bytes()
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match &cli.command {
        Command::Serve {
            name,
            detach,
            transport,
            linger,
            no_auto_kill,
            max_value,
            max_memory,
        } => {
            let mut b = builder(cli, name)
                .transport(match transport {
                    Transport::Tcp => TransportKind::Tcp,
                    Transport::Unix => TransportKind::Unix,
                })
                .linger(Duration::from_millis(*linger))
                .auto_kill(!no_auto_kill);
            if let Some(n) = max_value {
                b = b.max_value_len(*n);
            }
            if let Some(n) = max_memory {
                b = b.max_memory(*n);
            }
            if *detach {
                out.write_all(&b.start_server()?.to_line())?;
            } else {
                if max_memory.is_some_and(|n| n > 0) {
                    // This process is the server: let its budget show in its RSS.
                    upcache::server::release_freed_memory();
                }
                // The line goes out at once: whoever started us waits for it.
                let mut printed = Ok(());
                b.serve(|info| {
                    printed = out.write_all(&info.to_line()).and_then(|()| out.flush());
                })?;
                printed?;
            }
        }
        Command::Get { name, key } => match open(cli, name)?.get(bytes(key))? {
            Some(v) => {
                write_bytes(&mut out, &v, cli.raw)?;
                if !cli.raw {
                    out.write_all(b"\n")?;
                }
            }
            None => return Err(Fail::No),
        },
        Command::Set {
            name,
            key,
            value,
            ttl,
        } => {
            let cache = open(cli, name)?;
            let value = match value {
                Some(v) => bytes(v).to_vec(),
                None => {
                    let mut v = Vec::new();
                    io::stdin()
                        .lock()
                        .read_to_end(&mut v)
                        .map_err(|e| Fail::Error(FAILED, format!("reading the value: {e}")))?;
                    v
                }
            };
            match ttl {
                Some(ms) => cache.set_with_ttl(bytes(key), value, Duration::from_millis(*ms))?,
                None => cache.set(bytes(key), value)?,
            }
        }
        Command::Ttl { name, key } => match open(cli, name)?.ttl(bytes(key))? {
            Ttl::Missing => return Err(Fail::No),
            Ttl::Forever => writeln!(out, "forever")?,
            Ttl::Expires(left) => writeln!(out, "{}", left.as_millis())?,
        },
        Command::Expire { name, key, ms } => {
            if !open(cli, name)?.expire(bytes(key), Duration::from_millis(*ms))? {
                return Err(Fail::No);
            }
        }
        Command::Persist { name, key } => {
            if !open(cli, name)?.persist(bytes(key))? {
                return Err(Fail::No);
            }
        }
        Command::Del { name, key } => {
            if !open(cli, name)?.remove(bytes(key))? {
                return Err(Fail::No);
            }
        }
        Command::Incr { name, key, by } => {
            let n = open(cli, name)?.incr_by(bytes(key), by.unwrap_or(1))?;
            writeln!(out, "{n}")?;
        }
        Command::Count { name } => writeln!(out, "{}", open(cli, name)?.count()?)?,
        Command::Keys { name } => {
            let cache = open(cli, name)?;
            for key in cache.keys_iter() {
                write_bytes(&mut out, &key?, cli.raw)?;
                out.write_all(b"\n")?;
            }
        }
        Command::Items { name } => {
            let cache = open(cli, name)?;
            for item in cache.items_iter() {
                let (k, v) = item?;
                write_bytes(&mut out, &k, cli.raw)?;
                out.write_all(b"\t")?;
                write_bytes(&mut out, &v, cli.raw)?;
                out.write_all(b"\n")?;
            }
        }
        Command::Clear { name } => open(cli, name)?.clear()?,
        Command::Watch { name, key } => {
            let cache = open(cli, name)?;
            let sub = match key {
                Some(k) => cache.subscribe(bytes(k))?,
                None => cache.subscribe_all()?,
            };
            // Registered: every change from now on is printed.
            eprintln!("upcache: watching `{name}` (interrupt to stop)");
            loop {
                let event = sub.recv()?;
                match &event.kind {
                    EventKind::Set => {
                        out.write_all(b"set\t")?;
                        write_bytes(&mut out, &event.key, cli.raw)?;
                        out.write_all(b"\t")?;
                        write_bytes(&mut out, event.value.as_deref().unwrap_or(&[]), cli.raw)?;
                    }
                    EventKind::Removed => {
                        out.write_all(b"del\t")?;
                        write_bytes(&mut out, &event.key, cli.raw)?;
                    }
                    EventKind::Expired => {
                        out.write_all(b"expired\t")?;
                        write_bytes(&mut out, &event.key, cli.raw)?;
                    }
                    EventKind::Cleared => out.write_all(b"clear")?,
                    EventKind::Lagged(n) => write!(out, "lagged\t{n}")?,
                    other => {
                        write!(out, "{other:?}\t")?;
                        write_bytes(&mut out, &event.key, cli.raw)?;
                    }
                }
                out.write_all(b"\n")?;
                out.flush()?;
            }
        }
        Command::Stats { name, json } => {
            let stats = open(cli, name)?.stats()?;
            let bad = |e: serde_json::Error| Fail::Error(FAILED, format!("the stats: {e}"));
            if *json {
                // In the struct's order, as the server sends them.
                writeln!(out, "{}", serde_json::to_string(&stats).map_err(bad)?)?;
            } else {
                let value = serde_json::to_value(&stats).map_err(bad)?;
                write_table(&mut out, &stats_rows(&value))?;
            }
        }
        Command::Ls => ls(cli, &mut out)?,
        Command::Shutdown { name } => open(cli, name)?.shutdown_server()?,
    }
    out.flush()?;
    Ok(())
}

/// The counters as `name, value` rows: the known ones in a reading order, sizes also in
/// KiB/MiB, then any the server sends that this list does not know yet.
fn stats_rows(value: &serde_json::Value) -> Vec<Vec<String>> {
    const ORDER: [&str; 18] = [
        "pid",
        "uptime_ms",
        "keys",
        "record_bytes",
        "store_bytes",
        "max_value_len",
        "connections",
        "accepted",
        "subscriptions",
        "waits",
        "requests",
        "gets",
        "hits",
        "bytes_in",
        "bytes_out",
        "events",
        "events_dropped",
        "protocol_errors",
    ];
    let Some(map) = value.as_object() else {
        return Vec::new();
    };
    let row = |k: &str, v: &serde_json::Value| {
        let text = match v.as_u64() {
            Some(n) if k.ends_with("bytes") || k.ends_with("_len") => {
                format!("{n} ({})", human_bytes(n))
            }
            Some(n) if k == "uptime_ms" => format!("{n} ({:.1} s)", n as f64 / 1000.0),
            Some(n) if k == "hits" => match map.get("gets").and_then(|g| g.as_u64()) {
                Some(gets) if gets > 0 => {
                    format!("{n} ({:.1}% of gets)", n as f64 * 100.0 / gets as f64)
                }
                _ => n.to_string(),
            },
            _ => v.to_string(),
        };
        vec![k.to_owned(), text]
    };
    let known = ORDER.iter().filter_map(|k| map.get(*k).map(|v| row(k, v)));
    let new = map
        .iter()
        .filter(|(k, _)| !ORDER.contains(&k.as_str()))
        .map(|(k, v)| row(k, v));
    known.chain(new).collect()
}

/// One row of `ls` per connection file in the directory.
fn ls(cli: &Cli, out: &mut impl Write) -> Result<(), Fail> {
    let dir = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| Fail::Error(FAILED, format!("reading {}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| {
            let name = f.strip_prefix("upcache-")?.strip_suffix(".json")?;
            upcache::validate_name(name).ok().map(|()| name.to_owned())
        })
        .collect();
    names.sort();
    let mut rows = vec![["NAME", "PID", "ALIVE", "TRANSPORT", "ADDRESS", "KEYS"]
        .map(String::from)
        .to_vec()];
    for name in names {
        rows.push(ls_row(cli, &dir, name));
    }
    write_table(out, &rows)?;
    Ok(())
}

fn ls_row(cli: &Cli, dir: &Path, name: String) -> Vec<String> {
    let dash = || "-".to_string();
    let path = dir.join(format!("upcache-{name}.json"));
    match ServerInfo::read(&path) {
        Ok(info) => {
            // Alive means it answers: join (never start) and count.
            let keys = builder(cli, &name)
                .join_only(true)
                .open_timeout(Duration::from_secs(2))
                .request_timeout(Some(Duration::from_secs(2)))
                .open()
                .and_then(|c| c.count());
            let (alive, keys) = match keys {
                Ok(n) => ("yes".to_string(), n.to_string()),
                Err(_) => ("no".to_string(), dash()),
            };
            vec![
                name,
                info.pid.to_string(),
                alive,
                info.transport,
                info.address,
                keys,
            ]
        }
        Err(ServerInfoError::Foreign { port }) => vec![
            name,
            dash(),
            "foreign".into(),
            "tcp".into(),
            format!("tcp://127.0.0.1:{port}"),
            dash(),
        ],
        Err(ServerInfoError::Incomplete) => {
            vec![name, dash(), "starting".into(), dash(), dash(), dash()]
        }
        Err(_) => vec![name, dash(), "invalid".into(), dash(), dash(), dash()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_rows_keep_order_and_show_new_counters() {
        let v = serde_json::json!({"keys": 3, "gets": 4, "hits": 1, "record_bytes": 2048,
                                   "pid": 9, "expired": 5});
        let rows = stats_rows(&v);
        let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            names,
            ["pid", "keys", "record_bytes", "gets", "hits", "expired"]
        );
        assert_eq!(rows[2][1], "2048 (2.0 KiB)");
        assert_eq!(rows[4][1], "1 (25.0% of gets)");
        assert_eq!(rows[5][1], "5");
    }

    #[test]
    fn the_command_line_parses_anywhere() {
        let cli =
            Cli::try_parse_from(["upcache", "get", "c", "k", "--dir", "/d", "--raw"]).unwrap();
        assert_eq!(cli.dir.as_deref(), Some(Path::new("/d")));
        assert!(cli.raw);
        let cli = Cli::try_parse_from(["upcache", "--dir", "/e", "incr", "c", "k", "-5"]).unwrap();
        assert!(matches!(cli.command, Command::Incr { by: Some(-5), .. }));
        assert_eq!(cli.dir.as_deref(), Some(Path::new("/e")));
        let e = Cli::try_parse_from(["upcache", "get", "bad/name", "k"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(Cli::try_parse_from(["upcache", "get", "c"]).is_err());
        assert_eq!(
            show::escaped(b"\xff").as_ref(),
            br"\xff",
            "the escaping the commands use"
        );
    }
}
