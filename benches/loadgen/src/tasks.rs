//! `loadgen tasks`: async clients under tokio, one connection shared by many tasks.
//!
//! The same harness drives upcache's async client (`upcache::aio::UpCache`) and redis-rs's
//! multiplexed async connection (`redis::aio::MultiplexedConnection`), and, where a floor
//! server is given, upcache's async client against the floor (its own ceiling on this
//! machine). Dimensions, printed with every table: tasks (1, 64, 1,024 by default), transport
//! (from each target's address), GETs of keys stored beforehand (so they hit) drawn uniformly
//! from `keys` keys of `key_size` bytes with values of `value_size` bytes, warm-up and duration,
//! and the runtime's worker threads. Each task loops `get(key).await` on its clone of the one
//! handle; a request's latency is the time from the call to its reply, and ops/s counts the
//! replies of the measured window. Latencies go to an HDR histogram (3 significant digits).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use upcache::aio;
use upcache_transports::Endpoint;

use crate::{fmt_ops, key, preload, Load, Measured, Proto, Target};

/// One handle of one client library, cloned into every task.
#[derive(Clone)]
enum Client {
    Upcache(aio::UpCache),
    Redis(redis::aio::MultiplexedConnection),
}

impl Client {
    /// Opens a handle to `t`. An upcache-protocol target (upcache or the floor) gets a
    /// connection file of its own in `scratch`, locked as a server holds it, kept in `files`
    /// for the run: the client then finds a running server there, as any opener does.
    async fn open(
        t: &Target,
        scratch: &Path,
        files: &mut Vec<std::fs::File>,
    ) -> Result<Client, Box<dyn std::error::Error>> {
        match t.proto {
            Proto::Upcache => {
                let token = t.token.clone().unwrap_or_default();
                let name = format!("{}-{}", t.name, t.transport());
                let info = upcache::ServerInfo::new(&t.endpoint, &token, 64 << 20);
                let path = scratch.join(format!("upcache-{name}.json"));
                std::fs::write(&path, info.to_line())?;
                let file = std::fs::File::open(&path)?;
                // SAFETY: flock on a descriptor this function owns; no memory is involved.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                files.push(file);
                let c = aio::UpCache::builder(&name)
                    .dir(scratch)
                    .open_async()
                    .await?;
                Ok(Client::Upcache(c))
            }
            Proto::Resp => {
                let url = match &t.endpoint {
                    Endpoint::Tcp(a) => format!("redis://{a}/"),
                    Endpoint::Unix(p) => format!("redis+unix://{}", p.display()),
                };
                let c = redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await?;
                Ok(Client::Redis(c))
            }
            Proto::Memcached => Err("tasks: memcached has no client here".into()),
        }
    }

    /// One GET; whether it hit.
    async fn get(&mut self, key: &[u8]) -> bool {
        match self {
            Client::Upcache(c) => c.get(key).await.expect("upcache get").is_some(),
            Client::Redis(c) => {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(c)
                    .await
                    .expect("redis get");
                v.is_some()
            }
        }
    }
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// `tasks` tasks sharing `client` do GETs for the warm-up and then the measured window.
async fn measure(client: &Client, keys: &Arc<Vec<Vec<u8>>>, tasks: usize, load: &Load) -> Measured {
    let phase = Arc::new(AtomicU8::new(WARMING));
    let mut set = tokio::task::JoinSet::new();
    for n in 0..tasks {
        let (mut c, keys, phase) = (client.clone(), keys.clone(), phase.clone());
        set.spawn(async move {
            let mut rng =
                0x9e37_79b9_7f4a_7c15u64 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            // Latencies in ns, merged into one histogram at the end (a histogram per task would
            // cost more memory than the run).
            let mut lat: Vec<u32> = Vec::new();
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOPPED {
                    break;
                }
                crate::xorshift(&mut rng);
                let k = &keys[(rng % keys.len() as u64) as usize];
                let t0 = Instant::now();
                assert!(c.get(k).await, "every key was stored beforehand");
                if p == MEASURING && phase.load(Ordering::Relaxed) == MEASURING {
                    lat.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                }
            }
            lat
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(load.warmup)).await;
    phase.store(MEASURING, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(load.duration)).await;
    phase.store(STOPPED, Ordering::Relaxed);
    let window = start.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut ops = 0u64;
    while let Some(r) = set.join_next().await {
        for ns in r.expect("load task") {
            hist.record(u64::from(ns.max(1))).expect("in bounds");
            ops += 1;
        }
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Measured {
        ops_per_sec: ops as f64 / window.as_secs_f64(),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
        client_busy: None,
        client_waiting: None,
    }
}

/// Runs the table: for each transport and task count, every target in turn.
pub fn run(
    targets: &[Target],
    task_counts: &[usize],
    load: &Load,
    workers: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    for t in targets {
        if t.name != "floor" {
            preload(t, load, 0)?;
        }
    }
    let keys: Arc<Vec<Vec<u8>>> = Arc::new((0..load.keys).map(|i| key(i, load.key_size)).collect());
    let scratch = tempdir()?;
    println!(
        "# async clients, one connection shared by N tasks doing GETs; tokio multi-thread runtime, {workers} worker thread(s)"
    );
    println!(
        "# {} keys of {} B, values of {} B; warm-up {} s, measured {} s per cell; latency = call to reply",
        load.keys, load.key_size, load.value_size, load.warmup, load.duration
    );
    let names: Vec<&str> = ["upcache", "redis", "floor"]
        .into_iter()
        .filter(|n| targets.iter().any(|t| t.name == *n))
        .collect();
    let mut header = format!("{:<5} {:>5}", "net", "tasks");
    for n in &names {
        let client = if *n == "redis" {
            "redis-rs"
        } else {
            "upcache aio"
        };
        header += &format!(
            " | {:>20} {:>17}",
            format!("{client} → {n} ops/s"),
            "p50/p99 µs"
        );
    }
    header += " | up/redis up/floor";
    println!("{header}");
    let mut files = Vec::new();
    rt.block_on(async {
        for net in ["tcp", "unix"] {
            let here: Vec<&Target> = targets.iter().filter(|t| t.transport() == net).collect();
            if here.is_empty() {
                continue;
            }
            let mut clients = Vec::new();
            for n in &names {
                match here.iter().find(|t| t.name == *n) {
                    Some(t) => clients.push(Some(Client::open(t, &scratch.0, &mut files).await?)),
                    None => clients.push(None),
                }
            }
            for &tasks in task_counts {
                let mut row = format!("{net:<5} {tasks:>5}");
                let mut got = std::collections::HashMap::new();
                for (n, c) in names.iter().zip(&clients) {
                    match c {
                        Some(c) => {
                            let m = measure(c, &keys, tasks, load).await;
                            row += &format!(
                                " | {:>20} {:>17}",
                                fmt_ops(m.ops_per_sec),
                                format!("{:.1}/{:.1}", m.p50_us, m.p99_us)
                            );
                            got.insert(*n, m.ops_per_sec);
                        }
                        None => row += &format!(" | {:>20} {:>17}", "-", "-"),
                    }
                }
                let ratio = |other: &str| match (got.get("upcache"), got.get(other)) {
                    (Some(u), Some(o)) if *o > 0.0 => format!("{:.2}", u / o),
                    _ => "-".into(),
                };
                row += &format!(" | {:>8} {:>8}", ratio("redis"), ratio("floor"));
                println!("{row}");
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// A scratch directory for connection files, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> std::io::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("upcache-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}
