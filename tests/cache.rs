//! Every operation's semantics, through a real server process and real sockets, over both
//! transports.

mod util;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use upcache::{Error, EventKind, PipelineReply, TransportKind, UpCache};
use util::Sandbox;

each_transport!(
    get_set_exists_remove,
    empty_keys_and_values,
    incr_decr_semantics,
    clear_and_count,
    keys_and_items_in_insertion_order,
    keys_and_items_in_many_chunks,
    keys_iter_fetches_one_chunk_at_a_time,
    items_iter_streams_values_current_at_their_chunk,
    limits_are_checked_before_sending,
    wait_for_change,
    wait_for_value,
    wait_for_timeouts,
    wait_for_64_concurrent_waiters,
    wait_does_not_block_other_threads,
    clear_ends_every_wait,
    subscription_sees_events_in_order,
    subscribe_all_and_deletes,
    slow_subscriber_lags_without_blocking_writers,
    dropping_a_subscription_unsubscribes,
    pipeline_matches_one_by_one,
    threads_share_one_handle,
    stats_report_counters,
);

fn get_set_exists_remove(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ops"));
    assert_eq!(c.get(b"k").unwrap(), None);
    assert!(!c.exists(b"k").unwrap());
    c.set(b"k", b"v1").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(c.exists(b"k").unwrap());
    c.set(b"k", b"v2").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(c.remove(b"k").unwrap());
    assert!(
        !c.remove(b"k").unwrap(),
        "remove is true only if the key existed"
    );
    assert_eq!(c.get(b"k").unwrap(), None);
    // Binary keys and values.
    let key: Vec<u8> = (0..=255).collect();
    c.set(&key, &key[..100]).unwrap();
    assert_eq!(c.get(&key).unwrap().unwrap(), &key[..100]);
}

fn empty_keys_and_values(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("empty"));
    c.set(b"", b"").unwrap();
    assert_eq!(
        c.get(b"").unwrap(),
        Some(Vec::new()),
        "an empty value is not a missing one"
    );
    assert!(c.exists(b"").unwrap());
    c.set(b"e", b"").unwrap();
    assert_eq!(c.get(b"e").unwrap(), Some(Vec::new()));
    assert_eq!(c.count().unwrap(), 2);
}

fn incr_decr_semantics(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("incr"));
    assert_eq!(c.incr(b"n").unwrap(), 1, "a missing key counts as 0");
    assert_eq!(c.decr(b"m").unwrap(), -1);
    assert_eq!(c.incr_by(b"n", 41).unwrap(), 42);
    assert_eq!(
        c.get(b"n").unwrap().as_deref(),
        Some(&b"42"[..]),
        "stored as ASCII decimal"
    );
    c.set(b"n", b"9223372036854775807").unwrap();
    assert!(matches!(c.incr(b"n"), Err(Error::Overflow)));
    assert_eq!(
        c.get(b"n").unwrap().as_deref(),
        Some(&b"9223372036854775807"[..])
    );
    c.set(b"n", b"-9223372036854775808").unwrap();
    assert!(matches!(c.decr(b"n"), Err(Error::Overflow)));
    assert_eq!(c.incr_by(b"n", i64::MAX).unwrap(), -1);
    c.set(b"s", b"forty-two").unwrap();
    assert!(matches!(c.incr(b"s"), Err(Error::NotAnInteger)));
    assert_eq!(
        c.get(b"s").unwrap().as_deref(),
        Some(&b"forty-two"[..]),
        "value unchanged"
    );
    c.set(b"s", b"").unwrap();
    assert!(matches!(c.incr(b"s"), Err(Error::NotAnInteger)));
    // The connection goes on after a semantic error.
    assert_eq!(c.incr(b"fresh").unwrap(), 1);
}

fn clear_and_count(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("clear"));
    for i in 0..100u32 {
        c.set(i.to_le_bytes(), b"x").unwrap();
    }
    assert_eq!(c.count().unwrap(), 100);
    c.clear().unwrap();
    assert_eq!(c.count().unwrap(), 0);
    assert!(c.keys().unwrap().is_empty());
}

