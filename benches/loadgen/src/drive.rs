//! The measured load of `run` and `matrix`: every connection driven by one thread, one mio
//! poll, so that the client is never the ceiling of what it measures.
//!
//! # What one measurement does
//!
//! Each of `conns` connections keeps one batch of `depth` requests in flight: it writes the
//! batch (one `write`, straight from a stream of requests on random keys encoded before the
//! run), reads the replies as they come and, once the last of them is in, writes the next
//! batch. With several connections every one is non-blocking and registered
//! edge-triggered with one `Poll`; a read that does not fill the buffer emptied the socket, and
//! the next arrival is a new event (Linux delivers one per arrival), so a batch costs one
//! `write`, usually one `read` and a share of one `epoll_wait`. A single connection stays
//! blocking and skips the poll: one `write` and usually one `read` per batch. The reply buffer
//! is allocated once per connection. Where the stream would pass 256 MiB (large values, more
//! than 16M keys) each key's request is encoded once and a batch copies them; where even that
//! table would, each request is encoded as it is sent.
//!
//! The one thread is meant to be pinned to one CPU (`taskset`, `--cpu`), away from the server's.
//!
//! # What is measured
//!
//! - **Throughput**: replies to batches written after the warm-up, divided by the time from
//!   the first such write to the last such reply (the end of the run lets batches in flight
//!   finish).
//! - **Latency** of a request: from just before its batch is written to just after the `read`
//!   that completed its reply. The clock is read once per such `read`, and the replies it
//!   completed go to the HDR histogram (3 significant digits) together (`record_n`): every
//!   request is recorded, at the granularity of a read rather than of a parse.
//! - **The client's own ceiling**: the thread's CPU time (user and kernel) over the same
//!   window gives its busy share; ops ÷ busy is the rate it would reach were it never waiting
//!   for the server. The kernel's `run_delay` gives the share it spent ready to run but waiting
//!   for its CPU (other work on that CPU). A run in which the client ran or waited at least
//!   [`CLIENT_BOUND`] of the window (on a CPU of its own: the server came within 80 % of the
//!   client's ceiling) is client-bound: its figure says more about this client, or about what
//!   else ran on its CPU, than about the server.

use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use upcache::protocol::set_frame_id;
use upcache_transports::Stream;

use crate::proto::Proto;
use crate::{key, xorshift, Load, Op, Target};

/// The busy share of the client's thread at and above which a run is client-bound.
pub const CLIENT_BOUND: f64 = 0.8;

/// Longest wait for any reply before the run gives up (a stalled server).
const STALL: Duration = Duration::from_secs(10);

/// What one measurement gives.
#[derive(Clone, Debug)]
pub struct Measured {
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The client thread's CPU time over the measured window, as a share of the window
    /// (`None` where the client is not one thread, as in `tasks`).
    pub client_busy: Option<f64>,
    /// The time the client thread was ready to run but waited for its CPU (taken by other
    /// processes), as a share of the window.
    pub client_waiting: Option<f64>,
}

impl Measured {
    /// The rate this client would reach against this server were it always busy:
    /// `ops_per_sec / client_busy`.
    pub fn client_ceiling(&self) -> Option<f64> {
        self.client_busy.map(|b| self.ops_per_sec / b.max(1e-9))
    }

    /// Whether the client was the bound: it ran or waited for its CPU at least
    /// [`CLIENT_BOUND`] of the window. On a CPU of its own that is the server reaching
    /// `CLIENT_BOUND` of the client's ceiling; on a CPU shared with other work it is also a
    /// client starved of its CPU, whose figure is not the server's either.
    pub fn client_bound(&self) -> bool {
        self.client_busy
            .is_some_and(|b| b + self.client_waiting.unwrap_or(0.0) >= CLIENT_BOUND)
    }
}

/// The most bytes of requests encoded before a run, in a table of one kind's requests per key or
/// in the ring; past that (large values, many keys) the run does without.
const FRAMES_BUDGET: usize = 256 << 20;

