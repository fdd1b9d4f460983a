//! Starting the server as a detached process, and the process's entry point.
//!
//! The winner of the election runs its own executable again (`/proc/self/exe`) with the
//! environment variable [`SERVER_ENV`] describing the server to run. With the `auto-server`
//! feature (on by default) the crate places a constructor in `.init_array`, so the new process
//! becomes the server before the program's `main` would run, and exits when the server stops.
//! Without the feature, the program calls [`serve_if_requested`] first in `main`, which does
//! the same. No separate server binary has to be installed or found, and the winner never
//! forks without exec, so opening from a process that runs many threads is safe.
//!
//! The child is detached: it runs in its own session (`setsid`), its standard streams are
//! `/dev/null`, and it is the grandchild of the winner (the intermediate child exits at once
//! and is reaped), so it outlives the winner and never stays a zombie. It inherits two
//! descriptors: the locked connection file, whose lock it keeps for its life, and the write end
//! of a pipe on which it reports `ok <json>` once it listens, or `err <message>`.
//!
//! The entry trusts nothing in the variable: it refuses to serve in a setuid or setgid process
//! (`AT_SECURE`), removes the variable from the environment, and checks the whole spec
//! ([`validate`], then that both descriptors are open and are the connection file and a pipe)
//! before it touches a descriptor or a file. A spec that fails makes the process exit with
//! status 2 and a message on standard error.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use upcache_transports::{BindOptions, Endpoint, Kind};

use crate::election::{self, OwnedFile, ServerInfo, Won};
use crate::error::{Error, NameError};
use crate::protocol::Limits;
use crate::server::{self, Config, Host};

/// The environment variable that turns a process linking upcache into a server.
pub const SERVER_ENV: &str = "UPCACHE_INTERNAL_SERVER_SPEC";

/// The environment variable that names the program a launcher runs as the server, when the
/// opener did not choose one with [`Builder::server_exe`](crate::Builder::server_exe).
/// Ignored in a setuid or setgid process.
pub const SERVER_EXE_ENV: &str = "UPCACHE_SERVER";

/// The exit status of a process whose spec was refused.
const REFUSED: i32 = 2;

/// What the winner asks of the server it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// The connection file: `election::file_path(dir, name)`.
    pub path: PathBuf,
    /// `"tcp"` or `"unix"`.
    pub transport: String,
    /// The directory of the cache's files (absolute: the server runs in `/`).
    pub dir: PathBuf,
    /// The cache's name.
    pub name: String,
    /// Exit when idle.
    pub auto_kill: bool,
    /// Idle time before exit, in milliseconds.
    pub linger_ms: u64,
    /// Longest value accepted.
    pub max_value: u32,
    /// The store's memory budget in bytes (0: none; absent from an older launcher's spec).
    #[serde(default)]
    pub max_memory: u64,
    /// The program to run as the server (`None`: [`SERVER_EXE_ENV`], else this program).
    /// Chosen by the launcher, never sent to the server.
    #[serde(skip)]
    pub exe: Option<PathBuf>,
    #[serde(default = "no_fd")]
    lock_fd: RawFd,
    #[serde(default = "no_fd")]
    ready_fd: RawFd,
}

fn no_fd() -> RawFd {
    -1
}

impl ServerSpec {
    /// How the server this spec describes is to run, on `transport`.
    fn config(&self, transport: Kind) -> Config {
        Config {
            transport,
            bind: BindOptions {
                dir: self.dir.clone(),
                name: self.name.clone(),
            },
            auto_kill: self.auto_kill,
            linger: Duration::from_millis(self.linger_ms),
            limits: Limits {
                max_key: crate::protocol::MAX_KEY_LEN,
                max_value: self.max_value,
            },
            copy_max: crate::server::engine::COPY_MAX,
            max_memory: self.max_memory,
        }
    }

    /// A spec; descriptors are filled in by [`start`]. A relative `dir` is made absolute
    /// against the current directory (the server runs in `/`).
    pub fn new(
        dir: PathBuf,
        name: String,
        transport: Kind,
        auto_kill: bool,
        linger: Duration,
        max_value: u32,
    ) -> Self {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        ServerSpec {
            path: election::file_path(&dir, &name),
            transport: transport.name().into(),
            dir,
            name,
            auto_kill,
            linger_ms: linger.as_millis().min(u64::MAX as u128) as u64,
            max_value,
            max_memory: 0,
            exe: None,
            lock_fd: -1,
            ready_fd: -1,
        }
    }
}