fn keys_and_items_in_insertion_order(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("keys"));
    for k in ["b", "a", "c", "d"] {
        c.set(k, format!("v{k}")).unwrap();
    }
    c.set("a", "again").unwrap(); // an overwrite keeps the position
    c.remove("c").unwrap();
    let keys: Vec<String> = c
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["b", "a", "d"]);
    let items = c.items().unwrap();
    assert_eq!(
        items,
        vec![
            (b"b".to_vec(), b"vb".to_vec()),
            (b"a".to_vec(), b"again".to_vec()),
            (b"d".to_vec(), b"vd".to_vec())
        ]
    );
}

fn keys_and_items_in_many_chunks(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("chunks"));
    let n = 20_000u32; // several chunks of at most 4096 keys
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(format!("key{i:06}"), [b'v'; 100]);
    }
    p.execute().unwrap();
    let before = requests(&c);
    let keys = c.keys().unwrap();
    // Served in chunks of at most 4096 keys, other clients' requests in between.
    assert!(requests(&c) - before >= 5, "keys() went in several chunks");
    assert_eq!(keys.len(), n as usize);
    assert!(keys
        .iter()
        .enumerate()
        .all(|(i, k)| *k == format!("key{i:06}").into_bytes()));
    let items = c.items().unwrap(); // 2 MB: chunks cut at 256 KiB
    assert_eq!(items.len(), n as usize);
    assert!(items.iter().all(|(_, v)| v == &[b'v'; 100]));
}

/// The server's request counter.
fn requests(c: &UpCache) -> u64 {
    c.stats().unwrap().requests
}

/// Requests the server counts between two `stats()` calls with nothing in between (the
/// second `stats` request itself, if the server counts it before answering).
fn stats_overhead(c: &UpCache) -> u64 {
    let before = requests(c);
    requests(c) - before
}

fn keys_iter_fetches_one_chunk_at_a_time(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("keysiter"));
    // More than 3 chunks of at most 4096 keys.
    let n = 3 * 4096 + 100;
    let key = |i: usize| format!("key{i:06}").into_bytes();
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(key(i), b"v");
    }
    p.execute().unwrap();

    let overhead = stats_overhead(&c);
    let before = requests(&c);
    let mut it = c.keys_iter();
    assert_eq!(
        requests(&c) - before,
        overhead,
        "nothing is fetched before the iterator is read"
    );
    let before = requests(&c);
    let first = it.next().unwrap().unwrap();
    assert_eq!(first, key(0));
    assert_eq!(
        requests(&c) - before,
        overhead + 1,
        "the first key costs one chunk, not the whole cache"
    );
    // During the enumeration: the last key (in a chunk not read yet) is removed, a new key is
    // stored. Neither is returned; every other key is, once, in insertion order.
    assert!(c.remove(key(n - 1)).unwrap());
    c.set(b"stored after the start", b"v").unwrap();
    let before = requests(&c);
    let mut got = vec![first];
    got.extend(it.map(Result::unwrap));
    let chunks = requests(&c) - before - overhead;
    assert!(chunks >= 3, "the rest came in {chunks} chunks");
    let want: Vec<Vec<u8>> = (0..n - 1).map(key).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every key present throughout, once, in order");
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        n - 1,
        "no key twice"
    );
    // The Vec form is the same enumeration.
    let mut all = want;
    all.push(b"stored after the start".to_vec());
    assert_eq!(c.keys().unwrap(), all);
    // An empty cache: an empty iterator.
    c.clear().unwrap();
    assert_eq!(c.keys_iter().count(), 0);
}