/// Requests encoded once before a run, one per key: `bytes[at[i]..at[i + 1]]` is key `i`'s.
struct Frames {
    bytes: Vec<u8>,
    at: Vec<usize>,
}

impl Frames {
    /// `encode(key, id, out)` appends the request of `key`; each key's index is its id. `None`
    /// where the table would pass `budget` bytes.
    fn new(
        load: &Load,
        budget: usize,
        mut encode: impl FnMut(&[u8], u32, &mut Vec<u8>),
    ) -> Option<Frames> {
        let keys = load.keys.max(1);
        let mut bytes = Vec::new();
        encode(&key(0, load.key_size), 0, &mut bytes);
        if bytes.len().saturating_mul(keys) > budget {
            return None;
        }
        bytes.reserve(bytes.len() * (keys - 1));
        let mut at = Vec::with_capacity(keys + 1);
        at.extend([0, bytes.len()]);
        for i in 1..keys {
            encode(&key(i, load.key_size), i as u32, &mut bytes);
            at.push(bytes.len());
        }
        Some(Frames { bytes, at })
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.at[i]..self.at[i + 1]]
    }
}

/// One connection's state: its batch in flight and its reply buffer.
struct Lane {
    s: Stream,
    /// The batch being written (`ring[batch]` where the run has a ring, else `out`), and how
    /// much of it is written.
    out: Vec<u8>,
    batch: Range<usize>,
    written: usize,
    /// The next request of the ring this lane sends.
    pos: usize,
    /// Replies arrive in `buf[start..end]`; the buffer grows only for a reply larger than it.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Replies of the batch in flight not yet read (0: no batch in flight).
    pending: usize,
    sent_at: Instant,
    measured: bool,
    rng: u64,
    id: u32,
}

/// The request stream of a run, encoded before it: `len` requests on random keys (and of random
/// kinds, for a mix), then the first `depth` of them again, so that every batch of `depth`
/// from any position is one slice, written as it is. Request `p` carries id `p % len + 1`:
/// ids repeat only `len` requests apart, far more than are ever in flight.
struct Ring {
    bytes: Vec<u8>,
    /// Where request `p` starts: `bytes[at[p]..at[p + 1]]`.
    at: Vec<usize>,
    len: usize,
}

/// The requests of a run: what each op sends, encoded once per key where that fits, and the
/// whole stream where that fits too.
struct Work {
    target: Target,
    load: Load,
    op: Op,
    depth: usize,
    /// Each kind's requests, encoded per key where they fit in the budget.
    gets: Option<Frames>,
    sets: Option<Frames>,
    /// The keys and the value, for a kind encoded as it is sent.
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
    ring: Option<Ring>,
}

impl Work {
    /// Encodes what `op` sends to `t`, one request per key of `load` (and of each kind, for a
    /// mix), each GET or SET as `Load` makes it, in tables of at most `budget` bytes.
    fn new(t: &Target, op: Op, load: &Load, depth: usize, budget: usize) -> Work {
        let value = vec![b'w'; load.value_size];
        let (want_gets, want_sets) = (op != Op::Set, op != Op::Get);
        let gets = want_gets
            .then(|| Frames::new(load, budget, |k, id, out| t.proto.get(k, id, out)))
            .flatten();
        let sets = want_sets
            .then(|| Frames::new(load, budget, |k, id, out| load.set(t, k, &value, id, out)))
            .flatten();
        let keys = if (want_gets && gets.is_none()) || (want_sets && sets.is_none()) {
            (0..load.keys.max(1))
                .map(|i| key(i, load.key_size))
                .collect()
        } else {
            Vec::new()
        };
        let mut work = Work {
            target: t.clone(),
            load: *load,
            op,
            depth: depth.max(1),
            gets,
            sets,
            keys,
            value,
            ring: None,
        };
        work.ring = work.ring(budget);
        work
    }

