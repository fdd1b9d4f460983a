//! `get_or_compute` across real processes: 64 processes ask for one missing key at once, and
//! exactly one computes it; the same when the first computer is killed by SIGKILL mid-way or
//! its computation fails. Plus the async client's tasks, with a cancelled computation.
//!
//! Each child process (this test binary run again with `STAMPEDE_ROLE` set; its hook runs
//! before `main`) opens the cache, says it is ready, waits for the parent's "go" (a `wait_for`,
//! no sleep), and calls `get_or_compute`. The computation sleeps 50 ms, appends `ok PID` to a
//! count file, and returns a value naming its PID; so a child that gets a value can check that
//! the computation that made it had finished (its line is in the file) before the value
//! reached it. The first computation (the one that creates a marker file) of the `die` mode
//! kills its own process with SIGKILL after writing `dying PID`; of the `fail` mode, writes
//! `failed PID` and returns an error.

mod util;

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use upcache::{ComputeError, TransportKind, UpCache};
use util::Sandbox;

const ROLE_ENV: &str = "STAMPEDE_ROLE";
const CHILDREN: usize = 64;
const KEY: &[u8] = b"the expensive page";

each_transport!(
    one_computation,
    holder_killed_mid_compute,
    computation_fails
);

#[used]
#[link_section = ".init_array"]
static ROLE_ENTRY: extern "C" fn() = role_entry;

extern "C" fn role_entry() {
    util::run_as_child(ROLE_ENV, child);
}

fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("count file");
    f.write_all(format!("{line}\n").as_bytes()).expect("append");
}

/// Whether this computation is the first one (it creates the marker).
fn first(dir: &Path) -> bool {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("marker"))
        .is_ok()
}

/// The child: `dir transport name mode`.
fn child(p: &[&str]) -> Result<(), String> {
    let (dir, transport, name, mode) = (Path::new(p[0]), p[1], p[2], p[3]);
    let transport = if transport == "unix" {
        TransportKind::Unix
    } else {
        TransportKind::Tcp
    };
    let count = dir.join("count");
    let c = UpCache::builder(name)
        .dir(dir)
        .transport(transport)
        .open()
        .map_err(|e| e.to_string())?;
    c.incr(b"ready").map_err(|e| e.to_string())?;
    if !c
        .wait_for(b"go", Some(b"1"), Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?
    {
        return Err("no go".into());
    }
    let me = std::process::id();
    let got = c.get_or_compute(KEY, None, || {
        if mode != "ok" && first(dir) {
            if mode == "die" {
                append(&count, &format!("dying {me}"));
                util::kill(me, libc::SIGKILL);
                unreachable!("killed");
            }
            append(&count, &format!("failed {me}"));
            return Err(format!("computation of {me} failed"));
        }
        std::thread::sleep(Duration::from_millis(50));
        append(&count, &format!("ok {me}"));
        Ok(format!("page computed by {me}").into_bytes())
    });
    match got {
        Ok(v) => {
            let v = String::from_utf8(v).map_err(|e| e.to_string())?;
            let by = v.strip_prefix("page computed by ").ok_or("odd value")?;
            // The computation that made the value had finished before it reached us.
            let lines = std::fs::read_to_string(&count).map_err(|e| e.to_string())?;
            if !lines.lines().any(|l| l == format!("ok {by}")) {
                return Err(format!("{v:?} returned before its computation ended"));
            }
            println!("value {by}");
        }
        Err(ComputeError::Compute(e)) => println!("error {e}"),
        Err(ComputeError::Cache(e)) => return Err(e.to_string()),
    }
    Ok(())
}

struct Outcome {
    /// PID → what it printed (`value PID`, `error ...`), for the children that exited 0.
    printed: BTreeMap<u32, String>,
    /// PIDs of children killed by a signal, and of those that failed otherwise (with stderr).
    killed: Vec<u32>,
    failed: Vec<(u32, String)>,
    /// The count file's lines.
    lines: Vec<String>,
}

fn stampede(t: TransportKind, mode: &str) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new(t);
    let name = sb.name(&format!("stampede-{mode}"));
    // The parent keeps the server up and gives the start signal.
    let c = sb.open(&name);
    let spec = [
        sb.path().display().to_string(),
        t.name().to_string(),
        name.clone(),
        mode.to_string(),
    ];
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| util::child_command(ROLE_ENV, &spec).spawn().expect("spawn"))
        .collect();
    let ready = CHILDREN.to_string();
    assert!(
        c.wait_for(
            b"ready",
            Some(ready.as_bytes()),
            Some(Duration::from_secs(120))
        )
        .unwrap(),
        "children ready"
    );
    assert_eq!(c.get(KEY).unwrap(), None);
    c.set(b"go", b"1").unwrap();
    let mut out = Outcome {
        printed: BTreeMap::new(),
        killed: Vec::new(),
        failed: Vec::new(),
        lines: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut child in children {
        let pid = child.id();
        while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // only one that overran the deadline is still there
        let o = child.wait_with_output().expect("output");
        match (o.status.code(), o.status.signal()) {
            (Some(0), _) => {
                out.printed
                    .insert(pid, String::from_utf8_lossy(&o.stdout).trim().to_string());
            }
            (_, Some(libc::SIGKILL)) if Instant::now() < deadline => out.killed.push(pid),
            _ => out
                .failed
                .push((pid, String::from_utf8_lossy(&o.stderr).into_owned())),
        }
    }
    out.lines = std::fs::read_to_string(sb.path().join("count"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let s = c.stats().unwrap();
    assert_eq!(
        (s.leases, s.lease_waiters),
        (0, 0),
        "no lease is left behind"
    );
    out
}

/// The PIDs of the count file's lines that start with `what`.
fn pids(lines: &[String], what: &str) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(what)?.strip_prefix(' ')?.parse().ok())
        .collect()
}

