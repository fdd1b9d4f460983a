//! TTLs with real processes and sockets: expiry seen across processes, `Expired` events in
//! order, the TTL rule, enumeration while keys expire, a mass expiry and its memory.

mod util;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use upcache::{Error, EventKind, PipelineReply, TransportKind as Transport, Ttl};
use util::{finish, Sandbox};

each_transport!(
    a_key_set_with_a_ttl_by_one_process_expires_for_every_other,
    expired_follows_the_sets_of_the_key_and_a_new_set_is_a_new_key,
    set_and_incr_keep_a_ttl_expire_replaces_it_persist_removes_it,
    keys_never_returns_an_expired_key_nor_skips_a_lasting_one,
    a_hundred_thousand_keys_due_together_all_expire_are_reported_and_free_memory,
);

fn a_key_set_with_a_ttl_by_one_process_expires_for_every_other(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("ttlx");
    let c = sb.open(&name);
    let (ok, _, err) = finish(
        sb.child("set-ttl", &[&name, "k", "soon gone", "1500"])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"soon gone"[..]));
    match c.ttl(b"k").unwrap() {
        Ttl::Expires(left) => assert!(left <= Duration::from_millis(1500), "{left:?}"),
        other => panic!("{other:?}"),
    }
    // The expiry is a change: a wait for one ends with it.
    assert!(c
        .wait_for(b"k", None, Some(Duration::from_secs(20)))
        .unwrap());
    assert_eq!(c.get(b"k").unwrap(), None);
    assert!(!c.exists(b"k").unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), Ttl::Missing);
    let (ok, out, err) = finish(
        sb.child("get", &[&name, "k"]).spawn().unwrap(),
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "<none>");
    assert_eq!(c.stats().unwrap().expired, 1);
}

fn expired_follows_the_sets_of_the_key_and_a_new_set_is_a_new_key(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ttlev"));
    let sub = c.subscribe(b"k").unwrap();
    c.set(b"k", b"v1").unwrap();
    c.set_with_ttl(b"k", b"v2", Duration::from_millis(100))
        .unwrap();
    let next = || sub.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let e = next();
    assert_eq!(
        (e.kind, e.value.as_deref()),
        (EventKind::Set, Some(&b"v1"[..]))
    );
    let e = next();
    assert_eq!(
        (e.kind, e.value.as_deref()),
        (EventKind::Set, Some(&b"v2"[..]))
    );
    let e = next();
    assert_eq!((e.kind, e.key.as_slice()), (EventKind::Expired, &b"k"[..]));
    // Stored again after it expired: a new key, with no TTL.
    c.set(b"k", b"v3").unwrap();
    let e = next();
    assert_eq!(
        (e.kind, e.value.as_deref()),
        (EventKind::Set, Some(&b"v3"[..]))
    );
    assert_eq!(c.ttl(b"k").unwrap(), Ttl::Forever);
    // Exactly one Expired: the next event is the one after it.
    c.remove(b"k").unwrap();
    assert_eq!(next().kind, EventKind::Removed);
}

fn set_and_incr_keep_a_ttl_expire_replaces_it_persist_removes_it(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ttlrule"));
    let hour = Duration::from_secs(3600);
    let left = |k: &[u8]| match c.ttl(k).unwrap() {
        Ttl::Expires(d) => d,
        other => panic!("{other:?}"),
    };
    c.set_with_ttl(b"n", b"1", hour).unwrap();
    assert!(left(b"n") > Duration::from_secs(3590));
    c.set(b"n", b"5").unwrap();
    assert!(left(b"n") > Duration::from_secs(3590), "set keeps the TTL");
    assert_eq!(c.incr(b"n").unwrap(), 6);
    assert!(left(b"n") > Duration::from_secs(3590), "incr keeps the TTL");
    assert!(c.expire(b"n", Duration::from_secs(10)).unwrap());
    assert!(left(b"n") <= Duration::from_secs(10), "expire replaces it");
    assert!(c.persist(b"n").unwrap());
    assert_eq!(c.ttl(b"n").unwrap(), Ttl::Forever);
    assert!(!c.persist(b"n").unwrap(), "no TTL to take away");
    assert!(!c.expire(b"missing", hour).unwrap());
    assert!(!c.persist(b"missing").unwrap());
    assert_eq!(c.ttl(b"missing").unwrap(), Ttl::Missing);
    assert_eq!(c.get(b"n").unwrap().as_deref(), Some(&b"6"[..]));
    // Out-of-range TTLs are refused before anything is sent.
    for bad in [Duration::ZERO, Duration::from_millis(1 << 40)] {
        assert!(matches!(
            c.set_with_ttl(b"x", b"y", bad),
            Err(Error::InvalidTtl { .. })
        ));
    }
    assert!(!c.exists(b"x").unwrap());
    // A sub-millisecond TTL rounds up to 1 ms: it never expires early, and does expire.
    c.set_with_ttl(b"tiny", b"y", Duration::from_micros(10))
        .unwrap();
    assert!(
        c.wait_for(b"tiny", None, Some(Duration::from_secs(10)))
            .unwrap()
            || !c.exists(b"tiny").unwrap()
    );
    // The same through a pipeline.
    let replies = c
        .pipeline()
        .set_with_ttl(b"p", b"1", hour)
        .ttl(b"p")
        .persist(b"p")
        .ttl(b"p")
        .ttl(b"nothing")
        .expire(b"p", hour)
        .execute()
        .unwrap();
    assert!(matches!(replies[0], PipelineReply::Done));
    assert!(
        matches!(replies[1], PipelineReply::Ttl(Ttl::Expires(d)) if d > Duration::from_secs(3590))
    );
    assert!(matches!(replies[2], PipelineReply::Bool(true)));
    assert!(matches!(replies[3], PipelineReply::Ttl(Ttl::Forever)));
    assert!(matches!(replies[4], PipelineReply::Ttl(Ttl::Missing)));
    assert!(matches!(replies[5], PipelineReply::Bool(true)));
}