    /// The ring of this run, where every kind it sends is encoded per key and the ring's
    /// `max(2^20, 4 × keys)` requests (every key several times over, in random order) fit in
    /// `budget` bytes.
    fn ring(&self, budget: usize) -> Option<Ring> {
        let longest = [&self.gets, &self.sets]
            .into_iter()
            .flatten()
            .map(|f| f.bytes.len() / (f.at.len() - 1))
            .max()?;
        if (self.op != Op::Set && self.gets.is_none())
            || (self.op != Op::Get && self.sets.is_none())
        {
            return None;
        }
        let len = (1 << 20).max(4 * self.load.keys.max(1));
        if (len + self.depth).saturating_mul(longest + 1) > budget {
            return None;
        }
        let (mut bytes, mut rng, mut id) = (Vec::new(), 0x2545_f491_4f6c_dd1d, 0u32);
        let mut at = Vec::with_capacity(len + self.depth + 1);
        at.push(0);
        while at.len() <= len {
            self.batch(&mut bytes, &mut rng, &mut id, 1);
            at.push(bytes.len());
        }
        for p in 0..self.depth {
            let (from, to) = (at[p % len], at[p % len + 1]);
            bytes.extend_from_within(from..to);
            at.push(bytes.len());
        }
        Some(Ring { bytes, at, len })
    }

    /// Prepares `lane`'s next batch: the ring's next `depth` requests, or a batch encoded into
    /// `lane.out`.
    fn next(&self, lane: &mut Lane) {
        match &self.ring {
            Some(ring) => {
                let p = lane.pos;
                lane.batch = ring.at[p]..ring.at[p + self.depth];
                lane.pos = (p + self.depth) % ring.len;
            }
            None => {
                lane.out.clear();
                self.batch(&mut lane.out, &mut lane.rng, &mut lane.id, self.depth);
                lane.batch = 0..lane.out.len();
            }
        }
    }

    /// The bytes of `lane`'s batch not yet written.
    fn unwritten<'a>(&'a self, lane: &'a Lane) -> &'a [u8] {
        let all = match &self.ring {
            Some(ring) => &ring.bytes[lane.batch.clone()],
            None => &lane.out[lane.batch.clone()],
        };
        &all[lane.written..]
    }

    /// Appends `count` requests on random keys drawn from `rng`, upcache requests numbered on
    /// from `id`.
    fn batch(&self, out: &mut Vec<u8>, rng: &mut u64, id: &mut u32, count: usize) {
        let keys = self.load.keys.max(1) as u64;
        let get_percent = u64::from(self.load.get_percent);
        let proto = self.target.proto;
        for _ in 0..count {
            let r = xorshift(rng);
            let i = (r % keys) as usize;
            let get = match self.op {
                Op::Get => true,
                Op::Set => false,
                Op::Mix => (r >> 32) % 100 < get_percent,
            };
            *id = id.wrapping_add(1);
            match if get { &self.gets } else { &self.sets } {
                Some(frames) => {
                    let at = out.len();
                    out.extend_from_slice(frames.get(i));
                    if proto == Proto::Upcache {
                        set_frame_id(&mut out[at..], *id);
                    }
                }
                None if get => proto.get(&self.keys[i], *id, out),
                None => self
                    .load
                    .set(&self.target, &self.keys[i], &self.value, *id, out),
            }
        }
    }
}

