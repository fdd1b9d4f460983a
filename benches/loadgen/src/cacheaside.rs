//! `loadgen cacheaside`: the hit ratio a server keeps in a memory budget, under a cache-aside
//! workload; `loadgen cacheaside-verdict` compares the rows of several servers.
//!
//! Dimensions (flags, printed with every row and in the JSON line):
//!
//! - `budget` B: the bytes the caller gave the server (upcache `--max-memory`, Redis
//!   `maxmemory`, memcached `-m`). The load generator does not set it; it sizes the workload
//!   from it and prints the limit the server itself reports next to it.
//! - keys of 16 B (`key:` and 12 digits, as in the other subcommands); the value of key `i` is
//!   `value_size(i)` bytes, 64 to 512 B, a fixed function of `i`, so every server stores the same
//!   bytes (mean 288 B). `fit` = B / (16 + 288): the keys the budget holds at its payload alone.
//! - key space N = `space` × `fit` (default 8×); keys drawn from a Zipf distribution over
//!   ranks 1..=N with exponent `alpha` (rank r is key r − 1), each connection from its own
//!   generator seeded from `seed` and its index.
//! - `conns` connections, each writing `depth` GETs at once and reading their replies, then
//!   one SET for each GET that missed (the value the "database" gives), pipelined, and reading
//!   those replies: cache-aside. Two GETs of one key in a batch that both miss set it twice, as
//!   two clients would.
//! - `warmup_gets` GETs (all connections together) not counted, then `gets` measured GETs.
//! - `variant scan`: halfway through the measured GETs every connection stops; connection 0
//!   makes one sequential pass over `2 × fit` keys never asked before (keys N.., each a GET and
//!   its SET on the miss, `depth` at a time); then all go on. The pass's own requests are not
//!   in the hit ratio (they all miss by construction), and they are in ops/s. `variant plain`
//!   stops and goes on at the same point without a pass.
//!
//! Reported per row: hit ratio over the measured GETs, over their second half (after the scan
//! in the scan variant), the ceiling (the share of the measured GETs whose key had been asked
//! before: what a cache with no budget would hit, so no policy can do better), the keys the server holds at the end by its own count (upcache
//! `STATS.keys`, Redis `db0:keys`, memcached `curr_items`), its evictions and its own memory
//! figure (upcache `memory_bytes` where the server has it, else `store_bytes`; Redis
//! `used_memory`; memcached `bytes`), the limit it reports (upcache `max_memory`, Redis
//! `maxmemory`, memcached `limit_maxbytes`; 0: none), its RSS (`/proc/PID/status` VmRSS, with
//! `--pid`), and requests per second (GETs and SETs, the pass's too) over the measured phase.
//!
//! The ceiling is counted by the client (one bit per key of the key space, shared by the
//! connections), so it depends only on the GETs sent, not on the server.
//!
//! Every hit's length is checked against `value_size` of its key: a reply that does not match
//! stops the run with an error rather than count as a hit.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use upcache::protocol::{self, Decoded, Limits, Reply, Request};
use upcache_transports::connect;

use super::proto::{resp_command, Proto};
use super::{fmt_ops, rss_kib, Target};

/// The key size: `key:` and 12 digits.
pub const KEY_SIZE: usize = 16;
/// The smallest and largest value.
pub const MIN_VALUE: usize = 64;
pub const MAX_VALUE: usize = 512;
/// Bytes of payload a key takes on average: its key and its mean value.
const MEAN_PAYLOAD: u64 = (KEY_SIZE + (MIN_VALUE + MAX_VALUE) / 2) as u64;

/// Which workload: Zipf alone, or Zipf with one sequential pass of new keys halfway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Plain,
    Scan,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Scan => "scan",
        }
    }
}

/// What `loadgen cacheaside` measures (see the module's documentation).
#[derive(clap::Args, Clone, Debug)]
pub struct Dims {
    /// The budget the server was started with, in bytes (sizes the key space and the scan).
    #[arg(long, default_value_t = 64 << 20)]
    pub budget: u64,
    /// The Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    #[arg(long, value_enum, default_value = "plain")]
    pub variant: Variant,
    /// The key space, in multiples of the keys whose payload fits in the budget.
    #[arg(long, default_value_t = 8.0)]
    pub space: f64,
    /// GETs before the measured phase, all connections together.
    #[arg(long, default_value_t = 2_000_000)]
    pub warmup_gets: u64,
    /// GETs measured, all connections together.
    #[arg(long, default_value_t = 2_000_000)]
    pub gets: u64,
    /// GETs written at once on a connection before their replies are read.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Seed of the key generators (connection `c` uses `seed + c`).
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}

