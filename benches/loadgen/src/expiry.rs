//! `loadgen expiry-lag`: how late a server reports that a key expired, upcache against Redis.
//!
//! Dimensions (flags, printed with the table): the targets (`upcache=FILE`, `redis=ADDR`,
//! each with its transport), `keys` (N) keys of `key_size` B holding `value_size` B whose
//! deadlines the client knows, spread uniformly over `spread_ms` and starting `lead_ms` after
//! the sets begin; `background` (B, one row per value and target) keys with a 1-hour TTL,
//! stored first, pipelined; at most `give_up_ms` of waiting after the last deadline.
//!
//! One cell, for one target and one B:
//!
//! 1. the target is emptied (`CLEAR`, `FLUSHALL`) and the B background keys are stored
//!    (`SET_TTL` / `SET .. PX 3600000`, pipelined 256 at a time);
//! 2. one subscriber connection listens to every expiry: upcache `SUBSCRIBE` with no key
//!    (every key's events; the `SET` events of the N keys are read and skipped); Redis
//!    `CONFIG SET notify-keyspace-events Ex` and `SUBSCRIBE __keyevent@0__:expired`. A thread
//!    of its own reads it and stamps every event with the time its bytes were read
//!    (`Instant::now()` after each read, for every frame that read completed);
//! 3. another connection sets the N keys, pipelined 256 at a time. Key `i`'s planned deadline
//!    is `start + lead + spread × i / N`. upcache's TTLs are relative to when the server applies
//!    the request: the client sends `ttl_ms` = the planned deadline less the time just before it
//!    encodes the batch, rounded up, and records that time + `ttl_ms` as the deadline (earlier
//!    than or equal to the server's own, so the set's trip to the server counts as lag). Redis
//!    gets `PXAT`, the first whole Unix millisecond at or after the planned deadline, and the
//!    client records the instant its wall clock reads that millisecond (the wall clock is read
//!    against the monotonic one once per cell);
//! 4. the subscriber stops when all N have expired or `give_up_ms` after the last deadline;
//!    lag = arrival − recorded deadline, over the keys that arrived, into an HDR histogram
//!    (µs, 3 significant digits; an arrival before its deadline would show as a negative `min`);
//!    the target is emptied again.
//!
//! The floor: a third thread of this process sleeps until each planned deadline in turn, in the
//! same window, and records how late it woke (`timer p99`, `timer max`): what the machine's
//! scheduling costs any process waking on time, the load generator included, so a server's
//! lag can be read against it.
//!
//! Both servers and this client run on one machine, so the client's `Instant` (the monotonic
//! clock) and upcache's clock are the same clock; Redis decides on its wall clock, which this
//! client reads too.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use upcache::protocol::{decode_incoming, Decoded, Incoming, Limits, PushKind, Reply, Request};

use super::proto::{resp_array, resp_command, Proto};
use super::{key, pipelined_sets, Conn, Target};

/// What `loadgen expiry-lag` measures (see the module's documentation).
#[derive(clap::Args, Clone, Debug)]
pub struct Dims {
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Background key counts, comma-separated: one cell per count and target.
    #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
    pub background: Vec<usize>,
    #[arg(long, default_value_t = 3_000)]
    pub spread_ms: u64,
    /// From the start of the sets to the first deadline.
    #[arg(long, default_value_t = 1_000)]
    pub lead_ms: u64,
    /// How long after the last deadline to wait for the events still missing.
    #[arg(long, default_value_t = 10_000)]
    pub give_up_ms: u64,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
}

/// The background keys' TTL: one hour, far beyond any cell.
const HOUR_MS: u64 = 3_600_000;
/// Requests written before their replies are read.
const BATCH: usize = 256;
/// Redis's channel of expiry events in database 0.
const EXPIRED_CHANNEL: &[u8] = b"__keyevent@0__:expired";
/// The prefix of the N expiring keys (the background keys are `key:...`).
const PREFIX: &[u8] = b"exp:";

fn broken(what: String) -> io::Error {
    io::Error::other(what)
}

/// Expiring key `i`: `exp:` and 12 digits, padded with dots to `size` bytes.
fn expiring_key(i: usize, size: usize) -> Vec<u8> {
    let mut k = format!("exp:{i:012}").into_bytes();
    k.resize(size, b'.');
    k
}