/// Measures `op` against `t` (see the module docs): `conns` connections, `depth` requests in
/// flight on each, `load.warmup` seconds unmeasured, then `load.duration` measured.
pub fn measure(
    t: &Target,
    op: Op,
    load: &Load,
    depth: usize,
    conns: usize,
) -> io::Result<Measured> {
    let work = Work::new(t, op, load, depth, FRAMES_BUDGET);
    let mut lanes = Vec::with_capacity(conns);
    for n in 0..conns {
        lanes.push(Lane {
            s: t.connect()?.s,
            out: Vec::new(),
            batch: 0..0,
            written: 0,
            pos: work.ring.as_ref().map_or(0, |r| n * r.len / conns),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            pending: 0,
            sent_at: Instant::now(),
            measured: false,
            rng: 0x9e37_79b9_7f4a_7c15u64 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            id: 0,
        });
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup);
    let mut tally = Tally {
        measure_from,
        end: measure_from + Duration::from_secs_f64(load.duration),
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
        ops: 0,
        first: None,
        last: start,
        cpu_from: None,
    };
    let stalled = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no reply from {} for {STALL:?}", t.name),
        )
    };
    if let [lane] = lanes.as_mut_slice() {
        // One connection: a blocking socket, and no poll between a write and its replies.
        lane.s.set_timeout(Some(STALL))?;
        tally.send(&work, lane)?;
        loop {
            match tally.read(&work, lane)? {
                Step::Read => {}
                Step::Done => break,
                Step::Idle => return Err(stalled()),
            }
        }
    } else {
        let mut poll = Poll::new()?;
        for (n, lane) in lanes.iter_mut().enumerate() {
            lane.s.set_nonblocking(true)?;
            poll.registry().register(
                &mut SourceFd(&lane.s.as_raw_fd()),
                Token(n),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        for lane in &mut lanes {
            tally.send(&work, lane)?;
        }
        let mut in_flight = lanes.len();
        let mut events = Events::with_capacity(1024);
        while in_flight > 0 {
            poll.poll(&mut events, Some(STALL))?;
            if events.is_empty() {
                return Err(stalled());
            }
            for ev in events.iter() {
                let lane = &mut lanes[ev.token().0];
                if ev.is_writable() && lane.written < lane.batch.len() {
                    flush(&work, lane)?;
                }
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                    && tally.read(&work, lane)? == Step::Done
                {
                    in_flight -= 1;
                }
            }
        }
    }
    let (cpu_from, waited_from) = tally.cpu_from.unwrap_or_default();
    let busy = thread_cpu_time().saturating_sub(cpu_from);
    let waited = run_delay().map(|w| w.saturating_sub(waited_from));
    let window = tally.first.map_or(Duration::ZERO, |f| tally.last - f);
    let (hist, ops) = (&tally.hist, tally.ops);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Measured {
        ops_per_sec: ops as f64 / window.as_secs_f64().max(1e-9),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
        // No reply in the window (a stalled server): no share to speak of.
        client_busy: (ops > 0 && !window.is_zero())
            .then(|| busy.as_secs_f64() / window.as_secs_f64()),
        client_waiting: waited
            .filter(|_| ops > 0 && !window.is_zero())
            .map(|w| w.as_secs_f64() / window.as_secs_f64()),
    })
}

/// What [`Tally::read`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The socket had nothing to read (would block, or a blocking read timed out).
    Idle,
    /// It read replies or parts of them.
    Read,
    /// The lane's last batch is answered and the run is over: nothing more to send.
    Done,
}

/// The measurement's clock, window and histogram, shared by its lanes.
struct Tally {
    measure_from: Instant,
    end: Instant,
    hist: Histogram<u64>,
    /// Replies to measured batches, and the first measured write and last measured reply.
    ops: u64,
    first: Option<Instant>,
    last: Instant,
    /// The thread's CPU time and its time waiting for the CPU at the first measured write.
    cpu_from: Option<(Duration, Duration)>,
}

impl Tally {
    /// Encodes and writes `lane`'s next batch; the first batch written after the warm-up
    /// starts the measured window.
    fn send(&mut self, work: &Work, lane: &mut Lane) -> io::Result<()> {
        work.next(lane);
        lane.written = 0;
        lane.pending = work.depth;
        lane.sent_at = Instant::now();
        lane.measured = lane.sent_at >= self.measure_from;
        if lane.measured && self.first.is_none() {
            self.first = Some(lane.sent_at);
            self.cpu_from = Some((thread_cpu_time(), run_delay().unwrap_or_default()));
        }
        flush(work, lane)
    }

