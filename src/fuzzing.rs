//! Checks shared by the cargo-fuzz targets (`fuzz/`) and by the corpus replay test
//! (`tests/fuzz_corpus.rs`), so a crash found by the fuzzer is replayed by a plain `cargo test`.
//!
//! Each check takes the fuzzer's raw bytes and panics on a violated property. The three kinds:
//! arbitrary bytes never break a decoder ([`decode_request_bytes`], [`client_decode_bytes`]);
//! what decodes re-encodes to the same bytes and encoded values decode back
//! ([`round_trip_bytes`]); and model-based runs ([`store_model_bytes`] against a `HashMap`,
//! [`engine_split_bytes`] against the same stream fed in one piece).

use std::collections::HashMap;

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::protocol::{
    self, decode_incoming, decode_push, decode_reply, decode_request, Batch, Chunk, Decoded,
    Incoming, Limits, Request,
};
use crate::server::{mock, Engine, EngineConfig};
use crate::store::{Entry, Gone, IncrError, Policy, Store};

/// Small limits, so the fuzzer reaches them.
const FUZZ_LIMITS: Limits = Limits {
    max_key: 64,
    max_value: 1024,
};

/// Target 1: request decoding on arbitrary bytes never panics, never asks for more than the
/// limits allow, every frame it accepts respects every limit, and its shortcut for `GET` and
/// `SET` answers as the general path does (under these limits, the defaults and none).
pub fn decode_request_bytes(data: &[u8]) {
    let mut rest = data;
    loop {
        let decoded = decode_request(rest, &FUZZ_LIMITS);
        assert_eq!(
            decoded,
            protocol::decode_request_general(rest, &FUZZ_LIMITS)
        );
        for limits in [Limits::default(), Limits::unlimited()] {
            assert_eq!(
                decode_request(rest, &limits),
                protocol::decode_request_general(rest, &limits)
            );
        }
        match decoded {
            Ok(Decoded::Frame((_, req), n)) => {
                assert!(n >= protocol::HEADER_LEN && n <= rest.len());
                assert!(n <= FUZZ_LIMITS.max_frame());
                assert_eq!(n, req.encoded_len());
                if let Request::Hello { token, .. } = req {
                    assert!(token.len() <= protocol::MAX_TOKEN_LEN);
                }
                rest = &rest[n..];
            }
            Ok(Decoded::Incomplete { need }) => {
                assert!(need > rest.len() && need <= FUZZ_LIMITS.max_frame());
                return;
            }
            Err(protocol::DecodeError::UnknownCode { len, .. }) if len <= rest.len() => {
                rest = &rest[len..];
            }
            Err(_) => return,
        }
    }
}

/// One owned request the fuzzer builds.
#[derive(Arbitrary, Debug)]
#[allow(missing_docs)]
pub enum ArbRequest {
    Hello(u64, Vec<u8>),
    Get(Vec<u8>),
    Set(Vec<u8>, Vec<u8>),
    Exists(Vec<u8>),
    Remove(Vec<u8>),
    Incr(Vec<u8>, i64),
    Clear,
    Count,
    Keys(u64, u64),
    Items(u64, u64),
    Wait(Vec<u8>, Option<Vec<u8>>, u64),
    Subscribe(Option<Vec<u8>>),
    Unsubscribe(u32),
    Stats,
    Shutdown,
    Ping,
    SetTtl(Vec<u8>, Vec<u8>, u64),
    Expire(Vec<u8>, u64),
    Persist(Vec<u8>),
    Ttl(Vec<u8>),
    GetVersioned(Vec<u8>),
    SetIfVersion(Vec<u8>, Vec<u8>, u64),
    Add(Vec<u8>, Vec<u8>, u64),
    Replace(Vec<u8>, Vec<u8>, u64),
    GetMany(ArbBatch<false>),
    SetMany(ArbBatch<true>, u64),
    RemoveMany(ArbBatch<false>),
    /// Key and lease timeout (mapped into 1 ..= `MAX_TTL_MS`, the range that decodes).
    GetOrLease(Vec<u8>, u64),
    Release(Vec<u8>, u32),
}

/// A packed batch of keys (`PAIRS == false`) or pairs the fuzzer builds from a list of them.
#[derive(Debug)]
pub struct ArbBatch<const PAIRS: bool> {
    body: Vec<u8>,
    count: u32,
}