/// Why a process refuses the spec in [`SERVER_ENV`] and does not serve.
#[derive(Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The process runs setuid or setgid (`AT_SECURE`): its environment is not trusted.
    Secure,
    /// The variable is not the JSON of a spec.
    Unreadable(String),
    /// A descriptor is negative or a standard stream.
    Descriptor(&'static str, RawFd),
    /// Both descriptors are the same number.
    SameDescriptor(RawFd),
    /// A descriptor is not open in this process.
    Closed(&'static str, RawFd),
    /// The lock descriptor is not the connection file, or the ready one not a pipe.
    WrongKind(&'static str, RawFd),
    /// The name is not a valid cache name.
    Name(NameError),
    /// The transport is neither `tcp` nor `unix`.
    Transport(String),
    /// The directory is not an absolute path.
    RelativeDir(PathBuf),
    /// The connection file is not `<dir>/upcache-<name>.json`.
    Path(PathBuf),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Secure => write!(f, "this process runs setuid or setgid"),
            SpecError::Unreadable(e) => write!(f, "the spec is not readable: {e}"),
            SpecError::Descriptor(which, fd) => {
                write!(
                    f,
                    "the {which} descriptor {fd} is not a usable descriptor number"
                )
            }
            SpecError::SameDescriptor(fd) => {
                write!(f, "the lock and ready descriptors are both {fd}")
            }
            SpecError::Closed(which, fd) => write!(f, "the {which} descriptor {fd} is not open"),
            SpecError::WrongKind(which, fd) => write!(
                f,
                "the {which} descriptor {fd} is not {}",
                if *which == "lock" {
                    "the connection file"
                } else {
                    "a pipe"
                }
            ),
            SpecError::Name(reason) => write!(f, "invalid cache name: {reason:?}"),
            SpecError::Transport(t) => write!(f, "unknown transport {t:?}"),
            SpecError::RelativeDir(d) => write!(f, "the directory {} is relative", d.display()),
            SpecError::Path(p) => write!(
                f,
                "{} is not the connection file of this directory and name",
                p.display()
            ),
        }
    }
}

impl std::error::Error for SpecError {}

/// Checks everything in `spec` that needs no system call: descriptor numbers, name,
/// transport, directory, and that the path is the connection file of that directory and name.
pub fn validate(spec: &ServerSpec) -> Result<Kind, SpecError> {
    for (which, fd) in [("lock", spec.lock_fd), ("ready", spec.ready_fd)] {
        if fd <= 2 {
            return Err(SpecError::Descriptor(which, fd));
        }
    }
    if spec.lock_fd == spec.ready_fd {
        return Err(SpecError::SameDescriptor(spec.lock_fd));
    }
    match crate::error::validate_name(&spec.name) {
        Ok(()) => {}
        Err(Error::InvalidName { reason, .. }) => return Err(SpecError::Name(reason)),
        // validate_name returns no other error.
        Err(e) => return Err(SpecError::Unreadable(e.to_string())),
    }
    let kind = Kind::from_name(&spec.transport)
        .ok_or_else(|| SpecError::Transport(spec.transport.clone()))?;
    if !spec.dir.is_absolute() {
        return Err(SpecError::RelativeDir(spec.dir.clone()));
    }
    if spec.path != election::file_path(&spec.dir, &spec.name) {
        return Err(SpecError::Path(spec.path.clone()));
    }
    Ok(kind)
}

/// Checks the descriptors of a [`validate`]d spec in this process: both open, the lock one
/// is the file at `spec.path`, the ready one a pipe.
fn check_descriptors(spec: &ServerSpec) -> Result<(), SpecError> {
    for (which, fd) in [("lock", spec.lock_fd), ("ready", spec.ready_fd)] {
        // SAFETY: F_GETFD only reads the descriptor's flags; any number is allowed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(SpecError::Closed(which, fd));
        }
    }
    let stat = |fd: RawFd| {
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is valid for writes; fstat fills it or fails.
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
    };
    let path = std::fs::metadata(&spec.path).ok();
    let is_file = stat(spec.lock_fd).zip(path).is_some_and(|(st, m)| {
        use std::os::unix::fs::MetadataExt;
        st.st_dev == m.dev() && st.st_ino == m.ino()
    });
    if !is_file {
        return Err(SpecError::WrongKind("lock", spec.lock_fd));
    }
    if stat(spec.ready_fd).is_none_or(|st| st.st_mode & libc::S_IFMT != libc::S_IFIFO) {
        return Err(SpecError::WrongKind("ready", spec.ready_fd));
    }
    Ok(())
}

