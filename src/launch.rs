//! Starting the server as a detached process, and the process's entry point.
//!
//! The winner of the election runs its own executable again (`/proc/self/exe`) with the
//! environment variable [`SERVER_ENV`] describing the server to run. The executable links this
//! crate, and the crate places [`server_entry`] in `.init_array`, so the new process becomes the
//! server before the program's `main` would run, and exits when the server stops. No separate
//! server binary has to be installed or found, and the winner never forks without exec, so
//! opening from a process that runs many threads is safe.
//!
//! The child is detached: it runs in its own session (`setsid`), its standard streams are
//! `/dev/null`, and it is the grandchild of the winner (the intermediate child exits at once
//! and is reaped), so it outlives the winner and never stays a zombie. It inherits two
//! descriptors: the locked connection file, whose lock it keeps for its life, and the write end
//! of a pipe on which it reports `ok <json>` once it listens, or `err <message>`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use upcache_transports::{BindOptions, Endpoint, Kind};

use crate::election::{OwnedFile, ServerInfo, Won};
use crate::protocol::Limits;
use crate::server::{self, Config, Host};

/// The environment variable that turns a process linking upcache into a server.
pub const SERVER_ENV: &str = "UPCACHE_INTERNAL_SERVER_SPEC";

/// What the winner asks of the server it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerSpec {
    /// The connection file.
    pub path: PathBuf,
    /// `"tcp"` or `"unix"`.
    pub transport: String,
    /// The directory of the cache's files.
    pub dir: PathBuf,
    /// The cache's name.
    pub name: String,
    /// Exit when idle.
    pub auto_kill: bool,
    /// Idle time before exit, in milliseconds.
    pub linger_ms: u64,
    /// Longest value accepted.
    pub max_value: u32,
    #[serde(default)]
    lock_fd: RawFd,
    #[serde(default)]
    ready_fd: RawFd,
}

impl ServerSpec {
    /// A spec; descriptors are filled in by [`start`].
    pub fn new(
        path: PathBuf,
        transport: Kind,
        dir: PathBuf,
        name: String,
        auto_kill: bool,
        linger: Duration,
        max_value: u32,
    ) -> Self {
        ServerSpec {
            path,
            transport: transport.name().into(),
            dir,
            name,
            auto_kill,
            linger_ms: linger.as_millis().min(u64::MAX as u128) as u64,
            max_value,
            lock_fd: -1,
            ready_fd: -1,
        }
    }
}

// Referenced from `start` so the object holding it is always linked where `start` is. The
// numbered section runs before the host program's own unnumbered constructors, so none of them
// runs in the server process.
#[used]
#[link_section = ".init_array.00200"]
static SERVER_ENTRY: extern "C" fn() = server_entry;

/// Runs before `main` in every process that links upcache; returns at once unless
/// [`SERVER_ENV`] is set.
extern "C" fn server_entry() {
    let Some(spec) = std::env::var_os(SERVER_ENV) else {
        return;
    };
    let code = match std::panic::catch_unwind(|| run_server(spec.as_encoded_bytes())) {
        Ok(Ok(())) => 0,
        _ => 1,
    };
    // Skip the host program's destructors and atexit handlers: this process never ran its main.
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

struct LaunchedHost {
    file: OwnedFile,
    ready: Option<File>,
    max_value: u32,
}

impl Host for LaunchedHost {
    fn ready(&mut self, endpoint: &Endpoint, token: &str) -> io::Result<()> {
        let info = ServerInfo::new(endpoint, token, self.max_value);
        self.file.publish(&info)?;
        if let Some(mut pipe) = self.ready.take() {
            let mut line = b"ok ".to_vec();
            line.extend(serde_json::to_vec(&info).map_err(io::Error::other)?);
            line.push(b'\n');
            // The winner may have given up waiting; the server serves anyway.
            let _ = pipe.write_all(&line);
        }
        Ok(())
    }

    fn exiting(&mut self) {
        self.file.remove();
    }
}

fn run_server(spec: &[u8]) -> io::Result<()> {
    let spec: ServerSpec = serde_json::from_slice(spec).map_err(io::Error::other)?;
    // SAFETY: ignoring SIGPIPE is process-wide and has no preconditions; this process runs
    // only the server (std's runtime, which would do this, has not started).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    close_other_fds(&[spec.lock_fd, spec.ready_fd]);
    // SAFETY: both descriptors were inherited for us alone (named in the spec, kept open
    // across exec by the launcher) and are owned from here on.
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
    let transport = Kind::from_name(&spec.transport).unwrap_or_default();
    let config = Config {
        transport,
        bind: BindOptions {
            dir: spec.dir.clone(),
            name: spec.name.clone(),
        },
        auto_kill: spec.auto_kill,
        linger: Duration::from_millis(spec.linger_ms),
        limits: Limits {
            max_key: crate::protocol::MAX_KEY_LEN,
            max_value: spec.max_value,
        },
    };
    let ready_dup = ready.try_clone()?;
    let mut host = LaunchedHost {
        file,
        ready: Some(ready_dup),
        max_value: spec.max_value,
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

/// Why starting a server failed.
#[derive(Debug)]
pub enum StartError {
    /// The process could not be created.
    Spawn(io::Error),
    /// The server reported an error before listening.
    Server(String),
    /// The server exited, or said nothing, before `deadline`.
    NoAnswer,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "could not start the server process: {e}"),
            StartError::Server(m) => write!(f, "the server failed to start: {m}"),
            StartError::NoAnswer => write!(f, "the server process did not report that it listens"),
        }
    }
}

/// Starts a server for the won election `won` and waits (until `deadline`) for it to listen.
/// On failure the connection file is removed, so the next opener can try again.
pub fn start(won: Won, mut spec: ServerSpec, deadline: Instant) -> Result<ServerInfo, StartError> {
    std::hint::black_box(&SERVER_ENTRY);
    let result = spawn_and_wait(&won, &mut spec, deadline);
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

fn spawn_and_wait(
    won: &Won,
    spec: &mut ServerSpec,
    deadline: Instant,
) -> Result<ServerInfo, StartError> {
    let (read_end, write_end) = pipe().map_err(StartError::Spawn)?;
    spec.lock_fd = won.fd();
    spec.ready_fd = write_end.as_raw_fd();
    let json = serde_json::to_string(&spec).map_err(|e| StartError::Spawn(io::Error::other(e)))?;
    let (lock_fd, ready_fd) = (spec.lock_fd, spec.ready_fd);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("upcache-server")
        .env(SERVER_ENV, json)
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
    let mut child = cmd.spawn().map_err(StartError::Spawn)?;
    // The intermediate process exits at once; reap it so no zombie is left.
    let _ = child.wait();
    drop(write_end);
    let mut pipe = File::from(read_end);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(line) = buf.strip_suffix(b"\n") {
            return match line.strip_prefix(b"ok ") {
                Some(json) => serde_json::from_slice(json).map_err(|_| StartError::NoAnswer),
                None => Err(StartError::Server(
                    String::from_utf8_lossy(line.strip_prefix(b"err ").unwrap_or(line)).into(),
                )),
            };
        }
        if !wait_readable(pipe.as_raw_fd(), deadline) {
            return Err(StartError::NoAnswer);
        }
        match pipe.read(&mut chunk) {
            Ok(0) => return Err(StartError::NoAnswer),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(StartError::NoAnswer),
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
