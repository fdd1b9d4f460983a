//! The server: one mio event loop that owns the store's shards and every connection.
//!
//! [`serve`] binds the chosen transport, tells its [`Host`] where it listens (the launcher
//! writes the connection file), then loops: poll, hand readiness to the [`Engine`], fire
//! timers, until the engine says to stop (shutdown request, SIGTERM/SIGINT, or idle past
//! `linger` with `auto_kill`). On the way out it ends every wait and subscription, sends what it
//! can, removes its socket file, and lets the host remove the connection file.
//!
//! Signals arrive through a `signalfd` registered with the poll, so no handler runs in signal
//! context.
//!
//! Descriptors: at start the server raises its soft `RLIMIT_NOFILE` to the hard limit (as
//! Redis does), so a desktop's default soft limit of 1,024 does not cap a cache shared by a
//! thousand workers. When `accept` still fails for want of descriptors or memory, the
//! connections already queued in the listener's backlog would get no new readiness event
//! (readiness is edge-triggered): the loop accepts again as soon as a connection closes, and
//! every [`ACCEPT_RETRY`] while the backlog may hold connections.

mod commands;
mod conn_io;
mod connection;
pub mod engine;
mod expiry;
mod fanout;
pub mod hub;
pub mod leases;
pub mod lifecycle;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod mock;
mod stats;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use upcache_transports::{BindOptions, Endpoint, Kind, Tcp, Transport, Unix};

pub use engine::{Engine, EngineConfig};

use crate::protocol::Limits;
use crate::store::{Policy, Store};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_CONN: usize = 2;

/// How a server is to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The transport to listen on.
    pub transport: Kind,
    /// Where the cache's files live, and its name (a Unix socket is placed by them).
    pub bind: BindOptions,
    /// Exit when no client has been connected for `linger`.
    pub auto_kill: bool,
    /// How long an idle server waits for a new client.
    pub linger: Duration,
    /// Frame limits.
    pub limits: Limits,
    /// Values up to this size are copied into replies, longer ones sent in place
    /// ([`engine::COPY_MAX`] is the default).
    pub copy_max: usize,
    /// The store's memory budget in bytes (0: none).
    pub max_memory: u64,
}

impl Config {
    /// A server on `transport` at `bind` that stays up until it is told to stop (no auto-kill,
    /// no linger), with the default limits, the default copy threshold and no memory budget:
    /// what a host that runs a server for itself (a benchmark, a test) starts from, changing
    /// fields as it needs.
    pub fn new(transport: Kind, bind: BindOptions) -> Self {
        Config {
            transport,
            bind,
            auto_kill: false,
            linger: Duration::ZERO,
            limits: Limits::default(),
            copy_max: engine::COPY_MAX,
            max_memory: 0,
        }
    }
}

/// What the server tells the process that hosts it.
pub trait Host {
    /// The server listens at `endpoint` and expects `token` in every handshake. Returning an
    /// error stops the server before it serves anyone.
    fn ready(&mut self, endpoint: &Endpoint, token: &str) -> io::Result<()>;
    /// The server is about to exit; nothing is served after this.
    fn exiting(&mut self);
}

/// Runs a server until it decides to stop. Raises this process's soft descriptor limit to its
/// hard limit first (see the module docs).
pub fn serve(config: &Config, host: &mut dyn Host) -> io::Result<()> {
    raise_fd_limit();
    match config.transport {
        Kind::Tcp => serve_on::<Tcp>(config, host),
        Kind::Unix => serve_on::<Unix>(config, host),
    }
}

fn serve_on<T: Transport>(config: &Config, host: &mut dyn Host) -> io::Result<()> {
    let (mut listener, endpoint) = T::bind(&config.bind)?;
    let result = run_loop::<T>(config, host, &mut listener, &endpoint);
    T::unbind(&endpoint);
    host.exiting();
    result
}

/// How long the loop waits before accepting again while it is out of descriptors and the
/// backlog may hold connections (a closing connection retries at once).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// `accept` stopped for want of descriptors or memory, with connections maybe still queued.
#[derive(Clone, Copy, Debug)]
struct Starved {
    /// Open connections when it happened: fewer means descriptors were freed.
    connections: usize,
    /// When to try again anyway.
    retry_at: Instant,
}