impl<'a, const PAIRS: bool> Arbitrary<'a> for ArbBatch<PAIRS> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let entries = Vec::<(Vec<u8>, Vec<u8>)>::arbitrary(u)?;
        let mut body = Vec::new();
        let count = Batch::pack(
            &mut body,
            PAIRS,
            entries.iter().map(|(k, v)| (&k[..], Some(&v[..]))),
        )
        .len();
        Ok(ArbBatch { body, count })
    }
}

impl<const PAIRS: bool> ArbBatch<PAIRS> {
    fn batch(&self) -> Batch<'_> {
        Batch::parse(&self.body, self.count.into(), PAIRS, u32::MAX).expect("packed whole")
    }
}

impl ArbRequest {
    /// The borrowed request.
    pub fn as_request(&self) -> Request<'_> {
        match self {
            ArbRequest::Hello(v, t) => Request::Hello {
                version: *v,
                token: t,
            },
            ArbRequest::Get(k) => Request::Get { key: k },
            ArbRequest::Set(k, v) => Request::Set { key: k, value: v },
            ArbRequest::Exists(k) => Request::Exists { key: k },
            ArbRequest::Remove(k) => Request::Remove { key: k },
            ArbRequest::Incr(k, d) => Request::Incr { key: k, delta: *d },
            ArbRequest::Clear => Request::Clear,
            ArbRequest::Count => Request::Count,
            ArbRequest::Keys(c, u) => Request::Keys {
                cursor: *c,
                until: *u,
            },
            ArbRequest::Items(c, u) => Request::Items {
                cursor: *c,
                until: *u,
            },
            ArbRequest::Wait(k, v, t) => Request::Wait {
                key: k,
                value: v.as_deref(),
                timeout_ms: *t,
            },
            ArbRequest::Subscribe(k) => Request::Subscribe { key: k.as_deref() },
            ArbRequest::Unsubscribe(s) => Request::Unsubscribe { sub: *s },
            ArbRequest::Stats => Request::Stats,
            ArbRequest::Shutdown => Request::Shutdown,
            ArbRequest::Ping => Request::Ping,
            ArbRequest::SetTtl(k, v, t) => Request::SetTtl {
                key: k,
                value: v,
                ttl_ms: *t,
            },
            ArbRequest::Expire(k, t) => Request::Expire { key: k, ttl_ms: *t },
            ArbRequest::Persist(k) => Request::Persist { key: k },
            ArbRequest::Ttl(k) => Request::Ttl { key: k },
            ArbRequest::GetVersioned(k) => Request::GetVersioned { key: k },
            ArbRequest::SetIfVersion(k, v, version) => Request::SetIfVersion {
                key: k,
                value: v,
                version: *version,
            },
            ArbRequest::Add(k, v, t) => Request::Add {
                key: k,
                value: v,
                ttl_ms: *t,
            },
            ArbRequest::Replace(k, v, t) => Request::Replace {
                key: k,
                value: v,
                ttl_ms: *t,
            },
            ArbRequest::GetMany(b) => Request::GetMany { keys: b.batch() },
            ArbRequest::SetMany(b, t) => Request::SetMany {
                pairs: b.batch(),
                ttl_ms: *t,
            },
            ArbRequest::RemoveMany(b) => Request::RemoveMany { keys: b.batch() },
            ArbRequest::GetOrLease(k, t) => Request::GetOrLease {
                key: k,
                timeout_ms: 1 + t % protocol::MAX_TTL_MS,
            },
            ArbRequest::Release(k, r) => Request::Release { key: k, req: *r },
        }
    }
}