/// What this process was asked to be.
enum Request {
    /// An ordinary process.
    None,
    /// A server, with a checked spec.
    Serve(ServerSpec, Kind),
    /// A server, with a spec that must not be used.
    Refused(SpecError),
}

/// Reads [`SERVER_ENV`] once, removes it from the environment, and checks it.
///
/// Runs before any other thread of this process exists (in the constructor, or first in
/// `main` as [`serve_if_requested`] documents), so changing the environment is sound.
fn take_request() -> Request {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    // Read only after the AT_SECURE check above decides whether the value may be used:
    // together the same as `secure_getenv`.
    let Some(value) = std::env::var_os(SERVER_ENV) else {
        return Request::None;
    };
    // Not passed on to anything this process might start.
    std::env::remove_var(SERVER_ENV);
    if secure {
        return Request::Refused(SpecError::Secure);
    }
    let spec: ServerSpec = match serde_json::from_slice(value.as_encoded_bytes()) {
        Ok(s) => s,
        Err(e) => return Request::Refused(SpecError::Unreadable(e.to_string())),
    };
    match validate(&spec).and_then(|kind| check_descriptors(&spec).map(|()| kind)) {
        Ok(kind) => Request::Serve(spec, kind),
        Err(e) => Request::Refused(e),
    }
}

/// Whether [`serve_if_requested`] ran in this process.
static CHECKED: AtomicBool = AtomicBool::new(false);

/// Runs the server and exits the process if this process was started as a cache's server;
/// returns at once otherwise.
///
/// Needed only by a program built without the `auto-server` feature (on by default, it does
/// this before `main`): call it first in `main`, before any thread is started and before
/// anything else is done. The winner of an election runs the program's own executable again
/// as the server; in that process this call serves until the server stops and then exits
/// (status 0, or 1 if the server failed), so the rest of `main` never runs there. A process
/// that was started with a forged or damaged request exits with status 2 and a message on
/// standard error, and a setuid or setgid process refuses to serve.
///
/// Without the feature, a program that never calls it cannot start a server: its `open`
/// fails with [`Error::ServerStart`] when it wins an election (joining a server that
/// another program started still works).
///
/// ```no_run
/// // Cargo.toml: upcache = { version = "0.1", default-features = false }
/// // The first line of `main`:
/// upcache::serve_if_requested();
/// // Only an ordinary run of the program gets here.
/// let cache = upcache::UpCache::open("TVHosts")?;
/// # Ok::<(), upcache::Error>(())
/// ```
pub fn serve_if_requested() {
    CHECKED.store(true, Ordering::Relaxed);
    enter_if_requested();
}

/// Whether this process can start a server: its executable, run again, becomes one.
fn can_launch() -> bool {
    cfg!(feature = "auto-server") || CHECKED.load(Ordering::Relaxed)
}

// The constructor, referenced from `start` so the object holding it is always linked where
// `start` is.
//
// Which constructors run before it: the dynamic loader runs the constructors of every shared
// library the executable depends on (libc's included) before any of the executable's own; in a
// static executable, libc initializes itself before running `.init_array`. Within the
// executable, the linkers (GNU ld, gold, lld) place `.init_array.NNNNN` sections sorted by
// number ahead of the unnumbered `.init_array`, and the entries run in that order. So std's own
// (`.init_array.00099`, which records argv) and any constructor given a priority of 200 or less
// run before this one and also run in the server process; the unnumbered ones (C and C++ without
// a priority, the `ctor` crate) and higher priorities run only if this one returns, which it does
// in every process that was not started as a server.
#[cfg(feature = "auto-server")]
#[used]
#[link_section = ".init_array.00200"]
static SERVER_ENTRY: extern "C" fn() = server_entry;

/// Runs before `main` in every process that links upcache with `auto-server`; returns at once
/// unless [`SERVER_ENV`] is set.
#[cfg(feature = "auto-server")]
extern "C" fn server_entry() {
    enter_if_requested();
}