/// Every child in `pids` printed `value BY`.
fn all_got_value_of(out: &Outcome, by: u32, except: &HashSet<u32>) {
    let want = format!("value {by}");
    for (pid, printed) in &out.printed {
        if !except.contains(pid) {
            assert_eq!(printed, &want, "child {pid}");
        }
    }
}

fn one_computation(t: TransportKind) {
    let out = stampede(t, "ok");
    assert!(
        out.failed.is_empty() && out.killed.is_empty(),
        "{:?}",
        out.failed
    );
    let ok = pids(&out.lines, "ok");
    assert_eq!(ok.len(), 1, "exactly one computation: {:?}", out.lines);
    assert_eq!(out.lines.len(), 1);
    assert_eq!(out.printed.len(), CHILDREN);
    all_got_value_of(&out, ok[0], &HashSet::new());
}

fn holder_killed_mid_compute(t: TransportKind) {
    let out = stampede(t, "die");
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let dying = pids(&out.lines, "dying");
    let ok = pids(&out.lines, "ok");
    assert_eq!(dying.len(), 1, "{:?}", out.lines);
    assert_eq!(ok.len(), 1, "exactly one more computation: {:?}", out.lines);
    assert_eq!(out.lines.len(), 2);
    assert_eq!(
        out.killed, dying,
        "the killed child is the one that computed first"
    );
    assert_ne!(ok[0], dying[0], "a waiter computed");
    assert_eq!(
        out.printed.len(),
        CHILDREN - 1,
        "every other child got a value"
    );
    all_got_value_of(&out, ok[0], &HashSet::new());
}

fn computation_fails(t: TransportKind) {
    let out = stampede(t, "fail");
    assert!(
        out.failed.is_empty() && out.killed.is_empty(),
        "{:?}",
        out.failed
    );
    let failed = pids(&out.lines, "failed");
    let ok = pids(&out.lines, "ok");
    assert_eq!(failed.len(), 1, "{:?}", out.lines);
    assert_eq!(
        ok.len(),
        1,
        "exactly one other computation: {:?}",
        out.lines
    );
    assert_eq!(out.lines.len(), 2);
    assert_ne!(ok[0], failed[0]);
    assert_eq!(
        out.printed[&failed[0]],
        format!("error computation of {} failed", failed[0]),
        "the failing caller gets its own error"
    );
    assert_eq!(out.printed.len(), CHILDREN);
    all_got_value_of(&out, ok[0], &HashSet::from([failed[0]]));
}

