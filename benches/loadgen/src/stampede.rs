//! `loadgen stampede`: N callers ask for one missing key at once, each computation takes a
//! fixed time; upcache's `get_or_compute` against the usual Redis recipe, same harness.
//!
//! Dimensions (flags, printed with the table): the targets (`upcache=FILE` with FILE a
//! connection file named `upcache-NAME.json`, `redis=tcp:HOST:PORT`), the caller counts N (one
//! row per N and target), `compute_ms` (the computation's sleep), `rounds` per cell, a value of
//! `value_size` B. Every caller is a thread with its own connection(s) to the server, as a
//! separate process would have (upcache: its own handle, so its own request and event
//! connections).
//!
//! One round: a fresh key (`stampede:ROUND`), missing; the N threads pass a barrier and ask at
//! once.
//!
//! - upcache: `get_or_compute(key, None, f)`: one caller gets the lease and runs `f` (sleep
//!   `compute_ms`), then stores the value; the others wait for the server's push.
//! - Redis, the recipe users build by hand: `GET key`; on a miss `SET lock:key TOKEN NX PX
//!   30000`; the winner checks `GET key` again (another caller may have stored and unlocked in
//!   between), runs `f`, `SET key value`, `DEL lock:key`; the others poll `GET key`
//!   every `poll_ms` (5 ms), trying the lock again at each miss (so a dead winner's lock expires
//!   into a new computation).
//!
//! Reported per cell (medians and maxima over the rounds): computations per round (the goal is
//! 1), `store → last`: from the instant `f` returned its value to the instant the last caller
//! had it (this includes the store's own round trip, and for upcache the push to every waiter;
//! the goal is under 1 ms), and `total`: from the barrier to the last caller's value.
//! Timestamps are this process's monotonic clock, so client scheduling counts too: with N
//! threads on few cores the last caller is as late as the scheduler makes it.
//!
//! So each cell runs twice: with threads as above (`threads`), and from one thread that drives
//! the N connections itself with the raw protocol (`1 thread`): what the server and the kernel
//! take, without N thread wake-ups. There, upcache: N `GET_OR_LEASE` written, their replies
//! read (one `LEASED`), a sleep of `compute_ms`, the holder's `SET`, then one `LEASE_VALUE`
//! push read from every other connection. Redis: N `GET`s and N `SET NX PX`s, then each loser
//! polls `GET` every `poll_ms` from its own random phase while the winner's `SET` comes at
//! `compute_ms` (a timer queue in the one thread).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use upcache::UpCache;

use upcache::protocol::{decode_incoming, Decoded, Incoming, Limits, PushKind, Reply, Request};

use super::proto::{resp_command, Proto};
use super::{Conn, Target};

/// What `loadgen stampede` measures (see the module's documentation).
#[derive(clap::Args, Clone, Debug)]
pub struct Dims {
    /// Caller counts, comma-separated: one row per count and target.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    pub callers: Vec<usize>,
    /// How long one computation takes (a sleep).
    #[arg(long, default_value_t = 50)]
    pub compute_ms: u64,
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// The Redis recipe's polling interval.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
}

/// One round's outcome.
struct Round {
    computations: usize,
    store_to_last: Duration,
    total: Duration,
}

/// What a round's callers share.
struct Shared {
    runs: AtomicUsize,
    /// When `f` returned its value (the last computation's, if several ran).
    computed: Mutex<Option<Instant>>,
    start: Mutex<Option<Instant>>,
}

/// A caller: asks for `key`, computing with `f` if it must; returns the value.
trait Caller: Send {
    fn call(&mut self, key: &[u8], f: &dyn Fn() -> Vec<u8>) -> io::Result<Vec<u8>>;
}

struct UpcacheCaller(UpCache);

impl Caller for UpcacheCaller {
    fn call(&mut self, key: &[u8], f: &dyn Fn() -> Vec<u8>) -> io::Result<Vec<u8>> {
        self.0
            .get_or_compute(key, None, || Ok::<_, io::Error>(f()))
            .map_err(io::Error::other)
    }
}

struct RedisCaller {
    conn: Conn,
    poll: Duration,
    token: Vec<u8>,
    out: Vec<u8>,
}

impl RedisCaller {
    /// Sends one command and returns its reply's bytes.
    fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Vec<u8>> {
        self.out.clear();
        resp_command(args, &mut self.out);
        self.conn.s.write_all(&self.out)?;
        self.conn.read_reply_with(|b| b.to_vec())
    }

