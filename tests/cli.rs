//! The `upcache` command, run as a real process, and servers started by programs that do not
//! link upcache (`upcache serve --detach`, `Builder::server_exe`, `UPCACHE_SERVER`).

mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use upcache::{Error, ServerInfo, ServerStats, TransportKind as Transport, UpCache};
use util::{alive, eventually, server_pid, Sandbox};

const EXE: &str = env!("CARGO_BIN_EXE_upcache");

/// What a run of the command gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("UTF-8 output")
    }
}

/// `upcache ARGS... --dir SANDBOX` (the directory last: it is accepted anywhere), with `input`
/// on standard input.
fn upcache_in(sb: &Sandbox, args: &[&[u8]], input: Option<&[u8]>) -> Out {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = Command::new(EXE);
    for a in args {
        cmd.arg(std::ffi::OsStr::from_bytes(a));
    }
    cmd.arg("--dir").arg(sb.path());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run upcache");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("upcache output");
    Out {
        code: out.status.code().expect("exit status"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn upcache(sb: &Sandbox, args: &[&str]) -> Out {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    upcache_in(sb, &args, None)
}

/// Runs `args` and checks it exits 0; its standard output.
fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = upcache(sb, args);
    assert_eq!(out.code, 0, "upcache {args:?}: {out:?}");
    out.text()
}

/// Kills a server process (by the pid from its connection file) when the test ends, however.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        util::kill(self.0, libc::SIGKILL);
    }
}

/// Starts a server with `upcache serve --detach` and returns its connection-file line.
fn serve_detached(sb: &Sandbox, name: &str, extra: &[&str]) -> ServerInfo {
    let mut args = vec![
        "serve",
        name,
        "--detach",
        "--transport",
        sb.transport.name(),
    ];
    args.extend(extra);
    let line = ok(sb, &args);
    let info = ServerInfo::parse(line.as_bytes()).expect("serve prints the connection file");
    assert_eq!(info, ServerInfo::read(&sb.file(name)).unwrap());
    info
}

