//! `loadgen fanout`: what fan-out on the server costs another client.
//!
//! Dimensions (flags, printed with the table): one upcache server (TCP or Unix, from its
//! connection file); a prober connection doing GETs at depth 1 of one key of `key_size` B
//! holding `value_size` B, timed from its write to its reply into an HDR histogram (3
//! significant digits); four rows, interleaved in each of `rounds` rounds, each a window of
//! 20 ms + the work + 20 ms during which the prober runs:
//!
//! - `CLEAR`: a driver connection sends one CLEAR, nobody listening (the baseline);
//! - `CLEAR, waits woken`: the same, with `waits` waits (no timeout, 64 to a key) registered
//!   beforehand on one other connection; the work ends when that connection has read every
//!   `WOKEN` push;
//! - `SETs of one key`: the driver SETs one key (`value_size` B) `sets` times at depth 1,
//!   nobody listening (the baseline);
//! - `SETs, subscriptions`: the same, with `subs` subscriptions to that key on one other
//!   connection, read all along by its own thread; the work ends when it has received or been
//!   told it lost (`LAGGED`) every event.
//!
//! - `keys expiring` (with `--expiring N`, `N` > 0): `N` keys stored with TTLs due over one
//!   second (1,000 ms to 1,999 ms after they were stored), the window starting 20 ms before
//!   the first is due; the work ends when the server's STATS (polled every 5 ms by the
//!   driver) count no key with a TTL; next to it, `no key expiring`, the same length of
//!   window with nothing due (the baseline).
//!
//! Registering and removing the listeners happens outside the windows. The prober, the
//! listener's reader and the driver are threads of this process: pinned with `--cpu`, they
//! share that CPU, so the reader's own cost shows in the prober's figures too; run unpinned
//! to keep them apart. Per row the table gives the GETs measured, their p50, p99 and worst
//! latency over all rounds, and the median time the work took.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use upcache::protocol::{
    decode_incoming, Decoded, Incoming, Limits, PushKind, Reply, Request, NO_TIMEOUT,
};

use super::{key, Conn, Target};

/// What `loadgen fanout` measures (see the module's documentation).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Dims {
    #[arg(long, default_value_t = 65_536)]
    pub waits: u32,
    #[arg(long, default_value_t = 4_096)]
    pub subs: u32,
    #[arg(long, default_value_t = 1_000)]
    pub sets: u32,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Also measure while this many keys expire within one second (0: not).
    #[arg(long, default_value_t = 100_000)]
    pub expiring: u32,
}

/// The prober's pre-roll and post-roll around the work.
const ROLL: Duration = Duration::from_millis(20);
/// Requests written before their replies are read, when registering listeners.
const BATCH: usize = 4096;

/// One row of the table.
struct Row {
    name: &'static str,
    listeners: u32,
    hist: Histogram<u64>,
    work: Vec<Duration>,
}

impl Row {
    fn new(name: &'static str, listeners: u32) -> Row {
        Row {
            name,
            listeners,
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("bounds"),
            work: Vec::new(),
        }
    }

    fn add(&mut self, (hist, work): (Histogram<u64>, Duration)) {
        self.hist.add(hist).expect("same bounds");
        self.work.push(work);
    }
}

fn broken(what: String) -> io::Error {
    io::Error::other(what)
}