    /// `GET key`: the value, or None for RESP's nil (`$-1`).
    fn get(&mut self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let r = self.cmd(&[b"GET", key])?;
        if r.starts_with(b"$-1") {
            return Ok(None);
        }
        let start = r
            .iter()
            .position(|&b| b == b'\n')
            .map_or(r.len(), |i| i + 1);
        Ok(Some(r[start..r.len().saturating_sub(2)].to_vec()))
    }
}

impl Caller for RedisCaller {
    fn call(&mut self, key: &[u8], f: &dyn Fn() -> Vec<u8>) -> io::Result<Vec<u8>> {
        let lock = [b"lock:", key].concat();
        loop {
            if let Some(v) = self.get(key)? {
                return Ok(v);
            }
            let token = self.token.clone();
            let won = self.cmd(&[b"SET", &lock, &token, b"NX", b"PX", b"30000"])?;
            if won.starts_with(b"+OK") {
                // Another caller may have stored and unlocked between our GET and our SET NX.
                if let Some(v) = self.get(key)? {
                    self.cmd(&[b"DEL", &lock])?;
                    return Ok(v);
                }
                let v = f();
                self.cmd(&[b"SET", key, &v])?;
                self.cmd(&[b"DEL", &lock])?;
                return Ok(v);
            }
            std::thread::sleep(self.poll);
        }
    }
}

/// The directory and cache name of an upcache connection file `DIR/upcache-NAME.json`.
fn upcache_name(file: &Path) -> io::Result<(PathBuf, String)> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("upcache-")?.strip_suffix(".json"))
        .ok_or_else(|| io::Error::other("the connection file must be DIR/upcache-NAME.json"))?;
    let dir = file.parent().map(|d| d.to_path_buf()).unwrap_or_default();
    Ok((dir, name.to_string()))
}

/// A target and, for upcache, its connection file.
struct Spec {
    target: Target,
    file: Option<PathBuf>,
}

fn callers(spec: &Spec, n: usize, dims: &Dims) -> io::Result<Vec<Box<dyn Caller>>> {
    let t = &spec.target;
    (0..n)
        .map(|i| -> io::Result<Box<dyn Caller>> {
            match t.proto {
                Proto::Upcache => {
                    let file = spec
                        .file
                        .as_deref()
                        .ok_or_else(|| io::Error::other("no file"))?;
                    let (dir, name) = upcache_name(file)?;
                    let c = UpCache::builder(&name)
                        .dir(dir)
                        .join_only(true)
                        .open()
                        .map_err(io::Error::other)?;
                    // Open its event connection now, not in the first round.
                    c.get_or_compute(b"stampede:warm", None, || Ok::<_, io::Error>(b"w".to_vec()))
                        .map_err(io::Error::other)?;
                    Ok(Box::new(UpcacheCaller(c)))
                }
                Proto::Resp => Ok(Box::new(RedisCaller {
                    conn: t.connect()?,
                    poll: Duration::from_millis(dims.poll_ms),
                    token: format!("caller-{i}").into_bytes(),
                    out: Vec::new(),
                })),
                Proto::Memcached => Err(io::Error::other("stampede: upcache or redis targets")),
            }
        })
        .collect()
}