    /// Reads what `lane`'s socket holds until a read leaves it empty, counts the replies,
    /// records their latency (one clock read per read that completed any), and sends the next
    /// batch once the last reply of one is in, until the end of the run.
    fn read(&mut self, work: &Work, lane: &mut Lane) -> io::Result<Step> {
        let mut step = Step::Idle;
        loop {
            if lane.end == lane.buf.len() {
                make_room(lane);
            }
            let n = match lane.s.read(&mut lane.buf[lane.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(step),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            step = Step::Read;
            // A read that does not fill the buffer emptied the socket: the next arrival is a
            // new event (or, blocking, the next read waits for it).
            let drained = lane.end + n < lane.buf.len();
            lane.end += n;
            let mut got = 0;
            while got < lane.pending {
                match work.target.proto.reply_len(&lane.buf[lane.start..lane.end]) {
                    Some(len) => {
                        lane.start += len;
                        got += 1;
                    }
                    None => break,
                }
            }
            if lane.start == lane.end {
                (lane.start, lane.end) = (0, 0);
            }
            if got > 0 {
                lane.pending -= got;
                let now = Instant::now();
                if lane.measured {
                    let ns = (now - lane.sent_at).as_nanos().max(1) as u64;
                    self.hist.record_n(ns, got as u64).expect("in range");
                    self.ops += got as u64;
                    self.last = now;
                }
                if lane.pending == 0 {
                    if now >= self.end {
                        return Ok(Step::Done);
                    }
                    self.send(work, lane)?;
                }
            }
            if drained {
                return Ok(step);
            }
        }
    }
}

/// Writes what the socket takes of `lane`'s batch; the rest goes on a writable event.
fn flush(work: &Work, lane: &mut Lane) -> io::Result<()> {
    while lane.written < lane.batch.len() {
        match (&lane.s).write(work.unwritten(lane)) {
            Ok(n) => lane.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes room after `lane.end`: moves a partial reply to the front, or grows the buffer when
/// one reply fills it all.
fn make_room(lane: &mut Lane) {
    if lane.start > 0 {
        lane.buf.copy_within(lane.start..lane.end, 0);
        (lane.start, lane.end) = (0, lane.end - lane.start);
    } else {
        let len = lane.buf.len();
        lane.buf.resize(len * 2, 0);
    }
}

/// The time this thread has been ready to run but waited for a CPU (Linux's schedstat
/// `run_delay`); `None` where the kernel does not keep it.
fn run_delay() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time (user and kernel) this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write; the clock id is a constant
    // Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use upcache::protocol::{decode_request, Decoded, Limits, Request};
    use upcache_transports::Endpoint;

    use super::*;
    use crate::proto::resp_array;

    fn load(keys: usize) -> Load {
        Load {
            keys,
            key_size: 16,
            value_size: 8,
            warmup: 0.0,
            duration: 0.05,
            get_percent: 50,
            ttl_ms: None,
        }
    }

    fn target(proto: Proto, endpoint: Endpoint) -> Target {
        Target {
            name: "floor".into(),
            proto,
            endpoint,
            token: (proto == Proto::Upcache).then(|| "floor".into()),
        }
    }

    /// A floor server of this process on TCP or in `dir` (its thread ends with the tests).
    fn floor(unix_dir: Option<std::path::PathBuf>) -> Endpoint {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            crate::floor::serve(unix_dir, |ep| tx.send(ep.clone()).unwrap())
        });
        rx.recv().expect("the floor listens")
    }

    /// A lane on one end of a socket pair (its batches are looked at, not sent).
    fn lane() -> Lane {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Lane {
            s: Stream::Unix(a),
            out: Vec::new(),
            batch: 0..0,
            written: 0,
            pos: 0,
            buf: vec![0; 8],
            start: 0,
            end: 0,
            pending: 0,
            sent_at: Instant::now(),
            measured: false,
            rng: 7,
            id: 41,
        }
    }

    /// The ids of the upcache requests in `bytes`, checking each is a GET or a SET (with the
    /// run's value) of one of `keys` keys, and that both kinds are there.
    fn decode_batch(bytes: &[u8], keys: usize) -> Vec<u32> {
        let (mut at, mut ids, mut kinds) = (0, Vec::new(), [0; 2]);
        while at < bytes.len() {
            let Ok(Decoded::Frame((id, req), n)) =
                decode_request(&bytes[at..], &Limits::unlimited())
            else {
                panic!("not a whole request at {at}");
            };
            let k = match req {
                Request::Get { key } => {
                    kinds[0] += 1;
                    key
                }
                Request::Set { key, value } => {
                    assert_eq!(value, [b'w'; 8]);
                    kinds[1] += 1;
                    key
                }
                other => panic!("{other:?}"),
            };
            assert!((0..keys).any(|i| key(i, 16) == k), "{k:?}");
            ids.push(id);
            at += n;
        }
        assert!(kinds[0] > 0 && kinds[1] > 0, "a mix of both: {kinds:?}");
        ids
    }

    #[test]
    fn batches_are_depth_whole_requests_on_known_keys_with_fresh_ids() {
        let t = target(Proto::Upcache, Endpoint::Tcp(([127, 0, 0, 1], 1).into()));
        // The ring; requests encoded per key (the ring does not fit); encoded as sent.
        for budget in [FRAMES_BUDGET, 4096, 0] {
            let work = Work::new(&t, Op::Mix, &load(10), 64, budget);
            assert_eq!(
                (work.ring.is_some(), work.gets.is_some()),
                (budget > 4096, budget > 0)
            );
            let mut lane = lane();
            if let Some(ring) = &work.ring {
                // Across the ring's end: the last 5 requests, then the first 59 again.
                lane.pos = ring.len - 5;
                work.next(&mut lane);
                let ids = decode_batch(work.unwritten(&lane), 10);
                let len = ring.len as u32;
                let want: Vec<u32> = (len - 4..=len).chain(1..60).collect();
                assert_eq!(ids, want);
                assert_eq!(lane.pos, 59);
            }
            for _ in 0..2 {
                let before = lane.id;
                work.next(&mut lane);
                let ids = decode_batch(work.unwritten(&lane), 10);
                let mut distinct = ids.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), 64, "{ids:?}");
                if work.ring.is_none() {
                    assert_eq!(ids, (before + 1..before + 65).collect::<Vec<u32>>());
                }
            }
        }
    }

