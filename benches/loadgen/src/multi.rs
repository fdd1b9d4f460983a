//! `loadgen multi`: many keys in one request against the same keys as a pipeline of single
//! requests, for upcache (`GET_MANY`/`SET_MANY` against pipelined `GET`/`SET`), Redis (`MGET`/
//! `MSET` against pipelined `GET`/`SET`) and memcached (multi-get `get k1 k2 ...` against
//! pipelined `get`; memcached has no multi-set, so its set cell is the pipeline only).
//!
//! Dimensions (flags, printed with the table): the targets (each with its transport), batch
//! sizes (`--batches`, default 16 and 64 keys), `keys` distinct keys of `key_size` B holding
//! `value_size` B (stored first, so every read hits), connections (`--conns`, default 4, each
//! with one batch in flight), warm-up and duration.
//!
//! A `floor` target (the floor server answers `GET_MANY` with its fixed 64-byte value per key,
//! and everything else as it always does; so only with `--value-size 64`) is measured first: its
//! figure in each cell is this client's ceiling there, and a server's figure of at least
//! [`CLIENT_BOUND`] of it is marked `*` (client-bound, not a measure of the server), as in
//! `loadgen run`'s matrix. The floor speaks upcache's framing, so for Redis and memcached,
//! whose replies this client parses otherwise, the mark is a close guide rather than their own
//! ceiling.
//!
//! One cell: each connection on its own thread; each round picks `batch` random keys, writes one
//! request holding them all (or `batch` single requests in one write), and reads the whole
//! reply (or all `batch` replies). The figure is keys per second (`batch` × rounds / time)
//! and the median round trip of a batch. Before a read cell is measured, one round is checked:
//! every key must come back with its value, so a miss or a short reply cannot pass as speed.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem;
use upcache::protocol::{self, Batch, Decoded, Limits, Reply, Request};

use super::drive::CLIENT_BOUND;
use super::proto::{resp_array, resp_command, Proto};
use super::{key, preload, xorshift, Conn, Load, Target};

/// What `loadgen multi` measures (see the module's documentation).
#[derive(clap::Args, Clone, Debug)]
pub struct Dims {
    /// Keys per batch, comma-separated: one row per size and target.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub batches: Vec<usize>,
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Connections per cell, each with one batch in flight, each driven by its own thread: 1
    /// measures a round trip, 4 (the default) loads the server as the matrix's 4-connection
    /// cells do.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Seconds of warm-up per cell, not measured.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
}

/// How a cell sends its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shape {
    /// One request for the whole batch.
    Multi,
    /// One request per key, all written at once.
    Pipeline,
}

/// One result row.
struct Cell {
    keys_per_sec: f64,
    p50_us: f64,
}

