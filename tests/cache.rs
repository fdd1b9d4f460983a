//! Every operation's semantics, through a real server process and real sockets, over both
//! transports.

mod util;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use upcache::{Error, EventKind, Reply, Transport};
use util::Sandbox;

each_transport!(
    get_set_exists_remove,
    empty_keys_and_values,
    incr_decr_semantics,
    clear_and_count,
    keys_and_items_in_insertion_order,
    keys_and_items_in_many_chunks,
    limits_are_checked_before_sending,
    wait_for_change,
    wait_for_value,
    wait_for_timeouts,
    wait_for_64_concurrent_waiters,
    wait_does_not_block_other_threads,
    clear_wakes_every_waiter,
    subscription_sees_events_in_order,
    subscribe_all_and_deletes,
    slow_subscriber_lags_without_blocking_writers,
    dropping_a_subscription_unsubscribes,
    pipeline_matches_one_by_one,
    threads_share_one_handle,
    stats_report_counters,
);

fn get_set_exists_remove(t: Transport) {
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

fn empty_keys_and_values(t: Transport) {
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

fn incr_decr_semantics(t: Transport) {
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

fn clear_and_count(t: Transport) {
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

fn keys_and_items_in_insertion_order(t: Transport) {
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

fn keys_and_items_in_many_chunks(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("chunks"));
    let n = 20_000u32; // several chunks of at most 4096 keys
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(format!("key{i:06}"), [b'v'; 100]);
    }
    p.execute().unwrap();
    let requests = |c: &upcache::UpCache| -> u64 {
        let s: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
        s["requests"].as_u64().unwrap()
    };
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

fn limits_are_checked_before_sending(t: Transport) {
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

fn wait_for_change(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("wait"));
    c.set(b"k", b"v").unwrap();
    let waiter = c.clone();
    let h = std::thread::spawn(move || waiter.wait_for(b"k", None, Some(Duration::from_secs(10))));
    // The wait is registered once the server counts it.
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":1")));
    c.set(b"k", b"v").unwrap(); // the same value still counts as a change
    assert!(h.join().unwrap().unwrap());
    // Remove of an existing key wakes; of a missing key it does not.
    let waiter = c.clone();
    let h = std::thread::spawn(move || waiter.wait_for(b"k", None, Some(Duration::from_secs(10))));
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":1")));
    assert!(!c.remove(b"other").unwrap());
    c.incr(b"unrelated").unwrap();
    assert!(c.remove(b"k").unwrap());
    assert!(h.join().unwrap().unwrap());
}

fn wait_for_value(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("waitv"));
    c.set(b"k", b"yes").unwrap();
    let t0 = Instant::now();
    assert!(c
        .wait_for(b"k", Some(b"yes"), Some(Duration::from_secs(10)))
        .unwrap());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "already holding the value returns at once"
    );
    let waiter = c.clone();
    let h = std::thread::spawn(move || {
        waiter.wait_for(b"n", Some(b"3"), Some(Duration::from_secs(10)))
    });
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":1")));
    c.incr(b"n").unwrap();
    c.incr(b"n").unwrap();
    assert!(!h.is_finished());
    c.incr(b"n").unwrap();
    assert!(h.join().unwrap().unwrap());
}

fn wait_for_timeouts(t: Transport) {
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
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":1")));
    c.set(b"k", b"x").unwrap();
    assert!(h.join().unwrap().unwrap());
}

fn wait_for_64_concurrent_waiters(t: Transport) {
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
    assert!(util::eventually(Duration::from_secs(10), || {
        c.stats().unwrap().contains(&format!("\"waits\":{n}"))
    }));
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

fn wait_does_not_block_other_threads(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("noblock"));
    let waiter = c.clone();
    let h =
        std::thread::spawn(move || waiter.wait_for(b"never", None, Some(Duration::from_secs(30))));
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":1")));
    for i in 0..1000u32 {
        c.set(i.to_le_bytes(), b"x").unwrap();
    }
    assert_eq!(c.count().unwrap(), 1000);
    assert!(!h.is_finished());
    c.set(b"never", b"now").unwrap();
    assert!(h.join().unwrap().unwrap());
}