    #[test]
    fn resp_batches_are_depth_commands() {
        let t = target(Proto::Resp, Endpoint::Tcp(([127, 0, 0, 1], 1).into()));
        let work = Work::new(&t, Op::Get, &load(3), 5, FRAMES_BUDGET);
        let mut lane = lane();
        work.next(&mut lane);
        let out = work.unwritten(&lane);
        let (mut at, mut n) = (0, 0);
        while let Some((args, len)) = resp_array(&out[at..]) {
            assert_eq!(args[0], b"GET");
            at += len;
            n += 1;
        }
        assert_eq!((n, at), (5, out.len()));
    }

    #[test]
    fn make_room_moves_a_partial_reply_front_then_grows() {
        let mut lane = Lane {
            buf: b"abcdefgh".to_vec(),
            start: 3,
            end: 8,
            ..lane()
        };
        make_room(&mut lane);
        assert_eq!(
            (lane.start, lane.end, &lane.buf[..5]),
            (0, 5, &b"defgh"[..])
        );
        lane.end = 8;
        make_room(&mut lane);
        assert_eq!((lane.start, lane.end, lane.buf.len()), (0, 8, 16));
    }

    #[test]
    fn a_run_against_the_floor_completes_every_batch_on_tcp_and_unix() {
        let dir = std::env::temp_dir().join(format!("loadgen-drive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for ep in [floor(None), floor(Some(dir.clone()))] {
            let t = target(Proto::Upcache, ep);
            for (op, depth, conns) in [(Op::Mix, 16, 3), (Op::Get, 1, 1)] {
                // Every batch in flight must finish (the run returns) and every reply parse.
                let m = measure(&t, op, &load(100), depth, conns).expect("a run");
                if m.ops_per_sec > 0.0 {
                    assert!(m.p50_us <= m.p99_us && m.p99_us <= m.max_us, "{m:?}");
                    let busy = m.client_busy.expect("measured");
                    let waiting = m.client_waiting.expect("Linux keeps schedstat");
                    assert!(busy > 0.0 && waiting >= 0.0, "{m:?}");
                    assert_eq!(m.client_bound(), busy + waiting >= CLIENT_BOUND);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