/// Serves and exits if [`SERVER_ENV`] asks for it, exits with [`REFUSED`] if it is not to be
/// trusted, returns if it is not set.
fn enter_if_requested() {
    let code = match take_request() {
        Request::None => return,
        Request::Refused(e) => {
            let _ = writeln!(
                io::stderr(),
                "upcache: not starting a cache server: {e} (the environment variable \
                 {SERVER_ENV} is set only by upcache, for the server process it starts)"
            );
            REFUSED
        }
        Request::Serve(spec, kind) => match std::panic::catch_unwind(|| run_server(spec, kind)) {
            Ok(Ok(())) => 0,
            _ => 1,
        },
    };
    // Skip the host program's destructors and atexit handlers: this process never ran its main.
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

struct LaunchedHost {
    file: OwnedFile,
    ready: Option<File>,
    max_value: u32,
    max_memory: u64,
}

impl Host for LaunchedHost {
    fn ready(&mut self, endpoint: &Endpoint, token: &str) -> io::Result<()> {
        let mut info = ServerInfo::new(endpoint, token, self.max_value);
        info.max_memory = self.max_memory;
        self.file.publish(&info)?;
        if let Some(mut pipe) = self.ready.take() {
            let mut line = b"ok ".to_vec();
            line.extend(info.to_line());
            // The winner may have given up waiting; the server serves anyway.
            let _ = pipe.write_all(&line);
        }
        Ok(())
    }

    fn exiting(&mut self) {
        self.file.remove();
    }
}

/// Runs the server of a checked spec.
fn run_server(spec: ServerSpec, transport: Kind) -> io::Result<()> {
    // SAFETY: ignoring SIGPIPE is process-wide and has no preconditions; this process runs
    // only the server (std's runtime, which would do this, has not started).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    close_other_fds(&[spec.lock_fd, spec.ready_fd]);
    // SAFETY: `check_descriptors` found both open and distinct, the one the connection file
    // and the other a pipe, inherited for us alone (named in the spec, kept open across exec
    // by the launcher); they are owned from here on, and nothing else in this process uses them.
    let (lock, mut ready) = unsafe {
        (
            File::from_raw_fd(spec.lock_fd),
            File::from_raw_fd(spec.ready_fd),
        )
    };
    let fail = |ready: &mut File, e: &io::Error| {
        let _ = writeln!(ready, "err {e}");
    };
    let file = match OwnedFile::adopt(lock, spec.path.clone()) {
        Ok(f) => f,
        Err(e) => {
            fail(&mut ready, &e);
            return Err(e);
        }
    };
    let config = spec.config(transport);
    if spec.max_memory > 0 {
        // This process exists to run the server: let its budget show in its RSS.
        server::release_freed_memory();
    }
    let ready_dup = ready.try_clone()?;
    let mut host = LaunchedHost {
        file,
        ready: Some(ready_dup),
        max_value: spec.max_value,
        max_memory: spec.max_memory,
    };
    let result = server::serve(&config, &mut host);
    if let (Err(e), Some(_)) = (&result, host.ready.as_ref()) {
        fail(&mut ready, e);
    }
    result
}

/// Closes descriptors the server did not ask for (ones a host program left without
/// close-on-exec).
fn close_other_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor we do not use; the directory handle that listed it is
        // already closed, and a stale number just fails with EBADF.
        unsafe { libc::close(fd) };
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec duplicate of `fd` numbered 3 or above, so that it can never be one of the
/// standard streams the launcher points at `/dev/null` in the child.
fn dup_above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads `fd` and returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Why starting a server failed.
#[derive(Debug)]
pub enum StartError {
    /// This program cannot become a server: built without `auto-server`, and
    /// [`serve_if_requested`] was not called.
    NoEntry,
    /// The process could not be created: the program is missing or not executable, or the
    /// system refused. Names the program when it is not this one.
    Spawn(Option<PathBuf>, io::Error),
    /// The server reported an error before listening.
    Server(String),
    /// The server process ended (or closed its pipe) without reporting that it listens.
    /// Names the program when it is not this one.
    Exited(Option<PathBuf>),
    /// The server reported something that is not an answer.
    BadAnswer(String),
    /// The server said nothing before the deadline.
    NoAnswer,
}

impl StartError {
    /// Whether trying again before the deadline can help: only when the server may still be
    /// starting. Every other failure would repeat.
    pub fn is_final(&self) -> bool {
        !matches!(self, StartError::NoAnswer)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoEntry => write!(
                f,
                "this program was built without upcache's `auto-server` feature and has not \
                 called `upcache::serve_if_requested()`, so it cannot start a server: call it \
                 first in `main`, or enable the feature"
            ),
            StartError::Spawn(None, e) => write!(f, "could not start the server process: {e}"),
            StartError::Spawn(Some(exe), e) => {
                write!(f, "could not run the server program {}: {e}", exe.display())
            }
            StartError::Server(m) => write!(f, "the server failed to start: {m}"),
            StartError::Exited(Some(exe)) => write!(
                f,
                "the server program {} exited without reporting that it listens (it must be \
                 the `upcache` command, or a program that links upcache with its `auto-server` \
                 feature or calls `upcache::serve_if_requested()` first in `main`)",
                exe.display()
            ),
            StartError::Exited(None) => write!(
                f,
                "the server process exited without reporting that it listens (a program built \
                 without upcache's `auto-server` feature must call \
                 `upcache::serve_if_requested()` first in `main`; a setuid or setgid program \
                 cannot start a server)"
            ),
            StartError::BadAnswer(a) => write!(f, "the server process answered {a:?}"),
            StartError::NoAnswer => write!(f, "the server process did not report that it listens"),
        }
    }
}

