//! `loadgen`: one load generator for upcache, Redis and memcached, and the floor server.
//!
//! Dimensions of every measurement are flags and are printed with its result: target,
//! transport, operation (GET or SET), pipeline depth, connections, key space, key size, value
//! size, warm-up and duration. GET runs read keys that were stored beforehand, so they hit.
//! One thread drives every connection of a measurement through one mio poll; each connection
//! writes `depth` requests at once and reads their replies; the latency of a request is the
//! time from that write to the read that completed its reply, in an HDR histogram (3
//! significant digits). Every result also gives the client's own ceiling and says whether the
//! run was client-bound (see `drive.rs`).
//!
//! Subcommands: `floor` (run the floor server), `serve` (start an upcache server and print its
//! connection file), `run` (one measurement), `matrix` (the comparison table), `memory` (bytes
//! per key), `first-open` (election and start time), `client` (the upcache library's own calls),
//! `send-probe` (what the kernel charges for sending replies from scattered memory), `fanout`
//! (another client's GET latency while waits are woken and events fan out; see `fanout.rs`),
//! `expiry-lag` (how late expiry events arrive, upcache against Redis; see `expiry.rs`),
//! `tasks` (async clients under tokio, one connection shared by many tasks; see `tasks.rs`),
//! `multi` (multi-key requests against pipelines of single requests; see `multi.rs`),
//! `stampede` (N callers of one missing key: `get_or_compute` against Redis's lock-and-poll
//! recipe; see `stampede.rs`),
//! `budget` (RSS under a memory budget after churning 10x it; see `budget.rs`), `cacheaside`
//! and `cacheaside-verdict` (hit ratio in a memory budget; see `cacheaside.rs`).

mod budget;
mod cacheaside;
mod drive;
mod expiry;
mod fanout;
mod floor;
mod multi;
mod proto;
mod stampede;
mod tasks;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use drive::Measured;
use hdrhistogram::Histogram;
use proto::Proto;
use upcache::protocol::{self, Decoded, Limits, Reply, Request, VERSION};
use upcache::UpCache;
use upcache_transports::{connect, Endpoint, Kind, Stream};