pub fn run(targets: &[Target], dims: &Dims) -> io::Result<()> {
    if targets.iter().any(|t| t.name == "floor") && dims.value_size != super::floor::VALUE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the floor answers with {}-byte values: run with --value-size {} or without a floor target",
                super::floor::VALUE_SIZE,
                super::floor::VALUE_SIZE
            ),
        ));
    }
    println!(
        "# multi-key requests against pipelines of single requests: {} keys of {} B, values of {} B, \
         {} connection(s) with one batch in flight each, {} s warm-up, {} s measured per cell",
        dims.keys, dims.key_size, dims.value_size, dims.conns, dims.warmup, dims.duration
    );
    let load = Load {
        keys: dims.keys,
        key_size: dims.key_size,
        value_size: dims.value_size,
        warmup: dims.warmup,
        duration: dims.duration,
        get_percent: 100,
        ttl_ms: None,
    };
    let keys: Vec<Vec<u8>> = (0..dims.keys).map(|i| key(i, dims.key_size)).collect();
    println!(
        "{:<10} {:<10} {:>5} {:>16} {:>10} {:>16} {:>10} {:>7}",
        "target", "transport", "batch", "op", "keys/s", "vs", "keys/s", "ratio"
    );
    let mut get_many_64 = None;
    let mut rows = Vec::new();
    // The floor first: its figure in a cell (batch, op, shape) is the client's ceiling there, and
    // a server's figure of at least `CLIENT_BOUND` of it is marked client-bound.
    let floor_first = targets.iter().filter(|t| t.name == "floor");
    let order: Vec<&Target> = floor_first
        .chain(targets.iter().filter(|t| t.name != "floor"))
        .collect();
    let mut ceilings: HashMap<(usize, bool, Shape), f64> = HashMap::new();
    let mut marked = false;
    for t in order {
        preload(t, &load, 0)?;
        for &batch in &dims.batches {
            for set in [false, true] {
                let multi = (t.proto != Proto::Memcached || !set)
                    .then(|| cell(t, &keys, dims, batch, set, Shape::Multi))
                    .transpose()?;
                let pipe = cell(t, &keys, dims, batch, set, Shape::Pipeline)?;
                let (m_name, p_name) = names(t.proto, set);
                let is_floor = t.name == "floor";
                // Whether `kps` in `shape`'s cell reaches `CLIENT_BOUND` of the floor's.
                let bound = |shape: Shape, kps: f64| {
                    !is_floor
                        && ceilings
                            .get(&(batch, set, shape))
                            .is_some_and(|&f| kps >= CLIENT_BOUND * f)
                };
                let m = multi.as_ref().map_or(0.0, |c| c.keys_per_sec);
                let (m_bound, p_bound) = (
                    multi.is_some() && bound(Shape::Multi, m),
                    bound(Shape::Pipeline, pipe.keys_per_sec),
                );
                marked |= m_bound || p_bound;
                let star = |b: bool| if b { "*" } else { "" };
                println!(
                    "{:<10} {:<10} {:>5} {:>16} {:>10} {:>16} {:>10} {:>7}",
                    t.name,
                    t.transport(),
                    batch,
                    m_name,
                    multi.as_ref().map_or("-".into(), |c| format!(
                        "{}{}",
                        super::fmt_ops(c.keys_per_sec),
                        star(m_bound)
                    )),
                    p_name,
                    format!("{}{}", super::fmt_ops(pipe.keys_per_sec), star(p_bound)),
                    if m > 0.0 {
                        format!("{:.2}{}", m / pipe.keys_per_sec, star(m_bound || p_bound))
                    } else {
                        "-".into()
                    },
                );
                if is_floor {
                    ceilings.insert((batch, set, Shape::Pipeline), pipe.keys_per_sec);
                    if multi.is_some() {
                        ceilings.insert((batch, set, Shape::Multi), m);
                    }
                }
                if let Some(c) = &multi {
                    rows.push((t.name.clone(), batch, set, c.keys_per_sec, c.p50_us));
                    if t.name == "upcache" && batch == 64 && !set {
                        get_many_64 = Some(c.keys_per_sec);
                    }
                }
                rows.push((
                    format!("{} pipeline", t.name),
                    batch,
                    set,
                    pipe.keys_per_sec,
                    pipe.p50_us,
                ));
            }
        }
    }
    println!("# median round trip of one batch (µs):");
    for (name, batch, set, _, p50) in &rows {
        let op = if *set { "set" } else { "get" };
        println!("#   {name:<20} {op} x{batch:<3} {p50:>8.1}");
    }
    if let Some(up) = get_many_64 {
        for (name, batch, set, kps, _) in &rows {
            if name == "redis" && *batch == 64 && !set {
                println!(
                    "# upcache get_many / redis MGET per key, 64 keys: {:.2}",
                    up / kps
                );
            }
            if name == "memcached" && *batch == 64 && !set {
                println!(
                    "# upcache get_many / memcached multi-get per key, 64 keys: {:.2}",
                    up / kps
                );
            }
        }
    }
    println!("# ratio = multi-key request / pipeline of single requests, keys per second");
    if ceilings.is_empty() {
        println!("# no floor target: no cell is checked against the client's ceiling");
    } else {
        println!(
            "# floor rows: the client's ceiling per cell (the floor server answers without a store); \
             '*': client-bound, at least {:.0} % of it ({}), not a measure of the server",
            CLIENT_BOUND * 100.0,
            if marked { "marked above" } else { "none here" }
        );
    }
    Ok(())
}

fn names(proto: Proto, set: bool) -> (&'static str, &'static str) {
    match (proto, set) {
        (Proto::Upcache, false) => ("get_many", "GET pipeline"),
        (Proto::Upcache, true) => ("set_many", "SET pipeline"),
        (Proto::Resp, false) => ("MGET", "GET pipeline"),
        (Proto::Resp, true) => ("MSET", "SET pipeline"),
        (Proto::Memcached, false) => ("get k1 k2 ...", "get pipeline"),
        (Proto::Memcached, true) => ("(none)", "set pipeline"),
    }
}

