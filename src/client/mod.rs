//! The client: [`UpCache`], its [`Builder`], [`Pipeline`]s and [`Subscription`]s.

#[cfg(feature = "tokio")]
pub mod aio;
mod conn;
mod events;
mod lease;
mod pipeline;
mod scan;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::{Duration, Instant};

pub use events::{Event, EventKind, Subscription, SUBSCRIPTION_QUEUE};
use lease::lease_ms;
pub use lease::{ComputeError, DEFAULT_LEASE_TIMEOUT};
pub use pipeline::{Pipeline, PipelineReply};
pub use scan::{Items, Keys};

use crate::election::{self, Backoff, Look};
use crate::error::{validate_name, Error, Result};
use crate::launch::{self, ServerSpec};
use crate::protocol::{self, Limits, Request};
use crate::stats::ServerStats;
use conn::{Answer, Conn, ConnectError, Peer};
use events::Events;

/// Incremented in the child of every `fork`, so a handle notices it is in a new process.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::SeqCst)
}

fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic, which is fork-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// Options for opening a cache; get one from [`UpCache::builder`].
///
/// The server options (`auto_kill`, `linger`, `transport`, `max_value_len`) take effect only
/// when this open starts the server; an opener that joins a running server uses that server's
/// settings, whatever it asked for (the connection file says which).
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    dir: Option<PathBuf>,
    auto_kill: bool,
    linger: Duration,
    transport: crate::TransportKind,
    max_value_len: u32,
    max_memory: u64,
    open_timeout: Duration,
    request_timeout: Option<Duration>,
    server_exe: Option<PathBuf>,
    join_only: bool,
    lease_timeout: Duration,
}