#[derive(Parser)]
#[command(about = "Load generator and floor server for upcache, Redis and memcached")]
struct Cli {
    /// Pin this process (every thread) to this CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the floor server; prints `tcp:HOST:PORT` or `unix:PATH` once it listens.
    Floor {
        /// Listen on a Unix socket in this directory instead of TCP.
        #[arg(long)]
        unix_dir: Option<PathBuf>,
    },
    /// Start an upcache server that stays up (no auto-kill); prints `FILE PID`.
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "tcp")]
        transport: Transport,
    },
    /// Run an upcache server in this process, in the foreground (for profilers), writing its
    /// address to FILE in the connection-file format; stops on SIGTERM.
    Foreground {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "tcp")]
        transport: Transport,
        /// Copy values up to this many bytes into replies, send longer ones in place (default:
        /// the server's own choice); 0 sends every value in place.
        #[arg(long, value_name = "BYTES")]
        copy_max: Option<usize>,
        /// The store's memory budget in bytes, as `upcache serve --max-memory` (0: none).
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        max_memory: u64,
    },
    /// One measurement.
    Run {
        /// `upcache=FILE`, `floor=tcp:HOST:PORT`, `redis=unix:PATH`, `memcached=tcp:HOST:PORT`...
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "get")]
        op: Op,
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, default_value_t = 1)]
        conns: usize,
    },
    /// The comparison matrix: every target, GET and SET, depths 1/16/64, 1/4/50 connections.
    Matrix {
        /// Targets, as for `run`; repeat the flag. Each target's transport comes from its
        /// address.
        #[arg(long = "target")]
        targets: Vec<String>,
        #[command(flatten)]
        load: Load,
        /// Fewer cells and shorter runs (under a minute).
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON lines here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Bytes per key after storing `keys` keys in each target.
    Memory {
        #[arg(long = "target")]
        targets: Vec<String>,
        /// `NAME=PID` of a target whose resident memory to report too.
        #[arg(long = "pid")]
        pids: Vec<String>,
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 16)]
        key_size: usize,
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Then overwrite this many random keys of those stored, with values of random sizes
        /// from half to one and a half times `value_size`, and report again.
        #[arg(long, default_value_t = 0)]
        overwrites: usize,
        /// Store every key with this TTL (see `run --ttl-ms`): what a TTL costs per key.
        #[arg(long, value_name = "MS")]
        ttl_ms: Option<u64>,
    },
    /// Time of a first open: election, server start, connect, handshake.
    FirstOpen {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value = "tcp")]
        transport: Transport,
    },
    /// What the kernel charges for sending a batch of replies: 64 replies of a 24-byte header
    /// and a 64-byte value written to a Unix socket pair and read back, with the values taken
    /// from records scattered over `keys` × 82 bytes, three ways (see `send_probe`).
    SendProbe {
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        #[arg(long, default_value_t = 100_000)]
        batches: usize,
    },
    /// Another client's GET latency at depth 1 while a CLEAR wakes `waits` waits and while
    /// `sets` SETs of one key fan out to `subs` subscriptions, next to the same work with
    /// nobody listening, same run (see `fanout.rs`).
    Fanout {
        /// `upcache=FILE` (a connection file, as for `run`).
        #[arg(long)]
        target: String,
        #[command(flatten)]
        dims: fanout::Dims,
    },
    /// How late expiry events arrive: `keys` keys with known deadlines spread over
    /// `spread_ms`, next to each count of `background` keys with a 1-hour TTL; one row per
    /// count and target, the targets in turn (see `expiry.rs`).
    ExpiryLag {
        /// `upcache=FILE` or `redis=ADDRESS`, as for `run`; repeat the flag.
        #[arg(long = "target")]
        targets: Vec<String>,
        #[command(flatten)]
        dims: expiry::Dims,
    },
    /// Async clients under tokio: upcache's `aio::UpCache` and redis-rs's multiplexed
    /// connection, one connection shared by N tasks doing GETs (see `tasks.rs`).
    Tasks {
        /// `upcache=FILE`, `redis=tcp:HOST:PORT`, `redis=unix:PATH`, `floor=tcp:HOST:PORT`
        /// (driven by upcache's async client); repeat the flag.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Task counts, one row each.
        #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
        tasks: Vec<usize>,
        /// Worker threads of the runtime (default: the CPUs this process may use).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        load: Load,
    },
    /// Multi-key requests (`get_many`/`set_many`, Redis `MGET`/`MSET`, memcached multi-get)
    /// against pipelines of single requests for the same keys (see `multi.rs`).
    Multi {
        /// `upcache=FILE`, `redis=ADDRESS`, `memcached=ADDRESS`, as for `run`; repeat the flag.
        #[arg(long = "target")]
        targets: Vec<String>,
        #[command(flatten)]
        dims: multi::Dims,
    },
    /// N callers of one missing key with a fixed compute time: upcache's `get_or_compute`
    /// against Redis's `SET NX PX` lock and polled GET (see `stampede.rs`).
    Stampede {
        /// `upcache=DIR/upcache-NAME.json` or `redis=tcp:HOST:PORT`; repeat the flag.
        #[arg(long = "target")]
        targets: Vec<String>,
        #[command(flatten)]
        dims: stampede::Dims,
    },
    /// RSS under a memory budget after churning 10x the budget through it (see `budget.rs`).
    Budget {
        #[command(flatten)]
        dims: budget::Dims,
    },
    /// Cache-aside hit ratio in a memory budget: Zipf GETs, a SET on each miss, optionally a
    /// one-time scan halfway; one row for one target (see `cacheaside.rs`).
    Cacheaside {
        /// As for `run`: `upcache=FILE`, `redis=ADDRESS`, `memcached=ADDRESS`.
        #[arg(long)]
        target: String,
        /// The row's name (default: the target's name), e.g. `redis-lru`.
        #[arg(long)]
        label: Option<String>,
        /// The server's pid, to report its RSS.
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        dims: cacheaside::Dims,
        /// Print the dimensions and the table's header before the row.
        #[arg(long)]
        header: bool,
        /// Also append the row as a JSON line here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// For each (alpha, variant) in a `cacheaside --json` file: upcache's hit ratio against
    /// the best of the others, and its RSS against theirs.
    CacheasideVerdict { json: PathBuf },
    /// The upcache library's own calls: get round trip and pipelined throughput.
    Client {
        #[arg(long, default_value = "tcp")]
        transport: Transport,
        #[arg(long, default_value_t = 200_000)]
        ops: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Transport {
    Tcp,
    Unix,
}

impl From<Transport> for Kind {
    fn from(t: Transport) -> Kind {
        match t {
            Transport::Tcp => Kind::Tcp,
            Transport::Unix => Kind::Unix,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Op {
    Get,
    Set,
    /// GETs and SETs mixed, `--get-percent` of them GETs.
    Mix,
}

#[derive(clap::Args, Clone, Copy, Debug)]
struct Load {
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// With `--op mix`: the share of GETs, in percent.
    #[arg(long, default_value_t = 90)]
    get_percent: u8,
    /// Every SET carries this TTL (upcache `SET_TTL`, Redis `SET .. PX`, memcached's
    /// exptime rounded up to seconds). Pick one longer than the run.
    #[arg(long, value_name = "MS")]
    ttl_ms: Option<u64>,
}

impl Load {
    /// Appends a SET of `key` to `value` for `t`, with the load's TTL if it has one.
    fn set(&self, t: &Target, key: &[u8], value: &[u8], id: u32, out: &mut Vec<u8>) {
        match self.ttl_ms {
            Some(ttl) => t.proto.set_ttl(key, value, ttl, id, out),
            None => t.proto.set(key, value, id, out),
        }
    }
}

/// A server to load.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    proto: Proto,
    endpoint: Endpoint,
    token: Option<String>,
}

impl Target {
    fn parse_all(specs: &[String]) -> Result<Vec<Target>, String> {
        specs.iter().map(|s| Target::parse(s)).collect()
    }

    fn parse(spec: &str) -> Result<Target, String> {
        let (name, rest) = spec.split_once('=').ok_or("target is NAME=ADDRESS")?;
        if name == "upcache" {
            let info = upcache::ServerInfo::read(std::path::Path::new(rest))
                .map_err(|e| format!("{rest}: {e}"))?;
            let endpoint = info.endpoint().ok_or("no address in the connection file")?;
            return Ok(Target {
                name: name.into(),
                proto: Proto::Upcache,
                endpoint,
                token: Some(info.token),
            });
        }
        let endpoint = if let Some(p) = rest.strip_prefix("unix:") {
            Endpoint::Unix(p.into())
        } else {
            let a = rest.strip_prefix("tcp:").unwrap_or(rest);
            Endpoint::Tcp(a.parse().map_err(|e| format!("{a}: {e}"))?)
        };
        let (proto, token) = match name {
            "floor" => (Proto::Upcache, Some("floor".to_string())),
            "redis" => (Proto::Resp, None),
            "memcached" => (Proto::Memcached, None),
            other => return Err(format!("unknown target {other}")),
        };
        Ok(Target {
            name: name.into(),
            proto,
            endpoint,
            token,
        })
    }

    fn transport(&self) -> &'static str {
        self.endpoint.kind().name()
    }

    fn connect(&self) -> io::Result<Conn> {
        let s = connect(&self.endpoint, Duration::from_secs(2))?;
        let mut c = Conn {
            s,
            buf: Vec::with_capacity(1 << 16),
            at: 0,
            proto: self.proto,
        };
        if let Some(t) = &self.token {
            let mut hello = Vec::new();
            Request::Hello {
                version: VERSION,
                token: t.as_bytes(),
            }
            .encode(0, &mut hello);
            c.s.write_all(&hello)?;
            c.read_reply()?;
        }
        Ok(c)
    }
}

struct Conn {
    s: Stream,
    buf: Vec<u8>,
    at: usize,
    proto: Proto,
}

impl Conn {
    /// Reads until one whole reply is buffered, and consumes it.
    fn read_reply(&mut self) -> io::Result<()> {
        self.read_reply_with(|_| ())
    }

    /// Reads until one whole reply is buffered, consumes it, and gives its bytes to `f`.
    fn read_reply_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        loop {
            if let Some(n) = self.proto.reply_len(&self.buf[self.at..]) {
                let r = f(&self.buf[self.at..self.at + n]);
                self.at += n;
                if self.at == self.buf.len() {
                    self.buf.clear();
                    self.at = 0;
                }
                return Ok(r);
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + 64 * 1024, 0);
            let n = self.s.read(&mut self.buf[len..])?;
            self.buf.truncate(len + n);
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn key(i: usize, size: usize) -> Vec<u8> {
    let mut k = format!("key:{i:012}").into_bytes();
    k.resize(size, b'.');
    k
}

/// Stores every key of the key space (so GETs hit), pipelined.
fn preload(t: &Target, load: &Load, prefix: usize) -> io::Result<()> {
    let value = vec![b'v'; load.value_size];
    pipelined_sets(t, load.keys, |i, out| {
        load.set(t, &key(prefix + i, load.key_size), &value, i as u32, out)
    })
}

/// Sends `count` SETs on one connection in pipelined batches of 256, reading every reply;
/// `encode(i, out)` appends the `i`-th.
fn pipelined_sets(
    t: &Target,
    count: usize,
    mut encode: impl FnMut(usize, &mut Vec<u8>),
) -> io::Result<()> {
    let mut c = t.connect()?;
    let mut out = Vec::new();
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(256);
        out.clear();
        for i in done..done + batch {
            encode(i, &mut out);
        }
        c.s.write_all(&out)?;
        for _ in 0..batch {
            c.read_reply()?;
        }
        done += batch;
    }
    Ok(())
}

/// The next number of a xorshift64 sequence (`state` must not be 0).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One measurement of `op` against `t` (see `drive.rs` for what is measured and how).
fn run(t: &Target, op: Op, load: &Load, depth: usize, conns: usize) -> io::Result<Measured> {
    drive::measure(t, op, load, depth, conns)
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("could not pin to CPU {cpu}: {}", io::Error::last_os_error());
        }
    }
}

/// What `run` says about the client: its busy share, its ceiling, and whether the run is
/// client-bound (`client-bound: yes`, which the scripts look for).
fn client_note(m: &Measured) -> String {
    match (m.client_busy, m.client_ceiling()) {
        (Some(busy), Some(ceiling)) => format!(
            "client busy {:.0} % (waiting for its CPU {:.0} %), client ceiling {}, client-bound: {}",
            busy * 100.0,
            m.client_waiting.unwrap_or(0.0) * 100.0,
            fmt_ops(ceiling),
            if m.client_bound() { "yes" } else { "no" }
        ),
        _ => "client ceiling not measured".into(),
    }
}

fn fmt_ops(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.1}k", x / 1e3)
    }
}