/// Appends the request(s) for `batch` keys (`scratch` holds an upcache batch's body).
fn encode(
    t: &Target,
    shape: Shape,
    set: bool,
    batch: &[&[u8]],
    value: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) {
    match (shape, t.proto, set) {
        (Shape::Pipeline, p, false) => batch.iter().for_each(|k| p.get(k, 1, out)),
        (Shape::Pipeline, p, true) => batch.iter().for_each(|k| p.set(k, value, 1, out)),
        (Shape::Multi, Proto::Upcache, false) => {
            let keys = Batch::pack(scratch, false, batch.iter().map(|k| (*k, None)));
            Request::GetMany { keys }.encode(1, out)
        }
        (Shape::Multi, Proto::Upcache, true) => {
            let pairs = Batch::pack(scratch, true, batch.iter().map(|k| (*k, Some(value))));
            Request::SetMany { pairs, ttl_ms: 0 }.encode(1, out)
        }
        (Shape::Multi, Proto::Resp, false) => {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(batch.iter().copied());
            resp_command(&args, out)
        }
        (Shape::Multi, Proto::Resp, true) => {
            let mut args: Vec<&[u8]> = vec![b"MSET"];
            for k in batch {
                args.extend([*k, value]);
            }
            resp_command(&args, out)
        }
        (Shape::Multi, Proto::Memcached, false) => {
            out.extend_from_slice(b"get");
            for k in batch {
                out.push(b' ');
                out.extend_from_slice(k);
            }
            out.extend_from_slice(b"\r\n");
        }
        (Shape::Multi, Proto::Memcached, true) => unreachable!("memcached has no multi-set"),
    }
}

/// The length of the whole reply to a multi-key request at the front of `buf`, and how many
/// values it carried; `None` until it is all there.
fn multi_reply_len(proto: Proto, buf: &[u8]) -> Option<(usize, usize)> {
    match proto {
        Proto::Upcache => match protocol::decode_reply(buf, &Limits::unlimited()) {
            Ok(Decoded::Frame((_, Reply::Values(v)), n)) => {
                Some((n, v.iter().filter(Option::is_some).count()))
            }
            Ok(Decoded::Frame((_, Reply::Done), n)) => Some((n, 0)),
            Ok(Decoded::Frame((_, other), _)) => panic!("unexpected reply {other:?}"),
            Ok(Decoded::Incomplete { .. }) => None,
            Err(e) => panic!("bad reply: {e}"),
        },
        Proto::Resp => {
            if buf.first() == Some(&b'+') {
                return Proto::Resp.reply_len(buf).map(|n| (n, 0));
            }
            resp_array(buf).map(|(els, n)| (n, els.len()))
        }
        Proto::Memcached => {
            let (mut at, mut found) = (0, 0);
            loop {
                let line = at + memmem::find(&buf[at..], b"\r\n")?;
                let head = &buf[at..line];
                if head == b"END" {
                    return Some((line + 2, found));
                }
                assert!(head.starts_with(b"VALUE "), "memcached: {head:?}");
                let bytes: usize = std::str::from_utf8(head)
                    .ok()?
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()?;
                at = line + 2 + bytes + 2;
                if buf.len() < at {
                    return None;
                }
                found += 1;
            }
        }
    }
}

/// Reads one whole reply parsed by `parse` (its length and what it reports) and consumes it;
/// reads go through `scratch` (64 KiB, allocated once), so only the bytes that arrive are
/// copied, never a whole zeroed chunk per read.
fn read_with<R>(
    c: &mut Conn,
    scratch: &mut [u8],
    parse: impl Fn(&[u8]) -> Option<(usize, R)>,
) -> io::Result<R> {
    loop {
        if let Some((n, r)) = parse(&c.buf[c.at..]) {
            c.at += n;
            if c.at == c.buf.len() {
                c.buf.clear();
                c.at = 0;
            }
            return Ok(r);
        }
        if c.at > 0 {
            c.buf.drain(..c.at);
            c.at = 0;
        }
        let n = c.s.read(scratch)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        c.buf.extend_from_slice(&scratch[..n]);
    }
}