impl Builder {
    /// The directory of the connection file (default: the system temp dir).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// Whether the server exits once no client has been connected for `linger` (default true).
    pub fn auto_kill(mut self, on: bool) -> Self {
        self.auto_kill = on;
        self
    }
    /// How long an idle server waits for a new client before it exits (default 1 s).
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }
    /// The transport a new server listens on (default [`TransportKind::Tcp`] on 127.0.0.1;
    /// [`TransportKind::Unix`] for a Unix socket beside the connection file).
    ///
    /// [`TransportKind::Tcp`]: crate::TransportKind::Tcp
    /// [`TransportKind::Unix`]: crate::TransportKind::Unix
    pub fn transport(mut self, t: crate::TransportKind) -> Self {
        self.transport = t;
        self
    }
    /// The longest value a new server accepts (default 64 MiB, at most
    /// [`protocol::MAX_VALUE_LEN_CAP`], 4 GiB − 320 KiB − 8 bytes, so that every reply fits
    /// the frame format). [`Builder::open`] fails with [`Error::InvalidOption`] above the cap.
    pub fn max_value_len(mut self, n: u32) -> Self {
        self.max_value_len = n;
        self
    }
    /// The memory budget of a new server, in bytes (default 0: no limit). The server counts
    /// everything its store holds per key (records with their segments' garbage and unused
    /// room, slots, hash index, the TTL wheel, the eviction policy's ghost table) and, when
    /// a write takes it over the budget, expires due keys first, then evicts by S3-FIFO (see
    /// README); subscribers learn of each eviction as an [`EventKind::Evicted`] event. A
    /// value whose record would take more than half the budget fails with
    /// [`Error::OverBudget`], and nothing is evicted for it. The connection file records the
    /// budget ([`ServerInfo::max_memory`](crate::ServerInfo::max_memory)).
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }
    /// How long a call waits for the server to take its request or send its reply before it
    /// fails with [`Error::Timeout`] (default 30 s; `None`: for ever). A live but stuck server
    /// (stopped, or overloaded past this) then never hangs a caller. Waits and subscriptions
    /// are not limited by it: `wait_for` has its own timeout.
    pub fn request_timeout(mut self, d: Option<Duration>) -> Self {
        self.request_timeout = d;
        self
    }
    /// How long a lease of [`UpCache::get_or_compute`] lasts (default 30 s): if the caller
    /// that computes a missing value neither stores it nor fails within this time, the lease
    /// passes to the next caller waiting for that key, who then computes too. Each call sends
    /// it with its request, so handles with different settings share one server. Rounded up
    /// to whole ms; from 1 ms to 2⁴⁰ − 1 ms ([`Builder::open`] fails with
    /// [`Error::InvalidOption`] outside).
    pub fn lease_timeout(mut self, d: Duration) -> Self {
        self.lease_timeout = d;
        self
    }
    /// How long opening may take before it fails with [`Error::OpenTimedOut`] (default 10 s).
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.open_timeout = d;
        self
    }

    /// The program to run as the server when this open starts one (default: the environment
    /// variable `UPCACHE_SERVER` if set, else this program's own executable).
    ///
    /// It is run as `PATH serve NAME --dir DIR` with upcache's server request in its
    /// environment (PROTOCOL.md §8), so it must be the `upcache` command (this crate's binary,
    /// `cargo install --path .`) or another program that links upcache (with `auto-server`, or calling
    /// [`serve_if_requested`](crate::serve_if_requested) first in `main`). A path with a `/` is
    /// taken relative to the current directory; a bare name is looked up in `PATH`. This is how
    /// a program that cannot serve itself (built without `auto-server`, or a library loaded by
    /// another executable) starts servers. If the program cannot be started (missing, not
    /// executable) or exits without serving, [`Builder::open`] fails at once with
    /// [`Error::ServerStart`] naming it.
    pub fn server_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.server_exe = Some(path.into());
        self
    }
    /// Only join a running server, never start one (default false): when no server runs for
    /// the name, [`Builder::open`] fails at once with [`Error::NoServer`] (a server that is
    /// starting is waited for, up to [`Builder::open_timeout`]). Nothing is created in the
    /// directory; a stale connection file is removed as by any open.
    pub fn join_only(mut self, on: bool) -> Self {
        self.join_only = on;
        self
    }

    /// Makes sure a server runs for the name, without connecting to it: joins the election
    /// and, if this call wins it, starts a server with this builder's options, as
    /// [`Builder::open`] would. Returns the connection file's content ([`ServerInfo`]) of the
    /// server that owns the name, whether started now or before. This is `upcache serve
    /// --detach`.
    ///
    /// A new server waits at least 5 s for its first client (longer with a longer `linger`);
    /// a server found running may be about to exit if it has no clients and `auto_kill`.
    ///
    /// [`ServerInfo`]: crate::ServerInfo
    ///
    /// # Errors
    ///
    /// As [`Builder::open`], except those of connecting ([`Error::Handshake`],
    /// [`Error::VersionMismatch`]).
    pub fn start_server(self) -> Result<crate::ServerInfo> {
        let (spec, deadline) = self.spec()?;
        launch::ensure_server(&spec, deadline)
    }

    /// Runs the cache's server in the calling thread: wins the election, serves until the
    /// server stops (idle past `linger` with `auto_kill`, `SHUTDOWN`, or SIGTERM, SIGINT or
    /// SIGHUP, which are blocked in the calling thread and read by the server), then removes
    /// the connection file and returns. `on_ready` is called once, when the server listens and
    /// its connection file is written. This is `upcache serve` in the foreground.
    ///
    /// In a process with other threads, those signals reach the server only if every other
    /// thread blocks them too; otherwise their default action ends the process (the next
    /// opener then removes the stale connection file).
    ///
    /// # Errors
    ///
    /// [`Error::ServerStart`] if another server owns the name (or one is starting and does
    /// not finish within the open timeout), [`Error::ForeignServer`], [`Error::InvalidName`],
    /// [`Error::InvalidOption`], and [`Error::Io`] if the connection file cannot be used or
    /// the server fails.
    pub fn serve(self, on_ready: impl FnOnce(&crate::ServerInfo)) -> Result<()> {
        let (spec, deadline) = self.spec()?;
        launch::serve_here(&spec, deadline, on_ready)
    }

    /// Checks the name and options; the server spec this builder asks for, and the deadline.
    fn spec(&self) -> Result<(ServerSpec, Instant)> {
        validate_name(&self.name)?;
        Limits::new(self.max_value_len).map_err(|e| Error::InvalidOption {
            option: "max_value_len",
            detail: e.to_string(),
        })?;
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut spec = ServerSpec::new(
            dir,
            self.name.clone(),
            self.transport,
            self.auto_kill,
            self.linger,
            self.max_value_len,
        );
        spec.max_memory = self.max_memory;
        spec.exe = self.server_exe.clone();
        Ok((spec, Instant::now() + self.open_timeout))
    }

    /// Opens the cache: joins its server, or wins the election and starts one.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidName`] for a name that is not 1–128 characters of `[A-Za-z0-9_-]`.
    /// - [`Error::InvalidOption`] for a `max_value_len` over
    ///   [`MAX_VALUE_LEN_CAP`](crate::protocol::MAX_VALUE_LEN_CAP) or a `lease_timeout` out of
    ///   range, before any election.
    /// - [`Error::OpenTimedOut`] when no working server was reached within
    ///   [`Builder::open_timeout`] (the error says what was last seen).
    /// - [`Error::VersionMismatch`] when the running server speaks another protocol version,
    ///   [`Error::Handshake`] when it refuses this client's token or is not an upcache server.
    /// - [`Error::NoServer`] with [`Builder::join_only`] when no server runs.
    /// - [`Error::ServerStart`] when this open won the election and the server program could
    ///   not be started or exited without serving (see [`Builder::server_exe`]).
    /// - [`Error::Io`] when the connection file cannot be created or read.
    pub fn open(self) -> Result<UpCache> {
        let (dir, path, deadline) = self.prepare()?;
        let (peer, conn) = self.elect_and_connect(&dir, &path, deadline, Conn::open)?;
        let session = Session {
            fork_gen: fork_generation(),
            conn,
            events: Mutex::new(None),
        };
        Ok(UpCache {
            inner: Arc::new(Inner {
                peer,
                path,
                session: RwLock::new(Arc::new(session)),
            }),
        })
    }

    /// Checks the options; returns the connection file's directory and path, and the deadline
    /// of the open.
    fn prepare(&self) -> Result<(PathBuf, PathBuf, Instant)> {
        validate_name(&self.name)?;
        Limits::new(self.max_value_len).map_err(|e| Error::InvalidOption {
            option: "max_value_len",
            detail: e.to_string(),
        })?;
        lease_ms(self.lease_timeout)?;
        watch_forks();
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        let path = election::file_path(&dir, &self.name);
        Ok((dir, path, Instant::now() + self.open_timeout))
    }

    /// Elects or finds the server and connects to it with `connect` (blocking: the async
    /// client runs this on tokio's blocking pool).
    fn elect_and_connect<C>(
        &self,
        dir: &Path,
        path: &Path,
        deadline: Instant,
        connect: impl Fn(&Peer) -> std::result::Result<C, ConnectError>,
    ) -> Result<(Peer, C)> {
        let mut backoff = Backoff::default();
        let mut last = String::from("no attempt finished");
        loop {
            if Instant::now() >= deadline {
                return Err(Error::OpenTimedOut {
                    name: self.name.clone(),
                    path: path.to_owned(),
                    detail: last,
                });
            }
            let look = if self.join_only {
                match election::look_joining(path) {
                    Ok(Some(look)) => look,
                    Ok(None) => {
                        return Err(Error::NoServer {
                            name: self.name.clone(),
                            path: path.to_owned(),
                        })
                    }
                    Err(e) => return Err(Error::io("using the connection file")(e)),
                }
            } else {
                election::look(path).map_err(Error::io("using the connection file"))?
            };
            let info = match look {
                Look::Won(won) => {
                    let mut spec = ServerSpec::new(
                        dir.to_owned(),
                        self.name.clone(),
                        self.transport,
                        self.auto_kill,
                        self.linger,
                        self.max_value_len,
                    );
                    spec.max_memory = self.max_memory;
                    spec.exe = self.server_exe.clone();
                    match launch::start(won, spec, deadline) {
                        Ok(info) => info,
                        Err(e) if e.is_final() => {
                            return Err(Error::ServerStart {
                                name: self.name.clone(),
                                detail: e.to_string(),
                            })
                        }
                        Err(e) => {
                            last = e.to_string();
                            continue;
                        }
                    }
                }
                Look::Foreign { port } => {
                    return Err(Error::ForeignServer {
                        name: self.name.clone(),
                        path: path.to_owned(),
                        port,
                    })
                }
                Look::Found(info) => info,
                Look::NotReady(why) => {
                    last = why.into();
                    backoff.sleep(deadline);
                    continue;
                }
                Look::Retry => continue,
            };
            if info.version != protocol::VERSION {
                return Err(Error::VersionMismatch {
                    server: info.version,
                    client: protocol::VERSION,
                });
            }
            let Some(endpoint) = info.endpoint() else {
                last = "the connection file names no usable address".into();
                backoff.sleep(deadline);
                continue;
            };
            let peer = Peer {
                name: self.name.clone(),
                endpoint,
                token: info.token,
                limits: Limits {
                    max_key: protocol::MAX_KEY_LEN,
                    max_value: info.max_value,
                },
                request_timeout: self.request_timeout,
                lease_timeout_ms: lease_ms(self.lease_timeout)?,
            };
            match connect(&peer) {
                Ok(conn) => return Ok((peer, conn)),
                Err(ConnectError::Fatal(e)) => return Err(e),
                Err(ConnectError::Retry(why)) => {
                    // The server is exiting (idle) or not listening yet: look again.
                    last = why;
                    backoff.sleep(deadline);
                }
            }
        }
    }
}

