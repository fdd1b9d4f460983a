//! The election and the server's life, with real processes: racing openers, killed servers,
//! the last client leaving, forks, stale and foreign connection files.

mod util;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::time::{Duration, Instant};

use upcache::{Error, ServerInfo, TransportKind as Transport, UpCache};
use util::{alive, eventually, finish, kill, server_pid, Sandbox};

each_transport!(
    readme_scenario_across_processes,
    racing_openers_share_one_server_fresh_and_after_sigkill,
    data_survives_the_creator_and_dies_with_the_last_client,
    killed_server_fails_pending_calls_and_is_replaced,
    sigterm_and_shutdown_remove_the_file,
    stuck_server_times_out_instead_of_hanging,
    without_auto_kill_the_server_stays,
    forked_child_gets_its_own_connection,
    open_from_a_process_with_many_threads,
    the_server_is_detached_and_leaves_no_zombie,
    connection_file_is_private_and_holds_a_token,
    unlocked_garbage_file_is_replaced,
    locked_file_without_address_times_out_clearly,
    queued_connections_are_served_when_descriptors_free_up,
);

fn readme_scenario_across_processes(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("TVHosts");
    // The writer stays connected (hold) until the reader has read, as the original's README
    // needs "at least one instance open".
    let mut holder = sb
        .child(
            "hold",
            &[&name, "Light Entertainment Awards", "Dickie Attenborough"],
        )
        .spawn()
        .unwrap();
    wait_ready(&mut holder);
    let reader = sb
        .child("get", &[&name, "Light Entertainment Awards"])
        .spawn()
        .unwrap();
    let (ok, out, err) = finish(reader, Duration::from_secs(20));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Dickie Attenborough");
    sb.open(&name)
        .set("Light Entertainment Awards", "release")
        .unwrap();
    assert!(finish(holder, Duration::from_secs(20)).0);
}

fn wait_ready(child: &mut Child) {
    let mut line = String::new();
    let out = child.stdout.as_mut().expect("piped stdout");
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
}

fn race(sb: &Sandbox, name: &str, n: usize, times: u32) -> (Vec<u32>, UpCache) {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            sb.child("incr", &[name, "counter", &times.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    // The test process races too, and keeps the server alive until it has counted.
    let me = sb.open(name);
    let pids = children
        .into_iter()
        .map(|c| {
            let (ok, out, err) = finish(c, Duration::from_secs(120));
            assert!(ok, "child failed: {err}");
            out.trim().parse::<u32>().expect("pid")
        })
        .collect();
    (pids, me)
}

fn racing_openers_share_one_server_fresh_and_after_sigkill(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("race");
    let (pids, me) = race(&sb, &name, 32, 1000);
    let first = pids[0];
    assert!(
        pids.iter().all(|&p| p == first),
        "one server for all: {pids:?}"
    );
    assert_eq!(server_pid(me.connection_file()), first);
    assert_eq!(me.get(b"counter").unwrap().as_deref(), Some(&b"32000"[..]));

    kill(first, libc::SIGKILL);
    assert!(eventually(Duration::from_secs(5), || !alive(first)));
    assert!(
        sb.file(&name).exists(),
        "a SIGKILLed server leaves its file behind"
    );
    drop(me);
    let (pids, me) = race(&sb, &name, 32, 1000);
    let second = pids[0];
    assert_ne!(second, first);
    assert!(
        pids.iter().all(|&p| p == second),
        "one server after the stale file: {pids:?}"
    );
    assert_eq!(me.get(b"counter").unwrap().as_deref(), Some(&b"32000"[..]));
}

fn data_survives_the_creator_and_dies_with_the_last_client(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("creator");
    let mut creator = sb
        .child("hold", &[&name, "k", "from the creator"])
        .spawn()
        .unwrap();
    wait_ready(&mut creator);
    let me = sb.open(&name);
    let pid = server_pid(me.connection_file());
    // The creator dies without a word; the server and the data stay.
    kill(creator.id(), libc::SIGKILL);
    let _ = creator.wait();
    assert_eq!(
        me.get(b"k").unwrap().as_deref(),
        Some(&b"from the creator"[..])
    );
    assert!(alive(pid));
    // The last client leaves: after the linger (1 s) the file and the server are gone.
    let file = me.connection_file().to_owned();
    let t0 = Instant::now();
    me.close();
    assert!(eventually(Duration::from_secs(10), || !file.exists() && !alive(pid)));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "the server waited for the linger"
    );
    if t == Transport::Unix {
        assert!(
            !sb.path().join(format!("upcache-{name}.sock")).exists(),
            "socket removed"
        );
    }
}

fn killed_server_fails_pending_calls_and_is_replaced(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("kill");
    let c = sb.open(&name);
    c.set(b"k", b"v").unwrap();
    let pid = server_pid(c.connection_file());
    let waiter = c.clone();
    let pending_wait = std::thread::spawn(move || waiter.wait_for(b"never", None, None));
    let sub = c.subscribe(b"k").unwrap();
    let pending_recv = std::thread::spawn(move || sub.recv());
    assert!(eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .waits
        == 1));
    kill(pid, libc::SIGKILL);
    let t0 = Instant::now();
    assert!(matches!(
        pending_wait.join().unwrap(),
        Err(Error::ServerGone { .. })
    ));
    assert!(matches!(
        pending_recv.join().unwrap(),
        Err(Error::ServerGone { .. })
    ));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "pending calls failed within a second"
    );
    let e = c.get(b"k").unwrap_err();
    assert!(e.is_server_gone(), "{e}");
    assert!(e.to_string().contains("reopen"), "{e}");
    assert!(c.set(b"k", b"v").unwrap_err().is_server_gone());
    // The next open elects a new server.
    let d = sb.open(&name);
    assert_ne!(server_pid(d.connection_file()), pid);
    assert_eq!(d.get(b"k").unwrap(), None, "the data died with the server");
    d.set(b"k", b"new").unwrap();
}