impl Dims {
    /// Keys whose payload (key and mean value) fits in the budget.
    pub fn fit(&self) -> u64 {
        (self.budget / MEAN_PAYLOAD).max(1)
    }

    /// The number of keys the Zipf distribution draws from.
    pub fn key_space(&self) -> u64 {
        ((self.fit() as f64 * self.space) as u64).max(1)
    }

    /// The number of new keys the scan passes over: twice the budget's worth.
    pub fn scan_keys(&self) -> u64 {
        2 * self.fit()
    }
}

/// The size of key `id`'s value: 64 to 512 bytes, from a hash of `id` (the same on every run
/// and for every server).
pub fn value_size(id: u64) -> usize {
    // splitmix64's finalizer: neighbouring ids get unrelated sizes.
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    MIN_VALUE + (z % (MAX_VALUE - MIN_VALUE + 1) as u64) as usize
}

/// Key `id`: `key:` and 12 digits (the bytes of `super::key(id, 16)`, without allocating).
pub fn key16(id: u64) -> [u8; KEY_SIZE] {
    let mut k = *b"key:000000000000";
    let mut n = id;
    for b in k[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// What a GET's reply says: a hit with its value's length, or a miss.
pub fn get_outcome(proto: Proto, frame: &[u8]) -> io::Result<Option<usize>> {
    let bad = || {
        io::Error::other(format!(
            "not a GET reply: {:?}",
            String::from_utf8_lossy(&frame[..frame.len().min(40)])
        ))
    };
    match proto {
        Proto::Upcache => match protocol::decode_reply(frame, &Limits::unlimited()) {
            Ok(Decoded::Frame((_, Reply::Value(v)), _)) => Ok(Some(v.len())),
            Ok(Decoded::Frame((_, Reply::Nil), _)) => Ok(None),
            _ => Err(bad()),
        },
        Proto::Resp => {
            let line = frame.iter().position(|&b| b == b'\r').ok_or_else(bad)?;
            match frame.first() {
                Some(b'$') if &frame[1..line] == b"-1" => Ok(None),
                Some(b'$') => std::str::from_utf8(&frame[1..line])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .map(Some)
                    .ok_or_else(bad),
                _ => Err(bad()),
            }
        }
        Proto::Memcached => {
            if frame.starts_with(b"END\r\n") {
                return Ok(None);
            }
            let line = frame.iter().position(|&b| b == b'\r').ok_or_else(bad)?;
            let head = std::str::from_utf8(&frame[..line]).map_err(|_| bad())?;
            match head.strip_prefix("VALUE ") {
                Some(rest) => rest
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .map(Some)
                    .ok_or_else(bad),
                None => Err(bad()),
            }
        }
    }
}

/// A barrier the connections meet at between phases, which a connection that failed opens
/// for good (`abort`), so the others return an error instead of waiting for it forever.
struct Gate {
    parties: usize,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

impl Gate {
    fn new(parties: usize) -> Gate {
        Gate {
            parties,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Waits until every party has arrived; an error once any party aborted.
    fn wait(&self) -> io::Result<()> {
        let aborted = || io::Error::other("another connection failed");
        let mut s = self.state.lock().expect("gate lock");
        if s.aborted {
            return Err(aborted());
        }
        s.arrived += 1;
        if s.arrived == self.parties {
            s.arrived = 0;
            s.generation += 1;
            self.changed.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        let s = self
            .changed
            .wait_while(s, |s| s.generation == generation && !s.aborted)
            .expect("gate lock");
        if s.generation == generation {
            return Err(aborted());
        }
        Ok(())
    }

    fn abort(&self) {
        self.state.lock().expect("gate lock").aborted = true;
        self.changed.notify_all();
    }
}

/// Counts of a stretch of requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    gets: u64,
    hits: u64,
    /// GETs whose key had been asked before (in any phase, by any connection): the hits of a
    /// cache with no budget, the ceiling of every policy (only compulsory misses miss).
    ceiling: u64,
    /// Every request: GETs and SETs.
    requests: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.gets += o.gets;
        self.hits += o.hits;
        self.ceiling += o.ceiling;
        self.requests += o.requests;
    }
}

/// What one connection counted in the measured phase.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// The Zipf GETs and their SETs (not the pass's).
    all: Counts,
    /// Those of the second half.
    late: Counts,
    /// The pass's GETs and SETs.
    scan_requests: u64,
    window: Duration,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.all += o.all;
        self.late += o.late;
        self.scan_requests += o.scan_requests;
        self.window = self.window.max(o.window);
    }
}

/// The keys asked so far, one bit each, shared by the connections.
struct Seen(Vec<AtomicU64>);

impl Seen {
    fn new(keys: u64) -> Seen {
        Seen((0..keys.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Marks `id` asked; whether it had been before.
    fn ask(&self, id: u64) -> bool {
        let bit = 1u64 << (id % 64);
        self.0[(id / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0
    }
}

/// One connection's requests and the buffers they are written from.
struct Driver<'a> {
    c: super::Conn,
    proto: Proto,
    out: Vec<u8>,
    missed: Vec<u64>,
    id: u32,
    values: &'a [u8],
    /// The Zipf keys asked so far (the pass's keys are not in it: they are asked once).
    seen: &'a Seen,
}

impl Driver<'_> {
    /// GETs `ids`, then SETs those that missed. `zipf`: the ids are Zipf draws, counted
    /// against the ceiling; else the pass's keys.
    fn batch(&mut self, ids: &[u64], zipf: bool) -> io::Result<Counts> {
        self.out.clear();
        for &k in ids {
            self.id = self.id.wrapping_add(1);
            self.proto.get(&key16(k), self.id, &mut self.out);
        }
        self.c.s.write_all(&self.out)?;
        self.missed.clear();
        let mut counts = Counts {
            gets: ids.len() as u64,
            ..Counts::default()
        };
        for &k in ids {
            if zipf && self.seen.ask(k) {
                counts.ceiling += 1;
            }
            let proto = self.proto;
            match self.c.read_reply_with(|f| get_outcome(proto, f))?? {
                Some(len) if len == value_size(k) => counts.hits += 1,
                Some(len) => {
                    return Err(io::Error::other(format!(
                        "key {k}: a hit of {len} B, but its value is {} B",
                        value_size(k)
                    )))
                }
                None => self.missed.push(k),
            }
        }
        if !self.missed.is_empty() {
            self.out.clear();
            for &k in &self.missed {
                self.id = self.id.wrapping_add(1);
                let v = &self.values[..value_size(k)];
                self.proto.set(&key16(k), v, self.id, &mut self.out);
            }
            self.c.s.write_all(&self.out)?;
            for _ in 0..self.missed.len() {
                self.c.read_reply()?;
            }
        }
        counts.requests = counts.gets + self.missed.len() as u64;
        Ok(counts)
    }
}

/// What every connection shares.
struct Plan {
    zipf: Zipf<f64>,
    depth: usize,
    /// GETs per connection: warm-up, measured.
    warm: u64,
    measured: u64,
    /// The scan's first key and key count (connection 0 makes it), in the scan variant.
    scan: Option<(u64, u64)>,
    values: Vec<u8>,
    seen: Seen,
    gate: Gate,
}

/// Opens the gate for good when a connection's thread ends, however it ends (an error, a
/// panic on a server's error reply): the others then stop at their next gate instead of
/// waiting for it. Every connection is past the last gate before any can end normally.
struct EndGuard<'a>(&'a Gate);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the workload on `t` (its caller started it empty, with the budget) and returns the
/// totals of every connection.
fn drive(t: &Target, dims: &Dims) -> io::Result<Tally> {
    let space = dims.key_space();
    let conns = dims.conns.max(1);
    let per = |total: u64| total.div_ceil(conns as u64);
    let plan = Arc::new(Plan {
        zipf: Zipf::new(space as f64, dims.alpha)
            .map_err(|e| io::Error::other(format!("zipf({space}, {}): {e}", dims.alpha)))?,
        depth: dims.depth.max(1),
        warm: per(dims.warmup_gets),
        measured: per(dims.gets),
        scan: (dims.variant == Variant::Scan).then(|| (space, dims.scan_keys())),
        values: vec![b'v'; MAX_VALUE],
        seen: Seen::new(space),
        gate: Gate::new(conns),
    });
    let handles: Vec<_> = (0..conns)
        .map(|n| {
            let (t, plan) = (t.clone(), plan.clone());
            let seed = dims.seed.wrapping_add(n as u64);
            std::thread::spawn(move || {
                let _end = EndGuard(&plan.gate);
                connection(&t, &plan, n, seed)
            })
        })
        .collect();
    let mut total = Tally::default();
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => total.add(&t),
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(_) => failed = failed.or(Some(io::Error::other("a load thread panicked"))),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Connection `n`'s part: warm-up, first half, the scan (connection 0), second half, with
/// every connection meeting at the gate between phases.
fn connection(t: &Target, plan: &Plan, n: usize, seed: u64) -> io::Result<Tally> {
    let depth = plan.depth;
    let mut d = Driver {
        c: t.connect()?,
        proto: t.proto,
        out: Vec::with_capacity(depth * (MAX_VALUE + 64)),
        missed: Vec::with_capacity(depth),
        id: 0,
        values: &plan.values,
        seen: &plan.seen,
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut ids = Vec::with_capacity(depth);
    // GETs `count` Zipf keys, SETs those that missed.
    let mut zipf_gets = |d: &mut Driver, count: u64| -> io::Result<Counts> {
        let mut counts = Counts::default();
        while counts.gets < count {
            ids.clear();
            let b = (count - counts.gets).min(depth as u64);
            ids.extend((0..b).map(|_| plan.zipf.sample(&mut rng) as u64 - 1));
            counts += d.batch(&ids, true)?;
        }
        Ok(counts)
    };
    zipf_gets(&mut d, plan.warm)?;
    plan.gate.wait()?;
    let start = Instant::now();
    let mut tally = Tally::default();
    let first = plan.measured / 2;
    tally.all = zipf_gets(&mut d, first)?;
    plan.gate.wait()?;
    if let (0, Some((from, count))) = (n, plan.scan) {
        let mut scan = Vec::with_capacity(depth);
        let mut at = from;
        while at < from + count {
            scan.clear();
            scan.extend(at..(at + depth as u64).min(from + count));
            at += scan.len() as u64;
            tally.scan_requests += d.batch(&scan, false)?.requests;
        }
    }
    plan.gate.wait()?;
    tally.late = zipf_gets(&mut d, plan.measured - first)?;
    tally.all += tally.late;
    tally.window = start.elapsed();
    Ok(tally)
}

/// What a server says about itself after the run (`None`: it does not report that figure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: Option<u64>,
    pub evicted: Option<u64>,
    /// Its own memory figure (see the module's documentation).
    pub bytes: Option<u64>,
    /// The limit it enforces; 0: none.
    pub limit: Option<u64>,
}

/// Reads `t`'s own counters: upcache `STATS`, Redis `INFO`, memcached `stats`.
fn report(t: &Target) -> io::Result<Report> {
    match t.proto {
        Proto::Upcache => {
            let mut c = t.connect()?;
            let mut out = Vec::new();
            Request::Stats.encode(1, &mut out);
            c.s.write_all(&out)?;
            let json = c.read_reply_with(|frame| {
                match protocol::decode_reply(frame, &Limits::unlimited()) {
                    Ok(Decoded::Frame((_, Reply::Text(json)), _)) => {
                        serde_json::from_slice::<serde_json::Value>(json).ok()
                    }
                    _ => None,
                }
            })?;
            let json = json.ok_or_else(|| io::Error::other("STATS: not a JSON text reply"))?;
            Ok(upcache_report(&json))
        }
        Proto::Resp => {
            let mut cmd = Vec::new();
            resp_command(&[b"INFO"], &mut cmd);
            Ok(text_report(t.proto, &ask(t, &cmd, resp_bulk_done)?))
        }
        Proto::Memcached => Ok(text_report(
            t.proto,
            &ask(t, b"stats\r\n", |b| b.ends_with(b"END\r\n"))?,
        )),
    }
}

/// The report in upcache's `STATS` object. `memory_bytes` and `max_memory` come with the
/// budget; a server without them reports `store_bytes` and no limit.
pub fn upcache_report(json: &serde_json::Value) -> Report {
    let field = |k: &str| json.get(k).and_then(|v| v.as_u64());
    Report {
        keys: field("keys"),
        evicted: field("evicted"),
        bytes: field("memory_bytes").or(field("store_bytes")),
        limit: Some(field("max_memory").unwrap_or(0)),
    }
}

/// The report in Redis's `INFO` or memcached's `stats` text.
pub fn text_report(proto: Proto, text: &str) -> Report {
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    match proto {
        Proto::Resp => Report {
            // `db0:keys=N,expires=..`; no line at all when the database is empty.
            keys: Some(
                text.lines()
                    .find_map(|l| l.strip_prefix("db0:keys="))
                    .and_then(|v| v.split(',').next()?.parse().ok())
                    .unwrap_or(0),
            ),
            evicted: find("evicted_keys:"),
            bytes: find("used_memory:"),
            limit: find("maxmemory:"),
        },
        _ => Report {
            keys: find("STAT curr_items "),
            evicted: find("STAT evictions "),
            bytes: find("STAT bytes "),
            limit: find("STAT limit_maxbytes "),
        },
    }
}

/// Whether `b` holds one whole RESP bulk string.
fn resp_bulk_done(b: &[u8]) -> bool {
    let Some(line) = b.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    std::str::from_utf8(&b[1..line])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| b.len() >= line + 2 + n + 2)
}

/// Sends `cmd` on a new connection and reads until `done` says the reply is whole.
fn ask(t: &Target, cmd: &[u8], done: impl Fn(&[u8]) -> bool) -> io::Result<String> {
    let s = connect(&t.endpoint, Duration::from_secs(2))?;
    s.write_all(cmd)?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 8192];
    while !done(&text) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        text.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<14} {:>5} {:<5} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "server",
        "alpha",
        "vari.",
        "hit %",
        "2nd half",
        "ceiling %",
        "keys",
        "evicted",
        "own MiB",
        "limit",
        "RSS MiB",
        "ops/s"
    )
}

/// Runs one row: the workload on `t`, then its report; prints the row and appends it to
/// `json` as one JSON line.
pub fn run(
    t: &Target,
    label: &str,
    pid: Option<u32>,
    dims: &Dims,
    print_header: bool,
    json: Option<&Path>,
) -> io::Result<()> {
    if print_header {
        println!(
            "# cache-aside: budget {} B; keys of {KEY_SIZE} B, values {MIN_VALUE}-{MAX_VALUE} B (a fixed function of the key); \
             key space {} keys ({}x the {} keys whose payload fits); {} warm-up + {} measured GETs, SET on each miss; \
             depth {} x {} connections over {}; scan: {} new keys, once, halfway",
            dims.budget,
            dims.key_space(),
            dims.space,
            dims.fit(),
            dims.warmup_gets,
            dims.gets,
            dims.depth,
            dims.conns,
            t.transport(),
            dims.scan_keys()
        );
        println!("{}", header());
    }
    let tally = drive(t, dims)?;
    let rep = report(t)?;
    let rss = pid.map(|p| rss_kib(p) * 1024);
    let ratio = |h: u64, g: u64| h as f64 / g.max(1) as f64;
    let (hit, late, ceiling) = (
        ratio(tally.all.hits, tally.all.gets),
        ratio(tally.late.hits, tally.late.gets),
        ratio(tally.all.ceiling, tally.all.gets),
    );
    let requests = tally.all.requests + tally.scan_requests;
    let ops = requests as f64 / tally.window.as_secs_f64().max(1e-9);
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let num = |n: Option<u64>| n.map_or("-".into(), |n| n.to_string());
    println!(
        "{:<14} {:>5.1} {:<5} {:>7.2} {:>8.2} {:>9.2} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        label,
        dims.alpha,
        dims.variant.name(),
        hit * 100.0,
        late * 100.0,
        ceiling * 100.0,
        num(rep.keys),
        num(rep.evicted),
        mib(rep.bytes),
        match rep.limit {
            Some(0) => "none".into(),
            l => mib(l),
        },
        mib(rss),
        fmt_ops(ops)
    );
    if let Some(path) = json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(
            f,
            "{}",
            serde_json::json!({
                "target": t.name, "label": label, "transport": t.transport(),
                "alpha": dims.alpha, "variant": dims.variant.name(), "budget": dims.budget,
                "key_space": dims.key_space(), "scan_keys": dims.scan_keys(),
                "warmup_gets": dims.warmup_gets, "gets": dims.gets, "depth": dims.depth,
                "conns": dims.conns, "seed": dims.seed,
                "hit_ratio": hit, "second_half_hit_ratio": late, "ceiling_hit_ratio": ceiling,
                "keys": rep.keys, "evicted": rep.evicted, "own_bytes": rep.bytes,
                "limit": rep.limit, "rss_bytes": rss, "ops_per_sec": ops,
            })
        )?;
    }
    Ok(())
}