fn items_iter_streams_values_current_at_their_chunk(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("itemsiter"));
    let n = 3 * 4096 + 100;
    let key = |i: usize| format!("key{i:06}").into_bytes();
    let value = |i: usize| format!("value of {i}").into_bytes();
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(key(i), value(i));
    }
    p.execute().unwrap();
    let mut it = c.items_iter();
    assert_eq!(it.next().unwrap().unwrap(), (key(0), value(0)));
    // A key in a chunk not read yet is overwritten: its place stays, the new value is seen.
    c.set(key(n - 2), b"overwritten").unwrap();
    let mut got = vec![(key(0), value(0))];
    got.extend(it.map(Result::unwrap));
    assert_eq!(got.len(), n);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k, &key(i));
        let want = if i == n - 2 {
            b"overwritten".to_vec()
        } else {
            value(i)
        };
        assert_eq!(v, &want, "value of key {i}");
    }
    assert_eq!(c.items().unwrap(), got);
}

fn limits_are_checked_before_sending(t: TransportKind) {
    let sb = Sandbox::new(t);
    let name = sb.name("limits");
    let c = sb.builder(&name).max_value_len(1000).open().unwrap();
    let big_key = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        c.set(&big_key, b"v"),
        Err(Error::KeyTooLarge {
            len: 65537,
            max: 65536
        })
    ));
    assert!(matches!(c.get(&big_key), Err(Error::KeyTooLarge { .. })));
    c.set(vec![0u8; 64 * 1024], b"max key").unwrap();
    assert!(matches!(
        c.set(b"k", vec![0u8; 1001]),
        Err(Error::ValueTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    c.set(b"k", vec![7u8; 1000]).unwrap();
    assert_eq!(c.get(b"k").unwrap().unwrap().len(), 1000);
    // A second opener learns the limit from the connection file, whatever it asks for.
    let d = sb.builder(&name).max_value_len(5000).open().unwrap();
    assert!(matches!(
        d.set(b"k", vec![0u8; 1001]),
        Err(Error::ValueTooLarge { max: 1000, .. })
    ));
}

fn wait_for_change(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("wait"));
    c.set(b"k", b"v").unwrap();
    let waiter = c.clone();
    let h = std::thread::spawn(move || waiter.wait_for(b"k", None, Some(Duration::from_secs(10))));
    // The wait is registered once the server counts it.
    assert!(registered_waits(&c, 1));
    c.set(b"k", b"v").unwrap(); // the same value still counts as a change
    assert!(h.join().unwrap().unwrap());
    assert_eq!(c.stats().unwrap().waits, 0, "a woken wait is gone");
    // Remove of an existing key wakes; of a missing key it does not.
    let waiter = c.clone();
    let h = std::thread::spawn(move || {
        waiter.wait_for(b"missing", None, Some(Duration::from_secs(10)))
    });
    assert!(registered_waits(&c, 1));
    assert!(!c.remove(b"missing").unwrap());
    c.incr(b"unrelated").unwrap();
    // The server wakes a wait while it applies the change, before it answers: a wait that had
    // woken would no longer be counted.
    assert_eq!(c.stats().unwrap().waits, 1, "not woken by those");
    c.set(b"missing", b"now").unwrap();
    assert!(h.join().unwrap().unwrap());
    let waiter = c.clone();
    let h = std::thread::spawn(move || waiter.wait_for(b"k", None, Some(Duration::from_secs(10))));
    assert!(registered_waits(&c, 1));
    assert!(c.remove(b"k").unwrap());
    assert!(h.join().unwrap().unwrap());
}

/// Waits until the server counts `n` registered waits; false if it does not within 10 s.
fn registered_waits(c: &UpCache, n: u64) -> bool {
    util::eventually(Duration::from_secs(10), || c.stats().unwrap().waits == n)
}

fn wait_for_value(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("waitv"));
    c.set(b"k", b"yes").unwrap();
    // Already holding the value: true at once, even with no time to wait.
    assert!(c
        .wait_for(b"k", Some(b"yes"), Some(Duration::ZERO))
        .unwrap());
    assert!(!c.wait_for(b"k", Some(b"no"), Some(Duration::ZERO)).unwrap());
    assert!(c
        .wait_for(b"k", Some(b"yes"), Some(Duration::from_secs(10)))
        .unwrap());
    let waiter = c.clone();
    let h = std::thread::spawn(move || {
        waiter.wait_for(b"n", Some(b"3"), Some(Duration::from_secs(10)))
    });
    assert!(registered_waits(&c, 1));
    c.incr(b"n").unwrap();
    c.incr(b"n").unwrap();
    // Changes to other values do not end it: the server still holds the wait (it removes a
    // wait when it wakes it, before answering the change).
    assert_eq!(c.stats().unwrap().waits, 1, "not woken by 1 or 2");
    c.incr(b"n").unwrap();
    assert!(h.join().unwrap().unwrap());
    assert_eq!(c.stats().unwrap().waits, 0);
}