/// Target 2: every request, reply and push that decodes from the bytes re-encodes to the same
/// bytes; and every arbitrary request built from the bytes encodes to bytes that decode to it.
pub fn round_trip_bytes(data: &[u8]) {
    let lim = Limits::unlimited();
    if let Ok(Decoded::Frame((id, r), n)) = decode_request(data, &lim) {
        let mut out = Vec::new();
        r.encode(id, &mut out);
        assert_eq!(out, &data[..n]);
    }
    if let Ok(Decoded::Frame((id, r), n)) = decode_reply(data, &lim) {
        let mut out = Vec::new();
        r.encode(id, &mut out);
        assert_eq!(out, &data[..n]);
    }
    if let Ok(Decoded::Frame(p, n)) = decode_push(data, &lim) {
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, &data[..n]);
    }
    let mut u = Unstructured::new(data);
    let Ok(reqs) = Vec::<(u32, ArbRequest)>::arbitrary(&mut u) else {
        return;
    };
    let mut wire = Vec::new();
    for (id, r) in &reqs {
        r.as_request().encode(*id, &mut wire);
    }
    let mut rest = &wire[..];
    for (id, r) in &reqs {
        let req = r.as_request();
        let decoded = decode_request(rest, &lim);
        // A token over the handshake limit is the one shape an encoder can build that the
        // decoder refuses.
        if let Request::Hello { token, .. } = req {
            if token.len() > protocol::MAX_TOKEN_LEN {
                assert!(matches!(decoded, Err(protocol::DecodeError::Malformed(_))));
                return;
            }
        }
        match decoded {
            Ok(Decoded::Frame((got_id, got), n)) => {
                assert_eq!((got_id, got), (*id, req));
                rest = &rest[n..];
            }
            other => panic!("{req:?} did not decode: {other:?}"),
        }
    }
    assert!(rest.is_empty());
}

/// Target 3: what a client does with a server's bytes (replies, pushes, key/item chunks, and
/// the connection file) never panics, whatever the bytes.
pub fn client_decode_bytes(data: &[u8]) {
    let _ = crate::election::ServerInfo::parse(data);
    let mut rest = data;
    while let Ok(Decoded::Frame(item, n)) = decode_incoming(rest, &FUZZ_LIMITS) {
        assert!(n <= rest.len());
        if let Incoming::Reply(_, r) = item {
            let answer = crate::client::answer_of(&r);
            if let protocol::Reply::Chunk { body, .. } = r {
                let total: usize = Chunk::new(body, true)
                    .map_while(Result::ok)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                assert!(total <= body.len());
                let _ = Chunk::new(body, false).count();
            }
            if let protocol::Reply::Values(v) = r {
                let total: usize = v.iter().map(|v| 4 + v.map_or(0, <[u8]>::len)).sum();
                assert_eq!(total, v.body().len());
                assert_eq!(v.iter().count(), v.len() as usize);
            }
            drop(answer);
        }
        rest = &rest[n..];
    }
}

/// One store operation for the model-based target.
#[derive(Arbitrary, Debug)]
#[allow(missing_docs)]
pub enum StoreOp {
    Set(u8, Vec<u8>),
    SetEdge(u8, u8),
    Get(u8),
    Remove(u8),
    Incr(u8, i64),
    IncrEdge(u8, u8),
    Clear,
    Scan(u8),
    /// Set with a TTL of 1 + n ms.
    SetTtl(u8, Vec<u8>, u8),
    /// Give a TTL of 1 + n ms.
    Expire(u8, u8),
    Persist(u8),
    Ttl(u8),
    /// The clock moves n ms; then up to 1 + m due keys are expired (m = 255: all).
    Advance(u8, u8),
    GetVersioned(u8),
    /// Set if the key holds its current version (even n) or a stale one (odd n).
    SetIfVersion(u8, Vec<u8>, u8),
    /// Add, with a TTL of 1 + n ms if given.
    Add(u8, Vec<u8>, Option<u8>),
    /// Replace, with a TTL of 1 + n ms if given (else the key keeps its TTL).
    Replace(u8, Vec<u8>, Option<u8>),
}

const EDGE_VALUES: [&[u8]; 8] = [
    b"9223372036854775807",
    b"-9223372036854775808",
    b"0",
    b"-0",
    b"+5",
    b"",
    b"12a",
    b" 1",
];
const EDGE_DELTAS: [i64; 5] = [i64::MAX, i64::MIN, -1, 1, 0];

fn key_of(k: u8) -> Vec<u8> {
    // A small key space, so operations meet; key 0 is the empty key.
    if k % 32 == 0 {
        Vec::new()
    } else {
        format!("key{}", k % 32).into_bytes()
    }
}

/// The model of a stored key: its value and deadline.
type ModelEntry = (Vec<u8>, Option<u64>);

/// What the store model knows: every key the store holds (due ones included until they are
/// expired or written), in insertion order, its version, the virtual clock, and the version
/// counter (one for all keys; a clear does not reset it).
struct Model {
    map: HashMap<Vec<u8>, ModelEntry>,
    order: Vec<Vec<u8>>,
    versions: HashMap<Vec<u8>, u64>,
    next_version: u64,
    now: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            map: HashMap::new(),
            order: Vec::new(),
            versions: HashMap::new(),
            next_version: 1,
            now: 0,
        }
    }
}