/// Reads until one whole frame (reply or push) is buffered, consumes it, and gives it to `f`.
fn next_frame<R>(c: &mut Conn, f: impl FnOnce(Incoming<'_>) -> R) -> io::Result<R> {
    loop {
        match decode_incoming(&c.buf[c.at..], &Limits::unlimited()) {
            Ok(Decoded::Frame(Incoming::Reply(id, Reply::Error { code, .. }), _)) => {
                return Err(broken(format!("request {id}: server error {code}")))
            }
            Ok(Decoded::Frame(frame, n)) => {
                let r = f(frame);
                c.at += n;
                return Ok(r);
            }
            Ok(Decoded::Incomplete { .. }) => {}
            Err(e) => return Err(broken(format!("bad frame: {e}"))),
        }
        c.buf.drain(..c.at);
        c.at = 0;
        let len = c.buf.len();
        c.buf.resize(len + 64 * 1024, 0);
        let n = c.s.read(&mut c.buf[len..]);
        c.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        if n? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Sends `reqs` (ids from 1) in pipelined batches and gives every reply to `f`.
fn pipelined(
    c: &mut Conn,
    reqs: &[Request<'_>],
    mut f: impl FnMut(Reply<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = Vec::new();
    for (b, batch) in reqs.chunks(BATCH).enumerate() {
        out.clear();
        for (i, r) in batch.iter().enumerate() {
            r.encode((b * BATCH + i + 1) as u32, &mut out);
        }
        c.s.write_all(&out)?;
        for _ in batch {
            next_frame(c, |frame| match frame {
                Incoming::Reply(_, r) => f(r),
                Incoming::Push(p) => Err(broken(format!("unexpected push {:?}", p.kind))),
            })??;
        }
    }
    Ok(())
}

/// One request at depth 1, its reply discarded.
fn call(c: &mut Conn, req: &Request<'_>) -> io::Result<()> {
    pipelined(c, std::slice::from_ref(req), |_| Ok(()))
}

/// GETs of `key` at depth 1 until `stop`, each timed into the histogram.
fn probe(t: &Target, c: &mut Conn, key: &[u8], stop: &AtomicBool) -> io::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
    let mut out = Vec::new();
    let mut id = 0u32;
    while !stop.load(Ordering::Acquire) {
        id = id.wrapping_add(1);
        out.clear();
        t.proto.get(key, id, &mut out);
        let t0 = Instant::now();
        c.s.write_all(&out)?;
        c.read_reply()?;
        hist.record(t0.elapsed().as_nanos().max(1) as u64)
            .expect("in range");
    }
    Ok(hist)
}

/// Runs `work` while the prober GETs, with [`ROLL`] before and after; returns the prober's
/// histogram and what `work` returned (the time the work took).
fn window(
    t: &Target,
    prober: &mut Conn,
    probe_key: &[u8],
    work: impl FnOnce() -> io::Result<Duration>,
) -> io::Result<(Histogram<u64>, Duration)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| probe(t, prober, probe_key, &stop));
        std::thread::sleep(ROLL);
        let took = work();
        std::thread::sleep(ROLL);
        stop.store(true, Ordering::Release);
        let hist = h.join().expect("prober thread")?;
        Ok((hist, took?))
    })
}

/// A CLEAR from `driver`, timed to its reply.
fn clear(driver: &mut Conn) -> io::Result<Duration> {
    let t0 = Instant::now();
    call(driver, &Request::Clear)?;
    Ok(t0.elapsed())
}

/// A CLEAR from `driver` that wakes `n` waits registered on `waiter`, timed until `waiter`
/// has read every `WOKEN` push.
fn clear_waking(driver: &mut Conn, waiter: &mut Conn, n: u32) -> io::Result<Duration> {
    std::thread::scope(|s| {
        let reader = s.spawn(|| -> io::Result<Instant> {
            for _ in 0..n {
                next_frame(waiter, |f| match f {
                    Incoming::Push(p) if p.kind == PushKind::Woken => Ok(()),
                    other => Err(broken(format!("expected WOKEN, got {other:?}"))),
                })??;
            }
            Ok(Instant::now())
        });
        let t0 = Instant::now();
        call(driver, &Request::Clear)?;
        let done = reader.join().expect("waiter thread")?;
        Ok(done - t0)
    })
}

/// `sets` SETs of `hot` from `driver` at depth 1, timed to the last reply.
fn sets(driver: &mut Conn, hot: &[u8], value: &[u8], sets: u32) -> io::Result<Duration> {
    let t0 = Instant::now();
    for _ in 0..sets {
        call(driver, &Request::Set { key: hot, value })?;
    }
    Ok(t0.elapsed())
}

