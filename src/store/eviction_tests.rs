//! The budget and the eviction policy: unit tests, and the simulation the policy was chosen
//! by (`cargo test --release --lib policy_simulation -- --ignored --nocapture`).

use std::collections::{BTreeMap, HashMap};

use super::*;

fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(1, 2, 3, 4)
}

fn budget_store(max_memory: u64, policy: Policy) -> Store {
    Store::with_budget(hasher(), Store::segment_for(max_memory), max_memory, policy)
}

/// The slack [`Store::with_budget`] states: one shard's slot vector and index growing (at
/// most doubling), one segment and one record.
fn slack(s: &Store, record: usize) -> u64 {
    let meta = s
        .shards
        .iter()
        .map(|sh| sh.slots.capacity() * std::mem::size_of::<Slot>() + sh.index.allocation_size())
        .max()
        .unwrap_or(0);
    (meta + s.shards[0].segment + record) as u64
}

fn drain(s: &mut Store) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut ev, mut ex) = (Vec::new(), Vec::new());
    for g in s.drain_gone() {
        match g {
            Gone::Evicted(e) => ev.push(e.key().to_vec()),
            Gone::Expired(e) => ex.push(e.key().to_vec()),
        }
    }
    (ev, ex)
}

/// Every new key evicting one (the budgeted SET cell of `benches/evicting.sh`, scaled down):
/// once the shards have grown to what churn needs, their slot vectors and indexes keep their
/// allocations (a budgeted server maps each block of 8 KiB and up on its own, so a
/// reallocation is a system call and page faults), and every key not reported evicted is
/// found (the indexes are rebuilt from the hash bits the slots keep).
#[test]
fn churn_keeps_slot_vectors_and_indexes_where_they_are() {
    let mut s = budget_store(4 << 20, Policy::S3Fifo);
    let mut held: HashMap<Vec<u8>, u64> = HashMap::new();
    let allocations = |s: &Store| -> Vec<(*const Slot, usize, usize)> {
        s.shards
            .iter()
            .map(|sh| {
                (
                    sh.slots.as_ptr(),
                    sh.slots.capacity(),
                    sh.index.allocation_size(),
                )
            })
            .collect()
    };
    let mut i = 0u64;
    let mut churn = |s: &mut Store, n: u64| {
        for _ in 0..n {
            let k = format!(
                "key:{:012}",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000
            );
            let h = s.hash(k.as_bytes());
            s.set(h, k.as_bytes(), &i.to_le_bytes());
            held.insert(k.into_bytes(), i);
            for key in drain(s).0 {
                held.remove(&key);
            }
            i += 1;
        }
    };
    churn(&mut s, 400_000);
    assert!(s.evicted() > 300_000, "the store evicts as keys come");
    let before = allocations(&s);
    churn(&mut s, 200_000);
    let after = allocations(&s);
    // A shard's key count drifts, so a few shards still reallocate now and then (4 here);
    // without compacting before a slot vector grows, 33 of the 64 did (a vector doubled, then
    // halved at the next compaction), and with each index rebuilt at the least size, shards
    // whose key count drifts around a table size halved their index and doubled it again.
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(
        moved <= SHARDS / 8,
        "{moved} of {SHARDS} shards reallocated"
    );
    for sh in s.shards.iter() {
        assert!(
            sh.slots.capacity() <= 3 * sh.live() + 64,
            "slot vector of {} for {} keys",
            sh.slots.capacity(),
            sh.live()
        );
    }
    assert_eq!(held.len(), s.len());
    for (k, v) in &held {
        let h = s.hash(k);
        let got = s.get(h, k).map(|e| e.value().to_vec());
        assert_eq!(
            got,
            Some(v.to_le_bytes().to_vec()),
            "a key not evicted is held"
        );
    }
}

#[test]
fn churn_stays_within_budget_and_reports_every_key_it_drops() {
    for policy in [Policy::S3Fifo, Policy::Clock] {
        churn(policy);
    }
}