impl Model {
    /// The value of a key a read sees: none once its deadline has come.
    fn live(&self, k: &[u8]) -> Option<&ModelEntry> {
        self.map
            .get(k)
            .filter(|(_, d)| d.is_none_or(|d| d > self.now))
    }

    fn remove(&mut self, k: &[u8]) -> bool {
        let had = self.map.remove(k).is_some();
        if had {
            self.order.retain(|x| x != k);
            self.versions.remove(k);
        }
        had
    }

    /// A write: a due key is replaced by a new one (new place, no TTL kept).
    fn write(&mut self, k: Vec<u8>, v: Vec<u8>, deadline: Option<Option<u64>>) {
        if self.map.contains_key(&k) && self.live(&k).is_none() {
            self.remove(&k);
        }
        let keep = self.map.get(&k).and_then(|(_, d)| *d);
        let d = deadline.unwrap_or(keep);
        self.versions.insert(k.clone(), self.next_version);
        self.next_version += 1;
        if self.map.insert(k.clone(), (v, d)).is_none() {
            self.order.push(k);
        }
    }
}

/// Target 4: arbitrary operation sequences applied to the sharded store and to a `HashMap`
/// model with a virtual clock (plus an insertion-order list) agree after every step: values,
/// TTLs, expiry at the right millisecond and never before, and `scan` in chunks.
///
/// The first byte chooses a memory budget: none for a quarter of the inputs, else 12 to 27
/// KiB (a few dozen small keys with the store's fixed costs), so that writes evict. Then,
/// after every write, the store is within its budget or has nothing left to evict but the
/// segments being filled, and every key the store dropped was reported (evicted, or expired
/// when due) and is dropped from the model: no key is lost that the policy did not choose.
pub fn store_model_bytes(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let Ok(ops) = Vec::<StoreOp>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let budget = if first % 4 == 0 {
        0
    } else {
        (12 + u64::from(first >> 4)) << 10
    };
    // Small segments, so that they fill, get sealed and are reclaimed within a few operations.
    let mut store = Store::with_budget(
        ahash::RandomState::with_seeds(1, 2, 3, 4),
        256,
        budget,
        Policy::S3Fifo,
    );
    let mut m = Model::default();
    // Entries taken by `Get`, as a reply waiting in an output queue holds them: they must
    // read the same whatever the store does after.
    let mut held: Vec<(Entry, Vec<u8>, Vec<u8>)> = Vec::new();
    for op in ops {
        let written = match &op {
            StoreOp::Set(k, _)
            | StoreOp::SetEdge(k, _)
            | StoreOp::Incr(k, _)
            | StoreOp::IncrEdge(k, _)
            | StoreOp::SetTtl(k, _, _)
            | StoreOp::Expire(k, _)
            | StoreOp::Persist(k) => Some(key_of(*k)),
            _ => None,
        };
        let before = store.memory_bytes();
        match op {
            StoreOp::Set(k, v) => model_set(&mut store, &mut m, key_of(k), v),
            StoreOp::SetEdge(k, e) => {
                let v = EDGE_VALUES[e as usize % EDGE_VALUES.len()].to_vec();
                model_set(&mut store, &mut m, key_of(k), v)
            }
            StoreOp::Get(k) => {
                let k = key_of(k);
                let h = store.hash(&k);
                // A server asks for the records of a batch before looking them up, and looks
                // them up from the hints it got; another key's hint must find the same.
                let mut hints = [0; 2];
                store.prefetch(&[h, h.rotate_left(17)], &mut hints);
                let got = store.get_hinted(h, &k, hints[k.len() % 2]);
                let want = m.live(&k).map(|(v, _)| v.clone());
                assert_eq!(got.as_ref().map(|e| e.value()), want.as_deref());
                if let (Some(e), Some(v)) = (got, want) {
                    let e = e.to_entry();
                    if held.len() == 8 {
                        held.remove(0);
                    }
                    held.push((e, k.clone(), v));
                }
            }
            StoreOp::Remove(k) => {
                let k = key_of(k);
                let h = store.hash(&k);
                assert_eq!(store.remove(h, &k), m.remove(&k));
            }
            StoreOp::Incr(k, d) => model_incr(&mut store, &mut m, key_of(k), d),
            StoreOp::IncrEdge(k, e) => {
                let d = EDGE_DELTAS[e as usize % EDGE_DELTAS.len()];
                model_incr(&mut store, &mut m, key_of(k), d)
            }
            StoreOp::Clear => {
                store.clear();
                m.map.clear();
                m.order.clear();
                m.versions.clear();
            }
            StoreOp::GetVersioned(k) => {
                let k = key_of(k);
                let h = store.hash(&k);
                let got = store.get(h, &k).map(|r| (r.value().to_vec(), r.version()));
                let want = m.live(&k).map(|(v, _)| (v.clone(), m.versions[&k]));
                assert_eq!(got, want);
            }
            StoreOp::SetIfVersion(k, v, n) => {
                let k = key_of(k);
                let h = store.hash(&k);
                let current = m.live(&k).map(|_| m.versions[&k]);
                let asked = match current {
                    Some(c) if n % 2 == 0 => c,
                    Some(c) => c.wrapping_sub(1 + n as u64 / 2),
                    None => m.next_version.wrapping_sub(1 + n as u64 / 2),
                };
                let got = store.set_if_version(h, &k, &v, asked).map(|r| r.version());
                if current == Some(asked) {
                    m.write(k.clone(), v, None);
                    assert_eq!(got, Some(m.versions[&k]));
                } else {
                    assert_eq!(got, None);
                    if m.map.contains_key(&k) && current.is_none() {
                        m.remove(&k); // due: the store expired it on the way
                    }
                }
            }
            StoreOp::Add(k, v, ttl) => {
                let k = key_of(k);
                let h = store.hash(&k);
                let d = ttl.map(|t| m.now + 1 + t as u64);
                let got = store.add(h, &k, &v, d).map(|r| r.version());
                if m.live(&k).is_none() {
                    m.write(k.clone(), v, Some(d));
                    assert_eq!(got, Some(m.versions[&k]));
                } else {
                    assert_eq!(got, None);
                }
            }
            StoreOp::Replace(k, v, ttl) => {
                let k = key_of(k);
                let h = store.hash(&k);
                let d = ttl.map(|t| m.now + 1 + t as u64);
                let got = store.replace(h, &k, &v, d).map(|r| r.version());
                if m.live(&k).is_some() {
                    m.write(k.clone(), v, d.map(Some));
                    assert_eq!(got, Some(m.versions[&k]));
                } else {
                    assert_eq!(got, None);
                    if m.map.contains_key(&k) {
                        m.remove(&k); // due: the store expired it on the way
                    }
                }
            }
            StoreOp::Scan(batch) => {
                let (until, mut cursor, mut got) = (store.next_seq(), 0, Vec::new());
                loop {
                    let mut out = Vec::new();
                    cursor = store.scan(cursor, until, true, 1 + batch as usize % 7, 64, &mut out);
                    for item in Chunk::new(&out, true) {
                        let (k, v) = item.expect("the store writes whole chunks");
                        got.push((k.to_vec(), v.to_vec()));
                    }
                    if cursor == 0 {
                        break;
                    }
                }
                let want: Vec<_> = m
                    .order
                    .iter()
                    .filter_map(|k| m.live(k).map(|(v, _)| (k.clone(), v.clone())))
                    .collect();
                assert_eq!(got, want);
            }
            StoreOp::SetTtl(k, v, ttl) => {
                let (k, d) = (key_of(k), m.now + 1 + ttl as u64);
                let h = store.hash(&k);
                store.set_with_deadline(h, &k, &v, d);
                m.write(k, v, Some(Some(d)));
            }
            StoreOp::Expire(k, ttl) => {
                let (k, d) = (key_of(k), m.now + 1 + ttl as u64);
                let h = store.hash(&k);
                let want = m.live(&k).is_some();
                assert_eq!(store.set_deadline(h, &k, Some(d)), want);
                if want {
                    m.map.get_mut(&k).expect("live").1 = Some(d);
                }
            }
            StoreOp::Persist(k) => {
                let k = key_of(k);
                let h = store.hash(&k);
                let want = m.live(&k).is_some_and(|(_, d)| d.is_some());
                assert_eq!(store.set_deadline(h, &k, None), want);
                if want {
                    m.map.get_mut(&k).expect("live").1 = None;
                }
            }
            StoreOp::Ttl(k) => {
                let k = key_of(k);
                let h = store.hash(&k);
                assert_eq!(store.deadline(h, &k), m.live(&k).map(|(_, d)| *d));
                // Stored with a deadline passed, not expired yet: what a server expires (and
                // tells) before it writes the key.
                let due = m
                    .map
                    .get(&k)
                    .is_some_and(|(_, d)| d.is_some_and(|d| d <= m.now));
                assert_eq!(store.is_due(h, &k), due, "is_due of {k:?} at {}", m.now);
            }
            StoreOp::Advance(ms, limit) => {
                m.now += ms as u64;
                store.set_time(m.now);
                // 0: the clock moves and nothing is expired yet, as between a server's turns
                // (a write then finds a due key itself, `Store::is_due`).
                if limit > 0 {
                    let limit = if limit == 255 {
                        usize::MAX
                    } else {
                        limit as usize
                    };
                    let mut expired = Vec::new();
                    let more = store.expire_due(limit, |e| expired.push(e.key().to_vec()));
                    assert!(expired.len() <= limit);
                    for k in &expired {
                        let d = m.map.get(k).and_then(|(_, d)| *d);
                        assert!(d.is_some_and(|d| d <= m.now), "expired early: {k:?}");
                        m.remove(k);
                    }
                    let due = m.map.values().any(|(_, d)| d.is_some_and(|d| d <= m.now));
                    assert!(more || !due, "no more due keys, yet the model has some");
                }
                if let Some(next) = store.next_expiry() {
                    // Never later than the first deadline left.
                    let first = m.map.values().filter_map(|(_, d)| *d).min();
                    assert!(
                        first.is_none_or(|f| next <= f.max(m.now)),
                        "{next} {first:?}"
                    );
                } else {
                    assert!(m.map.values().all(|(_, d)| d.is_none()));
                }
            }
        }
        for gone in store.drain_gone() {
            let (e, expired) = match &gone {
                Gone::Evicted(e) => (e, false),
                Gone::Expired(e) => (e, true),
            };
            let d = m.map.get(e.key()).map(|(_, d)| *d);
            let d = d.unwrap_or_else(|| panic!("dropped a key the model lacks: {e:?}"));
            if expired {
                assert!(d.is_some_and(|d| d <= m.now), "expired early: {e:?}");
            } else {
                assert!(
                    m.live(e.key()).is_some(),
                    "evicted a due key as live: {e:?}"
                );
                assert!(budget > 0, "evicted without a budget");
            }
            m.remove(e.key());
        }
        // An operation that grew the store (not one that failed, or a clock that moved).
        if written.is_some() && budget > 0 && store.memory_bytes() > before {
            assert!(
                store.memory_bytes() <= budget || !store.has_victim(written.as_deref()),
                "{} bytes held for a budget of {budget}, with segments left to evict",
                store.memory_bytes()
            );
        }
        assert_eq!(store.len(), m.map.len());
        assert_eq!(store.next_version(), m.next_version);
        for (k, v) in &m.versions {
            if m.live(k).is_some() {
                let got = store.get(store.hash(k), k).map(|r| r.version());
                assert_eq!(got, Some(*v), "version of {k:?}");
            }
        }
        assert_eq!(
            store.ttl_keys(),
            m.map.values().filter(|(_, d)| d.is_some()).count()
        );
        let live: usize = m
            .map
            .iter()
            .map(|(k, (v, d))| Store::record_len(k, v, d.is_some()))
            .sum();
        assert_eq!(store.live_bytes(), live);
        assert!(store.footprint_is_bounded());
        assert!(store.index_is_exact());
        for (e, k, v) in &held {
            assert_eq!((e.key(), e.value()), (&k[..], &v[..]));
        }
    }
}

