//! Helpers shared by the integration tests: sandboxes, child processes, process checks.
//!
//! Child processes are this test binary run again with `UPCACHE_TEST_ROLE` set: a hook placed
//! before `main` (like the library's own server entry) runs the role and exits, so children
//! are real, separate processes that open the cache on their own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use upcache::{TransportKind as Transport, UpCache};

const ROLE_ENV: &str = "UPCACHE_TEST_ROLE";

/// Generates one `#[test]` per transport for each listed function `fn name(t: Transport)`.
#[macro_export]
macro_rules! each_transport {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $( #[test] fn $name() { super::$name(upcache::TransportKind::Tcp) } )*
        }
        mod unix {
            $( #[test] fn $name() { super::$name(upcache::TransportKind::Unix) } )*
        }
    };
}

/// A private directory for connection files, removed at the end of the test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub transport: Transport,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Sandbox {
    pub fn new(transport: Transport) -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            transport,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A name not used before in this process.
    pub fn name(&self, tag: &str) -> String {
        format!("{tag}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    pub fn builder(&self, name: &str) -> upcache::Builder {
        UpCache::builder(name)
            .dir(self.path())
            .transport(self.transport)
    }

    pub fn open(&self, name: &str) -> UpCache {
        self.builder(name).open().expect("open")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(format!("upcache-{name}.json"))
    }

    /// A child process running `role` with `args`, opening caches in this sandbox.
    pub fn child(&self, role: &str, args: &[&str]) -> Command {
        let mut spec = vec![role.to_string(), self.path().display().to_string()];
        spec.push(self.transport.name().into());
        spec.extend(args.iter().map(|s| s.to_string()));
        child_command(ROLE_ENV, &spec)
    }
}

/// This test binary run again as a child process: `env` set to the `spec` parts (joined by
/// U+001F), which the child's hook ([`run_as_child`]) splits again; standard input closed,
/// output captured.
pub fn child_command(env: &str, spec: &[String]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.env(env, spec.join("\u{1f}"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The hook a test binary places before `main` (`.init_array`) for its child processes: when
/// `env` is set (and this is not a server the library starts), runs `run` on the spec's parts
/// and exits: 0 if it returned `Ok`, 1 if it returned an error (printed), 2 if it panicked.
/// Otherwise returns, and the test harness runs as usual.
pub fn run_as_child<E: std::fmt::Display>(env: &str, run: fn(&[&str]) -> Result<(), E>) {
    let Some(spec) = std::env::var_os(env) else {
        return;
    };
    if std::env::var_os("UPCACHE_INTERNAL_SERVER_SPEC").is_some() {
        return; // a server started by a child process: the library's entry takes it
    }
    let spec = spec.to_string_lossy().into_owned();
    let parts: Vec<&str> = spec.split('\u{1f}').collect();
    let code = match std::panic::catch_unwind(|| run(&parts)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("child {parts:?} failed: {e}");
            1
        }
        Err(_) => 2,
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: ends this child process; it never runs the test harness.
    unsafe { libc::_exit(code) }
}

/// The pid in a connection file.
pub fn server_pid(file: &Path) -> u32 {
    upcache::ServerInfo::read(file)
        .expect("connection file")
        .pid
}

/// Whether a process is alive (an unreaped zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// The resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Polls `cond` until it holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn kill(pid: u32, signal: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Waits for a child with a deadline, killing it if it overruns; returns its output.
pub fn finish(mut child: Child, within: Duration) -> (bool, String, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            return (
                false,
                String::new(),
                format!(
                    "timed out; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[used]
#[link_section = ".init_array"]
static ROLE_ENTRY: extern "C" fn() = role_entry;

extern "C" fn role_entry() {
    run_as_child(ROLE_ENV, run_role);
}

fn run_role(p: &[&str]) -> upcache::Result<()> {
    let (role, dir, transport, args) = (p[0], p[1], p[2], &p[3..]);
    let transport = if transport == "unix" {
        Transport::Unix
    } else {
        Transport::Tcp
    };
    let open = |name: &str| UpCache::builder(name).dir(dir).transport(transport).open();
    match role {
        // set NAME KEY VALUE
        "set" => open(args[0])?.set(args[1], args[2]),
        // set-ttl NAME KEY VALUE MS
        "set-ttl" => open(args[0])?.set_with_ttl(
            args[1],
            args[2],
            Duration::from_millis(args[3].parse().expect("ms")),
        ),
        // get NAME KEY: prints the value or <none>
        "get" => {
            let v = open(args[0])?.get(args[1])?;
            println!(
                "{}",
                v.map_or("<none>".into(), |v| String::from_utf8_lossy(&v)
                    .into_owned())
            );
            Ok(())
        }
        // incr NAME KEY TIMES: prints the server's pid
        "incr" => {
            let c = open(args[0])?;
            let times: u32 = args[2].parse().expect("times");
            for _ in 0..times {
                c.incr(args[1])?;
            }
            println!("{}", upcache_pid(&c));
            Ok(())
        }
        // hold NAME KEY VALUE: sets, then stays connected until KEY holds "release"
        "hold" => {
            let c = open(args[0])?;
            c.set(args[1], args[2])?;
            println!("ready");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            c.wait_for(args[1], Some(b"release"), Some(Duration::from_secs(30)))?;
            Ok(())
        }
        // start NAME: starts a server that stays without clients (no auto_kill), prints its pid
        "start" => {
            let c = UpCache::builder(args[0])
                .dir(dir)
                .transport(transport)
                .auto_kill(false)
                .open()?;
            println!("{}", upcache_pid(&c));
            Ok(())
        }
        // open-exit NAME: opens, sets a key, exits without closing politely
        "open-exit" => {
            let c = open(args[0])?;
            c.set(b"creator", b"was here")?;
            std::mem::forget(c);
            Ok(())
        }
        // fork NAME: opens, forks; the child uses the same handle (which must reconnect),
        // the parent checks its own connection still works afterwards.
        "fork" => {
            let c = open(args[0])?;
            c.set(b"from parent", b"before fork")?;
            // SAFETY: this process is single-threaded (roles run before main, and this one
            // starts no thread), so the child may go on using the allocator and the cache.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let r = (|| -> upcache::Result<()> {
                    c.set(b"from child", b"yes")?;
                    assert_eq!(c.get(b"from parent")?.as_deref(), Some(&b"before fork"[..]));
                    Ok(())
                })();
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(if r.is_ok() { 0 } else { 1 }) }
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child failed"
            );
            c.set(b"from parent", b"after fork")?;
            println!("parent ok");
            Ok(())
        }
        // children NAME: opens (starting the server) and prints the pids of this process's
        // children: none, once the launcher reaped its intermediate process.
        "children" => {
            let c = open(args[0])?;
            c.set(b"k", b"v")?;
            let me = std::process::id().to_string();
            let kids: Vec<String> = std::fs::read_dir("/proc")
                .expect("/proc")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                        s.rsplit(')')
                            .next()
                            .and_then(|r| r.split_whitespace().nth(1))
                            == Some(&me)
                    })
                })
                .collect();
            println!("children: [{}] server: {}", kids.join(","), upcache_pid(&c));
            Ok(())
        }
        other => panic!("unknown role {other}"),
    }
}

fn upcache_pid(c: &UpCache) -> u32 {
    server_pid(c.connection_file())
}