fn run_loop<T: Transport>(
    config: &Config,
    host: &mut dyn Host,
    listener: &mut T::Listener,
    endpoint: &Endpoint,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(listener, LISTENER, Interest::READABLE)?;
    let signals = signal_fd()?;
    poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;

    let token = random_token()?;
    let engine_config = EngineConfig {
        copy_max: config.copy_max,
        ..EngineConfig::new(
            config.auto_kill,
            config.linger,
            config.limits,
            token.clone().into_bytes(),
        )
    };
    let mut store = Store::with_budget(
        ahash::RandomState::new(),
        Store::segment_for(config.max_memory),
        config.max_memory,
        Policy::S3Fifo,
    );
    // Versions count from the wall clock in ns: greater than those of an earlier server on
    // this machine (it handed out fewer than one per ns), so a client's stale version never
    // matches a key of this one.
    let wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2));
    store.start_versions_at(wall_ns);
    let mut engine: Engine<T::Conn> = Engine::new(engine_config, store, Instant::now());
    host.ready(endpoint, &token)?;

    let mut events = Events::with_capacity(1024);
    let mut starved: Option<Starved> = None;
    loop {
        let now = Instant::now();
        if engine.should_exit(now) {
            break;
        }
        let mut timeout = engine
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        if let Some(s) = starved {
            let retry = s.retry_at.saturating_duration_since(now);
            timeout = Some(timeout.map_or(retry, |t| t.min(retry)));
        }
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                LISTENER => starved = accept_all::<T>(&poll, &mut engine, listener, now),
                SIGNALS => {
                    drain_signals(&signals);
                    engine.request_shutdown();
                }
                Token(t) => {
                    // Tokens 0 and 1 matched above, and every other one was registered as
                    // `slot + FIRST_CONN`: this never wraps.
                    let slot = t - FIRST_CONN;
                    if ev.is_writable() {
                        engine.writable(slot, now);
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        engine.read_event(slot, now, ev.is_read_closed() || ev.is_error());
                    }
                }
            }
        }
        engine.tick(now);
        if let Some(s) = starved {
            if engine.connections() < s.connections || now >= s.retry_at {
                starved = accept_all::<T>(&poll, &mut engine, listener, now);
            }
        }
    }
    engine.shutdown(Instant::now());
    Ok(())
}

/// Accepts every queued connection and registers it. Returns `Some` when accepting stopped
/// for want of descriptors or memory (or another error that a later try may not meet), so
/// the backlog may still hold connections that no readiness event will announce.
fn accept_all<T: Transport>(
    poll: &Poll,
    engine: &mut Engine<T::Conn>,
    listener: &mut T::Listener,
    now: Instant,
) -> Option<Starved> {
    loop {
        match T::accept(listener) {
            Ok(stream) => {
                let slot = engine.accept(stream, now);
                let interest = Interest::READABLE | Interest::WRITABLE;
                let registered = match engine.stream_mut(slot) {
                    Some(s) => poll
                        .registry()
                        .register(s, Token(slot + FIRST_CONN), interest)
                        .is_ok(),
                    // `accept` just stored it in `slot`: unreachable, but harmless.
                    None => false,
                };
                if !registered {
                    engine.close(slot, now);
                    continue;
                }
                engine.readable(slot, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // Refused by the transport's peer check, or gone before accept.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::Interrupted
                ) => {}
            // EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything unexpected: try again when a
            // connection closes or after ACCEPT_RETRY.
            Err(_) => {
                return Some(Starved {
                    connections: engine.connections(),
                    retry_at: now + ACCEPT_RETRY,
                })
            }
        }
    }
}

/// For a process that exists to run a server with a memory budget (the detached server, `upcache
/// serve --max-memory`): has the allocator map every block of 8 KiB or more on its own and give
/// it back to the system when freed. The store's segments (1 to 64 KiB) and its slot and index
/// vectors come and go as it evicts; from one shared heap their holes would keep the heap's
/// high-water mark resident, about 10 % over the budget after churn, where mapped ones return
/// at once (issue 13's hit-ratio run: RSS 74 MiB against 68 MiB for a 64 MiB budget; see
/// BENCHMARKS.md). It changes the allocator of the whole process, so a library host that runs
/// a server in its own process (`Builder::serve`) is not changed. A no-op where the C library
/// is not glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; any value is valid, and a failure
    // (0) leaves the default, which is only less frugal.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 * 1024);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped at the kernel's `nr_open`, and
/// at 2^20 when the hard limit is infinite). Failing leaves the limit as it was.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        nr_open
    } else {
        lim.rlim_max.min(nr_open)
    };
    if target <= lim.rlim_cur {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit; a refused raise returns an error and changes nothing.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
}

/// A `signalfd` for SIGTERM, SIGINT and SIGHUP, which are blocked for the process (the server
/// process runs one thread).
fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask and
    // signalfd only read it. The returned descriptor is checked and then owned.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn drain_signals(fd: &OwnedFd) {
    let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 4];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> io::Result<String> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b` (`filled` never
        // passes `b.len()`: getrandom writes at most the length it is given).
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