fn churn(policy: Policy) {
    let budget = 1 << 20;
    let mut s = budget_store(budget, policy);
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut evicted = 0u64;
    for i in 0..40_000u32 {
        let k = format!("key{:08}", (i.wrapping_mul(2_654_435_761)) % 30_000).into_bytes();
        let v = vec![b'a' + (i % 26) as u8; 40 + (i as usize * 37) % 400];
        let h = s.hash(&k);
        if i % 3 == 0 {
            let _ = s.get(h, &k);
        }
        s.set(h, &k, &v);
        model.insert(k.clone(), v.clone());
        let (ev, ex) = drain(&mut s);
        assert!(ex.is_empty());
        evicted += ev.len() as u64;
        for k in ev {
            assert!(
                model.remove(&k).is_some(),
                "evicted a key twice or one never set"
            );
        }
        assert!(
            s.memory_bytes() <= budget + slack(&s, v.len() + 20),
            "{} held for a budget of {budget}",
            s.memory_bytes()
        );
    }
    assert!(evicted > 10_000, "a budget of 1 MiB must evict: {evicted}");
    assert_eq!(s.evicted(), evicted);
    assert_eq!(s.len(), model.len());
    for (k, v) in &model {
        let h = s.hash(k);
        assert_eq!(s.get(h, k).map(|r| r.value().to_vec()).as_ref(), Some(v));
    }
    assert_eq!(s.live_bytes(), super::tests::expected_live(&s));
    // Hits moved records to the main queue and on in it: each index entry was told.
    assert!(s.index_is_exact());
    // The counted bytes agree with a walk of everything.
    assert_eq!(
        s.bytes,
        s.shards.iter().map(|sh| sh.bytes()).sum::<usize>(),
        "incremental count drifted"
    );
    assert_eq!(
        (s.seg_bytes, s.small_bytes),
        s.shards
            .iter()
            .fold((0, 0), |(a, b), sh| (a + sh.seg_bytes, b + sh.small_bytes)),
        "store-wide queue counts drifted"
    );
}

#[test]
fn with_nobody_listening_evictions_are_counted_not_listed() {
    let budget = 1 << 20;
    let mut s = budget_store(budget, Policy::S3Fifo);
    s.tell_evictions(false);
    for i in 0..20_000u32 {
        let k = format!("key{i:08}").into_bytes();
        let h = s.hash(&k);
        s.set(h, &k, &[7; 100]);
    }
    assert!(s.evicted() > 0);
    assert!(s.has_gone(), "uncounted evictions wait to be taken");
    assert_eq!(s.drain_gone().count(), 0, "nothing listed");
    assert_eq!(s.take_untold(), s.evicted());
    assert!(!s.has_gone());
    assert_eq!(s.len() as u64 + s.evicted(), 20_000);
    // Listed again once turned back on.
    s.tell_evictions(true);
    for i in 20_000..25_000u32 {
        let k = format!("key{i:08}").into_bytes();
        let h = s.hash(&k);
        s.set(h, &k, &[7; 100]);
    }
    let (ev, _) = drain(&mut s);
    assert!(!ev.is_empty());
    assert_eq!(s.take_untold(), 0);
}

#[test]
fn budgeted_segments_fill_whole_pages_with_the_allocators_header() {
    assert_eq!(Store::segment_for(0), SEGMENT);
    assert_eq!(Store::segment_for(64 << 20), (16 << 10) - BLOCK_HEADER);
    assert_eq!(Store::segment_for(32 << 20), (8 << 10) - BLOCK_HEADER);
    assert_eq!(Store::segment_for(1 << 20), 1024 - BLOCK_HEADER);
    assert_eq!(Store::segment_for(1 << 40), SEGMENT - BLOCK_HEADER);
}

#[test]
fn due_keys_go_before_any_key_is_evicted() {
    let budget = 256 << 10;
    let mut s = budget_store(budget, Policy::S3Fifo);
    for i in 0..200u32 {
        let k = format!("ttl{i}");
        let h = s.hash(k.as_bytes());
        s.set_with_deadline(h, k.as_bytes(), &[1; 100], 10);
    }
    s.set_time(20);
    let mut first_evicted = None;
    let mut expired = 0;
    for i in 0..20_000u32 {
        let k = format!("k{i}");
        let h = s.hash(k.as_bytes());
        s.set(h, k.as_bytes(), &[2; 100]);
        let (ev, ex) = drain(&mut s);
        expired += ex.len();
        if first_evicted.is_none() && !ev.is_empty() {
            first_evicted = Some(expired);
        }
    }
    assert_eq!(
        first_evicted,
        Some(200),
        "all 200 due keys expire before an eviction"
    );
    assert_eq!(s.ttl_keys(), 0);
}