/// A process's connections to a server. Replaced after a fork.
struct Session {
    fork_gen: u64,
    conn: Conn,
    events: Mutex<Option<Arc<Events>>>,
}

struct Inner {
    peer: Peer,
    path: PathBuf,
    session: RwLock<Arc<Session>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let s = self.session.get_mut().unwrap_or_else(|p| p.into_inner());
        if s.fork_gen != fork_generation() {
            // Forked child: the connection's socket is shared with the parent and its thread
            // does not exist here. Leave both alone; the process's exit closes the descriptors.
            std::mem::forget(Arc::clone(s));
        }
    }
}

/// A handle to a shared cache.
///
/// Open one with [`UpCache::open`] or [`UpCache::builder`]. The handle is `Send + Sync + Clone`:
/// clones share one connection, and any number of threads may call it at once (their requests
/// are in flight together on that connection). Dropping the last clone, or [`UpCache::close`],
/// closes the connection.
///
/// Keys and values are raw bytes; empty keys and values are allowed. A key is at most 64 KiB
/// and a value at most the server's limit (64 MiB by default, see
/// [`Builder::max_value_len`]); longer ones fail with [`Error::KeyTooLarge`] or
/// [`Error::ValueTooLarge`] before anything is sent.
///
/// # When the server dies
///
/// Every pending and later call on the handle fails with [`Error::ServerGone`] as soon as the
/// kernel reports the connection closed (at once when the server process dies), never hanging
/// and never spinning. The data is gone with the server. Open the cache again to elect a new
/// server.
///
/// # After `fork`
///
/// A child process forked after the handle was opened does not use the parent's connection:
/// its first call opens a new connection to the same server.
///
/// # Errors
///
/// Besides the errors each method names, every call that talks to the server can fail with:
///
/// - [`Error::ServerGone`]: the server died or shut down; reopen the cache.
/// - [`Error::Timeout`]: the server did not answer within [`Builder::request_timeout`]; the
///   handle is closed, reopen the cache.
/// - [`Error::Protocol`] or [`Error::UnexpectedReply`]: the server's reply made no sense (a
///   server of another version, or a bug); the first closes the connection.
/// - After a `fork`, the child's first call connects again, and can fail as
///   [`Builder::open`] does ([`Error::Handshake`], [`Error::VersionMismatch`]).
#[derive(Clone)]
pub struct UpCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpCache")
            .field("name", &self.inner.peer.name)
            .field("endpoint", &self.inner.peer.endpoint)
            .finish()
    }
}

