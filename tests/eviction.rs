//! The memory budget with real server processes and sockets: `Evicted` events (per key and
//! every key) and the waits they end, the over-budget error that evicts nothing, a hot set
//! that survives a scan, the stats counters and the connection file.

mod util;

use std::time::{Duration, Instant};

use upcache::{Error, EventKind, ServerInfo, TransportKind as Transport, UpCache};
use util::Sandbox;

each_transport!(
    evictions_reach_key_and_every_key_subscribers_and_end_waits,
    a_value_over_half_the_budget_fails_and_evicts_nothing,
    a_hot_set_survives_a_scan_of_twice_the_budget,
    stats_and_the_connection_file_carry_the_budget,
);

const MIB: u64 = 1 << 20;

fn open(sb: &Sandbox, tag: &str, budget: u64) -> UpCache {
    sb.builder(&sb.name(tag))
        .max_memory(budget)
        .open()
        .expect("open")
}

/// Stores `n` keys `{prefix}{i}` with `len`-byte values in one pipeline.
fn fill(c: &UpCache, prefix: &str, n: usize, len: usize) {
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(format!("{prefix}{i:08}"), vec![b'v'; len]);
    }
    p.execute().unwrap();
}

fn evictions_reach_key_and_every_key_subscribers_and_end_waits(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("evev");
    let c = sb.builder(&name).max_memory(MIB).open().unwrap();
    c.set(b"first", b"never read").unwrap();
    c.set(b"waited", b"never read either").unwrap();
    let one = c.subscribe(b"first").unwrap();
    let all = c.subscribe_all().unwrap();
    let joiner = sb.builder(&name).join_only(true);
    let waiter = std::thread::spawn(move || {
        let w = joiner.open().unwrap();
        w.wait_for(b"waited", None, Some(Duration::from_secs(60)))
            .unwrap()
    });
    // Let the wait register before the fill: it is ended by the eviction, not missed.
    assert!(util::eventually(Duration::from_secs(20), || {
        c.stats().unwrap().waits == 1
    }));
    fill(&c, "fill", 20_000, 100);
    let stats = c.stats().unwrap();
    assert!(stats.evicted > 1_000, "{stats:?}");
    assert_eq!(stats.keys + stats.evicted, 20_002);
    assert!(
        waiter.join().unwrap(),
        "the eviction of the key ended its wait"
    );
    let e = one.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(
        (e.kind, e.key.as_slice()),
        (EventKind::Evicted, &b"first"[..])
    );
    assert_eq!(c.get(b"first").unwrap(), None);
    // Every key: one Set per write and one Evicted per eviction (or a Lagged count).
    let (mut sets, mut evicted, mut lagged) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sets + evicted + lagged < 20_000 + stats.evicted && Instant::now() < deadline {
        if let Some(e) = all.recv_timeout(Duration::from_millis(200)).unwrap() {
            match e.kind {
                EventKind::Set => sets += 1,
                EventKind::Evicted => evicted += 1,
                EventKind::Lagged(n) => lagged += n,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(sets + evicted + lagged, 20_000 + stats.evicted);
    assert!(evicted > 0);
    if lagged == 0 {
        assert_eq!(evicted, stats.evicted);
    }
}

fn a_value_over_half_the_budget_fails_and_evicts_nothing(t: Transport) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "evbig", 2 * MIB);
    fill(&c, "k", 1_000, 100);
    let before = c.stats().unwrap();
    let big = vec![7u8; MIB as usize + 1];
    match c.set(b"big", &big) {
        Err(Error::OverBudget { max_memory }) => assert_eq!(max_memory, 2 * MIB),
        other => panic!("{other:?}"),
    }
    match c.set_with_ttl(b"big", &big, Duration::from_secs(60)) {
        Err(Error::OverBudget { .. }) => {}
        other => panic!("{other:?}"),
    }
    // Every other write of a value is held to the same bound: the conditional writes, and a
    // SET_MANY whole (its small pair is not stored either).
    match c.add(b"big", &big) {
        Err(Error::OverBudget { .. }) => {}
        other => panic!("add: {other:?}"),
    }
    c.set(b"present", b"small").unwrap();
    match c.replace(b"present", &big) {
        Err(Error::OverBudget { .. }) => {}
        other => panic!("replace: {other:?}"),
    }
    let (_, version) = c.get_versioned(b"present").unwrap().unwrap();
    match c.set_if_version(b"present", &big, version) {
        Err(Error::OverBudget { .. }) => {}
        other => panic!("set_if_version: {other:?}"),
    }
    match c.set_many([(&b"small-pair"[..], &b"v"[..]), (&b"big"[..], &big[..])]) {
        Err(Error::OverBudget { .. }) => {}
        other => panic!("set_many: {other:?}"),
    }
    assert_eq!(c.get(b"small-pair").unwrap(), None);
    assert_eq!(c.get(b"present").unwrap().as_deref(), Some(&b"small"[..]));
    c.remove(b"present").unwrap();
    let after = c.stats().unwrap();
    assert_eq!((after.keys, after.evicted), (before.keys, 0));
    assert_eq!(c.get(b"big").unwrap(), None);
    // The connection goes on, and a value under half the budget is stored.
    c.set(b"big", &big[..MIB as usize / 2]).unwrap();
    assert_eq!(
        c.get(b"big").unwrap().map(|v| v.len()),
        Some(MIB as usize / 2)
    );
}

fn a_hot_set_survives_a_scan_of_twice_the_budget(t: Transport) {
    let sb = Sandbox::new(t);
    let budget = 4 * MIB;
    let c = open(&sb, "evscan", budget);
    fill(&c, "hot", 2_000, 200);
    for _ in 0..2 {
        let mut p = c.pipeline();
        for i in 0..2_000 {
            p.get(format!("hot{i:08}"));
        }
        p.execute().unwrap();
    }
    fill(&c, "scan", (2 * budget / 230) as usize, 200);
    let stats = c.stats().unwrap();
    assert!(stats.evicted > 10_000, "{stats:?}");
    let mut p = c.pipeline();
    for i in 0..2_000 {
        p.exists(format!("hot{i:08}"));
    }
    let kept = p
        .execute()
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r, upcache::PipelineReply::Bool(true)))
        .count();
    assert!(kept >= 1_900, "{kept} of 2000 hot keys kept");
}

