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

/// What the server writes into the connection file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// TCP port (0 for the Unix transport), as in the original's `{"port": N}`.
    pub port: u16,
    /// Always 127.0.0.1.
    pub host: String,
    /// The server's process id.
    pub pid: u32,
    /// The protocol version it speaks.
    pub version: u64,
    /// The handshake token.
    pub token: String,
    /// The transport's name: `"tcp"` or `"unix"`.
    pub transport: String,
    /// Where to connect, as an endpoint address: `tcp://127.0.0.1:PORT`, `unix:///PATH`.
    pub address: String,
    /// The longest value the server accepts.
    pub max_value: u32,
}

impl ServerInfo {
    /// The info for a server at `endpoint`.
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
        }
    }

    /// Where to connect.
    pub fn endpoint(&self) -> Option<Endpoint> {
        Endpoint::parse(&self.address)
    }

    /// Parses a whole connection file. `None` for anything incomplete or not ours.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = text.strip_suffix(b"\n")?;
        serde_json::from_slice(text).ok()
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

fn look_existing(path: &Path) -> io::Result<Look> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Look::Retry),
        Err(e) => return Err(e),
    };
    let mut lock = fd_lock::RwLock::new(file);
    let held_elsewhere = match lock.try_write() {
        Ok(guard) => {
            // Nobody holds the lock: whatever wrote this file is gone.
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
    let mut text = Vec::new();
    // Bound what a hostile file can make us read.
    lock.into_inner().take(64 * 1024).read_to_end(&mut text)?;
    Ok(match ServerInfo::parse(&text) {
        Some(info) => Look::Found(info),
        None if text.is_empty() => Look::NotReady("the server is starting"),
        None => Look::NotReady("the connection file does not hold a server address"),
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
        let mut line = serde_json::to_vec(info).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.set_len(0)?;
        self.file.write_all_at(&line, 0)
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
        let mut line = serde_json::to_vec(&info).unwrap();
        line.push(b'\n');
        assert_eq!(ServerInfo::parse(&line), Some(info.clone()));
        assert_eq!(info.endpoint(), Some(ep));
        for cut in 0..line.len() {
            assert_eq!(ServerInfo::parse(&line[..cut]), None);
        }
        assert_eq!(ServerInfo::parse(b"garbage\n"), None);
        let ep = Endpoint::Unix("/tmp/x.sock".into());
        assert_eq!(ServerInfo::new(&ep, "t", 10).endpoint(), Some(ep));
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
    fn garbage_file_without_owner_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "g");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(look(&path).unwrap(), Look::Retry));
        assert!(matches!(look(&path).unwrap(), Look::Won(_)));
    }
}