#[test]
fn hit_keys_survive_a_scan_that_unhit_ones_do_not() {
    let budget = 2 << 20;
    let mut s = budget_store(budget, Policy::S3Fifo);
    let key = |p: &str, i: u32| format!("{p}{i:08}").into_bytes();
    for i in 0..2_000u32 {
        let k = key("hot", i);
        let h = s.hash(&k);
        s.set(h, &k, &[1; 200]);
    }
    for round in 0..3 {
        for i in 0..2_000u32 {
            let k = key("hot", i);
            let h = s.hash(&k);
            assert!(s.get(h, &k).is_some() || round > 0);
        }
        // Some cold keys between rounds.
        for i in 0..3_000u32 {
            let k = key(&format!("cold{round}-"), i);
            let h = s.hash(&k);
            s.set(h, &k, &[2; 200]);
        }
    }
    // A scan over twice the budget of new keys, never read.
    for i in 0..(2 * budget as u32 / 230) {
        let k = key("scan", i);
        let h = s.hash(&k);
        s.set(h, &k, &[3; 200]);
    }
    drain(&mut s);
    let kept = (0..2_000u32)
        .filter(|&i| {
            let k = key("hot", i);
            s.get(s.hash(&k), &k).is_some()
        })
        .count();
    assert!(
        kept >= 1_900,
        "only {kept} of 2000 hot keys survived the scan"
    );
    assert!(s.index_is_exact());
}

#[test]
fn keys_stored_while_everything_fit_survive_a_scan_unread() {
    // Keys that came before the budget ever ran out are in the main queue: a scan's new keys
    // go to the small queue and leave from there, even though the old keys were never read
    // (in the small queue, unread, the scan would push them all out: none would be left).
    // When the budget first runs out the small queue is empty, so the main queue gives,
    // oldest first, until the small one holds its share (a tenth of the segment bytes, here
    // a sixth of the old keys), and a little more while the small queue hovers at its share:
    // 72 % are left. The same after a CLEAR.
    let budget = 8 << 20;
    let mut s = budget_store(budget, Policy::S3Fifo);
    let key = |p: &str, i: u32| format!("{p}{i:08}").into_bytes();
    let old = budget as u32 / 2 / 230; // about half the budget
    for pass in 0..2 {
        for i in 0..old {
            let k = key("old", i);
            let h = s.hash(&k);
            s.set(h, &k, &[1; 200]);
        }
        assert_eq!(s.evicted(), 0, "pass {pass}: everything fits so far");
        for i in 0..(2 * budget as u32 / 230) {
            let k = key(&format!("scan{pass}-"), i);
            let h = s.hash(&k);
            s.set(h, &k, &[3; 200]);
        }
        assert!(
            s.evicted() > 0,
            "pass {pass}: the scan made the store evict"
        );
        drain(&mut s);
        let kept = (0..old)
            .filter(|&i| {
                let k = key("old", i);
                s.get(s.hash(&k), &k).is_some()
            })
            .count() as u32;
        assert!(
            kept * 10 >= old * 7,
            "pass {pass}: only {kept} of {old} old keys survived the scan"
        );
        s.clear();
        s.evicted = 0;
    }
}

#[test]
fn budget_zero_never_evicts_and_clear_recounts() {
    let mut s = Store::new(hasher());
    for i in 0..5_000u32 {
        let k = i.to_le_bytes();
        let h = s.hash(&k);
        s.set(h, &k, &[0; 300]);
    }
    assert!(!s.has_gone());
    assert_eq!((s.len(), s.evicted()), (5_000, 0));
    let before = s.memory_bytes();
    s.clear();
    assert!(s.memory_bytes() < before / 10);
    assert_eq!(s.bytes, s.shards.iter().map(|sh| sh.bytes()).sum::<usize>());
}

#[test]
fn a_record_over_half_the_budget_does_not_fit() {
    let s = budget_store(1 << 20, Policy::S3Fifo);
    assert!(s.fits(16, 400 << 10));
    assert!(!s.fits(16, 600 << 10));
    assert!(Store::new(hasher()).fits(16, 1 << 30));
}

// ---- The simulation ----

/// xorshift64*: repeatable and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks 0..n drawn with probability ∝ 1/(rank+1)^alpha.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, alpha: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for r in 1..=n {
            sum += 1.0 / (r as f64).powf(alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }
    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The cache under test: GET, then SET on a miss.