/// Starts a server for the won election `won` and waits (until `deadline`) for it to listen.
/// On failure the connection file is removed, so the next opener can try again.
pub fn start(won: Won, mut spec: ServerSpec, deadline: Instant) -> Result<ServerInfo, StartError> {
    #[cfg(feature = "auto-server")]
    std::hint::black_box(&SERVER_ENTRY);
    let program = spec.exe.clone().or_else(program_from_env);
    let result = if program.is_some() || can_launch() {
        spawn_and_wait(&won, &mut spec, program, deadline)
    } else {
        Err(StartError::NoEntry)
    };
    match result {
        Ok(info) => {
            won.hand_over();
            Ok(info)
        }
        Err(e) => {
            won.abandon();
            Err(e)
        }
    }
}

/// The server program named by [`SERVER_EXE_ENV`], unless this process runs setuid or setgid
/// (its environment is not trusted) or the variable is empty.
fn program_from_env() -> Option<PathBuf> {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return None;
    }
    std::env::var_os(SERVER_EXE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The command that runs `program` as the server (`None`: this program, `/proc/self/exe`).
///
/// A chosen program runs as `PROGRAM serve NAME --dir DIR` (PROTOCOL.md §8): what the
/// `upcache` command's `serve` is. The arguments only show in `ps`: the process becomes the
/// server from [`SERVER_ENV`] before its `main` reads them. A program given with a `/` is
/// checked here (exists, is an executable file) and made absolute (the server runs in `/`);
/// a bare name is looked up in `PATH` by `exec`.
fn server_command(program: Option<&Path>, spec: &ServerSpec) -> Result<Command, StartError> {
    let Some(exe) = program else {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("upcache-server");
        return Ok(cmd);
    };
    let named = |e: io::Error| StartError::Spawn(Some(exe.to_owned()), e);
    let path = if exe.components().count() > 1 || exe.is_absolute() {
        let path = std::path::absolute(exe).map_err(named)?;
        let meta = std::fs::metadata(&path).map_err(named)?;
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(named(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not an executable file",
            )));
        }
        path
    } else {
        exe.to_owned()
    };
    let mut cmd = Command::new(path);
    cmd.arg("serve").arg(&spec.name).arg("--dir").arg(&spec.dir);
    Ok(cmd)
}