/// One row of a `cacheaside --json` file, as the verdict reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub target: String,
    pub label: String,
    pub alpha: f64,
    pub variant: String,
    pub hit_ratio: f64,
    /// The hit ratio of a cache with no budget on the same GETs.
    pub ceiling: Option<f64>,
    pub rss: Option<u64>,
    pub limit: Option<u64>,
}

impl Row {
    fn from_json(v: &serde_json::Value) -> Option<Row> {
        let s = |k: &str| Some(v.get(k)?.as_str()?.to_string());
        Some(Row {
            target: s("target")?,
            label: s("label")?,
            alpha: v.get("alpha")?.as_f64()?,
            variant: s("variant")?,
            hit_ratio: v.get("hit_ratio")?.as_f64()?,
            ceiling: v.get("ceiling_hit_ratio").and_then(|x| x.as_f64()),
            rss: v.get("rss_bytes").and_then(|x| x.as_u64()),
            limit: v.get("limit").and_then(|x| x.as_u64()),
        })
    }
}

/// For each (alpha, variant): upcache's row against the best of the others. One line each:
/// the best peer's hit ratio and label, the smallest peer RSS, and two marks, `hit>=best`
/// and `rss<=peers`, each `yes`, `NO`, or `n/a` with the reason (upcache ran without a
/// budget, no upcache row, no RSS).
pub fn verdict(rows: &[Row]) -> Vec<String> {
    let mut cells: Vec<(f64, String)> = Vec::new();
    for r in rows {
        if !cells.iter().any(|(a, v)| *a == r.alpha && *v == r.variant) {
            cells.push((r.alpha, r.variant.clone()));
        }
    }
    cells.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut lines = Vec::new();
    for (alpha, variant) in cells {
        let here: Vec<&Row> = rows
            .iter()
            .filter(|r| r.alpha == alpha && r.variant == variant)
            .collect();
        let up = here.iter().find(|r| r.target == "upcache");
        let peers: Vec<&&Row> = here.iter().filter(|r| r.target != "upcache").collect();
        let best = peers
            .iter()
            .max_by(|a, b| a.hit_ratio.total_cmp(&b.hit_ratio));
        let least_rss = peers.iter().filter_map(|r| r.rss).min();
        let mut line = format!("alpha {alpha:<3.1} {variant:<5}");
        match best {
            Some(b) => line += &format!(" best peer {} {:.2} %", b.label, b.hit_ratio * 100.0),
            None => line += " no peer",
        }
        if let Some(c) = here.iter().find_map(|r| r.ceiling) {
            line += &format!(" (ceiling {:.2} %)", c * 100.0);
        }
        if let Some(l) = least_rss {
            line += &format!(", least peer RSS {:.1} MiB", l as f64 / 1048576.0);
        }
        let (hit_mark, rss_mark) = match up {
            None => ("n/a (no upcache row)".to_string(), "n/a".to_string()),
            Some(u) if u.limit == Some(0) => (
                format!(
                    "n/a (upcache ran without a budget: {:.2} %)",
                    u.hit_ratio * 100.0
                ),
                "n/a".to_string(),
            ),
            Some(u) => {
                let hit = match best {
                    Some(b) if u.hit_ratio >= b.hit_ratio => "yes",
                    Some(_) => "NO",
                    None => "n/a",
                };
                let rss = match (u.rss, least_rss) {
                    (Some(a), Some(b)) if a <= b => "yes",
                    (Some(_), Some(_)) => "NO",
                    _ => "n/a",
                };
                (
                    format!("{hit} (upcache {:.2} %)", u.hit_ratio * 100.0),
                    format!(
                        "{rss} (upcache {})",
                        u.rss
                            .map_or("-".into(), |r| format!("{:.1} MiB", r as f64 / 1048576.0))
                    ),
                )
            }
        };
        line += &format!("; hit>=best: {hit_mark}; rss<=peers: {rss_mark}");
        lines.push(line);
    }
    lines
}