/// The index of an expiring key, `None` for any other key.
fn expiring_index(key: &[u8]) -> Option<usize> {
    let digits = key.strip_prefix(PREFIX)?.get(..12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The wall clock read against the monotonic clock once, to turn deadlines into Unix time.
struct WallClock {
    at: Instant,
    unix_ns: u128,
}

impl WallClock {
    fn read() -> WallClock {
        let at = Instant::now();
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the wall clock is after 1970")
            .as_nanos();
        WallClock { at, unix_ns }
    }

    /// The first whole Unix millisecond at or after `t` (not before the reading), and the
    /// instant at which the wall clock reads it.
    fn unix_ms_from(&self, t: Instant) -> (u64, Instant) {
        let ms = (self.unix_ns + (t - self.at).as_nanos()).div_ceil(1_000_000);
        let offset = ms * 1_000_000 - self.unix_ns;
        (ms as u64, self.at + Duration::from_nanos(offset as u64))
    }
}

/// What the subscriber saw in one cell.
struct Arrivals {
    /// When key `i`'s expiry event was read, if it was.
    at: Vec<Option<Instant>>,
    /// Events the server reported dropped (upcache `LAGGED`).
    lagged: u64,
    /// Expiry events of a key already reported.
    repeated: u64,
}

/// One event a subscriber reads, borrowing from its buffer.
enum Event<'a> {
    Expired(&'a [u8]),
    Lagged(u64),
    Other,
}

/// The first whole event at the front of `buf` and its length.
fn next_event(proto: Proto, buf: &[u8]) -> io::Result<Option<(Event<'_>, usize)>> {
    match proto {
        Proto::Upcache => match decode_incoming(buf, &Limits::unlimited()) {
            Ok(Decoded::Frame(Incoming::Push(p), n)) => Ok(Some((
                match p.kind {
                    PushKind::Expired => Event::Expired(p.key),
                    PushKind::Lagged => Event::Lagged(p.arg),
                    _ => Event::Other,
                },
                n,
            ))),
            Ok(Decoded::Frame(Incoming::Reply(id, r), _)) => {
                Err(broken(format!("subscriber got a reply to {id}: {r:?}")))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(None),
            Err(e) => Err(broken(format!("bad frame: {e}"))),
        },
        Proto::Resp => Ok(resp_array(buf).map(|(msg, n)| match msg[..] {
            [b"message", channel, key] if channel == EXPIRED_CHANNEL => (Event::Expired(key), n),
            _ => (Event::Other, n),
        })),
        Proto::Memcached => Err(broken("memcached sends no events".into())),
    }
}

/// Opens the subscriber connection and subscribes it to every expiry.
fn subscribe(t: &Target) -> io::Result<Conn> {
    let mut c = t.connect()?;
    let mut out = Vec::new();
    match t.proto {
        Proto::Upcache => {
            Request::Subscribe { key: None }.encode(1, &mut out);
            c.s.write_all(&out)?;
            c.read_reply_with(|r| {
                match upcache::protocol::decode_reply(r, &Limits::unlimited()) {
                    Ok(Decoded::Frame((_, Reply::Uint(_)), _)) => Ok(()),
                    other => Err(broken(format!("subscribe: {other:?}"))),
                }
            })??;
        }
        Proto::Resp => {
            resp_command(
                &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Ex"],
                &mut out,
            );
            c.s.write_all(&out)?;
            c.read_reply()?;
            out.clear();
            resp_command(&[b"SUBSCRIBE", EXPIRED_CHANNEL], &mut out);
            c.s.write_all(&out)?;
            // The confirmation is the first array: read until it is whole.
            loop {
                if let Some((msg, n)) = resp_array(&c.buf[c.at..]) {
                    if msg.first() != Some(&&b"subscribe"[..]) {
                        return Err(broken(format!("subscribe: {msg:?}")));
                    }
                    c.at += n;
                    break;
                }
                fill(&mut c)?;
            }
        }
        Proto::Memcached => return Err(broken("memcached sends no events".into())),
    }
    Ok(c)
}

/// Reads more bytes into `c`'s buffer (after dropping what was consumed); `Ok(0)` on a read
/// timeout.
fn fill(c: &mut Conn) -> io::Result<usize> {
    c.buf.drain(..c.at);
    c.at = 0;
    let len = c.buf.len();
    c.buf.resize(len + 64 * 1024, 0);
    let n = c.s.read(&mut c.buf[len..]);
    c.buf.truncate(len + *n.as_ref().unwrap_or(&0));
    match n {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Reads expiry events from `c` until all `n` keys have been reported or `until` passes.
fn listen(proto: Proto, mut c: Conn, n: usize, until: Instant) -> io::Result<Arrivals> {
    let mut a = Arrivals {
        at: vec![None; n],
        lagged: 0,
        repeated: 0,
    };
    let mut got = 0;
    c.s.set_timeout(Some(Duration::from_millis(20)))?;
    let mut stamp = Instant::now();
    loop {
        while let Some((event, len)) = next_event(proto, &c.buf[c.at..])? {
            match event {
                Event::Expired(key) => match expiring_index(key).and_then(|i| a.at.get_mut(i)) {
                    Some(slot @ None) => {
                        *slot = Some(stamp);
                        got += 1;
                    }
                    Some(Some(_)) => a.repeated += 1,
                    None => {
                        return Err(broken(format!(
                            "expiry of a key not set to expire: {:?}",
                            String::from_utf8_lossy(key)
                        )))
                    }
                },
                Event::Lagged(dropped) => a.lagged += dropped,
                Event::Other => {}
            }
            c.at += len;
        }
        if got == n || Instant::now() >= until {
            return Ok(a);
        }
        if fill(&mut c)? > 0 {
            stamp = Instant::now();
        }
    }
}

/// Empties the target.
fn flush(t: &Target) -> io::Result<()> {
    let mut c = t.connect()?;
    let mut out = Vec::new();
    t.proto.flush(1, &mut out);
    c.s.write_all(&out)?;
    c.read_reply()
}

/// One row of the table.
struct Row {
    name: String,
    transport: &'static str,
    background: usize,
    delivered: usize,
    /// Lags of the delivered keys, in µs (negative ones as 0; see `min_us`).
    hist: Histogram<u64>,
    min_us: i64,
    /// Time from the first set to the last reply to the sets.
    setting: Duration,
    lagged: u64,
    repeated: u64,
    /// How late this process's own timer thread woke at the planned deadlines, in µs.
    timer: Histogram<u64>,
}

/// Sleeps until each of `n` deadlines spread over `spread` from `first` in turn; returns how
/// late each wake-up came, in µs.
fn timer_lateness(first: Instant, spread: Duration, n: usize) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    for i in 0..n {
        let due = first + spread.mul_f64(i as f64 / n as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        hist.saturating_record((Instant::now() - due).as_micros().max(1) as u64);
    }
    hist
}

/// Runs one cell (see the module's documentation).
fn cell(t: &Target, d: &Dims, background: usize) -> io::Result<Row> {
    flush(t)?;
    let value = vec![b'v'; d.value_size];
    pipelined_sets(t, background, |i, out| {
        t.proto
            .set_ttl(&key(i, d.key_size), &value, HOUR_MS, i as u32, out)
    })?;
    let subscriber = subscribe(t)?;
    let keys: Vec<Vec<u8>> = (0..d.keys).map(|i| expiring_key(i, d.key_size)).collect();
    let mut setter = t.connect()?;
    let (lead, spread) = (
        Duration::from_millis(d.lead_ms),
        Duration::from_millis(d.spread_ms),
    );
    let clock = WallClock::read();
    let start = Instant::now();
    // The last recorded deadline is at most 1 ms after the last planned one (rounding up).
    let until = start + lead + spread + Duration::from_millis(d.give_up_ms + 1);
    let (proto, n) = (t.proto, d.keys);
    let (arrivals, deadlines, setting, timer) = std::thread::scope(|s| -> io::Result<_> {
        let reader = s.spawn(move || listen(proto, subscriber, n, until));
        let timer = s.spawn(move || timer_lateness(start + lead, spread, n));
        let mut deadlines = Vec::with_capacity(n);
        let mut out = Vec::new();
        for (b, batch) in keys.chunks(BATCH).enumerate() {
            out.clear();
            let now = Instant::now();
            for (j, k) in batch.iter().enumerate() {
                let i = b * BATCH + j;
                let planned = start + lead + spread.mul_f64(i as f64 / n as f64);
                let id = i as u32;
                let deadline = match t.proto {
                    Proto::Resp => {
                        let (ms, at) = clock.unix_ms_from(planned);
                        resp_command(
                            &[b"SET", k, &value, b"PXAT", ms.to_string().as_bytes()],
                            &mut out,
                        );
                        at
                    }
                    _ => {
                        let ttl_ms = (planned.saturating_duration_since(now).as_nanos())
                            .div_ceil(1_000_000)
                            .max(1) as u64;
                        t.proto.set_ttl(k, &value, ttl_ms, id, &mut out);
                        now + Duration::from_millis(ttl_ms)
                    }
                };
                deadlines.push(deadline);
            }
            setter.s.write_all(&out)?;
            for _ in batch {
                setter.read_reply()?;
            }
        }
        let setting = start.elapsed();
        let arrivals = reader.join().expect("subscriber thread")?;
        let timer = timer.join().expect("timer thread");
        Ok((arrivals, deadlines, setting, timer))
    })?;
    drop(setter);
    flush(t)?;

    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut min_us = i64::MAX;
    let mut delivered = 0;
    for (at, deadline) in arrivals.at.iter().zip(&deadlines) {
        if let Some(at) = at {
            let lag_us = if *at >= *deadline {
                (*at - *deadline).as_micros() as i64
            } else {
                -((*deadline - *at).as_micros() as i64)
            };
            min_us = min_us.min(lag_us);
            hist.saturating_record(lag_us.max(1) as u64);
            delivered += 1;
        }
    }
    Ok(Row {
        name: t.name.clone(),
        transport: t.transport(),
        background,
        delivered,
        hist,
        min_us,
        setting,
        lagged: arrivals.lagged,
        timer,
        repeated: arrivals.repeated,
    })
}

/// Runs every cell, B by B and target by target, and prints the table.
pub fn run(targets: &[Target], d: &Dims) -> io::Result<()> {
    if let Some(t) = targets
        .iter()
        .find(|t| !matches!(t.name.as_str(), "upcache" | "redis"))
    {
        return Err(broken(format!(
            "expiry-lag needs upcache or redis targets (expiry events), not {}",
            t.name
        )));
    }
    if d.keys == 0 || d.keys > 1_000_000_000_000 || d.key_size < 16 {
        return Err(broken(
            "expiry-lag needs at least one key, at most 10^12, of at least 16 B".into(),
        ));
    }
    println!(
        "# expiry-lag: {} keys of {} B holding {} B, deadlines spread uniformly over {} ms from {} ms after the sets start; \
         background keys with a 1-hour TTL stored first; one subscriber stamps each expiry event as it is read; \
         lag = arrival - deadline (client's clock); waiting at most {} ms after the last deadline; \
         timer: this process's own lateness waking at the same deadlines, same window (the floor)",
        d.keys, d.key_size, d.value_size, d.spread_ms, d.lead_ms, d.give_up_ms
    );
    println!(
        "{:<8} {:<5} {:>10} {:>7} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8}",
        "server",
        "net",
        "background",
        "keys",
        "delivered %",
        "p50 ms",
        "p99 ms",
        "max ms",
        "min ms",
        "timer p99",
        "timer max",
        "sets ms"
    );
    let mut notes = Vec::new();
    for &b in &d.background {
        for t in targets {
            let r = cell(t, d, b)?;
            let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
            let (p50, p99, max, min) = if r.delivered == 0 {
                ("-".into(), "-".into(), "-".into(), "-".into())
            } else {
                (
                    ms(r.hist.value_at_quantile(0.5)),
                    ms(r.hist.value_at_quantile(0.99)),
                    ms(r.hist.max()),
                    format!("{:.2}", r.min_us as f64 / 1000.0),
                )
            };
            println!(
                "{:<8} {:<5} {:>10} {:>7} {:>11.2} {:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8.1}",
                r.name,
                r.transport,
                r.background,
                d.keys,
                r.delivered as f64 * 100.0 / d.keys as f64,
                p50,
                p99,
                max,
                min,
                ms(r.timer.value_at_quantile(0.99)),
                ms(r.timer.max()),
                r.setting.as_secs_f64() * 1000.0
            );
            if r.lagged > 0 || r.repeated > 0 {
                notes.push(format!(
                    "# {} {} B={}: {} events reported dropped (LAGGED), {} repeated expiries",
                    r.name, r.transport, r.background, r.lagged, r.repeated
                ));
            }
            if r.setting >= Duration::from_millis(d.lead_ms) {
                notes.push(format!(
                    "# {} {} B={}: setting the keys took {:.0} ms, past the first deadline ({} ms): raise --lead-ms",
                    r.name,
                    r.transport,
                    r.background,
                    r.setting.as_secs_f64() * 1000.0,
                    d.lead_ms
                ));
            }
        }
    }
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_keys_name_their_index_and_nothing_else_does() {
        for i in [0, 7, 123_456_789_012] {
            assert_eq!(expiring_index(&expiring_key(i, 16)), Some(i));
            assert_eq!(expiring_index(&expiring_key(i, 40)), Some(i));
        }
        assert_eq!(expiring_index(&key(5, 16)), None);
        assert_eq!(expiring_index(b"exp:12"), None);
    }

    #[test]
    fn wall_clock_rounds_deadlines_up_to_whole_milliseconds() {
        let c = WallClock {
            at: Instant::now(),
            unix_ns: 1_700_000_000_000_400_000,
        };
        let (ms, at) = c.unix_ms_from(c.at + Duration::from_micros(100));
        assert_eq!(ms, 1_700_000_000_001);
        assert_eq!(at - c.at, Duration::from_micros(600));
        let (ms, at) = c.unix_ms_from(c.at + Duration::from_micros(600));
        assert_eq!(
            (ms, at - c.at),
            (1_700_000_000_001, Duration::from_micros(600))
        );
    }
}
