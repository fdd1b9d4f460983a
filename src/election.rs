//! The election: who starts the server for a name, and how everyone finds it.
//!
//! The connection file `<dir>/upcache-<name>.json` is the whole mechanism, as in the original:
//!
//! 1. An opener creates the file with `O_CREAT|O_EXCL` (mode 0600). Exactly one opener can
//!    succeed: it has won, takes an exclusive `flock` on the file (fd-lock), checks the path
//!    still names the file it locked, and starts the server, which inherits the locked file
//!    and keeps the lock for its whole life.
//! 2. The server writes one JSON line into the file: `port`, `host`, `pid`, `version`,
//!    `token`, `transport`, and `unix` (the socket path) for the Unix transport.
//! 3. Every other opener opens the file and tries the lock without blocking. If the lock is
//!    held, a live server (or a winner starting one) owns the name: it reads the file until the
//!    JSON is complete, then connects. If the lock is free, nobody owns the name: the server
//!    died, or a winner died before starting one. The opener then holds the lock, checks that
//!    the path still names the locked file, removes it, and runs the election again.
//!
//! Staleness is decided by the kernel (a dead process holds no lock), never by a timer, and
//! a file is only ever removed by a process that holds its lock: never two live servers for
//! one name. A winner caught in the instant between creating and locking the file may have it
//! removed under it by an opener that found it unlocked; it notices (the path no longer names
//! its file) and runs the election again.
//!
//! Releasing: `flock` locks belong to the open file description, which the winner shares with
//! the server it starts. The winner therefore never unlocks explicitly (that would unlock the
//! server too); it only closes its descriptor.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use upcache_transports::Endpoint;

/// The connection file's content (PROTOCOL.md §1): where a server listens and how to greet it.
///
/// The server writes it as one JSON object on one line, ended by `\n`, once it listens; an
/// opener that finds the line incomplete reads again. Read one with [`ServerInfo::read`] or
/// [`ServerInfo::parse`]; [`UpCache::connection_file`](crate::UpCache::connection_file) names
/// the file of an open cache.
///
/// ```no_run
/// let cache = upcache::UpCache::open("TVHosts")?;
/// let info = upcache::ServerInfo::read(cache.connection_file())?;
/// println!("server {} listens at {}", info.pid, info.address);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The TCP port on 127.0.0.1, or 0 for the Unix transport. The field has the name and
    /// meaning of the original's (Python) `{"port": N}`.
    pub port: u16,
    /// The host of the TCP port: always `"127.0.0.1"`.
    pub host: String,
    /// The server's process id.
    pub pid: u32,
    /// The protocol version the server speaks (`protocol::VERSION` of its build).
    pub version: u64,
    /// The handshake token: 32 lowercase hex digits, presented in every `HELLO`.
    pub token: String,
    /// The transport's name: `"tcp"` or `"unix"`.
    pub transport: String,
    /// Where to connect, as an endpoint address: `tcp://127.0.0.1:PORT` or `unix:///PATH`
    /// (see [`Endpoint::parse`]).
    pub address: String,
    /// The longest value the server accepts, in bytes.
    pub max_value: u32,
    /// The server's memory budget in bytes; 0 (or absent, in a file of a server without
    /// budgets) for none.
    #[serde(default)]
    pub max_memory: u64,
}

/// The most of a connection file that is ever read: a hostile file cannot make a reader
/// allocate more.
pub const MAX_INFO_LEN: u64 = 64 * 1024;

/// Why a connection file does not give a server's address.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerInfoError {
    /// The file is empty, or holds the start of a connection file whose line is not ended yet:
    /// its server is still writing it (or died while starting).
    Incomplete,
    /// The file holds another program's `{"port": N}` without upcache's `version` and `token`:
    /// the file of the Python upcache (it uses the same file name), or of another program.
    Foreign {
        /// The port it names.
        port: u16,
    },
    /// The file holds something else.
    Invalid(String),
    /// The file could not be read.
    Io(io::Error),
}

impl std::fmt::Display for ServerInfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerInfoError::Incomplete => {
                write!(
                    f,
                    "the connection file is not complete yet (its server is starting)"
                )
            }
            ServerInfoError::Foreign { port } => write!(
                f,
                "the connection file belongs to another program (port {port}, no upcache token), \
                 perhaps the Python upcache"
            ),
            ServerInfoError::Invalid(why) => {
                write!(
                    f,
                    "the connection file does not hold a server address: {why}"
                )
            }
            ServerInfoError::Io(e) => write!(f, "could not read the connection file: {e}"),
        }
    }
}