/// As [`sets`], with `subs` subscriptions to `hot` on `subscriber`, timed until it has
/// received, or been told it lost, every event.
fn sets_fanned_out(
    driver: &mut Conn,
    subscriber: &mut Conn,
    hot: &[u8],
    value: &[u8],
    n: u32,
    subs: u32,
) -> io::Result<(Duration, u64)> {
    std::thread::scope(|s| {
        let reader = s.spawn(|| -> io::Result<(Instant, u64)> {
            let want = u64::from(n) * u64::from(subs);
            let (mut got, mut lagged) = (0u64, 0u64);
            while got < want {
                got += next_frame(subscriber, |f| match f {
                    Incoming::Push(p) if p.kind == PushKind::Set => Ok(1),
                    Incoming::Push(p) if p.kind == PushKind::Lagged => {
                        lagged += p.arg;
                        Ok(p.arg)
                    }
                    other => Err(broken(format!("expected an event, got {other:?}"))),
                })??;
            }
            Ok((Instant::now(), lagged))
        });
        let t0 = Instant::now();
        let driven = sets(driver, hot, value, n);
        let (done, lagged) = reader.join().expect("subscriber thread")?;
        driven?;
        Ok((done - t0, lagged))
    })
}

/// `n` keys stored with TTLs of 1,000 to 1,999 ms from `driver`; then, from 20 ms before the
/// first is due, the time until the server counts no key with a TTL.
fn mass_expiry(driver: &mut Conn, n: u32, key_size: usize, value: &[u8]) -> io::Result<Duration> {
    let keys: Vec<Vec<u8>> = (0..n as usize)
        .map(|i| key(2_000_000 + i, key_size))
        .collect();
    let reqs: Vec<Request<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Request::SetTtl {
            key: k,
            value,
            ttl_ms: 1000 + (i % 1000) as u64,
        })
        .collect();
    let stored = Instant::now();
    pipelined(driver, &reqs, |r| match r {
        Reply::Done => Ok(()),
        other => Err(broken(format!("set_ttl: {other:?}"))),
    })?;
    let first_due = stored + Duration::from_millis(1000);
    std::thread::sleep(first_due.saturating_duration_since(Instant::now() + ROLL));
    let t0 = Instant::now();
    loop {
        let mut left = 0;
        pipelined(driver, &[Request::Stats], |r| match r {
            Reply::Text(json) => {
                let s: upcache::ServerStats =
                    serde_json::from_slice(json).map_err(|e| broken(format!("stats: {e}")))?;
                left = s.ttl_keys;
                Ok(())
            }
            other => Err(broken(format!("stats: {other:?}"))),
        })?;
        if left == 0 {
            return Ok(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the rows on `t` and prints the table.
pub fn run(t: &Target, d: &Dims) -> io::Result<()> {
    if t.name != "upcache" {
        return Err(broken(format!(
            "fanout needs an upcache target (waits, subscriptions), not {}",
            t.name
        )));
    }
    if d.rounds == 0 {
        return Err(broken("fanout needs at least one round".into()));
    }
    let probe_key = key(0, d.key_size);
    let hot = key(1, d.key_size);
    let value = vec![b'v'; d.value_size];
    let wait_keys: Vec<Vec<u8>> = (0..d.waits.div_ceil(64))
        .map(|i| key(1_000_000 + i as usize, d.key_size))
        .collect();
    let waits: Vec<Request<'_>> = (0..d.waits as usize)
        .map(|i| Request::Wait {
            key: &wait_keys[i % wait_keys.len()],
            value: None,
            timeout_ms: NO_TIMEOUT,
        })
        .collect();
    let subscribe = vec![Request::Subscribe { key: Some(&hot) }; d.subs as usize];

    let (mut prober, mut driver) = (t.connect()?, t.connect()?);
    let mut rows = [
        Row::new("CLEAR", 0),
        Row::new("CLEAR, waits woken", d.waits),
        Row::new("SETs of one key", 0),
        Row::new("SETs, subscriptions", d.subs),
        Row::new("no key expiring", 0),
        Row::new("keys expiring", d.expiring),
    ];
    let mut lagged = 0u64;
    let set_probe_key = |driver: &mut Conn| {
        call(
            driver,
            &Request::Set {
                key: &probe_key,
                value: &value,
            },
        )
    };
    for _ in 0..d.rounds {
        set_probe_key(&mut driver)?;
        rows[0].add(window(t, &mut prober, &probe_key, || clear(&mut driver))?);

        set_probe_key(&mut driver)?;
        let mut waiter = t.connect()?;
        pipelined(&mut waiter, &waits, |r| match r {
            Reply::Done => Ok(()),
            other => Err(broken(format!("wait: {other:?}"))),
        })?;
        rows[1].add(window(t, &mut prober, &probe_key, || {
            clear_waking(&mut driver, &mut waiter, d.waits)
        })?);
        drop(waiter); // no waits left: closing it costs nothing

        set_probe_key(&mut driver)?;
        rows[2].add(window(t, &mut prober, &probe_key, || {
            sets(&mut driver, &hot, &value, d.sets)
        })?);

        let mut subscriber = t.connect()?;
        let mut ids = Vec::with_capacity(d.subs as usize);
        pipelined(&mut subscriber, &subscribe, |r| match r {
            Reply::Uint(id) => {
                ids.push(id as u32);
                Ok(())
            }
            other => Err(broken(format!("subscribe: {other:?}"))),
        })?;
        rows[3].add(window(t, &mut prober, &probe_key, || {
            let (took, l) =
                sets_fanned_out(&mut driver, &mut subscriber, &hot, &value, d.sets, d.subs)?;
            lagged += l;
            Ok(took)
        })?);
        // Unsubscribe, replies read, so that no removal runs during the next window.
        let unsubscribe: Vec<Request<'_>> = ids
            .iter()
            .map(|&sub| Request::Unsubscribe { sub })
            .collect();
        pipelined(&mut subscriber, &unsubscribe, |_| Ok(()))?;

        if d.expiring > 0 {
            set_probe_key(&mut driver)?;
            let expiry = window(t, &mut prober, &probe_key, || {
                mass_expiry(&mut driver, d.expiring, d.key_size, &value)
            })?;
            // The same length of window, nothing due.
            let span = expiry.1;
            rows[4].add(window(t, &mut prober, &probe_key, || {
                std::thread::sleep(span);
                Ok(span)
            })?);
            rows[5].add(expiry);
        }
    }

    println!(
        "# fanout: another client's GET at depth 1 (one connection, {} B key, {} B value) while the server fans out; upcache {}; rounds {} of 20 ms + work + 20 ms per row",
        d.key_size,
        d.value_size,
        t.transport(),
        d.rounds
    );
    println!(
        "# waits: {} on one connection, 64 to a key, woken by one CLEAR; subscriptions: {} on one connection to one key, {} SETs of it at depth 1 ({lagged} events reported lagged)",
        d.waits, d.subs, d.sets
    );
    println!(
        "{:<26} {:>9} {:>8} {:>10} {:>10} {:>12} {:>16}",
        "scenario", "listeners", "GETs", "p50 µs", "p99 µs", "worst µs", "work ms (median)"
    );
    for r in &mut rows {
        if r.work.is_empty() {
            continue;
        }
        r.work.sort();
        let us = |ns: u64| ns as f64 / 1000.0;
        let name = match r.name {
            n if n.starts_with("SETs") => format!("{} {n}", d.sets),
            n => n.to_string(),
        };
        println!(
            "{:<26} {:>9} {:>8} {:>10.1} {:>10.1} {:>12.1} {:>16.2}",
            name,
            r.listeners,
            r.hist.len(),
            us(r.hist.value_at_quantile(0.5)),
            us(r.hist.value_at_quantile(0.99)),
            us(r.hist.max()),
            r.work[r.work.len() / 2].as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