fn sigterm_and_shutdown_remove_the_file(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("term");
    let c = sb.builder(&name).auto_kill(false).open().unwrap();
    let pid = server_pid(c.connection_file());
    let waiter = c.clone();
    let w = std::thread::spawn(move || waiter.wait_for(b"k", None, Some(Duration::from_secs(30))));
    assert!(eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .waits
        == 1));
    kill(pid, libc::SIGTERM);
    assert!(
        !w.join().unwrap().unwrap(),
        "a wait ends with false at shutdown"
    );
    assert!(eventually(Duration::from_secs(5), || !sb
        .file(&name)
        .exists()
        && !alive(pid)));
    assert!(c.get(b"k").unwrap_err().is_server_gone());

    let name = sb.name("shutdown");
    let c = sb.builder(&name).auto_kill(false).open().unwrap();
    let pid = server_pid(c.connection_file());
    c.shutdown_server().unwrap();
    assert!(eventually(Duration::from_secs(5), || !sb
        .file(&name)
        .exists()
        && !alive(pid)));
}

fn stuck_server_times_out_instead_of_hanging(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("stuck");
    let timeout = Duration::from_millis(300);
    let c = sb
        .builder(&name)
        .request_timeout(Some(timeout))
        .open()
        .unwrap();
    let sub = c.subscribe(b"k").unwrap();
    // Idle for longer than the request timeout: subscriptions are not affected by it.
    std::thread::sleep(3 * timeout);
    c.set(b"k", b"v").unwrap();
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .value
            .unwrap(),
        b"v"
    );
    let pid = server_pid(c.connection_file());
    kill(pid, libc::SIGSTOP);
    let t0 = Instant::now();
    let e = c.get(b"k").unwrap_err();
    let took = t0.elapsed();
    kill(pid, libc::SIGCONT);
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
    assert!(e.to_string().contains("reopen"), "{e}");
    assert!(
        matches!(c.count(), Err(Error::Timeout { .. })),
        "the handle stays closed"
    );
    // The server itself is fine: a new handle works.
    assert_eq!(
        sb.open(&name).get(b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

fn without_auto_kill_the_server_stays(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("stay");
    let c = sb
        .builder(&name)
        .auto_kill(false)
        .linger(Duration::from_millis(50))
        .open()
        .unwrap();
    c.set(b"k", b"kept").unwrap();
    let pid = server_pid(c.connection_file());
    c.close();
    // Checking that nothing happens needs time to pass: three times the linger.
    std::thread::sleep(Duration::from_millis(150));
    assert!(alive(pid));
    let d = sb.open(&name);
    assert_eq!(d.get(b"k").unwrap().as_deref(), Some(&b"kept"[..]));
    d.shutdown_server().unwrap();
    assert!(eventually(Duration::from_secs(5), || !alive(pid)));
}

fn forked_child_gets_its_own_connection(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("fork");
    let c = sb.open(&name);
    // The fork happens in a single-threaded child process (forking this multi-threaded test
    // harness would be unsafe), which opens the cache, forks, and checks both sides.
    let (ok, out, err) = finish(
        sb.child("fork", &[&name]).spawn().unwrap(),
        Duration::from_secs(30),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "parent ok");
    assert_eq!(c.get(b"from child").unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(
        c.get(b"from parent").unwrap().as_deref(),
        Some(&b"after fork"[..])
    );
}

fn open_from_a_process_with_many_threads(t: Transport) {
    let sb = Sandbox::new(t);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Allocate and free, so malloc's locks are often held when the opener
                    // starts the server.
                    std::hint::black_box(vec![0u8; 4096]);
                }
            })
        })
        .collect();
    for i in 0..5 {
        let c = sb.open(&sb.name(&format!("threads{i}")));
        c.set(b"k", b"v").unwrap();
        assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
}