#[test]
fn every_data_command_through_the_binary() {
    let sb = Sandbox::new(Transport::Tcp);
    let name = sb.name("cli");
    let cache = sb.open(&name);

    assert_eq!(
        ok(&sb, &["set", &name, "Light Entertainment Awards", "Dickie"]),
        ""
    );
    assert_eq!(
        cache.get(b"Light Entertainment Awards").unwrap().as_deref(),
        Some(&b"Dickie"[..])
    );
    assert_eq!(
        ok(&sb, &["get", &name, "Light Entertainment Awards"]),
        "Dickie\n"
    );
    // Missing: status 1 and nothing printed.
    let missing = upcache(&sb, &["get", &name, "nobody"]);
    assert_eq!((missing.code, missing.stdout.len()), (1, 0), "{missing:?}");

    // A value from standard input, exactly (binary and newline included).
    let value = b"line one\n\xff\x00end";
    let out = upcache_in(&sb, &[b"set", name.as_bytes(), b"bin"], Some(value));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(cache.get(b"bin").unwrap().as_deref(), Some(&value[..]));
    // Escaped by default, raw with --raw.
    assert_eq!(
        ok(&sb, &["get", &name, "bin"]),
        "line one\\n\\xff\\x00end\n"
    );
    let raw = upcache(&sb, &["get", &name, "bin", "--raw"]);
    assert_eq!((raw.code, &raw.stdout[..]), (0, &value[..]));
    // A binary key from the command line.
    let out = upcache_in(&sb, &[b"set", name.as_bytes(), b"k\xfe", b"v"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(cache.get(b"k\xfe").unwrap().as_deref(), Some(&b"v"[..]));

    // del: 0 when it existed, 1 when not.
    assert_eq!(
        upcache(&sb, &["del", &name, "k\u{fe}"]).code,
        1,
        "not the same key"
    );
    assert_eq!(
        upcache_in(&sb, &[b"del", name.as_bytes(), b"k\xfe"], None).code,
        0
    );
    assert_eq!(upcache(&sb, &["del", &name, "nobody"]).code, 1);

    assert_eq!(ok(&sb, &["incr", &name, "n"]), "1\n");
    assert_eq!(ok(&sb, &["incr", &name, "n", "41"]), "42\n");
    assert_eq!(ok(&sb, &["incr", &name, "n", "-50"]), "-8\n");
    assert_eq!(cache.get(b"n").unwrap().as_deref(), Some(&b"-8"[..]));
    let not_int = upcache(&sb, &["incr", &name, "Light Entertainment Awards"]);
    assert_eq!(not_int.code, 4, "{not_int:?}");
    assert!(not_int.stderr.contains("not a decimal"), "{not_int:?}");

    assert_eq!(ok(&sb, &["count", &name]), "3\n");
    assert_eq!(
        ok(&sb, &["keys", &name]),
        "Light Entertainment Awards\nbin\nn\n"
    );
    assert_eq!(
        ok(&sb, &["items", &name]),
        "Light Entertainment Awards\tDickie\nbin\tline one\\n\\xff\\x00end\nn\t-8\n"
    );
    let raw = upcache(&sb, &["items", &name, "--raw"]);
    assert_eq!(
        raw.stdout,
        [
            &b"Light Entertainment Awards\tDickie\nbin\t"[..],
            value,
            b"\nn\t-8\n"
        ]
        .concat()
    );

    // stats: the JSON is the typed counters; the table shows the same numbers.
    let json = ok(&sb, &["stats", &name, "--json"]);
    let stats: ServerStats = serde_json::from_str(&json).expect("stats JSON");
    assert_eq!(stats.pid, server_pid(&sb.file(&name)));
    assert_eq!(stats.keys, 3);
    assert!(stats.requests > 0);
    let table = ok(&sb, &["stats", &name]);
    let row = |field: &str| -> String {
        table
            .lines()
            .find_map(|l| {
                let mut cells = l.split_whitespace();
                (cells.next() == Some(field)).then(|| cells.next().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|| panic!("no {field} row in\n{table}"))
    };
    assert_eq!(row("keys"), "3");
    assert_eq!(row("pid"), stats.pid.to_string());

    assert_eq!(ok(&sb, &["clear", &name]), "");
    assert_eq!(cache.count().unwrap(), 0);
    assert_eq!(ok(&sb, &["keys", &name]), "");
}

#[test]
fn exit_codes_for_usage_and_no_server() {
    let sb = Sandbox::new(Transport::Tcp);
    let name = sb.name("none");
    for args in [
        &[][..],
        &["get", &name][..],
        &["frobnicate", &name],
        &["get", "bad/name", "k"],
        &["incr", &name, "k", "one"],
        &["serve", &name, "--transport", "udp"],
    ] {
        let out = upcache(&sb, args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    assert_eq!(upcache(&sb, &["--help"]).code, 0);

    // No server: status 3, and nothing is started or created.
    for args in [
        &["get", &name, "k"][..],
        &["set", &name, "k", "v"],
        &["count", &name],
        &["keys", &name],
        &["watch", &name],
        &["stats", &name],
        &["shutdown", &name],
    ] {
        let out = upcache(&sb, args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains("no server runs"), "{out:?}");
        assert!(
            !sb.file(&name).exists(),
            "{args:?} created the connection file"
        );
    }
    // The library's join-only open says the same.
    let e = sb.builder(&name).join_only(true).open().unwrap_err();
    assert!(matches!(e, Error::NoServer { .. }), "{e}");
    assert!(!sb.file(&name).exists());

    // --start elects and starts one (which exits after its linger once the command is done).
    assert_eq!(ok(&sb, &["--start", "set", &name, "k", "v"]), "");
    assert!(sb.file(&name).exists());
}

#[test]
fn serve_detach_then_join_ls_and_shutdown() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let sb = Sandbox::new(transport);
        let name = sb.name("detached");
        let info = serve_detached(&sb, &name, &["--no-auto-kill", "--max-value", "1000"]);
        let _reap = Reap(info.pid);
        assert_eq!(info.transport, transport.name());
        assert_eq!(info.max_value, 1000);
        assert_ne!(info.pid, std::process::id());
        // The server is the upcache binary, re-executed.
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", info.pid)).unwrap(),
            Path::new(EXE).canonicalize().unwrap()
        );
        // A second start finds the same server.
        assert_eq!(serve_detached(&sb, &name, &[]).pid, info.pid);

        // Rust clients join it (join-only: it must be running).
        let cache = sb.builder(&name).join_only(true).open().expect("join");
        cache.set(b"a", b"1").unwrap();
        assert_eq!(server_pid(cache.connection_file()), info.pid);
        drop(cache);

        // ls: this cache, alive, with its key count; a stale file is shown dead.
        let mut stale = info.clone();
        stale.pid = 1;
        std::fs::write(sb.file("stale"), stale.to_line()).unwrap();
        let listing = ok(&sb, &["ls"]);
        let lines: Vec<Vec<&str>> = listing
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["NAME", "PID", "ALIVE", "TRANSPORT", "ADDRESS", "KEYS"]
        );
        let pid = info.pid.to_string();
        let expected = [&name[..], &pid, "yes", transport.name(), &info.address, "1"];
        assert!(lines.contains(&expected.to_vec()), "{listing}");
        let stale = lines
            .iter()
            .find(|l| l[0] == "stale")
            .unwrap_or_else(|| panic!("{listing}"));
        assert_eq!(stale[2], "no", "{listing}");

        // No auto-kill: it stays without clients until shut down.
        assert_eq!(ok(&sb, &["count", &name]), "1\n");
        assert_eq!(ok(&sb, &["shutdown", &name]), "");
        assert!(
            eventually(Duration::from_secs(30), || !alive(info.pid)),
            "the server exits after shutdown"
        );
        assert!(!sb.file(&name).exists());
        assert_eq!(upcache(&sb, &["count", &name]).code, 3);
    }
}

#[test]
fn serve_in_the_foreground_prints_its_line_and_serves_until_signalled() {
    let sb = Sandbox::new(Transport::Unix);
    let name = sb.name("fg");
    let mut child = Command::new(EXE)
        .args([
            "serve",
            &name,
            "--transport",
            "unix",
            "--no-auto-kill",
            "--dir",
        ])
        .arg(sb.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the ready line");
    let info = ServerInfo::parse(format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(info.pid, child.id(), "the foreground process serves");
    assert_eq!(info, ServerInfo::read(&sb.file(&name)).unwrap());
    // A second foreground server for the name is refused.
    let second = upcache(&sb, &["serve", &name]);
    assert_eq!(second.code, 4, "{second:?}");
    assert!(second.stderr.contains("already serves"), "{second:?}");

    sb.builder(&name)
        .join_only(true)
        .open()
        .unwrap()
        .set(b"k", b"v")
        .unwrap();
    assert_eq!(ok(&sb, &["get", &name, "k"]), "v\n");
    // SIGTERM stops it cleanly: status 0, connection file removed.
    util::kill(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{:?}",
        read_all(child.stderr.take())
    );
    assert!(!sb.file(&name).exists());
}

fn read_all(r: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// The lines of a child's stream, read by a thread, so the test can wait with a deadline.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A running `upcache watch`, killed when dropped.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(sb: &Sandbox, args: &[&str]) -> Self {
        let mut child = Command::new(EXE)
            .args(args)
            .arg("--dir")
            .arg(sb.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let errors = lines_of(child.stderr.take().unwrap());
        // It says so on standard error once the subscription is registered.
        let said = errors
            .recv_timeout(Duration::from_secs(60))
            .expect("watch reports that it watches");
        assert!(said.contains("watching"), "{said}");
        Watch { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("an event line")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_events_as_they_happen() {
    let sb = Sandbox::new(Transport::Tcp);
    let name = sb.name("watch");
    let cache = sb.open(&name);
    let one = Watch::start(&sb, &["watch", &name, "config"]);
    let all = Watch::start(&sb, &["watch", &name]);
    cache.set(b"other", b"x").unwrap();
    cache.set(b"config", b"v\xff2").unwrap();
    assert_eq!(one.next(), "set\tconfig\tv\\xff2");
    cache.remove(b"config").unwrap();
    assert_eq!(one.next(), "del\tconfig");
    cache.clear().unwrap();
    assert_eq!(one.next(), "clear");
    for expected in [
        "set\tother\tx",
        "set\tconfig\tv\\xff2",
        "del\tconfig",
        "clear",
    ] {
        assert_eq!(all.next(), expected);
    }
    // The server going away ends the watch with status 3.
    let mut one = one;
    cache.shutdown_server().unwrap();
    let status = one.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
}

/// A program path for the tests of `server_exe`: a file in the sandbox with `text` and `mode`.
fn program(sb: &Sandbox, file: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = sb.path().join(file);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn server_exe_runs_the_upcache_command_as_the_server() {
    let sb = Sandbox::new(Transport::Tcp);
    let name = sb.name("exe");
    let cache = sb.builder(&name).server_exe(EXE).open().unwrap();
    cache.set(b"k", b"v").unwrap();
    let pid = server_pid(cache.connection_file());
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new(EXE).canonicalize().unwrap()
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert_eq!(&args[1..3], [&b"serve"[..], name.as_bytes()]);
    assert_eq!(ok(&sb, &["get", &name, "k"]), "v\n");
}

#[test]
fn a_server_program_that_cannot_serve_fails_the_open_at_once_and_by_name() {
    let sb = Sandbox::new(Transport::Tcp);
    let missing = sb.path().join("no-such-upcache");
    let not_executable = program(&sb, "plain-file", "#!/bin/sh\nexit 0\n", 0o644);
    let exits = program(&sb, "exits-at-once", "#!/bin/sh\nexit 0\n", 0o755);
    for exe in [&missing, &not_executable, &exits] {
        let name = sb.name("bad-exe");
        // A long open timeout: failing "at once" means failing on what happened (a regression
        // fails with `OpenTimedOut` after it instead).
        let e = sb
            .builder(&name)
            .server_exe(exe)
            .open_timeout(Duration::from_secs(120))
            .open()
            .unwrap_err();
        assert!(
            matches!(e, Error::ServerStart { .. }),
            "{}: {e}",
            exe.display()
        );
        assert!(
            e.to_string().contains(&exe.display().to_string()),
            "the error names the program: {e}"
        );
        assert!(!sb.file(&name).exists(), "the election is abandoned");
    }
    // A bare name is looked up in PATH, and named when it is not found.
    let e = sb
        .builder(&sb.name("bare"))
        .server_exe("upcache-no-such-program")
        .open_timeout(Duration::from_secs(120))
        .open()
        .unwrap_err();
    assert!(e.to_string().contains("upcache-no-such-program"), "{e}");
}

#[test]
fn the_upcache_server_variable_chooses_the_program() {
    let sb = Sandbox::new(Transport::Tcp);
    // A copy of the command under another name: the server must be that file.
    let copy = sb.path().join("my-upcache-server");
    std::fs::copy(EXE, &copy).unwrap();
    let name = sb.name("env");
    let out = Command::new(EXE)
        .args(["serve", &name, "--detach", "--no-auto-kill", "--dir"])
        .arg(sb.path())
        .env("UPCACHE_SERVER", &copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = server_pid(&sb.file(&name));
    let _reap = Reap(pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        copy.canonicalize().unwrap()
    );
    assert_eq!(ok(&sb, &["set", &name, "k", "v"]), "");
    assert_eq!(ok(&sb, &["get", &name, "k"]), "v\n");
    assert_eq!(ok(&sb, &["shutdown", &name]), "");

    // A variable naming a missing program: status 4 at once, with its name.
    let bad = sb.path().join("missing-server");
    let out = Command::new(EXE)
        .args(["--start", "count", &sb.name("env-bad"), "--dir"])
        .arg(sb.path())
        .env("UPCACHE_SERVER", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bad.display().to_string()));
}

#[test]
fn racing_detached_starters_get_one_server() {
    let sb = Sandbox::new(Transport::Unix);
    let name = sb.name("race");
    let pids: Vec<u32> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| serve_detached(&sb, &name, &["--no-auto-kill"]).pid))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let _reap = Reap(pids[0]);
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    assert_eq!(server_pid(&sb.file(&name)), pids[0]);
    assert_eq!(ok(&sb, &["shutdown", &name]), "");
}

/// The JSON line `tests/starter.py` prints.
#[derive(serde::Deserialize, Debug)]
struct Started {
    pid: u32,
    address: String,
    ran_serve: bool,
}

fn python_starter(sb: &Sandbox, name: &str) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/starter.py");
    Command::new("python3")
        .arg(script)
        .arg(EXE)
        .arg(sb.path())
        .arg(name)
        .args(["--no-auto-kill", "--transport", sb.transport.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the starter (python3 is required by this test)")
}

fn started(child: Child) -> Started {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "starter failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("the starter's line")
}

#[test]
fn a_python_program_starts_a_server_that_rust_clients_join() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let sb = Sandbox::new(transport);
        let name = sb.name("py");
        // Two starters race; the election in `upcache serve --detach` gives them one server.
        let a = python_starter(&sb, &name);
        let b = python_starter(&sb, &name);
        let (a, b) = (started(a), started(b));
        let _reap = Reap(a.pid);
        assert_eq!(a.pid, b.pid, "{a:?} {b:?}");
        assert_eq!(a.address, b.address);
        let info = ServerInfo::read(&sb.file(&name)).unwrap();
        assert_eq!((info.pid, &info.address), (a.pid, &a.address));
        assert!(alive(a.pid));

        // Rust clients join it, without starting anything.
        let c1 = sb.builder(&name).join_only(true).open().unwrap();
        let c2 = UpCache::builder(&name)
            .dir(sb.path())
            .join_only(true)
            .open()
            .unwrap();
        c1.set(b"from", b"rust").unwrap();
        assert_eq!(c2.get(b"from").unwrap().as_deref(), Some(&b"rust"[..]));
        assert_eq!(c2.stats().unwrap().pid, a.pid);

        // A later starter finds the running server and does not run `serve`.
        let c = started(python_starter(&sb, &name));
        assert_eq!(c.pid, a.pid);
        assert!(!c.ran_serve);

        c1.shutdown_server().unwrap();
        assert!(eventually(Duration::from_secs(30), || !alive(a.pid)));
    }
}

#[test]
fn ttl_commands_through_the_binary() {
    let sb = Sandbox::new(Transport::Tcp);
    let name = sb.name("clittl");
    let cache = sb.open(&name);
    ok(&sb, &["set", &name, "k", "v", "--ttl", "3600000"]);
    let left: u64 = ok(&sb, &["ttl", &name, "k"]).trim().parse().unwrap();
    assert!((3_590_000..=3_600_000).contains(&left), "{left}");
    assert_eq!(ok(&sb, &["persist", &name, "k"]), "");
    assert_eq!(ok(&sb, &["ttl", &name, "k"]), "forever\n");
    assert_eq!(
        upcache(&sb, &["persist", &name, "k"]).code,
        1,
        "no TTL left to take"
    );
    assert_eq!(upcache(&sb, &["ttl", &name, "missing"]).code, 1);
    assert_eq!(upcache(&sb, &["expire", &name, "missing", "10"]).code, 1);
    // A TTL of zero is refused with a clear error, not a crash.
    let zero = upcache(&sb, &["expire", &name, "k", "0"]);
    assert!(zero.code != 0 && zero.stderr.contains("TTL"), "{zero:?}");
    assert_eq!(ok(&sb, &["expire", &name, "k", "50"]), "");
    assert!(cache
        .wait_for(b"k", None, Some(Duration::from_secs(10)))
        .unwrap());
    assert_eq!(cache.get(b"k").unwrap(), None);
}