/// How the client takes a reply (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn answer_of(r: &protocol::Reply<'_>) -> impl std::fmt::Debug {
    Answer::from_reply(r)
}

/// How long a key has left ([`UpCache::ttl`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// There is no such key.
    Missing,
    /// The key has no TTL.
    Forever,
    /// The key expires after this long (whole ms, at least 1).
    Expires(Duration),
}

impl Ttl {
    /// The TTL a `TTL` reply says, or the reply back if it is not one.
    pub(crate) fn from_answer(a: Answer) -> std::result::Result<Ttl, Answer> {
        match a {
            Answer::Nil => Ok(Ttl::Missing),
            Answer::Uint(crate::protocol::NO_TTL) => Ok(Ttl::Forever),
            Answer::Uint(ms) => Ok(Ttl::Expires(Duration::from_millis(ms))),
            a => Err(a),
        }
    }
}

/// A TTL in whole ms, rounded up (a key never expires early); zero and TTLs over
/// [`MAX_TTL_MS`](crate::protocol::MAX_TTL_MS) are refused.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64> {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    match u64::try_from(ms) {
        Ok(ms @ 1..=crate::protocol::MAX_TTL_MS) => Ok(ms),
        _ => Err(Error::InvalidTtl { ttl }),
    }
}

pub(crate) fn unexpected(peer: &Peer, a: Answer) -> Error {
    Error::UnexpectedReply {
        name: peer.name.clone(),
        detail: format!("unexpected reply {a:?}"),
    }
}