fn matrix(targets: &[Target], load: &Load, quick: bool, json: Option<PathBuf>) -> io::Result<()> {
    let mut load = *load;
    let (depths, conns): (&[usize], &[usize]) = if quick {
        (&[1, 16], &[1, 4])
    } else {
        (&[1, 16, 64], &[1, 4, 50])
    };
    if quick {
        load.warmup = load.warmup.min(0.1);
        load.duration = load.duration.min(0.3);
    }
    for t in targets {
        preload(t, &load, 0)?;
    }
    let mut json_out = json.map(std::fs::File::create).transpose()?;
    println!(
        "# {} keys of {} B, values of {} B; warm-up {} s, measured {} s per cell",
        load.keys, load.key_size, load.value_size, load.warmup, load.duration
    );
    let names: Vec<&str> = ["upcache", "redis", "memcached", "floor"]
        .into_iter()
        .filter(|n| targets.iter().any(|t| t.name == *n))
        .collect();
    println!(
        "# '*': client-bound (the client ran or waited for its CPU at least {:.0} % of the time: the server came \
         within {:.0} % of the client's ceiling, or other work took the client's CPU); a ratio with '*' has a \
         client-bound side and is not counted",
        drive::CLIENT_BOUND * 100.0,
        drive::CLIENT_BOUND * 100.0
    );
    println!(
        "# ceiling: the client's own rate against the floor in this cell, were it always busy"
    );
    let mut header = format!("{:<5} {:<4} {:>5} {:>5}", "net", "op", "depth", "conns");
    for n in &names {
        header += &format!(" | {:>10} {:>15}", format!("{n} ops/s"), "p50/p99 µs");
    }
    header += &format!(" | {:>8} | up/redis up/memc up/floor", "ceiling");
    println!("{header}");
    // (cell, up/floor) of every cell with both, and whether a side was client-bound.
    let mut floor_ratios: Vec<(String, f64, bool)> = Vec::new();
    let mut upcache_by_cell = std::collections::HashMap::new();
    for net in ["tcp", "unix"] {
        let here: Vec<&Target> = targets.iter().filter(|t| t.transport() == net).collect();
        if here.is_empty() {
            continue;
        }
        for op in [Op::Get, Op::Set] {
            for &d in depths {
                for &c in conns {
                    let mut row = format!(
                        "{net:<5} {:<4} {d:>5} {c:>5}",
                        format!("{op:?}").to_uppercase()
                    );
                    let mut got = std::collections::HashMap::new();
                    for n in &names {
                        match here.iter().find(|t| t.name == *n) {
                            Some(t) => {
                                let m = run(t, op, &load, d, c)?;
                                row += &format!(
                                    " | {:>9}{} {:>15}",
                                    fmt_ops(m.ops_per_sec),
                                    if m.client_bound() { '*' } else { ' ' },
                                    format!("{:.1}/{:.1}", m.p50_us, m.p99_us)
                                );
                                if let Some(f) = json_out.as_mut() {
                                    writeln!(
                                        f,
                                        "{}",
                                        serde_json::json!({
                                            "target": n, "transport": net, "op": format!("{op:?}"),
                                            "depth": d, "conns": c, "keys": load.keys,
                                            "key_size": load.key_size, "value_size": load.value_size,
                                            "ops_per_sec": m.ops_per_sec, "p50_us": m.p50_us,
                                            "p99_us": m.p99_us, "p999_us": m.p999_us, "max_us": m.max_us,
                                            "client_busy": m.client_busy,
                                            "client_waiting": m.client_waiting,
                                            "client_ceiling": m.client_ceiling(),
                                            "client_bound": m.client_bound(),
                                        })
                                    )?;
                                }
                                got.insert(*n, m.clone());
                                if *n == "upcache" {
                                    upcache_by_cell
                                        .insert((net, format!("{op:?}"), d, c), m.ops_per_sec);
                                }
                            }
                            None => row += &format!(" | {:>10} {:>15}", "-", "-"),
                        }
                    }
                    let ceiling = got.get("floor").and_then(Measured::client_ceiling);
                    row += &format!(" | {:>8}", ceiling.map_or("-".into(), fmt_ops));
                    let ratio = |peer: &str| match (got.get("upcache"), got.get(peer)) {
                        (Some(u), Some(p)) => {
                            let bound = u.client_bound() || p.client_bound();
                            let mark = if bound { "*" } else { "" };
                            format!("{:.2}{mark}", u.ops_per_sec / p.ops_per_sec)
                        }
                        _ => "-".into(),
                    };
                    if let (Some(u), Some(f)) = (got.get("upcache"), got.get("floor")) {
                        floor_ratios.push((
                            format!(
                                "{net} {} depth {d} conns {c}",
                                format!("{op:?}").to_uppercase()
                            ),
                            u.ops_per_sec / f.ops_per_sec,
                            u.client_bound() || f.client_bound(),
                        ));
                    }
                    row += &format!(
                        " | {:>8} {:>7} {:>8}",
                        ratio("redis"),
                        ratio("memcached"),
                        ratio("floor")
                    );
                    println!("{row}");
                }
            }
        }
    }
    if !floor_ratios.is_empty() {
        let (bound, counted): (Vec<_>, Vec<_>) = floor_ratios.iter().partition(|r| r.2);
        let mut r: Vec<f64> = counted.iter().map(|c| c.1).collect();
        r.sort_by(f64::total_cmp);
        println!(
            "\nup/floor, cells not client-bound: {} of {}{}",
            counted.len(),
            floor_ratios.len(),
            if r.is_empty() {
                String::new()
            } else {
                format!(
                    "; min {:.2}, median {:.2}; at least 0.6 in {}",
                    r[0],
                    r[r.len() / 2],
                    r.iter().filter(|&&x| x >= 0.6).count()
                )
            }
        );
        if !bound.is_empty() {
            println!("client-bound cells (not counted):");
            for (cell, ratio, _) in bound {
                println!("  {cell}: up/floor {ratio:.2}");
            }
        }
    }
    let mut cells: Vec<_> = upcache_by_cell
        .keys()
        .filter(|k| k.0 == "unix")
        .cloned()
        .collect();
    if !cells.is_empty() {
        cells.sort();
        println!("\nupcache over Unix sockets vs TCP (ops/s ratio, same cell):");
        for (_, op, d, c) in cells {
            if let (Some(u), Some(t)) = (
                upcache_by_cell.get(&("unix", op.clone(), d, c)),
                upcache_by_cell.get(&("tcp", op.clone(), d, c)),
            ) {
                println!(
                    "  {:<4} depth {d:>2} conns {c:>2}: unix/tcp {:.2}",
                    op.to_uppercase(),
                    u / t
                );
            }
        }
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A statistic a server reports about itself: Redis `used_memory`, memcached `bytes`,
/// upcache's `store_bytes` (the floor server has none).
fn self_reported(t: &Target) -> io::Result<Option<u64>> {
    let (cmd, field): (&[u8], &str) = match t.proto {
        Proto::Resp => (b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n", "used_memory:"),
        Proto::Memcached => (b"stats\r\n", "STAT bytes "),
        Proto::Upcache if t.token.is_none() => return Ok(None),
        Proto::Upcache => {
            let mut c = t.connect()?;
            let mut out = Vec::new();
            Request::Stats.encode(1, &mut out);
            c.s.write_all(&out)?;
            return c.read_reply_with(|frame| {
                match protocol::decode_reply(frame, &Limits::unlimited()) {
                    Ok(Decoded::Frame((_, Reply::Text(json)), _)) => {
                        serde_json::from_slice::<upcache::ServerStats>(json)
                            .ok()
                            .map(|s| s.store_bytes)
                    }
                    _ => None,
                }
            });
        }
    };
    let s = connect(&t.endpoint, Duration::from_secs(2))?;
    s.write_all(cmd)?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 8192];
    let done = |t: &[u8]| {
        t.ends_with(b"END\r\n") || (t.starts_with(b"$") && t.len() > 16 && t.ends_with(b"\r\n"))
    };
    while !done(&text) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok()))
}