/// Reads the rows of a `cacheaside --json` file and prints the verdict.
pub fn print_verdict(path: &Path) -> io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .ok()
                .as_ref()
                .and_then(Row::from_json)
                .ok_or_else(|| {
                    io::Error::other(format!("{}: not a cacheaside row: {l}", path.display()))
                })
        })
        .collect::<io::Result<Vec<_>>>()?;
    for l in verdict(&rows) {
        println!("{l}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_lets_all_pass_together_and_an_abort_frees_the_waiters() {
        let gate = Arc::new(Gate::new(3));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || (g.wait().is_ok(), g.wait().is_ok()))
            })
            .collect();
        // The third party completes the first meeting; then it fails instead of coming to the
        // second, and the two waiting there must get an error rather than wait forever.
        assert!(gate.wait().is_ok());
        gate.abort();
        for w in waiters {
            assert_eq!(w.join().unwrap(), (true, false));
        }
        assert!(gate.wait().is_err(), "a gate once aborted stays open");
    }

    #[test]
    fn seen_tells_the_first_ask_from_the_next() {
        let seen = Seen::new(130);
        for id in [0, 63, 64, 129] {
            assert!(!seen.ask(id), "{id} first");
            assert!(seen.ask(id), "{id} again");
        }
        assert!(!seen.ask(1), "a neighbour of a key asked is not asked");
    }

    /// An upcache server on a thread of this process, on loopback TCP, with no budget.
    fn local_upcache() -> Target {
        struct Ready(std::sync::mpsc::Sender<(upcache_transports::Endpoint, String)>);
        impl upcache::server::Host for Ready {
            fn ready(&mut self, ep: &upcache_transports::Endpoint, token: &str) -> io::Result<()> {
                let _ = self.0.send((ep.clone(), token.to_string()));
                Ok(())
            }
            fn exiting(&mut self) {}
        }
        let config = upcache::server::Config::new(
            upcache_transports::Kind::Tcp,
            upcache_transports::BindOptions {
                dir: std::env::temp_dir(),
                name: format!("cacheaside-test-{}", std::process::id()),
            },
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || upcache::server::serve(&config, &mut Ready(tx)));
        let (endpoint, token) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server is ready");
        Target {
            name: "upcache".into(),
            proto: Proto::Upcache,
            endpoint,
            token: Some(token),
        }
    }

    fn small(variant: Variant, depth: usize, conns: usize) -> Dims {
        Dims {
            budget: MEAN_PAYLOAD * 100,
            alpha: 1.0,
            variant,
            space: 8.0,
            warmup_gets: 2_000,
            gets: 2_000,
            depth,
            conns,
            seed: 5,
        }
    }

    #[test]
    fn with_no_budget_one_connection_hits_exactly_the_ceiling() {
        let t = local_upcache();
        let dims = small(Variant::Plain, 1, 1);
        let tally = drive(&t, &dims).unwrap();
        assert_eq!((tally.all.gets, tally.late.gets), (2_000, 1_000));
        // One request at a time and nothing evicted: a GET hits exactly when its key was asked
        // (and so set) before.
        assert_eq!(tally.all.hits, tally.all.ceiling);
        assert!(tally.all.hits > 0 && tally.all.hits < 2_000, "{tally:?}");
        assert_eq!(tally.all.requests, 2 * 2_000 - tally.all.hits);
        assert_eq!(tally.scan_requests, 0);
        let rep = report(&t).unwrap();
        assert_eq!(rep.limit, Some(0));
        let keys = rep.keys.unwrap();
        assert!(keys > 0 && keys <= dims.key_space(), "{rep:?}");
    }

    #[test]
    fn the_scan_variant_passes_once_over_new_keys() {
        let t = local_upcache();
        let dims = small(Variant::Scan, 8, 2);
        let tally = drive(&t, &dims).unwrap();
        assert_eq!(tally.all.gets, 2_000);
        assert!(tally.all.hits <= tally.all.ceiling, "{tally:?}");
        // Every key of the pass is new: each GET misses and is followed by its SET.
        assert_eq!(tally.scan_requests, 2 * dims.scan_keys());
        let keys = report(&t).unwrap().keys.unwrap();
        assert!(keys >= dims.scan_keys(), "{keys}");
    }

    #[test]
    fn keys_are_the_other_subcommands_keys() {
        for id in [0u64, 7, 123_456, 999_999_999_999] {
            assert_eq!(
                key16(id).to_vec(),
                super::super::key(id as usize, 16),
                "{id}"
            );
        }
    }

    #[test]
    fn value_sizes_cover_the_range_and_do_not_change() {
        let sizes: Vec<usize> = (0..100_000).map(value_size).collect();
        assert_eq!(sizes.iter().min(), Some(&MIN_VALUE));
        assert_eq!(sizes.iter().max(), Some(&MAX_VALUE));
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((mean - 288.0).abs() < 3.0, "mean {mean}");
        // Pinned: a change here changes every published figure.
        assert_eq!((0..8).map(value_size).collect::<Vec<_>>(), PINNED_SIZES);
    }
    const PINNED_SIZES: [usize; 8] = [187, 264, 262, 242, 355, 96, 379, 457];

    #[test]
    fn the_scan_never_touches_the_zipf_key_space() {
        let dims = Dims {
            budget: 64 << 20,
            alpha: 1.0,
            variant: Variant::Scan,
            space: 8.0,
            warmup_gets: 0,
            gets: 0,
            depth: 1,
            conns: 1,
            seed: 1,
        };
        assert_eq!(dims.fit(), (64 << 20) / 304);
        assert_eq!(dims.key_space(), 8 * dims.fit());
        assert_eq!(dims.scan_keys(), 2 * dims.fit());
        // Ranks are 1..=N, keys rank - 1 < N; the scan starts at N.
        let zipf = Zipf::new(dims.key_space() as f64, 0.8).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let max = (0..200_000)
            .map(|_| zipf.sample(&mut rng) as u64 - 1)
            .max()
            .unwrap();
        assert!(max < dims.key_space(), "{max}");
    }

    #[test]
    fn zipf_draws_repeat_with_the_seed_and_favour_low_ranks() {
        let draw = |seed| {
            let zipf = Zipf::new(1_000_000.0, 1.0).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..10_000)
                .map(|_| zipf.sample(&mut rng) as u64 - 1)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(13), draw(13));
        assert_ne!(draw(13), draw(14));
        let d = draw(13);
        let zeros = d.iter().filter(|&&k| k == 0).count();
        // P(rank 1) = 1 / H(10^6) ~ 0.069 at alpha 1.
        assert!((500..900).contains(&zeros), "{zeros}");
    }

    #[test]
    fn get_outcomes_per_protocol() {
        let mut up = Vec::new();
        Reply::Value(b"abc").encode(1, &mut up);
        let mut none = Vec::new();
        Reply::Nil.encode(2, &mut none);
        let mut stored = Vec::new();
        Reply::Done.encode(3, &mut stored);
        assert_eq!(get_outcome(Proto::Upcache, &up).unwrap(), Some(3));
        assert_eq!(get_outcome(Proto::Upcache, &none).unwrap(), None);
        assert!(get_outcome(Proto::Upcache, &stored).is_err());
        assert_eq!(
            get_outcome(Proto::Resp, b"$5\r\nhello\r\n").unwrap(),
            Some(5)
        );
        assert_eq!(get_outcome(Proto::Resp, b"$-1\r\n").unwrap(), None);
        assert!(get_outcome(Proto::Resp, b"+OK\r\n").is_err());
        assert_eq!(
            get_outcome(Proto::Memcached, b"VALUE k 0 300\r\n").unwrap(),
            Some(300)
        );
        assert_eq!(get_outcome(Proto::Memcached, b"END\r\n").unwrap(), None);
        assert!(get_outcome(Proto::Memcached, b"STORED\r\n").is_err());
    }

    #[test]
    fn reports_read_each_servers_own_counts() {
        let redis = "# Memory\r\nused_memory:67100000\r\nmaxmemory:67108864\r\n# Stats\r\nevicted_keys:1234\r\n# Keyspace\r\ndb0:keys=180000,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            text_report(Proto::Resp, redis),
            Report {
                keys: Some(180_000),
                evicted: Some(1234),
                bytes: Some(67_100_000),
                limit: Some(67_108_864)
            }
        );
        assert_eq!(text_report(Proto::Resp, "maxmemory:0\r\n").keys, Some(0));
        let mc = "STAT curr_items 150000\r\nSTAT bytes 60000000\r\nSTAT evictions 99\r\nSTAT limit_maxbytes 67108864\r\nEND\r\n";
        assert_eq!(
            text_report(Proto::Memcached, mc),
            Report {
                keys: Some(150_000),
                evicted: Some(99),
                bytes: Some(60_000_000),
                limit: Some(67_108_864)
            }
        );
        let old: serde_json::Value =
            serde_json::json!({"keys": 5, "store_bytes": 1000, "expired": 0});
        assert_eq!(
            upcache_report(&old),
            Report {
                keys: Some(5),
                evicted: None,
                bytes: Some(1000),
                limit: Some(0)
            }
        );
        let new: serde_json::Value = serde_json::json!({"keys": 5, "store_bytes": 1000,
            "memory_bytes": 1200, "max_memory": 4096, "evicted": 7});
        assert_eq!(
            upcache_report(&new),
            Report {
                keys: Some(5),
                evicted: Some(7),
                bytes: Some(1200),
                limit: Some(4096)
            }
        );
        assert!(resp_bulk_done(b"$3\r\nabc\r\n"));
        assert!(!resp_bulk_done(b"$3\r\nabc\r"));
        assert!(!resp_bulk_done(b"$3\r"));
    }

    fn row(target: &str, alpha: f64, variant: &str, hit: f64, rss: u64, limit: u64) -> Row {
        Row {
            target: target.into(),
            label: format!("{target}-x"),
            alpha,
            variant: variant.into(),
            hit_ratio: hit,
            ceiling: Some(0.99),
            rss: Some(rss),
            limit: Some(limit),
        }
    }

    #[test]
    fn the_verdict_compares_upcache_with_the_best_peer() {
        let rows = [
            row("redis", 1.0, "plain", 0.70, 90 << 20, 64 << 20),
            row("memcached", 1.0, "plain", 0.75, 80 << 20, 64 << 20),
            row("upcache", 1.0, "plain", 0.75, 70 << 20, 64 << 20),
            row("redis", 0.8, "scan", 0.50, 90 << 20, 64 << 20),
            row("upcache", 0.8, "scan", 0.49, 91 << 20, 64 << 20),
            row("redis", 1.2, "plain", 0.90, 90 << 20, 64 << 20),
            row("upcache", 1.2, "plain", 0.99, 300 << 20, 0),
            row("redis", 1.2, "scan", 0.90, 90 << 20, 64 << 20),
        ];
        let v = verdict(&rows);
        assert_eq!(v.len(), 4, "{v:#?}");
        assert!(v[0].starts_with("alpha 0.8 scan "), "{}", v[0]);
        assert!(v[0].contains("hit>=best: NO"), "{}", v[0]);
        assert!(v[0].contains("rss<=peers: NO"), "{}", v[0]);
        // A tie counts as met; the best peer is memcached here.
        assert!(
            v[1].contains("best peer memcached-x 75.00 % (ceiling 99.00 %)"),
            "{}",
            v[1]
        );
        assert!(v[1].contains("hit>=best: yes"), "{}", v[1]);
        assert!(v[1].contains("rss<=peers: yes"), "{}", v[1]);
        assert!(
            v[2].contains("n/a (upcache ran without a budget"),
            "{}",
            v[2]
        );
        assert!(v[3].contains("n/a (no upcache row)"), "{}", v[3]);
    }
}