impl std::error::Error for ServerInfoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerInfoError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The original's connection file: `{"port": N}`, and no upcache fields.
#[derive(Deserialize)]
struct Original {
    port: u16,
    version: Option<serde::de::IgnoredAny>,
    token: Option<serde::de::IgnoredAny>,
}

impl ServerInfo {
    /// The info for a server of this process listening at `endpoint`, greeting with `token`
    /// and accepting values up to `max_value` bytes. A host that runs a server itself writes
    /// [`ServerInfo::to_line`] of it where its clients look.
    pub fn new(endpoint: &Endpoint, token: &str, max_value: u32) -> Self {
        let port = match endpoint {
            Endpoint::Tcp(a) => a.port(),
            _ => 0,
        };
        ServerInfo {
            port,
            host: "127.0.0.1".into(),
            pid: std::process::id(),
            version: crate::protocol::VERSION,
            token: token.into(),
            transport: endpoint.kind().name().into(),
            address: endpoint.to_string(),
            max_value,
            max_memory: 0,
        }
    }

    /// Where to connect; `None` if [`address`](Self::address) is not an endpoint address.
    pub fn endpoint(&self) -> Option<Endpoint> {
        Endpoint::parse(&self.address)
    }

    /// Parses a whole connection file: one JSON line ended by `\n`.
    ///
    /// # Errors
    ///
    /// [`ServerInfoError::Incomplete`] for an empty file or a start of JSON not ended by its
    /// newline yet,
    /// [`ServerInfoError::Foreign`] for the original's `{"port": N}` (with or without its
    /// newline), [`ServerInfoError::Invalid`] for anything else that is not a connection file.
    pub fn parse(text: &[u8]) -> Result<Self, ServerInfoError> {
        let foreign = |json: &[u8]| match serde_json::from_slice::<Original>(json) {
            Ok(o) if o.version.is_none() && o.token.is_none() => {
                Some(ServerInfoError::Foreign { port: o.port })
            }
            _ => None,
        };
        let Some(line) = text.strip_suffix(b"\n") else {
            // Complete JSON whose newline is not written yet, or JSON cut short: incomplete.
            return Err(match serde_json::from_slice::<ServerInfo>(text) {
                Ok(_) => ServerInfoError::Incomplete,
                Err(e) if e.is_eof() => ServerInfoError::Incomplete,
                Err(e) => foreign(text).unwrap_or_else(|| ServerInfoError::Invalid(e.to_string())),
            });
        };
        serde_json::from_slice(line)
            .map_err(|e| foreign(line).unwrap_or_else(|| ServerInfoError::Invalid(e.to_string())))
    }

    /// Reads and parses the connection file at `path` (at most 64 KiB of it).
    ///
    /// # Errors
    ///
    /// [`ServerInfoError::Io`] if it cannot be read, else as [`ServerInfo::parse`].
    pub fn read(path: &Path) -> Result<Self, ServerInfoError> {
        let file = File::open(path).map_err(ServerInfoError::Io)?;
        Self::parse(&read_bounded(file).map_err(ServerInfoError::Io)?)
    }

    /// The file's content for this info: its JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing strings and integers into a Vec cannot fail (serde_json fails only for
        // maps with non-string keys, or when the writer fails); the fallback is unreachable.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Reads at most [`MAX_INFO_LEN`] bytes.
fn read_bounded(file: impl Read) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    file.take(MAX_INFO_LEN).read_to_end(&mut text)?;
    Ok(text)
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted (or still pending after a
/// second: something listens, with a full backlog). Refused means nobody listens.
fn port_accepts(port: u16) -> bool {
    if port == 0 {
        return false;
    }
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::TimedOut,
    }
}

/// The connection file of `name` in `dir`.
pub fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("upcache-{name}.json"))
}