/// Overwrites `count` random keys of those `preload` stored under `prefix`, with values of
/// random sizes from half to one and a half times the load's value size, pipelined.
fn churn(t: &Target, load: &Load, prefix: usize, count: usize) -> io::Result<()> {
    let value = vec![b'c'; load.value_size * 3 / 2 + 1];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    pipelined_sets(t, count, |i, out| {
        let x = xorshift(&mut rng);
        let k = key(prefix + (x % load.keys as u64) as usize, load.key_size);
        let len = load.value_size / 2 + (x >> 32) as usize % (load.value_size + 1);
        load.set(t, &k, &value[..len], i as u32, out);
    })
}

fn memory(
    targets: &[Target],
    pids: &[(String, u32)],
    load: &Load,
    overwrites: usize,
) -> io::Result<()> {
    println!(
        "# memory: {} keys of {} B with values of {} B (bytes per key; the server's own report where it has one)",
        load.keys, load.key_size, load.value_size
    );
    if overwrites > 0 {
        println!(
            "# 'churned': the same keys after {overwrites} overwrites of random keys with values of {} to {} B",
            load.value_size / 2,
            load.value_size * 3 / 2
        );
    }
    println!(
        "{:<10} {:>14} {:>18} {:>16}",
        "server", "RSS B/key", "self-reported B/key", "payload B/key"
    );
    let mut per_key = std::collections::HashMap::new();
    for t in targets {
        let pid = pids.iter().find(|(n, _)| *n == t.name).map(|(_, p)| *p);
        let (rss0, self0) = (pid.map(rss_kib), self_reported(t)?);
        // Fresh keys (a prefix no other run uses), so the delta is exactly these keys.
        preload(t, load, 1_000_000_000)?;
        let (rss1, self1) = (pid.map(rss_kib), self_reported(t)?);
        // Bytes per key grown from the empty server (`scale`: 1024 for RSS, read in KiB).
        let per = |a: Option<u64>, b: Option<u64>, scale: u64| {
            a.zip(b)
                .map(|(a, b)| (b.saturating_sub(a) * scale) as f64 / load.keys as f64)
        };
        let (rss, own) = (per(rss0, rss1, 1024), per(self0, self1, 1));
        let shown = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
        println!(
            "{:<10} {:>14} {:>18} {:>16}",
            t.name,
            shown(rss),
            shown(own),
            load.key_size + load.value_size
        );
        // What the issue compares: upcache's RSS, Redis's used_memory, memcached's bytes.
        per_key.insert(t.name.clone(), if t.name == "upcache" { rss } else { own });
        if overwrites > 0 {
            churn(t, load, 1_000_000_000, overwrites)?;
            let (rss2, self2) = (pid.map(rss_kib), self_reported(t)?);
            println!(
                "{:<10} {:>14} {:>18} {:>16}",
                "  churned",
                shown(per(rss0, rss2, 1024)),
                shown(per(self0, self2, 1)),
                format!(
                    "{}..{}",
                    load.key_size + load.value_size / 2,
                    load.key_size + load.value_size * 3 / 2
                )
            );
        }
    }
    if let (Some(Some(u)), Some(Some(r))) = (per_key.get("upcache"), per_key.get("redis")) {
        println!(
            "upcache (RSS) / redis (used_memory) bytes per key: {:.2}",
            u / r
        );
    }
    if let (Some(Some(u)), Some(Some(m))) = (per_key.get("upcache"), per_key.get("memcached")) {
        println!(
            "upcache (RSS) / memcached (bytes) bytes per key: {:.2}",
            u / m
        );
    }
    Ok(())
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "min {:?}  p50 {:?}  p99 {:?}  max {:?}",
        v[0],
        q(0.5),
        q(0.99),
        v[v.len() - 1]
    )
}