fn model_set(store: &mut Store, m: &mut Model, k: Vec<u8>, v: Vec<u8>) {
    let h = store.hash(&k);
    store.set(h, &k, &v);
    m.write(k, v, None);
}

fn model_incr(store: &mut Store, m: &mut Model, k: Vec<u8>, d: i64) {
    let h = store.hash(&k);
    let got = store.incr(h, &k, d).map(|(n, _)| n);
    let want = match m.live(&k) {
        None => Ok(0i64),
        Some((v, _)) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(IncrError::NotAnInteger),
    }
    .and_then(|cur| cur.checked_add(d).ok_or(IncrError::Overflow));
    assert_eq!(got, want);
    if let Ok(n) = want {
        m.write(k, n.to_string().into_bytes(), None);
    }
}

/// How the peer of [`run_engine`] behaves.
struct PeerPlan<'a> {
    /// The server's send buffer, in bytes.
    capacity: usize,
    /// The connection's output marks (high, low).
    marks: (usize, usize),
    /// After piece i, the peer reads `reads[i] * 16` bytes (0: it reads nothing for now);
    /// missing entries read everything.
    reads: &'a [u16],
}

/// Feeds `pieces` to a fresh engine through an edge-triggered mock socket
/// ([`crate::server::mock`]), one arrival per piece, the peer reading as `plan` says; then the
/// peer reads until nothing more comes, with only the edges a poller would report (no new
/// request nudges the server). Returns every byte the engine wrote to the connection.
fn run_engine(pieces: &[&[u8]], plan: &PeerPlan<'_>) -> Vec<u8> {
    let now = Instant::now();
    let token = b"fuzz-token".to_vec();
    let mut config = EngineConfig::new(true, Duration::from_secs(1), FUZZ_LIMITS, token.clone());
    (config.high_water, config.low_water) = plan.marks;
    let mut engine = Engine::new(
        config,
        Store::new(ahash::RandomState::with_seeds(1, 2, 3, 4)),
        now,
    );
    let (socket, peer) = mock::pair(plan.capacity);
    let slot = engine.accept(socket, now);
    let mut hello = Vec::new();
    Request::Hello {
        version: protocol::VERSION,
        token: &token,
    }
    .encode(0, &mut hello);
    peer.send(&hello);
    peer.pump(&mut engine, slot, now);
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if !piece.is_empty() {
            peer.send(piece);
        }
        peer.pump(&mut engine, slot, now);
        let read = plan.reads.get(i).map_or(usize::MAX, |&r| r as usize * 16);
        out.extend(peer.read(read));
        peer.pump(&mut engine, slot, now);
    }
    loop {
        let got = peer.read(usize::MAX);
        if got.is_empty() {
            break;
        }
        out.extend(got);
        peer.pump(&mut engine, slot, now);
    }
    out
}