/// Buffers a cell reuses from round to round.
struct Bufs {
    out: Vec<u8>,
    scratch: Vec<u8>,
    read: Vec<u8>,
}

impl Default for Bufs {
    fn default() -> Self {
        Bufs {
            out: Vec::new(),
            scratch: Vec::new(),
            read: vec![0; 64 * 1024],
        }
    }
}

/// One round: sends the batch, reads every reply; returns how many values came back.
fn round(
    c: &mut Conn,
    t: &Target,
    shape: Shape,
    set: bool,
    batch: &[&[u8]],
    value: &[u8],
    bufs: &mut Bufs,
) -> io::Result<usize> {
    let out = &mut bufs.out;
    out.clear();
    encode(t, shape, set, batch, value, out, &mut bufs.scratch);
    c.s.write_all(out)?;
    match shape {
        Shape::Multi => read_with(c, &mut bufs.read, |b| multi_reply_len(t.proto, b)),
        Shape::Pipeline => {
            let mut values = 0;
            for _ in batch {
                // A value reply is longer than the value; a miss or a status is not.
                let long = read_with(c, &mut bufs.read, |b| {
                    t.proto.reply_len(b).map(|n| (n, n > value.len()))
                })?;
                values += usize::from(long);
            }
            Ok(values)
        }
    }
}

fn cell(
    t: &Target,
    keys: &[Vec<u8>],
    dims: &Dims,
    size: usize,
    set: bool,
    shape: Shape,
) -> io::Result<Cell> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(dims.warmup);
    let end = measure_from + Duration::from_secs_f64(dims.duration);
    let per_conn: Vec<io::Result<Measured>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..dims.conns.max(1))
            .map(|n| {
                scope.spawn(move || {
                    connection(
                        t,
                        keys,
                        dims,
                        size,
                        set,
                        shape,
                        n,
                        (start, measure_from, end),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a connection's thread"))
            .collect()
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut rounds, mut first, mut last) = (0u64, None::<Instant>, start);
    for r in per_conn {
        let (n, f, l, h) = r?;
        rounds += n;
        if let Some(f) = f {
            first = Some(first.map_or(f, |x| x.min(f)));
        }
        last = last.max(l);
        hist.add(h).expect("same bounds");
    }
    let window = first.map_or(Duration::ZERO, |f| last - f);
    Ok(Cell {
        keys_per_sec: (rounds * size as u64) as f64 / window.as_secs_f64().max(1e-9),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
    })
}

/// What one connection of a cell measured: the rounds, the first one's start, the last one's
/// end, and their round trips.
type Measured = (u64, Option<Instant>, Instant, Histogram<u64>);

/// One connection of a cell: batches one after another until `end`.
#[allow(clippy::too_many_arguments)]
fn connection(
    t: &Target,
    keys: &[Vec<u8>],
    dims: &Dims,
    size: usize,
    set: bool,
    shape: Shape,
    n: usize,
    (start, measure_from, end): (Instant, Instant, Instant),
) -> io::Result<Measured> {
    let mut c = t.connect()?;
    let value = vec![b'v'; dims.value_size];
    let mut rng = (0x9e37_79b9_7f4a_7c15u64 ^ size as u64)
        .wrapping_add((n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9))
        | 1;
    let mut bufs = Bufs::default();
    let mut batch: Vec<&[u8]> = Vec::with_capacity(size);
    fn pick<'k>(keys: &'k [Vec<u8>], size: usize, rng: &mut u64, batch: &mut Vec<&'k [u8]>) {
        batch.clear();
        for _ in 0..size {
            batch.push(&keys[(xorshift(rng) % keys.len() as u64) as usize][..]);
        }
    }
    if !set {
        pick(keys, size, &mut rng, &mut batch);
        let got = round(&mut c, t, shape, set, &batch, &value, &mut bufs)?;
        assert_eq!(got, size, "{}: every key must be read back", t.name);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut rounds, mut first) = (0u64, None);
    let mut last = start;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        pick(keys, size, &mut rng, &mut batch);
        round(&mut c, t, shape, set, &batch, &value, &mut bufs)?;
        if t0 >= measure_from {
            last = Instant::now();
            first.get_or_insert(t0);
            rounds += 1;
            hist.record((last - t0).as_nanos().max(1) as u64)
                .expect("in range");
        }
    }
    Ok((rounds, first, last, hist))
}