fn wait_for_timeouts(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("waitt"));
    let t0 = Instant::now();
    assert!(!c
        .wait_for(b"k", None, Some(Duration::from_millis(100)))
        .unwrap());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "returned early: {took:?}"
    );
    assert!(!c.wait_for(b"k", None, Some(Duration::ZERO)).unwrap());
    // Long timeouts are accepted (the original failed past 71 minutes and ignored days).
    let waiter = c.clone();
    let h = std::thread::spawn(move || {
        waiter.wait_for(b"k", None, Some(Duration::from_secs(3 * 24 * 3600)))
    });
    assert!(registered_waits(&c, 1));
    c.set(b"k", b"x").unwrap();
    assert!(h.join().unwrap().unwrap());
}

fn wait_for_64_concurrent_waiters(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("waiters"));
    let n = 64;
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            // Half share the main handle, half have their own connection.
            let c = if i % 2 == 0 {
                c.clone()
            } else {
                sb.open(c.name())
            };
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || {
                b.wait();
                c.wait_for(format!("key{i}"), None, Some(Duration::from_secs(20)))
            })
        })
        .collect();
    barrier.wait();
    assert!(registered_waits(&c, n as u64));
    for i in 0..n {
        c.set(format!("key{i}"), b"go").unwrap();
    }
    let woken = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .filter(|&b| b)
        .count();
    assert_eq!(woken, n, "every waiter woken exactly once, none lost");
}

fn wait_does_not_block_other_threads(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("noblock"));
    let waiter = c.clone();
    let h =
        std::thread::spawn(move || waiter.wait_for(b"never", None, Some(Duration::from_secs(30))));
    assert!(registered_waits(&c, 1));
    // The same handle serves other calls while the wait blocks.
    for i in 0..1000u32 {
        c.set(i.to_le_bytes(), b"x").unwrap();
    }
    assert_eq!(c.count().unwrap(), 1000);
    assert_eq!(c.stats().unwrap().waits, 1, "the wait is still held");
    c.set(b"never", b"now").unwrap();
    assert!(h.join().unwrap().unwrap());
}

fn clear_ends_every_wait(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("clearwake"));
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let value: Option<&[u8]> = if i % 2 == 0 { None } else { Some(b"v") };
                c.wait_for(format!("k{i}"), value, Some(Duration::from_secs(20)))
            })
        })
        .collect();
    assert!(registered_waits(&c, 4));
    c.clear().unwrap();
    // A wait for a change sees one; a wait for a value does not: the key no longer holds it.
    for (i, h) in hs.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().unwrap(), i % 2 == 0, "wait {i}");
    }
}

fn subscription_sees_events_in_order(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("sub"));
    let sub = c.subscribe(b"k").unwrap();
    // No event after subscribe returns is missed, even from another connection.
    let other = sb.open(c.name());
    for i in 0..100u32 {
        other.set(b"k", i.to_string()).unwrap();
    }
    other.set(b"unrelated", b"x").unwrap();
    other.set(b"k", b"end").unwrap();
    // The change of another key, applied between, sends nothing: the event after the 100th
    // is the last change of `k`.
    for i in (0..100u32).map(|i| i.to_string()).chain(["end".into()]) {
        let e = sub
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("event");
        assert_eq!(e.kind, EventKind::Set);
        assert_eq!(e.key, b"k");
        assert_eq!(e.value.unwrap(), i.into_bytes());
    }
}