/// Target 5: the server's connection handling fed one byte stream cut at arbitrary points
/// (partial frames, many frames per read), through a socket with a small send buffer whose
/// peer stops reading for a while (so the connection's output passes its high-water mark and
/// reading pauses), with edge-triggered readiness, produces exactly the bytes it produces
/// when fed the stream in one piece and read at once: every request eventually gets its
/// reply, in order, and nothing depends on how the input was cut.
pub fn engine_split_bytes(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cuts) = Vec::<u16>::arbitrary(&mut u) else {
        return;
    };
    let Ok(reads) = Vec::<u16>::arbitrary(&mut u) else {
        return;
    };
    let Ok((capacity, high)) = <(u8, u8)>::arbitrary(&mut u) else {
        return;
    };
    let Ok(reqs) = Vec::<(u32, ArbRequest)>::arbitrary(&mut u) else {
        return;
    };
    let Ok(tail) = Vec::<u8>::arbitrary_take_rest(u) else {
        return;
    };
    let mut stream = Vec::new();
    for (id, r) in &reqs {
        // Shutdown ends the run early in both cases alike, but skip it to reach further.
        if !matches!(r, ArbRequest::Shutdown) {
            r.as_request().encode(*id, &mut stream);
        }
    }
    stream.extend_from_slice(&tail);
    let whole = run_engine(
        &[&stream],
        &PeerPlan {
            capacity: usize::MAX,
            marks: (usize::MAX, 1),
            reads: &[],
        },
    );
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for p in points {
        pieces.push(&stream[at..p]);
        at = p;
    }
    pieces.push(&stream[at..]);
    let high = 1 + high as usize * 32;
    let split = run_engine(
        &pieces,
        &PeerPlan {
            capacity: 1 + capacity as usize * 16,
            marks: (high, high / 4 + 1),
            reads: &reads,
        },
    );
    assert_eq!(normalize(&whole), normalize(&split));
}

/// The frames of an engine's output, with `stats` bodies blanked: those count bytes read and
/// written, which legitimately depend on how the input was cut.
fn normalize(out: &[u8]) -> Vec<String> {
    let mut frames = Vec::new();
    let mut rest = out;
    while let Ok(Decoded::Frame(f, n)) = decode_incoming(rest, &Limits::unlimited()) {
        frames.push(match f {
            Incoming::Reply(id, protocol::Reply::Text(_)) => format!("{id}: stats"),
            other => format!("{other:?}"),
        });
        rest = &rest[n..];
    }
    frames.push(format!("undecoded tail {rest:?}"));
    frames
}