fn the_server_is_detached_and_leaves_no_zombie(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("detached");
    let (ok, out, err) = finish(
        sb.child("children", &[&name]).spawn().unwrap(),
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    assert!(
        out.starts_with("children: [] server: "),
        "the opener has no child left: {out}"
    );
    let pid: u32 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
    // The opener has exited; the server it started is alive, in a session of its own, with
    // its standard streams on /dev/null.
    assert!(alive(pid));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // SAFETY: getsid has no preconditions.
    let our_session = unsafe { libc::getsid(0) };
    let session: i32 = fields[3].parse().unwrap();
    assert_ne!(
        session, our_session,
        "the server runs in a session of its own (setsid)"
    );
    assert_ne!(
        session, pid as i32,
        "and is not its leader (double fork: no controlling tty)"
    );
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
    }
    // It keeps the data for the next opener while lingering, then exits.
    let c = sb.open(&name);
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    c.close();
    assert!(eventually(Duration::from_secs(10), || !alive(pid)));
}

fn connection_file_is_private_and_holds_a_token(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("private"));
    let meta = std::fs::metadata(c.connection_file()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let info = ServerInfo::read(c.connection_file()).unwrap();
    assert_eq!(info.token.len(), 32);
    assert!(info.token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(info.host, "127.0.0.1");
    assert_eq!(info.transport, t.name());
    assert_eq!(info.version, upcache::protocol::VERSION);
    assert!(alive(info.pid));
    let address = info.address.as_str();
    assert_eq!(info.endpoint().as_ref(), Some(c.endpoint()));
    match t {
        Transport::Tcp => {
            let port = info.port;
            assert!(port > 0);
            assert_eq!(address, format!("tcp://127.0.0.1:{port}"));
        }
        Transport::Unix => {
            assert_eq!(info.port, 0);
            let sock = address.strip_prefix("unix://").unwrap();
            assert_eq!(
                std::path::Path::new(sock).parent(),
                Some(sb.path()),
                "beside the file"
            );
            let mode = std::fs::metadata(sock).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}

fn unlocked_garbage_file_is_replaced(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("garbage");
    std::fs::write(sb.file(&name), b"\x00\x01 not json at all").unwrap();
    let c = sb.open(&name);
    c.set(b"k", b"v").unwrap();
    // A stale but well-formed file pointing at a program that is not ours: also replaced,
    // because nobody holds its lock.
    let name = sb.name("foreign");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let json = format!(
        "{{\"port\":{port},\"host\":\"127.0.0.1\",\"pid\":1,\"version\":1,\"token\":\"x\",\"transport\":\"tcp\",\"address\":\"tcp://127.0.0.1:{port}\",\"max_value\":10}}\n"
    );
    std::fs::write(sb.file(&name), json).unwrap();
    let t0 = Instant::now();
    let c = sb.open(&name);
    assert!(t0.elapsed() < Duration::from_secs(2));
    c.set(b"k", b"v").unwrap();
}

fn locked_file_without_address_times_out_clearly(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("locked");
    std::fs::write(sb.file(&name), b"garbage").unwrap();
    // Someone holds the lock but never writes an address.
    let mut lock = fd_lock_holder(&sb.file(&name));
    let guard = lock.try_write().unwrap();
    let t0 = Instant::now();
    let e = sb
        .builder(&name)
        .open_timeout(Duration::from_millis(300))
        .open()
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    match &e {
        Error::OpenTimedOut { detail, .. } => {
            assert!(detail.contains("does not hold a server address"), "{e}")
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(guard);
    // Once released, the file is stale and the next open replaces it.
    sb.open(&name).set(b"k", b"v").unwrap();
}

fn fd_lock_holder(path: &std::path::Path) -> fd_lock::RwLock<std::fs::File> {
    fd_lock::RwLock::new(std::fs::File::open(path).unwrap())
}

#[test]
fn invalid_names_are_typed_errors() {
    for (name, want) in [("", "1 to 128"), ("a b", "' '"), ("x/y", "'/'")] {
        let e = UpCache::open(name).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    assert!(matches!(
        UpCache::open(&"n".repeat(129)),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn a_live_foreign_server_file_is_refused_and_kept() {
    let sb = Sandbox::new(Transport::Tcp);
    // The Python upcache's file: `{"port": N}` without a newline, no lock, no token.
    let name = sb.name("python");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = format!("{{\"port\": {port}}}");
    std::fs::write(sb.file(&name), &text).unwrap();
    for _ in 0..2 {
        // A long open timeout: the refusal comes from the check, not from the timeout.
        let e = sb
            .builder(&name)
            .open_timeout(Duration::from_secs(60))
            .open()
            .unwrap_err();
        match &e {
            Error::ForeignServer { port: p, path, .. } => {
                assert_eq!(*p, port);
                assert_eq!(path, &sb.file(&name));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("Python upcache"), "{e}");
        assert_eq!(std::fs::read_to_string(sb.file(&name)).unwrap(), text);
    }
    // That server stopped (its port refuses): the file is stale, and replaced.
    drop(listener);
    let c = sb.open(&name);
    c.set(b"k", b"v").unwrap();
    assert_eq!(
        ServerInfo::read(c.connection_file()).unwrap().transport,
        "tcp"
    );
}

#[test]
fn forged_server_requests_are_refused_without_touching_files() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("upcache-x.json");
    std::fs::write(&victim, b"keep me").unwrap();
    let spec = |name: &str, lock_fd: i32, ready_fd: i32| {
        serde_json::json!({
            "path": victim, "transport": "unix", "dir": dir.path(), "name": name,
            "auto_kill": true, "linger_ms": 1, "max_value": 1,
            "lock_fd": lock_fd, "ready_fd": ready_fd,
        })
        .to_string()
    };
    for (spec, why) in [
        (spec("x", 1000, 1001), "not open"),
        (spec("x", -1, 5), "not a usable descriptor"),
        (spec("x", 7, 7), "both 7"),
        (spec("../x", 7, 8), "invalid cache name"),
        (spec("y", 7, 8), "not the connection file"),
        ("{not json".to_string(), "not readable"),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("UPCACHE_INTERNAL_SERVER_SPEC", &spec)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(stderr.contains("not starting a cache server"), "{stderr}");
        assert!(stderr.contains(why), "{spec}: {stderr}");
        assert!(out.stdout.is_empty(), "the test harness never ran");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }
}

/// The soft and hard `RLIMIT_NOFILE` of a process.
fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

fn queued_connections_are_served_when_descriptors_free_up(t: Transport) {
    use std::os::unix::process::CommandExt;
    use upcache::protocol::{decode_incoming, Decoded, Incoming, Limits, Reply, Request, VERSION};

    const HARD: u64 = 64;
    let sb = Sandbox::new(t);
    let name = sb.name("backlog");
    // The server inherits the limits of the process that starts it.
    let mut starter = sb.child("start", &[&name]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        starter.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 32,
                rlim_max: HARD,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (ok, out, err) = finish(starter.spawn().unwrap(), Duration::from_secs(20));
    assert!(ok, "{err}");
    let info = ServerInfo::read(&sb.file(&name)).unwrap();
    assert_eq!(out.trim(), info.pid.to_string());
    assert_eq!(
        nofile_limits(info.pid),
        (HARD, HARD),
        "the server raised its soft limit to the hard one"
    );

    // More clients than the server has descriptors, all connected (queued in the listener's
    // backlog, which must hold them all: mio listens with 128 for TCP and SOMAXCONN for Unix
    // sockets, both capped by somaxconn) before any closes, so the server runs out while
    // connections wait, and none arrives afterwards to wake the listener.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    let backlog = match t {
        Transport::Tcp => somaxconn.min(128),
        Transport::Unix => somaxconn,
    };
    let clients = 300.min(HARD as usize + backlog * 3 / 4);
    let endpoint = info.endpoint().unwrap();
    let mut hello = Vec::new();
    Request::Hello {
        version: VERSION,
        token: info.token.as_bytes(),
    }
    .encode(1, &mut hello);
    let conns: Vec<_> = (0..clients)
        .map(|_| {
            let s = upcache::transports::connect(&endpoint, Duration::from_secs(5)).unwrap();
            s.write_all(&hello).unwrap();
            s
        })
        .collect();
    // Each is answered, then closed: every queued one must be served once descriptors free.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, s) in conns.into_iter().enumerate() {
        let mut buf = Vec::new();
        loop {
            match decode_incoming(&buf, &Limits::unlimited()).unwrap() {
                Decoded::Frame(Incoming::Reply(1, Reply::Uint(v)), _) => {
                    assert_eq!(v, VERSION);
                    break;
                }
                Decoded::Frame(other, _) => panic!("connection {i}: {other:?}"),
                Decoded::Incomplete { .. } => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "connection {i} of {clients} was not served within 20 s"
            );
            s.set_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 256];
            match s.read(&mut chunk) {
                Ok(0) => panic!("connection {i} closed without an answer"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("connection {i} of {clients} was not served: {e}"),
            }
        }
    }
    kill(info.pid, libc::SIGTERM);
    assert!(eventually(Duration::from_secs(5), || !alive(info.pid)));
}