/// The async client: 64 tasks on two handles compute a missing key once; a computation that
/// is cancelled (its task aborted) passes the lease to the waiting task at once, long before
/// the lease's timeout (60 s here, past the test's own deadline).
#[test]
fn async_tasks_compute_once_and_a_cancelled_computation_passes_the_lease_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let sb = Sandbox::new(TransportKind::Tcp);
            let name = sb.name("stampede-async");
            let open = || {
                sb.builder(&name)
                    .lease_timeout(Duration::from_secs(60))
                    .open_async()
            };
            let (h1, h2) = (open().await.unwrap(), open().await.unwrap());
            let runs = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let h = if i % 2 == 0 { h1.clone() } else { h2.clone() };
                    let runs = Arc::clone(&runs);
                    tokio::spawn(async move {
                        h.get_or_compute(KEY, None, || async move {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(b"computed".to_vec())
                        })
                        .await
                        .unwrap()
                    })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap(), b"computed");
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1);

            let (started, is_started) = tokio::sync::oneshot::channel();
            let h = h1.clone();
            let holder = tokio::spawn(async move {
                h.get_or_compute(b"c", None, || async move {
                    let _ = started.send(());
                    std::future::pending::<Result<Vec<u8>, String>>().await
                })
                .await
            });
            is_started.await.unwrap();
            let h = h2.clone();
            let waiter = tokio::spawn(async move {
                h.get_or_compute(b"c", None, || async {
                    Ok::<_, String>(b"by the waiter".to_vec())
                })
                .await
            });
            while h1.stats().await.unwrap().lease_waiters < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            holder.abort();
            assert_eq!(waiter.await.unwrap().unwrap(), b"by the waiter");
            let s = h1.stats().await.unwrap();
            assert_eq!((s.leases, s.lease_handoffs), (0, 1));

            // A waiter that was cancelled: the lease that reaches it is released at once, to
            // the next waiter (two handoffs: to the cancelled one, then past it).
            let (fail, failed) = tokio::sync::oneshot::channel::<()>();
            let (started, is_started) = tokio::sync::oneshot::channel();
            let h = h1.clone();
            let holder = tokio::spawn(async move {
                h.get_or_compute(b"d", None, || async move {
                    let _ = started.send(());
                    let _ = failed.await;
                    Err::<Vec<u8>, _>("the holder fails")
                })
                .await
            });
            is_started.await.unwrap();
            let h = h2.clone();
            let cancelled = tokio::spawn(async move {
                h.get_or_compute(b"d", None, || async { Ok::<_, String>(b"never".to_vec()) })
                    .await
            });
            while h1.stats().await.unwrap().lease_waiters < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let h = h2.clone();
            let next = tokio::spawn(async move {
                h.get_or_compute(b"d", None, || async {
                    Ok::<_, String>(b"by the next".to_vec())
                })
                .await
            });
            while h1.stats().await.unwrap().lease_waiters < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cancelled.abort();
            assert!(cancelled.await.unwrap_err().is_cancelled());
            fail.send(()).unwrap();
            assert!(matches!(
                holder.await.unwrap(),
                Err(ComputeError::Compute("the holder fails"))
            ));
            assert_eq!(next.await.unwrap().unwrap(), b"by the next");
            let s = h1.stats().await.unwrap();
            assert_eq!((s.leases, s.lease_handoffs), (0, 3));
        })
        .await
        .expect("within the deadline");
    });
}

#[test]
fn a_lease_timeout_out_of_range_is_refused_before_any_election() {
    let sb = Sandbox::new(TransportKind::Tcp);
    let name = sb.name("lease-option");
    for d in [Duration::ZERO, Duration::from_millis(1 << 40)] {
        let e = sb.builder(&name).lease_timeout(d).open().unwrap_err();
        assert!(
            matches!(
                e,
                upcache::Error::InvalidOption {
                    option: "lease_timeout",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert!(!sb.file(&name).exists(), "no election ran");
}

/// Threads of one process, on one handle and on a second one: a computation that panics
/// releases its lease (the panic goes on in its own thread), and so does one whose value is
/// too large to store; then exactly one thread computes, and a present key is just read.
#[test]
fn threads_share_leases_and_a_panicking_or_unstorable_computation_releases_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    let sb = Sandbox::new(TransportKind::Unix);
    let name = sb.name("lease-threads");
    let (a, b) = (sb.open(&name), sb.open(&name));
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let c = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (runs, barrier) = (Arc::clone(&runs), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                c.get_or_compute(KEY, None, || {
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => panic!("the first computation panics"),
                        1 => Ok(vec![0u8; 64 << 20 | 1]), // over the server's value limit
                        _ => Ok::<_, String>(b"third time lucky".to_vec()),
                    }
                })
            })
        })
        .collect();
    let mut values = 0;
    let mut too_large = 0;
    let mut panicked = 0;
    for t in threads {
        match t.join() {
            Err(_) => panicked += 1,
            Ok(Ok(v)) => {
                assert_eq!(v, b"third time lucky");
                values += 1;
            }
            Ok(Err(ComputeError::Cache(upcache::Error::ValueTooLarge { .. }))) => too_large += 1,
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!((panicked, too_large, values), (1, 1, 14));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // Present now: one round trip, no computation.
    let v = a
        .get_or_compute(KEY, None, || Err::<Vec<u8>, _>("not called"))
        .unwrap();
    assert_eq!(v, b"third time lucky");
    let s = a.stats().unwrap();
    assert_eq!((s.leases, s.lease_waiters), (0, 0));
}