fn keys_never_returns_an_expired_key_nor_skips_a_lasting_one(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ttlscan"));
    // Lasting keys and keys that expire over the next 400 ms, interleaved in insertion order.
    let mut p = c.pipeline();
    for i in 0..12_000u32 {
        if i % 2 == 0 {
            p.set(format!("keep{i}"), b"x");
        } else {
            p.set_with_ttl(
                format!("ttl{i}"),
                b"x",
                Duration::from_millis(1 + (i as u64 % 400)),
            );
        }
    }
    p.execute().unwrap();
    // Expired keys, as another connection hears of them: once heard, the server removed them
    // before any request sent later.
    let sub = c.subscribe_all().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let listener = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(e)) if e.kind == EventKind::Expired => {
                    if tx.send(e.key).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) | Ok(None) => {}
                Err(_) => return,
            }
        }
    });
    let mut heard: HashSet<Vec<u8>> = HashSet::new();
    let mut before_chunk: HashSet<Vec<u8>> = HashSet::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut iter = c.keys_iter();
    loop {
        // A chunk holds `CHUNK_MAX_ENTRIES` keys (expired ones are skipped, not counted), so
        // the next one is fetched by this call: it must hold none of the keys heard by now,
        // which the server removed before the request was sent.
        if seen.len() % upcache::protocol::CHUNK_MAX_ENTRIES == 0 {
            std::thread::sleep(Duration::from_millis(60));
            heard.extend(rx.try_iter());
            before_chunk = heard.clone();
        }
        let Some(k) = iter.next() else { break };
        let k = k.unwrap();
        assert!(
            !before_chunk.contains(&k),
            "an expired key came back: {:?}",
            String::from_utf8_lossy(&k)
        );
        seen.push(k);
    }
    drop(rx);
    let keep: Vec<Vec<u8>> = seen
        .iter()
        .filter(|k| k.starts_with(b"keep"))
        .cloned()
        .collect();
    let want: Vec<Vec<u8>> = (0..12_000u32)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("keep{i}").into_bytes())
        .collect();
    assert_eq!(keep, want, "every lasting key once, in order");
    let _ = listener.join();
    // Afterwards nothing with a TTL is left.
    assert!(util::eventually(Duration::from_secs(10), || c
        .count()
        .unwrap()
        == 6000));
    assert!(c.keys().unwrap().iter().all(|k| k.starts_with(b"keep")));
}

fn a_hundred_thousand_keys_due_together_all_expire_are_reported_and_free_memory(t: Transport) {
    const N: usize = 100_000;
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ttlmass"));
    let base = c.stats().unwrap().store_bytes;
    let sub = c.subscribe_all().unwrap();
    let counter = std::thread::spawn(move || {
        let (mut expired, mut lagged) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(60);
        while expired + lagged < N as u64 && Instant::now() < deadline {
            match sub.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(e)) => match e.kind {
                    EventKind::Expired => expired += 1,
                    EventKind::Lagged(n) => lagged += n,
                    _ => {}
                },
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
        }
        (expired, lagged)
    });
    let mut p = c.pipeline();
    for i in 0..N {
        p.set_with_ttl(
            format!("mass{i:06}"),
            [b'v'; 64],
            Duration::from_millis(1500),
        );
    }
    p.execute().unwrap();
    let peak = c.stats().unwrap();
    assert_eq!(peak.ttl_keys, N as u64);
    let (expired, lagged) = counter.join().unwrap();
    assert_eq!(
        expired + lagged,
        N as u64,
        "every expiry reported (or counted as lagged)"
    );
    assert!(expired > 0);
    assert_eq!(c.count().unwrap(), 0);
    let after = c.stats().unwrap();
    assert_eq!(
        (after.expired, after.ttl_keys, after.keys),
        (N as u64, 0, 0)
    );
    assert!(
        after.store_bytes - base.min(after.store_bytes) < (peak.store_bytes - base) / 10,
        "memory returned: base {base}, peak {}, after {}",
        peak.store_bytes,
        after.store_bytes
    );
}