fn subscribe_all_and_deletes(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("suball"));
    let all = c.subscribe_all().unwrap();
    let one = c.subscribe(b"a").unwrap();
    c.set(b"a", b"").unwrap(); // an empty value is an event like any other
    c.set(b"b", b"2").unwrap();
    c.incr(b"n").unwrap();
    assert!(c.remove(b"a").unwrap());
    assert!(!c.remove(b"a").unwrap()); // no event: did not exist
    c.clear().unwrap();
    let got: Vec<_> = (0..5)
        .map(|_| all.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
        .collect();
    let kinds: Vec<_> = got
        .iter()
        .map(|e| (e.key.clone(), e.kind.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (b"a".to_vec(), EventKind::Set, Some(Vec::new())),
            (b"b".to_vec(), EventKind::Set, Some(b"2".to_vec())),
            (b"n".to_vec(), EventKind::Set, Some(b"1".to_vec())),
            (b"a".to_vec(), EventKind::Removed, None),
            (Vec::new(), EventKind::Cleared, None),
        ]
    );
    let kinds: Vec<_> = (0..3)
        .map(|_| {
            one.recv_timeout(Duration::from_secs(5))
                .unwrap()
                .unwrap()
                .kind
        })
        .collect();
    assert_eq!(
        kinds,
        vec![EventKind::Set, EventKind::Removed, EventKind::Cleared]
    );
    // Nothing else was sent before a later change: its event is the next one.
    c.set(b"end", b"").unwrap();
    let e = all.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((e.key, e.kind), (b"end".to_vec(), EventKind::Set));
}

fn slow_subscriber_lags_without_blocking_writers(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("slow"));
    let sub = c.subscribe(b"k").unwrap(); // never read while the writer runs
    let writer = sb.open(c.name());
    // More than the client queue holds (65,536 events) and far more bytes than the server
    // keeps for one connection (8 MiB): 200,000 events of 512 bytes.
    // The writer is never held up: its pipeline completes while nothing reads the
    // subscription (a blocked server would fail it with a request timeout).
    let n = 200_000u64;
    let mut p = writer.pipeline();
    for i in 0..n {
        let mut v = i.to_string().into_bytes();
        v.resize(512, b'.');
        p.set(b"k", v);
    }
    p.execute().unwrap();
    // Everything delivered adds up: queued events plus lagged counts equal what was sent.
    let (mut seen, mut lagged) = (0u64, 0u64);
    while seen + lagged < n {
        let e = sub
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("events keep coming");
        match e.kind {
            EventKind::Lagged(k) => lagged += k,
            EventKind::Set => seen += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen + lagged, n);
    assert!(lagged > 0, "the subscriber fell behind and was told so");
    // Once caught up, delivery goes on.
    writer.set(b"k", b"last").unwrap();
    let e = sub
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("event after the lag");
    assert_eq!(
        (e.kind, e.value.as_deref()),
        (EventKind::Set, Some(&b"last"[..]))
    );
}

fn dropping_a_subscription_unsubscribes(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("unsub"));
    let a = c.subscribe(b"k").unwrap();
    let b = c.subscribe(b"k").unwrap();
    drop(a);
    // The unsubscribe went out on the event connection, the set goes on the request
    // connection: nothing orders the two. A request on the event connection does: the server
    // answers a connection's requests in order, so once this wait's answer is back, the
    // unsubscribe before it was applied.
    assert!(!c.wait_for(b"sync", None, Some(Duration::ZERO)).unwrap());
    c.set(b"k", b"1").unwrap();
    assert_eq!(
        b.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .value
            .unwrap(),
        b"1"
    );
    let stats = c.stats().unwrap();
    assert_eq!(
        stats.events, 1,
        "only the live subscription got it: {stats:?}"
    );
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
}