/// Whether `file` is the file that `path` names now.
fn is_current(file: &File, path: &Path) -> io::Result<bool> {
    let a = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(b) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The result of one look at the connection file.
#[derive(Debug)]
pub enum Look {
    /// We created and locked the file: start a server with it.
    Won(Won),
    /// A live owner published this.
    Found(ServerInfo),
    /// A live owner has not published yet (or the file holds something unreadable).
    NotReady(&'static str),
    /// The file was stale or vanished; look again at once.
    Retry,
    /// The file is another program's `{"port": N}` (no lock, no token) and that port accepts
    /// connections: a live foreign server owns the name. The file was left alone.
    Foreign {
        /// The port it names.
        port: u16,
    },
}

/// A won election: the locked, empty connection file.
#[derive(Debug)]
pub struct Won {
    file: File,
    path: PathBuf,
}

impl Won {
    /// The locked file's descriptor, for the server to inherit.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// The server took over the lock: close our descriptor without unlocking.
    pub fn hand_over(self) {
        drop(self.file);
    }

    /// This process serves the name itself: the locked file becomes the server's.
    pub fn into_owned(self) -> io::Result<OwnedFile> {
        OwnedFile::adopt(self.file, self.path)
    }

    /// Starting the server failed: remove the file (we hold its lock) and release it.
    pub fn abandon(self) {
        if is_current(&self.file, &self.path).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Looks at the connection file once, as described in the module docs.
pub fn look(path: &Path) -> io::Result<Look> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path);
    match created {
        Ok(file) => {
            let mut lock = fd_lock::RwLock::new(file);
            let locked = match lock.try_write() {
                Ok(guard) => {
                    // Keep the lock past the guard: it now belongs to the winner and then to
                    // the server.
                    std::mem::forget(guard);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) => return Err(e),
            };
            let file = lock.into_inner();
            if !locked || !is_current(&file, path)? {
                // Another opener judged our fresh file stale and removed it, or is about to.
                return Ok(Look::Retry);
            }
            Ok(Look::Won(Won {
                file,
                path: path.to_owned(),
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => look_existing(path),
        Err(e) => Err(e),
    }
}

/// Looks at the connection file once without taking part in the election: `None` when there is
/// no file (nobody serves the name, and nothing is created). A stale file is removed as
/// [`look`] does, and gives [`Look::Retry`]; never [`Look::Won`].
pub fn look_joining(path: &Path) -> io::Result<Option<Look>> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => look_existing(path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn look_existing(path: &Path) -> io::Result<Look> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Look::Retry),
        Err(e) => return Err(e),
    };
    let mut lock = fd_lock::RwLock::new(file);
    let held_elsewhere = match lock.try_write() {
        Ok(guard) => {
            // Nobody holds the lock: whatever wrote this file is gone, unless it is another
            // program's file (the Python original uses the same name and takes no lock).
            if let Err(ServerInfoError::Foreign { port }) =
                ServerInfo::parse(&read_bounded(&*guard)?)
            {
                if port_accepts(port) {
                    return Ok(Look::Foreign { port });
                }
            }
            if is_current(&guard, path)? {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => return Err(e),
    };
    if !held_elsewhere {
        return Ok(Look::Retry);
    }
    Ok(match ServerInfo::parse(&read_bounded(lock.into_inner())?) {
        Ok(info) => Look::Found(info),
        Err(ServerInfoError::Incomplete) => Look::NotReady("the server is starting"),
        Err(_) => Look::NotReady("the connection file does not hold a server address"),
    })
}

/// The connection file as the server holds it: locked for the server's whole life.
#[derive(Debug)]
pub struct OwnedFile {
    file: File,
    path: PathBuf,
}

impl OwnedFile {
    /// Takes the inherited, locked descriptor `file` for `path`. Re-taking the lock on the same
    /// open file description succeeds at once; failing means the description is not ours.
    pub fn adopt(file: File, path: PathBuf) -> io::Result<Self> {
        let mut lock = fd_lock::RwLock::new(file);
        std::mem::forget(lock.try_write()?);
        Ok(OwnedFile {
            file: lock.into_inner(),
            path,
        })
    }

    /// Writes the server's address, as one JSON line.
    pub fn publish(&mut self, info: &ServerInfo) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.set_len(0)?;
        self.file.write_all_at(&info.to_line(), 0)
    }

    /// Removes the file if the path still names it (it always should: only the lock holder
    /// may remove it, and that is us).
    pub fn remove(&self) {
        if is_current(&self.file, &self.path).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Exponential backoff for polling a file that is being written: 50 µs doubling to 5 ms.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_micros(50),
        }
    }
}

impl Backoff {
    /// Sleeps for the next step, never past `deadline`.
    pub fn sleep(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(self.next.min(left));
        self.next = (self.next * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_partial_files_are_not_ready() {
        let ep = Endpoint::Tcp("127.0.0.1:4000".parse().unwrap());
        let info = ServerInfo::new(&ep, "abc", 10);
        let line = info.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(ServerInfo::parse(&line).unwrap(), info);
        assert_eq!(info.endpoint(), Some(ep));
        for cut in 0..line.len() {
            assert!(
                matches!(
                    ServerInfo::parse(&line[..cut]),
                    Err(ServerInfoError::Incomplete)
                ),
                "cut at {cut}"
            );
        }
        for garbage in [&b"garbage\n"[..], b"garbage", b"{\"port\": x"] {
            assert!(matches!(
                ServerInfo::parse(garbage),
                Err(ServerInfoError::Invalid(_))
            ));
        }
        let ep = Endpoint::Unix("/tmp/x.sock".into());
        assert_eq!(ServerInfo::new(&ep, "t", 10).endpoint(), Some(ep));
    }

    #[test]
    fn max_memory_round_trips_and_a_file_without_it_means_none() {
        let ep = Endpoint::Tcp("127.0.0.1:4000".parse().unwrap());
        let mut info = ServerInfo::new(&ep, "abc", 10);
        info.max_memory = 64 << 20;
        assert_eq!(ServerInfo::parse(&info.to_line()).unwrap(), info);
        let old = br#"{"port":4000,"host":"127.0.0.1","pid":1,"version":1,"token":"abc","transport":"tcp","address":"tcp://127.0.0.1:4000","max_value":10}
"#;
        let parsed = ServerInfo::parse(old).unwrap();
        assert_eq!((parsed.max_memory, parsed.max_value), (0, 10));
    }

    #[test]
    fn the_originals_file_is_foreign_with_or_without_newline() {
        for text in [
            &b"{\"port\": 4242}"[..],
            b"{\"port\": 4242}\n",
            b"{\"port\":4242,\"x\":1}",
        ] {
            assert!(
                matches!(
                    ServerInfo::parse(text),
                    Err(ServerInfoError::Foreign { port: 4242 })
                ),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Ours but incomplete or damaged: not foreign.
        for text in [
            &b"{\"port\": 4242, \"token\": \"t\"}\n"[..],
            b"{\"port\": 4242, \"version\": 1}\n",
            b"{\"port\": 70000}\n",
        ] {
            assert!(
                matches!(ServerInfo::parse(text), Err(ServerInfoError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn read_reports_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = ServerInfo::read(&dir.path().join("none.json")).unwrap_err();
        assert!(matches!(e, ServerInfoError::Io(_)), "{e}");
        assert!(e.to_string().contains("could not read"), "{e}");
    }

    #[test]
    fn a_foreign_file_with_a_live_port_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "py");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let text = format!("{{\"port\": {port}}}");
        std::fs::write(&path, &text).unwrap();
        for _ in 0..2 {
            assert!(matches!(look(&path).unwrap(), Look::Foreign { port: p } if p == port));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        // Its server stopped: the port refuses, and the file is stale like any other.
        drop(listener);
        assert!(matches!(look(&path).unwrap(), Look::Retry));
        assert!(!path.exists());
        assert!(matches!(look(&path).unwrap(), Look::Won(_)));
    }

    #[test]
    fn one_winner_then_found_then_stale_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "t");
        let Look::Won(won) = look(&path).unwrap() else {
            panic!("first look wins")
        };
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Locked and empty: not ready.
        assert!(matches!(look(&path).unwrap(), Look::NotReady(_)));
        let mut owned = OwnedFile::adopt(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap(),
            path.clone(),
        )
        .unwrap();
        // Publish through the winner's own descriptor (as the server does after inheriting).
        let dup = won.file.try_clone().unwrap();
        owned.file = dup;
        let info = ServerInfo::new(&Endpoint::Tcp("127.0.0.1:1".parse().unwrap()), "tok", 10);
        owned.publish(&info).unwrap();
        assert!(matches!(look(&path).unwrap(), Look::Found(i) if i == info));
        // The owner goes away (every descriptor closed): the next look removes the file.
        drop(owned);
        won.hand_over();
        assert!(matches!(look(&path).unwrap(), Look::Retry));
        assert!(!path.exists());
        assert!(matches!(look(&path).unwrap(), Look::Won(_)));
    }

    #[test]
    fn joining_never_creates_and_clears_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "j");
        assert!(look_joining(&path).unwrap().is_none());
        assert!(!path.exists(), "a joining look creates nothing");
        let Look::Won(won) = look(&path).unwrap() else {
            panic!("first look wins")
        };
        // Locked and empty: a server is starting.
        assert!(matches!(
            look_joining(&path).unwrap(),
            Some(Look::NotReady(_))
        ));
        // The winner died without starting a server: stale, removed, then absent.
        drop(won);
        assert!(matches!(look_joining(&path).unwrap(), Some(Look::Retry)));
        assert!(look_joining(&path).unwrap().is_none());
    }

    #[test]
    fn garbage_file_without_owner_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "g");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(look(&path).unwrap(), Look::Retry));
        assert!(matches!(look(&path).unwrap(), Look::Won(_)));
    }
}