trait Cache {
    fn get_or_set(&mut self, key: &[u8], value_len: usize) -> bool;
    fn keys(&self) -> usize;
}

impl Cache for Store {
    fn get_or_set(&mut self, key: &[u8], value_len: usize) -> bool {
        let h = self.hash(key);
        if self.get(h, key).is_some() {
            return true;
        }
        self.set(h, key, &VALUE[..value_len]);
        self.gone.clear();
        false
    }
    fn keys(&self) -> usize {
        self.len()
    }
}

/// Exact LRU, counting each key as its record plus 48 bytes (a slot, an index entry and list
/// links): the reference.
struct Lru {
    budget: usize,
    used: usize,
    tick: u64,
    at: HashMap<Vec<u8>, (u64, usize)>,
    order: BTreeMap<u64, Vec<u8>>,
}

impl Cache for Lru {
    fn get_or_set(&mut self, key: &[u8], value_len: usize) -> bool {
        self.tick += 1;
        if let Some((t, _)) = self.at.get_mut(key) {
            let k = self.order.remove(t).expect("in order");
            *t = self.tick;
            self.order.insert(self.tick, k);
            return true;
        }
        let cost = key.len() + value_len + 2 + 48;
        self.used += cost;
        self.at.insert(key.to_vec(), (self.tick, cost));
        self.order.insert(self.tick, key.to_vec());
        while self.used > self.budget {
            let (_, k) = self.order.pop_first().expect("not empty");
            self.used -= self.at.remove(&k).expect("in map").1;
        }
        false
    }
    fn keys(&self) -> usize {
        self.at.len()
    }
}

static VALUE: [u8; 512] = [b'v'; 512];

/// Hit ratio of the Zipf requests (the scan's own misses not counted).
fn run(cache: &mut dyn Cache, alpha: f64, scan: bool, zipf: &Zipf, budget: usize) -> f64 {
    const N: usize = 1 << 20;
    const REQUESTS: usize = 3_000_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut hits, mut total) = (0u64, 0u64);
    let value_len = |id: u64| 64 + (id.wrapping_mul(0x9e37_79b9) >> 7) as usize % 449;
    let _ = alpha;
    for r in 0..REQUESTS {
        if scan && r == REQUESTS / 2 {
            // One pass over twice the budget of new keys (average record ~306 bytes).
            for id in 0..(2 * budget / 306) as u64 {
                let k = format!("scan{id:012}");
                cache.get_or_set(k.as_bytes(), value_len(id));
            }
        }
        let rank = zipf.draw(&mut rng) as u64;
        let id = rank.wrapping_mul(0x5851_f42d_4c95_7f2d) & (N as u64 - 1);
        let k = format!("{id:016x}");
        total += 1;
        if r >= REQUESTS / 10 {
            hits += u64::from(cache.get_or_set(k.as_bytes(), value_len(id)));
        } else {
            cache.get_or_set(k.as_bytes(), value_len(id)); // warm-up
            total -= 1;
        }
    }
    hits as f64 / total as f64
}

#[test]
#[ignore = "a simulation that prints hit ratios: run it in release with --nocapture"]
fn policy_simulation() {
    let budget: usize = 16 << 20;
    println!("budget {budget} B, 2^20 keys of 16 B, values 64..512 B, 3M requests (10 % warm-up)");
    println!("alpha scan | S3-FIFO (keys) | CLOCK (keys) | LRU+48B (keys)");
    for alpha in [0.8, 1.0, 1.2] {
        let zipf = Zipf::new(1 << 20, alpha);
        for scan in [false, true] {
            let mut s3 = budget_store(budget as u64, Policy::S3Fifo);
            let mut clock = budget_store(budget as u64, Policy::Clock);
            let mut lru = Lru {
                budget,
                used: 0,
                tick: 0,
                at: HashMap::new(),
                order: BTreeMap::new(),
            };
            let a = run(&mut s3, alpha, scan, &zipf, budget);
            let b = run(&mut clock, alpha, scan, &zipf, budget);
            let c = run(&mut lru, alpha, scan, &zipf, budget);
            assert!(s3.memory_bytes() <= budget as u64 + slack(&s3, 600));
            println!(
                "{alpha:.1} {scan:5} | {:.4} ({}) | {:.4} ({}) | {:.4} ({})",
                a,
                s3.keys(),
                b,
                clock.keys(),
                c,
                lru.keys()
            );
        }
    }
}