fn first_open(runs: usize, transport: Transport) -> upcache::Result<()> {
    let dir = std::env::temp_dir().join(format!("upcache-first-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| upcache::Error::Io {
        context: "temp dir",
        source: e,
    })?;
    let mut times = Vec::new();
    for i in 0..runs {
        let t0 = Instant::now();
        let c = UpCache::builder(&format!("first{i}"))
            .dir(&dir)
            .transport(transport.into())
            .linger(Duration::ZERO)
            .open()?;
        times.push(t0.elapsed());
        c.close();
    }
    println!(
        "first open ({:?}, {runs} runs: election + server start + connect + handshake): {}",
        transport,
        quantiles(times)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Time per batch of 64 replies (24-byte header, 64-byte value), written to one end of a Unix
/// socket pair and read back from the other, on this thread:
///
/// - `copied`: headers and values copied into one buffer, one `write` (what the floor does);
/// - `scattered`: one `writev` of 128 slices, a header and a value per reply, the values in
///   place in records scattered over `keys` × 82 bytes (what upcache's `get` does);
/// - `adjacent`: the same 128 slices, the values in 64 adjacent records.
///
/// The three differ only in how the kernel reaches the bytes it copies; the scattered case
/// shows the cost of the kernel touching many pages of the sender's memory per call.
fn send_probe(keys: usize, batches: usize) -> upcache::Result<()> {
    use std::io::{IoSlice, Read};
    const REPLIES: usize = 64;
    const RECORD: usize = 82;
    let io = |source| upcache::Error::Io {
        context: "send probe",
        source,
    };
    let keys = keys.max(REPLIES);
    let records = vec![b'v'; keys * RECORD];
    let headers = [b'h'; 24 * REPLIES];
    let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair().map_err(io)?;
    let mut out = Vec::with_capacity(88 * REPLIES);
    let mut back = vec![0u8; 64 * 1024];
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(2 * REPLIES);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for mode in ["copied", "scattered", "adjacent"] {
        let t0 = Instant::now();
        for _ in 0..batches {
            let offsets: [usize; REPLIES] = std::array::from_fn(|i| match mode {
                "adjacent" => i * RECORD + 18,
                _ => (xorshift(&mut state) as usize % keys) * RECORD + 18,
            });
            let sent = if mode == "copied" {
                out.clear();
                for (h, &o) in headers.chunks(24).zip(&offsets) {
                    out.extend_from_slice(h);
                    out.extend_from_slice(&records[o..o + 64]);
                }
                tx.write(&out).map_err(io)?
            } else {
                iov.clear();
                iov.extend(
                    headers
                        .chunks(24)
                        .zip(&offsets)
                        .flat_map(|(h, &o)| [IoSlice::new(h), IoSlice::new(&records[o..o + 64])]),
                );
                tx.write_vectored(&iov).map_err(io)?
            };
            let mut got = 0;
            while got < sent {
                got += rx.read(&mut back).map_err(io)?;
            }
        }
        let per = t0.elapsed() / batches as u32;
        println!(
            "send probe, {REPLIES} replies of 24 + 64 B, values from {keys} records: {mode:>9}: {per:?} per batch ({:?} per reply)",
            per / REPLIES as u32
        );
    }
    Ok(())
}

fn client(transport: Transport, ops: usize) -> upcache::Result<()> {
    let dir = std::env::temp_dir();
    let c = UpCache::builder(&format!("client-bench-{}", std::process::id()))
        .dir(&dir)
        .transport(transport.into())
        .linger(Duration::ZERO)
        .open()?;
    let keys: Vec<Vec<u8>> = (0..10_000).map(|i| key(i, 16)).collect();
    let value = [b'v'; 64];
    let mut p = c.pipeline();
    for k in &keys {
        p.set(k, value);
    }
    p.execute()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for i in 0..ops / 10 {
        // warm-up
        c.get(&keys[i % keys.len()])?;
    }
    let t0 = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        std::hint::black_box(c.get(&keys[i % keys.len()])?);
        hist.record(t.elapsed().as_nanos() as u64)
            .expect("in range");
    }
    let depth1 = ops as f64 / t0.elapsed().as_secs_f64();
    println!(
        "UpCache::get over {:?}, 16 B keys, 64 B values, one connection: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs; {} ops/s at depth 1",
        transport,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        fmt_ops(depth1)
    );
    for depth in [16usize, 64] {
        let t0 = Instant::now();
        let mut done = 0;
        let mut i = 0;
        while done < ops {
            let mut p = c.pipeline();
            for _ in 0..depth {
                p.get(&keys[i % keys.len()]);
                i += 1;
            }
            done += p.execute()?.len();
        }
        println!(
            "Pipeline of {depth} gets over {:?}: {} ops/s",
            transport,
            fmt_ops(done as f64 / t0.elapsed().as_secs_f64())
        );
    }
    c.close();
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Some(cpu) = cli.cpu {
        pin(cpu);
    }
    let result: Result<(), Box<dyn std::error::Error>> = (|| {
        match cli.cmd {
            Cmd::Floor { unix_dir } => floor::serve(unix_dir, |ep| {
                match ep {
                    Endpoint::Tcp(a) => println!("tcp:{a}"),
                    Endpoint::Unix(p) => println!("unix:{}", p.display()),
                }
                let _ = io::stdout().flush();
            })?,
            Cmd::Serve {
                name,
                dir,
                transport,
            } => {
                let c = UpCache::builder(&name)
                    .dir(&dir)
                    .transport(transport.into())
                    .auto_kill(false)
                    .open()?;
                let info = upcache::ServerInfo::read(c.connection_file())?;
                println!("{} {}", c.connection_file().display(), info.pid);
            }
            Cmd::Foreground {
                file,
                transport,
                copy_max,
                max_memory,
            } => {
                /// Writes a connection file where `run --target upcache=FILE` reads it.
                struct FileHost(PathBuf, u32);
                impl upcache::server::Host for FileHost {
                    fn ready(&mut self, ep: &Endpoint, token: &str) -> io::Result<()> {
                        let info = upcache::ServerInfo::new(ep, token, self.1);
                        std::fs::write(&self.0, info.to_line())
                    }
                    fn exiting(&mut self) {
                        let _ = std::fs::remove_file(&self.0);
                    }
                }
                let mut config = upcache::server::Config::new(
                    transport.into(),
                    upcache_transports::BindOptions {
                        dir: file.parent().map(PathBuf::from).unwrap_or_default(),
                        // Named after the file, so two of them in one directory get two sockets.
                        name: file
                            .file_stem()
                            .map_or("foreground".into(), |s| s.to_string_lossy().into_owned()),
                    },
                );
                if let Some(n) = copy_max {
                    config.copy_max = n;
                }
                if max_memory > 0 {
                    // As a budgeted `upcache serve` does.
                    config.max_memory = max_memory;
                    upcache::server::release_freed_memory();
                }
                let max_value = config.limits.max_value;
                upcache::server::serve(&config, &mut FileHost(file, max_value))?;
            }
            Cmd::Run {
                target,
                op,
                load,
                depth,
                conns,
            } => {
                let t = Target::parse(&target)?;
                if op != Op::Set {
                    preload(&t, &load, 0)?;
                }
                let m = run(&t, op, &load, depth, conns)?;
                println!(
                    "{} {} {:?} depth {depth} conns {conns} keys {} key {} B value {} B: {} ops/s, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs; {}",
                    t.name, t.transport(), op, load.keys, load.key_size, load.value_size,
                    fmt_ops(m.ops_per_sec), m.p50_us, m.p99_us, m.p999_us, m.max_us,
                    client_note(&m)
                );
            }
            Cmd::Matrix {
                targets,
                load,
                quick,
                json,
            } => {
                matrix(&Target::parse_all(&targets)?, &load, quick, json)?;
            }
            Cmd::Memory {
                targets,
                pids,
                keys,
                key_size,
                value_size,
                overwrites,
                ttl_ms,
            } => {
                let targets = Target::parse_all(&targets)?;
                let pids = pids
                    .iter()
                    .filter_map(|s| {
                        s.split_once('=')
                            .and_then(|(n, p)| Some((n.to_string(), p.parse().ok()?)))
                    })
                    .collect::<Vec<_>>();
                let load = Load {
                    keys,
                    key_size,
                    value_size,
                    warmup: 0.0,
                    duration: 0.0,
                    get_percent: 0,
                    ttl_ms,
                };
                memory(&targets, &pids, &load, overwrites)?;
            }
            Cmd::FirstOpen { runs, transport } => first_open(runs, transport)?,
            Cmd::ExpiryLag { targets, dims } => expiry::run(&Target::parse_all(&targets)?, &dims)?,
            Cmd::Tasks {
                targets,
                tasks,
                workers,
                load,
            } => tasks::run(&Target::parse_all(&targets)?, &tasks, &load, workers)?,
            Cmd::Client { transport, ops } => client(transport, ops)?,
            Cmd::Cacheaside {
                target,
                label,
                pid,
                dims,
                header,
                json,
            } => {
                let t = Target::parse(&target)?;
                let label = label.unwrap_or_else(|| t.name.clone());
                cacheaside::run(&t, &label, pid, &dims, header, json.as_deref())?
            }
            Cmd::CacheasideVerdict { json } => cacheaside::print_verdict(&json)?,
            Cmd::SendProbe { keys, batches } => send_probe(keys, batches)?,
            Cmd::Budget { dims } => budget::run(&dims)?,
            Cmd::Fanout { target, dims } => fanout::run(&Target::parse(&target)?, &dims)?,
            Cmd::Multi { targets, dims } => multi::run(&Target::parse_all(&targets)?, &dims)?,
            Cmd::Stampede { targets, dims } => stampede::run(&targets, &dims)?,
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}