fn stats_and_the_connection_file_carry_the_budget(t: Transport) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "evstats", 2 * MIB);
    let info = ServerInfo::read(c.connection_file()).unwrap();
    assert_eq!(info.max_memory, 2 * MIB);
    fill(&c, "s", 30_000, 150);
    c.set(b"hit", b"1").unwrap();
    assert!(c.get(b"hit").unwrap().is_some());
    assert!(c.get(b"nope").unwrap().is_none());
    let s = c.stats().unwrap();
    assert_eq!((s.gets, s.hits, s.misses), (2, 1, 1));
    assert_eq!(s.max_memory, 2 * MIB);
    assert!(s.evicted > 10_000, "{s:?}");
    assert_eq!(s.keys + s.evicted, 30_001);
    // Within the budget plus the stated slack (a shard's slot vector and index growing, a
    // segment and a record).
    assert!(s.memory_bytes <= 2 * MIB + 64 * 1024, "{s:?}");
    assert!(s.memory_bytes >= MIB, "the budget is used: {s:?}");
    // No budget: nothing is evicted, and the bytes are still counted.
    let free = sb.open(&sb.name("evnone"));
    fill(&free, "s", 30_000, 150);
    let s = free.stats().unwrap();
    assert_eq!((s.max_memory, s.evicted, s.keys), (0, 0, 30_000));
    assert!(s.memory_bytes > 30_000 * 150);
}