// A handle is shared between threads and stored in statics; subscriptions move to the thread
// that reads them.
const _: () = {
    const fn shared<T: Send + Sync + Clone + 'static>() {}
    const fn sent<T: Send + 'static>() {}
    shared::<UpCache>();
    shared::<crate::ServerStats>();
    sent::<Subscription>();
    sent::<Event>();
};

impl UpCache {
    /// Opens the cache `name` with default options: joins its server or starts one.
    ///
    /// ```no_run
    /// let cache = upcache::UpCache::open("TVHosts")?;
    /// cache.set(b"Light Entertainment Awards", b"Dickie Attenborough")?;
    /// assert_eq!(cache.get(b"Light Entertainment Awards")?.as_deref(), Some(&b"Dickie Attenborough"[..]));
    /// # Ok::<(), upcache::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Builder::open`].
    pub fn open(name: &str) -> Result<Self> {
        Self::builder(name).open()
    }

    /// Options for opening `name`.
    pub fn builder(name: &str) -> Builder {
        Builder {
            name: name.to_owned(),
            dir: None,
            auto_kill: true,
            linger: Duration::from_secs(1),
            transport: crate::TransportKind::Tcp,
            max_value_len: protocol::DEFAULT_MAX_VALUE_LEN,
            max_memory: 0,
            open_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            server_exe: None,
            join_only: false,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.peer.name
    }

    /// The connection file.
    pub fn connection_file(&self) -> &Path {
        &self.inner.path
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &upcache_transports::Endpoint {
        &self.inner.peer.endpoint
    }

    fn session(&self) -> Result<Arc<Session>> {
        let gen = fork_generation();
        {
            let s = self.inner.session.read().unwrap_or_else(|p| p.into_inner());
            if s.fork_gen == gen {
                return Ok(Arc::clone(&s));
            }
        }
        let mut s = self
            .inner
            .session
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if s.fork_gen != gen {
            let conn = Conn::open(&self.inner.peer).map_err(|e| match e {
                ConnectError::Fatal(e) => e,
                ConnectError::Retry(_) => self.inner.peer.gone(),
            })?;
            let new = Arc::new(Session {
                fork_gen: gen,
                conn,
                events: Mutex::new(None),
            });
            // The old session belongs to the parent process: never drop it here.
            std::mem::forget(std::mem::replace(&mut *s, new));
        }
        Ok(Arc::clone(&s))
    }

    fn events(&self) -> Result<Arc<Events>> {
        let s = self.session()?;
        let mut ev = s.events.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = ev.as_ref() {
            if e.is_ended() {
                return Err(self.inner.peer.gone());
            }
            return Ok(Arc::clone(e));
        }
        let e = Events::open(&self.inner.peer, s.fork_gen).map_err(|e| match e {
            ConnectError::Fatal(e) => e,
            ConnectError::Retry(_) => self.inner.peer.gone(),
        })?;
        *ev = Some(Arc::clone(&e));
        Ok(e)
    }

    fn call(&self, req: Request<'_>) -> Result<Answer> {
        let a = self.session()?.conn.call(&req)?;
        match a {
            Answer::Failed(code, arg, msg) => Err(self.inner.peer.failed(code, arg, msg)),
            a => Ok(a),
        }
    }

    fn check(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.peer.check(key, value)
    }

    /// The value of `key`, or `None` if it is missing (an empty value is `Some(vec![])`).
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of [every call](UpCache#errors).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.check(key, &[])?;
        match self.call(Request::Get { key })? {
            Answer::Value(v) => Ok(Some(v)),
            Answer::Nil => Ok(None),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Stores `value` under `key`. An existing key keeps its place in [`UpCache::keys`]
    /// order. Every set is an event (subscribers and waiters see it), even if the value did not
    /// change.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] or [`Error::ValueTooLarge`] before anything is sent, and those of
    /// [every call](UpCache#errors).
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check(key, value)?;
        self.expect_done(Request::Set { key, value })
    }

    fn expect_done(&self, req: Request<'_>) -> Result<()> {
        match self.call(req)? {
            Answer::Done => Ok(()),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    fn expect_bool(&self, req: Request<'_>) -> Result<bool> {
        match self.call(req)? {
            Answer::Bool(b) => Ok(b),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Stores `value` under `key` and gives the key a TTL: it expires `ttl` from when the
    /// server applies this (rounded up to whole ms), on the server's monotonic clock. Then
    /// it is removed, and subscribers get [`EventKind::Expired`](crate::EventKind::Expired);
    /// until then every read sees it, and from that millisecond on none does.
    ///
    /// TTL rule: a plain [`UpCache::set`] and [`UpCache::incr`] keep a key's TTL; `set_with_ttl`
    /// and [`UpCache::expire`] replace it; [`UpCache::persist`] removes it. A key that expired
    /// and is stored again is a new key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] for a TTL of zero or over [`MAX_TTL_MS`](crate::protocol::MAX_TTL_MS)
    /// ms, [`Error::KeyTooLarge`] or [`Error::ValueTooLarge`], all before anything is sent, and
    /// those of [every call](UpCache#errors).
    pub fn set_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check(key, value)?;
        let ttl_ms = ttl_ms(ttl)?;
        self.expect_done(Request::SetTtl { key, value, ttl_ms })
    }

    /// Gives an existing key a TTL of `ttl` (replacing any); false if there is no such key.
    /// Not an event: the value did not change.
    ///
    /// # Errors
    ///
    /// As [`UpCache::set_with_ttl`].
    pub fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        let key = key.as_ref();
        self.check(key, &[])?;
        let ttl_ms = ttl_ms(ttl)?;
        self.expect_bool(Request::Expire { key, ttl_ms })
    }

    /// Takes a key's TTL away; false if there is no such key or it had no TTL.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of [every call](UpCache#errors).
    pub fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.check(key, &[])?;
        self.expect_bool(Request::Persist { key })
    }

    /// How long `key` has left: [`Ttl::Missing`], [`Ttl::Forever`] (no TTL), or
    /// [`Ttl::Expires`] with the time left (at least 1 ms; the server counts whole ms).
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of [every call](UpCache#errors).
    pub fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        let key = key.as_ref();
        self.check(key, &[])?;
        let a = self.call(Request::Ttl { key })?;
        Ttl::from_answer(a).map_err(|a| unexpected(&self.inner.peer, a))
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of [every call](UpCache#errors).
    pub fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.check(key, &[])?;
        self.expect_bool(Request::Exists { key })
    }

    /// Removes `key`; true only if it existed (only then is it an event). The original's `drop`.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of [every call](UpCache#errors).
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.check(key, &[])?;
        self.expect_bool(Request::Remove { key })
    }

    /// Adds 1 to the value of `key`; see [`UpCache::incr_by`].
    ///
    /// # Errors
    ///
    /// As [`UpCache::incr_by`].
    pub fn incr(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        self.incr_by(key, 1)
    }

    /// Subtracts 1 from the value of `key`; see [`UpCache::incr_by`].
    ///
    /// # Errors
    ///
    /// As [`UpCache::incr_by`].
    pub fn decr(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        self.incr_by(key, -1)
    }

    /// Adds `delta` to the value of `key` and returns the new value, atomically across all
    /// clients.
    ///
    /// # Semantics
    ///
    /// - Values are stored in ASCII decimal: after `incr`, [`UpCache::get`] returns `b"42"`.
    /// - A missing key counts as 0 (so the first `incr` returns 1 and the first `decr` −1).
    /// - A value that is not an optional sign followed by decimal digits fitting an i64 fails
    ///   with [`Error::NotAnInteger`]; a result outside the i64 range fails with
    ///   [`Error::Overflow`]. In both cases the stored value is unchanged (the original silently
    ///   reset it).
    ///
    /// # Errors
    ///
    /// [`Error::NotAnInteger`] and [`Error::Overflow`] as above (the handle stays usable),
    /// [`Error::KeyTooLarge`] before anything is sent, and those of
    /// [every call](UpCache#errors).
    pub fn incr_by(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        let key = key.as_ref();
        self.check(key, &[])?;
        match self.call(Request::Incr { key, delta })? {
            Answer::Int(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Removes every key, ends every wait (a `wait_for` for a change returns true, one for a
    /// value returns false), and sends a `Cleared` event to every subscriber.
    ///
    /// # Errors
    ///
    /// Those of [every call](UpCache#errors).
    pub fn clear(&self) -> Result<()> {
        self.expect_done(Request::Clear)
    }

    /// The number of keys.
    ///
    /// # Errors
    ///
    /// Those of [every call](UpCache#errors).
    pub fn count(&self) -> Result<u64> {
        match self.call(Request::Count)? {
            Answer::Uint(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Every key, in the order the keys were first stored (an overwrite keeps a key's place).
    /// Holds every key in memory at once; [`UpCache::keys_iter`] holds one chunk at a time.
    ///
    /// # Consistency
    ///
    /// The server sends the keys in chunks of at most 4096 keys or 256 KiB, so other clients
    /// are served between chunks, and it never copies the whole cache. Keys present for the
    /// whole call are returned exactly once; keys first stored after the call began are not
    /// returned; a key removed during the call is returned only if its chunk was read before
    /// the removal. No key is returned twice.
    ///
    /// # Errors
    ///
    /// Those of [every call](UpCache#errors), for any of the chunks.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.keys_iter().collect()
    }

    /// Every key and value, in [`UpCache::keys`] order and with its consistency; each value
    /// is the one current when its chunk was read. Holds the whole cache in memory at once;
    /// [`UpCache::items_iter`] holds one chunk at a time.
    ///
    /// # Errors
    ///
    /// Those of [every call](UpCache#errors), for any of the chunks.
    pub fn items(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.items_iter().collect()
    }

    /// Every key, as [`UpCache::keys`] returns them (same order, same consistency), fetched
    /// chunk by chunk as the iterator is read: at most one chunk (4096 keys or 256 KiB, or one
    /// longer key) is held at a time, so it serves caches that do not fit twice in memory.
    ///
    /// The enumeration begins when the first key is asked for: "keys first stored after the
    /// call began" means after that first chunk was read. Reading slowly is allowed; the server
    /// keeps no state for an enumeration between chunks. A failed chunk yields one `Err`, after
    /// which the iterator ends.
    ///
    /// ```no_run
    /// let cache = upcache::UpCache::open("TVHosts")?;
    /// for key in cache.keys_iter() {
    ///     println!("{}", String::from_utf8_lossy(&key?));
    /// }
    /// # Ok::<(), upcache::Error>(())
    /// ```
    pub fn keys_iter(&self) -> Keys<'_> {
        Keys::new(self)
    }

    /// Every key and value, as [`UpCache::items`] returns them, fetched chunk by chunk as
    /// [`UpCache::keys_iter`] does. Each value is the one current when its chunk was read.
    pub fn items_iter(&self) -> Items<'_> {
        Items::new(self)
    }

    /// Waits for a change of `key` (`value` None), or for `key` to hold `value`.
    ///
    /// # When it returns
    ///
    /// - `wait_for(key, None, t)`: true at the next change of `key` after the server receives
    ///   the wait: a set (even to the same value), incr/decr, a remove of an existing key, or a
    ///   clear.
    /// - `wait_for(key, Some(v), t)`: true as soon as `key` holds `v`: at once if it already
    ///   does, else at the first set/incr/decr that stores `v`. A clear ends it with false:
    ///   the key no longer holds `v` (the server ends the wait with its own reason, `CLEARED`).
    /// - False when `timeout` passes (measured on the server's monotonic clock; any length
    ///   works, `Some(Duration::ZERO)` just checks) or when the server shuts down.
    /// - `Err(ServerGone)` if the server dies.
    ///
    /// Waits run on the handle's event connection: a blocked `wait_for` never delays other
    /// threads' calls, and concurrent waits never lose a wake-up (each is registered on the
    /// server before any later change is applied).
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] or [`Error::ValueTooLarge`] before anything is sent,
    /// [`Error::ServerGone`] if the server dies while waiting, and those of
    /// [every call](UpCache#errors) (the first wait or subscription of a handle opens its event
    /// connection).
    pub fn wait_for(
        &self,
        key: impl AsRef<[u8]>,
        value: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let key = key.as_ref();
        self.check(key, value.unwrap_or(&[]))?;
        self.events()?.wait(key, value, timeout)
    }

    /// Subscribes to changes of `key`. Returns once the server has registered the
    /// subscription: every change applied after this returns is delivered. See
    /// [`Subscription`] for ordering and what a slow subscriber gets.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] before anything is sent, and those of
    /// [every call](UpCache#errors) (the first wait or subscription of a handle opens its event
    /// connection).
    pub fn subscribe(&self, key: impl AsRef<[u8]>) -> Result<Subscription> {
        let key = key.as_ref();
        self.check(key, &[])?;
        self.events()?.subscribe(Some(key))
    }

    /// Subscribes to changes of every key (and clears).
    ///
    /// # Errors
    ///
    /// As [`UpCache::subscribe`].
    pub fn subscribe_all(&self) -> Result<Subscription> {
        self.events()?.subscribe(None)
    }

    /// A new, empty pipeline on this handle.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// The server's counters: keys, connections, waits, requests, hits, bytes held, … (see
    /// [`ServerStats`] for each). They travel as JSON (PROTOCOL.md), and parse from older and
    /// newer servers alike: a field the server does not send is 0.
    ///
    /// ```no_run
    /// let cache = upcache::UpCache::open("TVHosts")?;
    /// let s = cache.stats()?;
    /// println!("{} keys, {} of {} gets hit", s.keys, s.hits, s.gets);
    /// # Ok::<(), upcache::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedReply`] if the reply is not the JSON object of [`ServerStats`], and
    /// those of [every call](UpCache#errors).
    pub fn stats(&self) -> Result<ServerStats> {
        match self.call(Request::Stats)? {
            Answer::Text(t) => ServerStats::from_json(&t).map_err(|e| Error::UnexpectedReply {
                name: self.inner.peer.name.clone(),
                detail: format!("stats that are not a JSON object of counters: {e}"),
            }),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Asks the server to exit now (for servers opened with `auto_kill(false)`). Waits and
    /// subscriptions end; every client then gets [`Error::ServerGone`].
    ///
    /// # Errors
    ///
    /// Those of [every call](UpCache#errors).
    pub fn shutdown_server(&self) -> Result<()> {
        self.expect_done(Request::Shutdown)
    }

    /// Closes this handle. The connection closes when the last clone is closed or dropped.
    pub fn close(self) {
        drop(self)
    }
}