fn clear_wakes_every_waiter(t: Transport) {
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
    assert!(util::eventually(Duration::from_secs(5), || c
        .stats()
        .unwrap()
        .contains("\"waits\":4")));
    c.clear().unwrap();
    for h in hs {
        assert!(h.join().unwrap().unwrap());
    }
}

fn subscription_sees_events_in_order(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("sub"));
    let sub = c.subscribe(b"k").unwrap();
    // No event after subscribe returns is missed, even from another connection.
    let other = sb.open(c.name());
    for i in 0..100u32 {
        other.set(b"k", i.to_string()).unwrap();
    }
    other.set(b"unrelated", b"x").unwrap();
    for i in 0..100u32 {
        let e = sub
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("event");
        assert_eq!(e.kind, EventKind::Set);
        assert_eq!(e.key, b"k");
        assert_eq!(e.value.unwrap(), i.to_string().into_bytes());
    }
    assert!(sub.try_recv().unwrap().is_none());
}

fn subscribe_all_and_deletes(t: Transport) {
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
    assert!(all.try_recv().unwrap().is_none());
}

fn slow_subscriber_lags_without_blocking_writers(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("slow"));
    let sub = c.subscribe(b"k").unwrap(); // never read while the writer runs
    let writer = sb.open(c.name());
    // More than the client queue holds (65,536 events) and far more bytes than the server
    // keeps for one connection (8 MiB): 200,000 events of 512 bytes.
    let n = 200_000u64;
    let t0 = Instant::now();
    let mut p = writer.pipeline();
    for i in 0..n {
        let mut v = i.to_string().into_bytes();
        v.resize(512, b'.');
        p.set(b"k", v);
    }
    p.execute().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "writer was not held up"
    );
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

fn dropping_a_subscription_unsubscribes(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("unsub"));
    let a = c.subscribe(b"k").unwrap();
    let b = c.subscribe(b"k").unwrap();
    drop(a);
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
    assert!(
        stats.contains("\"events\":1"),
        "only the live subscription got it: {stats}"
    );
}

fn pipeline_matches_one_by_one(t: Transport) {
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
                expected.push(Reply::Done);
            }
            2 => {
                p.get(&key);
                expected.push(Reply::Value(single.get(&key).unwrap()));
            }
            3 => {
                p.incr(format!("n{}", i % 13));
                expected.push(Reply::Int(single.incr(format!("n{}", i % 13)).unwrap()));
            }
            4 => {
                p.exists(&key);
                expected.push(Reply::Bool(single.exists(&key).unwrap()));
            }
            5 => {
                p.remove(&key);
                expected.push(Reply::Bool(single.remove(&key).unwrap()));
            }
            _ => {
                // Not an integer: a failed reply in place; the rest go on.
                p.incr(&key);
                expected.push(match single.incr(&key) {
                    Ok(n) => Reply::Int(n),
                    Err(e) => Reply::Failed(e),
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

fn threads_share_one_handle(t: Transport) {
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

fn stats_report_counters(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("stats"));
    c.set(b"a", b"1").unwrap();
    c.get(b"a").unwrap();
    c.get(b"b").unwrap();
    let s: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert_eq!(s["gets"], 2);
    assert_eq!(s["hits"], 1);
    assert_eq!(s["keys"], 1);
    assert_eq!(s["connections"], 1);
    // One record: two length bytes, the key and the value. The store's allocation holds it.
    assert_eq!(s["record_bytes"], 4);
    let held = s["store_bytes"].as_u64().unwrap();
    assert!(held >= 4, "{s}");
    // 1,000 keys of 100-byte records: at least that much more is allocated, and at most a
    // 64 KiB segment per shard plus slots and indexes.
    for i in 0..1000u32 {
        c.set(format!("key{i:05}").as_bytes(), [b'v'; 90]).unwrap();
    }
    let s: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert_eq!(s["record_bytes"], 4 + 1000 * 100);
    let grown = s["store_bytes"].as_u64().unwrap() - held;
    assert!((100_000..64 * 65_536 + 200_000).contains(&grown), "{s}");
}