/// One round with every caller on its own thread; `callers` come back for the next round.
fn round(
    callers: Vec<Box<dyn Caller>>,
    key: &[u8],
    dims: &Dims,
) -> io::Result<(Vec<Box<dyn Caller>>, Round)> {
    let n = callers.len();
    let shared = Arc::new(Shared {
        runs: AtomicUsize::new(0),
        computed: Mutex::new(None),
        start: Mutex::new(None),
    });
    let barrier = Arc::new(Barrier::new(n));
    let value = vec![b'v'; dims.value_size];
    let compute = Duration::from_millis(dims.compute_ms);
    let threads: Vec<_> = callers
        .into_iter()
        .map(|mut c| {
            let (shared, barrier, key, value) = (
                Arc::clone(&shared),
                Arc::clone(&barrier),
                key.to_vec(),
                value.clone(),
            );
            std::thread::spawn(move || {
                if barrier.wait().is_leader() {
                    *shared.start.lock().unwrap() = Some(Instant::now());
                }
                let f = || {
                    shared.runs.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(compute);
                    *shared.computed.lock().unwrap() = Some(Instant::now());
                    value.clone()
                };
                let got = c.call(&key, &f);
                let done = Instant::now();
                (c, got.map(|v| (v, done)))
            })
        })
        .collect();
    let mut back = Vec::with_capacity(n);
    let mut last: Option<Instant> = None;
    for t in threads {
        let (c, got) = t
            .join()
            .map_err(|_| io::Error::other("a caller panicked"))?;
        let (v, done) = got?;
        if v.len() != dims.value_size {
            return Err(io::Error::other("a caller got another value"));
        }
        last = Some(last.map_or(done, |l| l.max(done)));
        back.push(c);
    }
    let last = last.ok_or_else(|| io::Error::other("no callers"))?;
    let computed = shared
        .computed
        .lock()
        .unwrap()
        .expect("one computation ran");
    let start = shared
        .start
        .lock()
        .unwrap()
        .expect("the barrier's leader ran");
    Ok((
        back,
        Round {
            computations: shared.runs.load(Ordering::SeqCst),
            store_to_last: last.saturating_duration_since(computed),
            total: last.saturating_duration_since(start),
        },
    ))
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The next frame on `c` (reply or push), decoded by `f`.
fn read_incoming<R>(c: &mut Conn, f: impl FnOnce(Incoming<'_>) -> R) -> io::Result<R> {
    loop {
        match decode_incoming(&c.buf[c.at..], &Limits::unlimited()) {
            Ok(Decoded::Frame(item, n)) => {
                let r = f(item);
                c.at += n;
                if c.at == c.buf.len() {
                    c.buf.clear();
                    c.at = 0;
                }
                return Ok(r);
            }
            Ok(Decoded::Incomplete { .. }) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
        let len = c.buf.len();
        c.buf.resize(len + 64 * 1024, 0);
        let n = c.s.read(&mut c.buf[len..])?;
        c.buf.truncate(len + n);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// One round driven from one thread over `conns`, upcache's protocol.
fn raw_upcache(conns: &mut [Conn], key: &[u8], dims: &Dims) -> io::Result<Round> {
    let mut out = Vec::new();
    let start = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        out.clear();
        Request::GetOrLease {
            key,
            timeout_ms: 30_000,
        }
        .encode(i as u32, &mut out);
        c.s.write_all(&out)?;
    }
    let mut holders = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let leased = read_incoming(c, |f| matches!(f, Incoming::Reply(_, Reply::Leased)))?;
        if leased {
            holders.push(i);
        }
    }
    let &[holder] = &holders[..] else {
        return Err(io::Error::other(format!("{} leases", holders.len())));
    };
    std::thread::sleep(Duration::from_millis(dims.compute_ms));
    let value = vec![b'v'; dims.value_size];
    let computed = Instant::now();
    out.clear();
    Request::Set { key, value: &value }.encode(0, &mut out);
    conns[holder].s.write_all(&out)?;
    read_incoming(&mut conns[holder], |_| ())?;
    for (i, c) in conns.iter_mut().enumerate() {
        if i != holder {
            let len = read_incoming(c, |f| match f {
                Incoming::Push(p) if p.kind == PushKind::LeaseValue => Some(p.value.len()),
                _ => None,
            })?;
            if len != Some(dims.value_size) {
                return Err(io::Error::other("a waiter got something else"));
            }
        }
    }
    let last = Instant::now();
    Ok(Round {
        computations: holders.len(),
        store_to_last: last - computed,
        total: last - start,
    })
}

/// One round driven from one thread over `conns`, the Redis recipe.
fn raw_redis(conns: &mut [Conn], key: &[u8], dims: &Dims, seed: &mut u64) -> io::Result<Round> {
    let lock = [b"lock:", key].concat();
    let mut out = Vec::new();
    let mut all =
        |conns: &mut [Conn], which: &[usize], args: &[&[u8]]| -> io::Result<Vec<Vec<u8>>> {
            out.clear();
            resp_command(args, &mut out);
            for &i in which {
                conns[i].s.write_all(&out)?;
            }
            which
                .iter()
                .map(|&i| conns[i].read_reply_with(|b| b.to_vec()))
                .collect()
        };
    let start = Instant::now();
    let everyone: Vec<usize> = (0..conns.len()).collect();
    all(conns, &everyone, &[b"GET", key])?;
    let won = all(
        conns,
        &everyone,
        &[b"SET", &lock, b"t", b"NX", b"PX", b"30000"],
    )?;
    let holders: Vec<usize> = (0..conns.len())
        .filter(|&i| won[i].starts_with(b"+OK"))
        .collect();
    let &[holder] = &holders[..] else {
        return Err(io::Error::other(format!("{} locks", holders.len())));
    };
    let t0 = Instant::now();
    let poll = Duration::from_millis(dims.poll_ms);
    // Each loser polls from its own phase in [0, poll).
    let mut polls: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>> = everyone
        .iter()
        .filter(|&&i| i != holder)
        .map(|&i| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let phase = poll.mul_f64((*seed >> 11) as f64 / (1u64 << 53) as f64);
            std::cmp::Reverse((t0 + phase, i))
        })
        .collect();
    let store_at = t0 + Duration::from_millis(dims.compute_ms);
    let value = vec![b'v'; dims.value_size];
    let mut computed = None;
    let mut last = t0;
    loop {
        let next_poll = polls.peek().map(|r| r.0 .0);
        let store_next = computed.is_none() && next_poll.is_none_or(|p| store_at <= p);
        let at = if store_next {
            store_at
        } else if let Some(p) = next_poll {
            p
        } else {
            break;
        };
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if store_next {
            computed = Some(Instant::now());
            all(conns, &[holder], &[b"SET", key, &value])?;
            all(conns, &[holder], &[b"DEL", &lock])?;
            continue;
        }
        let std::cmp::Reverse((_, i)) = polls.pop().expect("peeked");
        let got = all(conns, &[i], &[b"GET", key])?.remove(0);
        if got.starts_with(b"$-1") {
            polls.push(std::cmp::Reverse((at + poll, i)));
        } else {
            last = Instant::now();
        }
    }
    let computed = computed.expect("stored");
    Ok(Round {
        computations: 1,
        store_to_last: last.saturating_duration_since(computed),
        total: last - start,
    })
}

/// Runs every cell and prints the table.
pub fn run(specs: &[String], dims: &Dims) -> Result<(), Box<dyn std::error::Error>> {
    let targets = specs
        .iter()
        .map(|s| {
            Ok(Spec {
                target: Target::parse(s)?,
                file: s.strip_prefix("upcache=").map(PathBuf::from),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    println!(
        "# stampede: N callers (threads, own connections) of one missing key, computation {} ms, value {} B, {} rounds per cell; Redis recipe: SET lock NX PX 30000 + GET polled every {} ms",
        dims.compute_ms, dims.value_size, dims.rounds, dims.poll_ms
    );
    println!(
        "{:<10} {:>9} {:>5} {:>9} {:>13} {:>13} {:>13} {:>13} {:>9}",
        "target",
        "callers",
        "N",
        "transport",
        "computations",
        "store→last",
        "store→last",
        "total",
        "total"
    );
    println!(
        "{:<10} {:>9} {:>5} {:>9} {:>13} {:>13} {:>13} {:>13} {:>9}",
        "", "", "", "", "(max/round)", "p50 ms", "max ms", "p50 ms", "max ms"
    );
    let mut seed = 0x5eed_u64;
    for &n in &dims.callers {
        for (ti, spec) in targets.iter().enumerate() {
            for threads in [true, false] {
                let t = &spec.target;
                let mut rounds = Vec::with_capacity(dims.rounds);
                if threads {
                    let mut cs = callers(spec, n, dims)?;
                    for r in 0..dims.rounds {
                        let key = format!("stampede:{n}:{ti}:{r}:{}", std::process::id());
                        let (back, got) = round(cs, key.as_bytes(), dims)?;
                        cs = back;
                        rounds.push(got);
                    }
                } else {
                    let mut conns = (0..n)
                        .map(|_| t.connect())
                        .collect::<io::Result<Vec<_>>>()?;
                    for r in 0..dims.rounds {
                        let key = format!("stampede-raw:{n}:{ti}:{r}:{}", std::process::id());
                        rounds.push(match t.proto {
                            Proto::Upcache => raw_upcache(&mut conns, key.as_bytes(), dims)?,
                            _ => raw_redis(&mut conns, key.as_bytes(), dims, &mut seed)?,
                        });
                    }
                }
                let max_comp = rounds.iter().map(|r| r.computations).max().unwrap_or(0);
                let mut lag: Vec<Duration> = rounds.iter().map(|r| r.store_to_last).collect();
                let mut total: Vec<Duration> = rounds.iter().map(|r| r.total).collect();
                lag.sort();
                total.sort();
                let p50 = |v: &[Duration]| v[(v.len() - 1) / 2];
                let max = |v: &[Duration]| v[v.len() - 1];
                println!(
                    "{:<10} {:>9} {:>5} {:>9} {:>13} {:>13} {:>13} {:>13} {:>9}",
                    t.name,
                    if threads { "threads" } else { "1 thread" },
                    n,
                    t.transport(),
                    max_comp,
                    ms(p50(&lag)),
                    ms(max(&lag)),
                    ms(p50(&total)),
                    ms(max(&total))
                );
            }
        }
    }
    println!("# threads: one thread and its own connections per caller; 1 thread: one thread drives the N connections with the raw protocol (no thread wake-ups); store→last: from the computation's return to the last caller's value");
    Ok(())
}