fn pipeline_matches_one_by_one(t: TransportKind) {
    let sb = Sandbox::new(t);
    let pipe = sb.open(&sb.name("pipe"));
    let single = sb.open(&sb.name("single"));
    // 100,000 mixed operations, the same on both caches.
    let ops = 100_000u32;
    let mut p = pipe.pipeline();
    let mut expected = Vec::with_capacity(ops as usize);
    for i in 0..ops {
        let key = format!("k{}", i % 997);
        match i % 7 {
            0 | 1 => {
                p.set(&key, format!("v{i}"));
                single.set(&key, format!("v{i}")).unwrap();
                expected.push(PipelineReply::Done);
            }
            2 => {
                p.get(&key);
                expected.push(PipelineReply::Value(single.get(&key).unwrap()));
            }
            3 => {
                p.incr(format!("n{}", i % 13));
                expected.push(PipelineReply::Int(
                    single.incr(format!("n{}", i % 13)).unwrap(),
                ));
            }
            4 => {
                p.exists(&key);
                expected.push(PipelineReply::Bool(single.exists(&key).unwrap()));
            }
            5 => {
                p.remove(&key);
                expected.push(PipelineReply::Bool(single.remove(&key).unwrap()));
            }
            _ => {
                // Not an integer: a failed reply in place; the rest go on.
                p.incr(&key);
                expected.push(match single.incr(&key) {
                    Ok(n) => PipelineReply::Int(n),
                    Err(e) => PipelineReply::Failed(e),
                });
            }
        }
    }
    assert_eq!(p.len(), ops as usize);
    let got = p.execute().unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(format!("{g:?}"), format!("{e:?}"), "operation {i}");
    }
    assert_eq!(pipe.items().unwrap(), single.items().unwrap());
    assert!(p.is_empty());
}

fn threads_share_one_handle(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("threads"));
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..500 {
                    c.incr(b"shared").unwrap();
                    let k = format!("t{i}-{j}");
                    c.set(&k, &k).unwrap();
                    assert_eq!(c.get(&k).unwrap().unwrap(), k.as_bytes());
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(c.get(b"shared").unwrap().as_deref(), Some(&b"4000"[..]));
    assert_eq!(c.count().unwrap(), 4001);
}

fn stats_report_counters(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb
        .builder(&sb.name("stats"))
        .max_value_len(5000)
        .open()
        .unwrap();
    c.set(b"a", b"1").unwrap();
    c.get(b"a").unwrap();
    c.get(b"b").unwrap();
    let s = c.stats().unwrap();
    assert_eq!(s.pid, util::server_pid(c.connection_file()));
    assert_eq!((s.gets, s.hits), (2, 1), "{s:?}");
    assert_eq!(s.keys, 1);
    assert_eq!(s.connections, 1);
    assert_eq!(s.waits, 0);
    assert_eq!(s.max_value_len, 5000);
    assert!(s.requests >= 3, "{s:?}");
    assert!(s.accepted >= 1, "{s:?}");
    assert!(s.bytes_in > 0 && s.bytes_out > 0, "{s:?}");
    assert_eq!((s.events, s.events_dropped, s.protocol_errors), (0, 0, 0));
    // One record: two length bytes, the 8-byte version, the key and the value. The store's
    // allocation holds it.
    assert_eq!(s.record_bytes, 12);
    let held = s.store_bytes;
    assert!(held >= 12, "{s:?}");
    // 1,000 keys of 108-byte records: at least that much more is allocated, and at most a
    // 64 KiB segment per shard plus slots and indexes.
    for i in 0..1000u32 {
        c.set(format!("key{i:05}").as_bytes(), [b'v'; 90]).unwrap();
    }
    let s2 = c.stats().unwrap();
    assert_eq!(s2.record_bytes, 12 + 1000 * 108);
    assert_eq!(s2.keys, 1001);
    let grown = s2.store_bytes - held;
    assert!((100_000..64 * 65_536 + 200_000).contains(&grown), "{s2:?}");
    // Counters since start only grow.
    assert!(
        s2.requests >= s.requests + 1000 && s2.bytes_in > s.bytes_in,
        "{s2:?}"
    );
    assert!(s2.uptime_ms >= s.uptime_ms);
}