fn spawn_and_wait(
    won: &Won,
    spec: &mut ServerSpec,
    program: Option<PathBuf>,
    deadline: Instant,
) -> Result<ServerInfo, StartError> {
    let spawn_error = |e| StartError::Spawn(program.clone(), e);
    let mut cmd = server_command(program.as_deref(), spec)?;
    let (read_end, pipe_write_end) = pipe().map_err(spawn_error)?;
    let lock = dup_above_stdio(won.fd()).map_err(spawn_error)?;
    let write_end = dup_above_stdio(pipe_write_end.as_raw_fd()).map_err(spawn_error)?;
    // Only the child may hold a write end while we wait: its exit must end the wait.
    drop(pipe_write_end);
    spec.lock_fd = lock.as_raw_fd();
    spec.ready_fd = write_end.as_raw_fd();
    let json = serde_json::to_string(&spec).map_err(|e| spawn_error(io::Error::other(e)))?;
    let (lock_fd, ready_fd) = (spec.lock_fd, spec.ready_fd);
    cmd.env(SERVER_ENV, json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (fcntl, setsid, fork, _exit).
    unsafe {
        cmd.pre_exec(move || {
            for fd in [lock_fd, ready_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd.spawn().map_err(spawn_error)?;
    // The intermediate process exits at once; reap it so no zombie is left.
    let _ = child.wait();
    drop((write_end, lock));
    wait_answer(File::from(read_end), deadline).map_err(|e| match e {
        StartError::Exited(None) => StartError::Exited(program),
        e => e,
    })
}

/// Makes sure a server runs for the spec's name: takes part in the election and, if this call
/// wins it, starts a server (as [`start`] does); returns the connection file's info of the
/// server that owns the name, started now or before, without connecting to it.
pub(crate) fn ensure_server(spec: &ServerSpec, deadline: Instant) -> Result<ServerInfo, Error> {
    let mut backoff = election::Backoff::default();
    let mut last = String::from("no attempt finished");
    loop {
        if Instant::now() >= deadline {
            return Err(Error::OpenTimedOut {
                name: spec.name.clone(),
                path: spec.path.clone(),
                detail: last,
            });
        }
        match election::look(&spec.path).map_err(Error::io("using the connection file"))? {
            election::Look::Won(won) => match start(won, spec.clone(), deadline) {
                Ok(info) => return Ok(info),
                Err(e) if e.is_final() => {
                    return Err(Error::ServerStart {
                        name: spec.name.clone(),
                        detail: e.to_string(),
                    })
                }
                Err(e) => last = e.to_string(),
            },
            election::Look::Found(info) => return Ok(info),
            election::Look::Foreign { port } => {
                return Err(Error::ForeignServer {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                    port,
                })
            }
            election::Look::NotReady(why) => {
                last = why.into();
                backoff.sleep(deadline);
            }
            election::Look::Retry => {}
        }
    }
}

/// The server run in the calling process: publishes its info, then tells the caller.
struct HereHost<F> {
    file: OwnedFile,
    max_value: u32,
    max_memory: u64,
    on_ready: Option<F>,
}

impl<F: FnOnce(&ServerInfo)> Host for HereHost<F> {
    fn ready(&mut self, endpoint: &Endpoint, token: &str) -> io::Result<()> {
        let mut info = ServerInfo::new(endpoint, token, self.max_value);
        info.max_memory = self.max_memory;
        self.file.publish(&info)?;
        if let Some(f) = self.on_ready.take() {
            f(&info);
        }
        Ok(())
    }

    fn exiting(&mut self) {
        self.file.remove();
    }
}

/// Wins the election for the spec's name and runs its server in the calling thread until it
/// stops; `on_ready` is called once it listens and its connection file is written. Fails with
/// [`Error::ServerStart`] if another server owns the name (or is starting) and stays so until
/// `deadline`.
pub(crate) fn serve_here(
    spec: &ServerSpec,
    deadline: Instant,
    on_ready: impl FnOnce(&ServerInfo),
) -> Result<(), Error> {
    let transport = Kind::from_name(&spec.transport).ok_or_else(|| Error::InvalidOption {
        option: "transport",
        detail: format!("unknown transport {:?}", spec.transport),
    })?;
    let mut backoff = election::Backoff::default();
    let won = loop {
        let running = |detail: String| Error::ServerStart {
            name: spec.name.clone(),
            detail,
        };
        match election::look(&spec.path).map_err(Error::io("using the connection file"))? {
            election::Look::Won(won) => break won,
            election::Look::Found(info) => {
                return Err(running(format!(
                    "a server already serves this name (pid {}, {})",
                    info.pid, info.address
                )))
            }
            election::Look::Foreign { port } => {
                return Err(Error::ForeignServer {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                    port,
                })
            }
            election::Look::NotReady(why) => {
                if Instant::now() >= deadline {
                    return Err(running(format!("another server owns this name ({why})")));
                }
                backoff.sleep(deadline);
            }
            election::Look::Retry => {}
        }
    };
    let file = won
        .into_owned()
        .map_err(Error::io("locking the connection file"))?;
    let config = spec.config(transport);
    let mut host = HereHost {
        file,
        max_value: spec.max_value,
        max_memory: spec.max_memory,
        on_ready: Some(on_ready),
    };
    let served = server::serve(&config, &mut host);
    if served.is_err() {
        // Failed before or while serving: leave no file for the next opener to clean up.
        host.file.remove();
    }
    served.map_err(Error::io("serving the cache"))
}

/// The longest answer read from a server process.
const MAX_ANSWER: usize = 64 * 1024;

/// Reads the server's one-line answer from the read end of its pipe.
fn wait_answer(mut pipe: File, deadline: Instant) -> Result<ServerInfo, StartError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(line) = buf.strip_suffix(b"\n") {
            return match (line.strip_prefix(b"ok "), line.strip_prefix(b"err ")) {
                (Some(json), _) => {
                    let mut info = json.to_vec();
                    info.push(b'\n');
                    ServerInfo::parse(&info).map_err(|e| StartError::BadAnswer(e.to_string()))
                }
                (None, Some(message)) => {
                    Err(StartError::Server(String::from_utf8_lossy(message).into()))
                }
                (None, None) => Err(StartError::BadAnswer(
                    String::from_utf8_lossy(line).into_owned(),
                )),
            };
        }
        if buf.len() > MAX_ANSWER {
            return Err(StartError::BadAnswer("an over-long line".into()));
        }
        if !wait_readable(pipe.as_raw_fd(), deadline) {
            return Err(StartError::NoAnswer);
        }
        match pipe.read(&mut chunk) {
            Ok(0) => return Err(StartError::Exited(None)),
            // `read` returns at most `chunk.len()`.
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(StartError::Exited(None)),
        }
    }
}

/// Waits until `fd` is readable (or hung up), or `deadline` passes.
pub(crate) fn wait_readable(fd: RawFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, name: &str, lock_fd: RawFd, ready_fd: RawFd) -> ServerSpec {
        let mut s = ServerSpec::new(
            dir.to_owned(),
            name.into(),
            Kind::Tcp,
            true,
            Duration::from_secs(1),
            10,
        );
        s.lock_fd = lock_fd;
        s.ready_fd = ready_fd;
        s
    }

    #[test]
    fn validate_accepts_what_the_launcher_writes_and_nothing_else() {
        let dir = std::path::Path::new("/tmp/upcache-spec");
        let good = spec(dir, "TVHosts", 7, 8);
        assert_eq!(good.path, dir.join("upcache-TVHosts.json"));
        assert_eq!(validate(&good), Ok(Kind::Tcp));
        // The JSON the launcher writes reads back to the same spec.
        let json = serde_json::to_vec(&good).unwrap();
        assert_eq!(serde_json::from_slice::<ServerSpec>(&json).unwrap(), good);

        let with = |f: &dyn Fn(&mut ServerSpec)| {
            let mut s = good.clone();
            f(&mut s);
            validate(&s).unwrap_err()
        };
        assert_eq!(with(&|s| s.lock_fd = -1), SpecError::Descriptor("lock", -1));
        assert_eq!(with(&|s| s.ready_fd = 2), SpecError::Descriptor("ready", 2));
        assert_eq!(with(&|s| s.ready_fd = 7), SpecError::SameDescriptor(7));
        assert_eq!(
            with(&|s| s.name = "../x".into()),
            SpecError::Name(NameError::Char('.'))
        );
        assert_eq!(
            with(&|s| s.name = String::new()),
            SpecError::Name(NameError::Length(0))
        );
        assert_eq!(
            with(&|s| s.transport = "udp".into()),
            SpecError::Transport("udp".into())
        );
        assert_eq!(
            with(&|s| s.path = dir.join("upcache-Other.json")),
            SpecError::Path(dir.join("upcache-Other.json"))
        );
        // A name that would point the path elsewhere is refused even if the path matches.
        assert!(matches!(
            with(&|s| {
                s.name = "../../etc/x".into();
                s.path = election::file_path(&s.dir, &s.name);
            }),
            SpecError::Name(_)
        ));
        assert_eq!(
            with(&|s| {
                s.dir = "rel".into();
                s.path = election::file_path(&s.dir, &s.name);
            }),
            SpecError::RelativeDir("rel".into())
        );
        // A spec without descriptors (as an attacker might write it) fails on them.
        let bare: ServerSpec = serde_json::from_value(serde_json::json!({
            "path": "/tmp/upcache-a.json", "transport": "tcp", "dir": "/tmp", "name": "a",
            "auto_kill": true, "linger_ms": 1, "max_value": 1
        }))
        .unwrap();
        assert_eq!(validate(&bare), Err(SpecError::Descriptor("lock", -1)));
        for e in [
            SpecError::Secure,
            SpecError::Closed("lock", 9),
            SpecError::WrongKind("ready", 9),
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert!(SpecError::WrongKind("lock", 9)
            .to_string()
            .contains("connection file"));
    }

    #[test]
    fn descriptors_must_be_open_and_be_the_file_and_a_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = election::file_path(dir.path(), "d");
        let file = File::create(&path).unwrap();
        let other = File::create(dir.path().join("other")).unwrap();
        let (_r, w) = pipe().unwrap();
        let (lock, ready) = (file.as_raw_fd(), w.as_raw_fd());
        assert_eq!(
            check_descriptors(&spec(dir.path(), "d", lock, ready)),
            Ok(())
        );
        // Far above any descriptor this process has: never open.
        let closed = 1 << 29;
        assert_eq!(
            check_descriptors(&spec(dir.path(), "d", closed, ready)),
            Err(SpecError::Closed("lock", closed))
        );
        assert_eq!(
            check_descriptors(&spec(dir.path(), "d", lock, closed)),
            Err(SpecError::Closed("ready", closed))
        );
        assert_eq!(
            check_descriptors(&spec(dir.path(), "d", other.as_raw_fd(), ready)),
            Err(SpecError::WrongKind("lock", other.as_raw_fd()))
        );
        assert_eq!(
            check_descriptors(&spec(dir.path(), "d", lock, other.as_raw_fd())),
            Err(SpecError::WrongKind("ready", other.as_raw_fd()))
        );
    }

    fn answer(chunks: &'static [&'static [u8]]) -> Result<ServerInfo, StartError> {
        let (r, w) = pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(w);
            for c in chunks {
                w.write_all(c).unwrap();
                w.flush().unwrap();
            }
        });
        let got = wait_answer(File::from(r), Instant::now() + Duration::from_secs(30));
        writer.join().unwrap();
        got
    }

    #[test]
    fn the_launcher_reads_the_answer_and_fails_fast_when_the_child_exits() {
        let info = ServerInfo::new(&Endpoint::Tcp("127.0.0.1:9".parse().unwrap()), "t", 5);
        let line: &'static [u8] = Box::leak([b"ok ".to_vec(), info.to_line()].concat().into());
        let (a, b) = line.split_at(10);
        let chunks: &'static [&'static [u8]] = Box::leak(vec![a, b].into_boxed_slice());
        assert_eq!(answer(chunks).unwrap(), info);
        assert!(
            matches!(answer(&[b"err bind: no\n"]), Err(StartError::Server(m)) if m == "bind: no")
        );
        assert!(matches!(
            answer(&[b"ok {}\n"]),
            Err(StartError::BadAnswer(_))
        ));
        assert!(matches!(
            answer(&[b"what\n"]),
            Err(StartError::BadAnswer(_))
        ));
        // The writer closes without a word: the child exited.
        assert!(matches!(answer(&[]), Err(StartError::Exited(None))));
        assert!(matches!(
            answer(&[b"ok {\"po"]),
            Err(StartError::Exited(None))
        ));
        // Nothing said and the pipe still open: only the deadline ends the wait.
        let (r, _w) = pipe().unwrap();
        assert!(matches!(
            wait_answer(File::from(r), Instant::now() + Duration::from_millis(20)),
            Err(StartError::NoAnswer)
        ));
        assert!(!StartError::NoAnswer.is_final());
        assert!(StartError::Exited(None).is_final() && StartError::NoEntry.is_final());
    }

    /// A program that is not made a server (built without `auto-server` and never calling
    /// `serve_if_requested`) runs its own `main` and exits: the opener learns at once.
    #[test]
    fn a_child_that_exits_without_answering_fails_at_once() {
        let (r, original) = pipe().unwrap();
        let w = dup_above_stdio(original.as_raw_fd()).unwrap();
        drop(original);
        let fd = w.as_raw_fd();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exit 0"]);
        // SAFETY: fcntl is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(w);
        // A generous deadline: the answer comes from the child's exit, not from it.
        let got = wait_answer(File::from(r), Instant::now() + Duration::from_secs(60));
        child.wait().unwrap();
        let e = got.unwrap_err();
        assert!(matches!(e, StartError::Exited(None)), "{e}");
        assert!(e.to_string().contains("serve_if_requested"), "{e}");
    }
}
