//! Versions, conditional writes and multi-key requests through a real server and real
//! sockets: a compare-and-set counter and an `add` race across processes, versions that only
//! grow, and what `get_many`/`set_many`/`remove_many` do with duplicates, missing keys,
//! TTLs, events and waits.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::time::Duration;

use upcache::protocol::{ErrorCode, MAX_BATCH_KEYS};
use upcache::{Error, EventKind, PipelineReply, TransportKind, UpCache, Version};
use util::{finish, Sandbox};

each_transport!(
    versions_grow_with_every_write_and_only_with_writes,
    conditional_writes_write_only_when_their_condition_holds,
    add_and_replace_with_ttl,
    get_many_answers_every_key_in_order,
    set_many_and_remove_many_with_duplicates_and_missing_keys,
    multi_writes_are_events_and_wake_waits,
    failed_conditional_writes_are_not_events,
    size_limits_are_checked_before_sending,
    pipelines_carry_multi_key_requests,
    the_async_client_makes_the_same_calls,
);

/// Child processes: this test binary run again with this variable set (see `role_entry`).
const ROLE_ENV: &str = "UPCACHE_VERSIONS_ROLE";

/// 16 processes add 1 to one decimal counter 1,000 times each, each increment a
/// `get_versioned` / `set_if_version` loop retried until it wins (an `add` for the first):
/// no increment is lost, so the counter ends at exactly 16,000.
#[test]
fn cas_counter_across_16_processes() {
    let sb = Sandbox::new(TransportKind::Unix);
    let name = sb.name("cas");
    let c = sb.open(&name);
    let kids: Vec<Child> = (0..16)
        .map(|_| spawn(&sb, &["cas", &name, "counter", "1000"]))
        .collect();
    let mut retries = 0u64;
    for k in kids {
        let (ok, out, err) = finish(k, Duration::from_secs(300));
        assert!(ok, "child failed: {err}");
        retries += out.trim().parse::<u64>().expect("retries");
    }
    assert_eq!(c.get("counter").unwrap().as_deref(), Some(&b"16000"[..]));
    eprintln!("16,000 increments, {retries} retries");
}

/// 32 processes, all connected and waiting on one signal, `add` the same missing key: exactly
/// one gets true, and the key holds its value.
#[test]
fn add_race_across_32_processes_has_one_winner() {
    let sb = Sandbox::new(TransportKind::Tcp);
    let name = sb.name("addrace");
    let c = sb.open(&name);
    let mut kids: Vec<Child> = (0..32)
        .map(|i| spawn(&sb, &["add", &name, "prize", &format!("p{i}")]))
        .collect();
    // Every child is connected and registered its wait before the signal goes.
    for k in &mut kids {
        let mut line = String::new();
        BufReader::new(k.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    c.set("go", "1").unwrap();
    let mut winners = Vec::new();
    for (i, k) in kids.into_iter().enumerate() {
        let (ok, out, err) = finish(k, Duration::from_secs(60));
        assert!(ok, "child {i} failed: {err}");
        match out.trim() {
            "true" => winners.push(i),
            "false" => {}
            other => panic!("child {i} printed {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let want = format!("p{}", winners[0]);
    assert_eq!(c.get("prize").unwrap(), Some(want.into_bytes()));
}

fn spawn(sb: &Sandbox, args: &[&str]) -> Child {
    let mut spec = vec![
        sb.path().display().to_string(),
        sb.transport.name().to_string(),
    ];
    spec.extend(args.iter().map(|s| s.to_string()));
    util::child_command(ROLE_ENV, &spec).spawn().expect("spawn")
}

#[used]
#[link_section = ".init_array"]
static ROLE_ENTRY: extern "C" fn() = role_entry;

extern "C" fn role_entry() {
    util::run_as_child(ROLE_ENV, run_role);
}

fn run_role(p: &[&str]) -> upcache::Result<()> {
    let (dir, transport, role, args) = (p[0], p[1], p[2], &p[3..]);
    let transport = if transport == "unix" {
        TransportKind::Unix
    } else {
        TransportKind::Tcp
    };
    let c = UpCache::builder(args[0])
        .dir(dir)
        .transport(transport)
        .open()?;
    match role {
        // cas NAME KEY TIMES: prints the number of retries
        "cas" => {
            let times: u32 = args[2].parse().expect("times");
            let key = args[1];
            let mut retries = 0u64;
            for _ in 0..times {
                loop {
                    let won = match c.get_versioned(key)? {
                        None => c.add(key, "1")?,
                        Some((v, version)) => {
                            let n: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
                            let next = (n + 1).to_string();
                            c.set_if_version(key, next, version)?.is_some()
                        }
                    };
                    if won {
                        break;
                    }
                    retries += 1;
                }
            }
            println!("{retries}");
            Ok(())
        }
        // add NAME KEY VALUE: prints "ready", waits for "go" to hold "1", prints the result
        "add" => {
            // Connected (the first call opens the request connection) before saying ready.
            c.exists("go")?;
            println!("ready");
            let _ = std::io::stdout().flush();
            c.wait_for("go", Some(b"1"), Some(Duration::from_secs(30)))?;
            println!("{}", c.add(args[1], args[2])?);
            Ok(())
        }
        other => panic!("unknown role {other}"),
    }
}

fn version(c: &UpCache, key: &str) -> Version {
    c.get_versioned(key).unwrap().expect("present").1
}

fn versions_grow_with_every_write_and_only_with_writes(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("grow"));
    assert_eq!(c.get_versioned("k").unwrap(), None);
    let mut last = Version::new(0);
    // After each write: the key's version is greater than every one seen before.
    let mut wrote = |what: &str, c: &UpCache| {
        let v = version(c, "k");
        assert!(v > last, "{what}: {v} after {last}");
        last = v;
    };
    c.set("k", "a").unwrap();
    wrote("set", &c);
    c.set("k", "b").unwrap(); // same length: rewritten in place
    wrote("set in place", &c);
    let before = version(&c, "k");
    c.incr("k").unwrap_err(); // not a number: nothing written
    assert_eq!(version(&c, "k"), before);
    c.set("k", "1").unwrap();
    wrote("set", &c);
    c.incr("k").unwrap();
    wrote("incr", &c);
    c.set_with_ttl("k", "x", Duration::from_secs(600)).unwrap();
    wrote("set_with_ttl", &c);
    // A TTL change keeps the version: the value did not change.
    let v = version(&c, "k");
    assert!(c.expire("k", Duration::from_secs(900)).unwrap());
    assert!(c.persist("k").unwrap());
    assert_eq!(version(&c, "k"), v);
    assert!(c.remove("k").unwrap());
    assert_eq!(c.get_versioned("k").unwrap(), None);
    c.set("k", "again").unwrap();
    wrote("re-created", &c);
    c.clear().unwrap();
    c.set("k", "after clear").unwrap();
    wrote("after clear", &c);
    assert!(c.replace("k", "r").unwrap());
    wrote("replace", &c);
    let v = version(&c, "k");
    let w = c.set_if_version("k", "s", v).unwrap().expect("written");
    assert_eq!(version(&c, "k"), w);
    wrote("set_if_version", &c);
    c.set_many([("k", "m")]).unwrap();
    wrote("set_many", &c);
    assert_eq!(c.remove_many(["k"]).unwrap(), 1);
    assert!(c.add("k", "added").unwrap());
    wrote("add", &c);
    // Versions are one counter for all keys: another key's write is greater too.
    c.set("other", "o").unwrap();
    assert!(version(&c, "other") > version(&c, "k"));
    let (value, v) = c.get_versioned("k").unwrap().unwrap();
    assert_eq!(value, b"added");
    assert_eq!(v.to_string(), v.get().to_string());
}

fn conditional_writes_write_only_when_their_condition_holds(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("cond"));
    assert!(!c.replace("k", "r").unwrap(), "replace on a missing key");
    assert_eq!(c.get("k").unwrap(), None);
    assert_eq!(c.set_if_version("k", "x", Version::new(1)).unwrap(), None);
    assert_eq!(c.get("k").unwrap(), None);
    assert!(c.add("k", "first").unwrap());
    assert!(!c.add("k", "second").unwrap(), "add on a present key");
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"first"[..]));
    let (_, v) = c.get_versioned("k").unwrap().unwrap();
    c.set("k", "meanwhile").unwrap();
    assert_eq!(c.set_if_version("k", "stale", v).unwrap(), None);
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"meanwhile"[..]));
    let (_, v) = c.get_versioned("k").unwrap().unwrap();
    let w = c.set_if_version("k", "fresh", v).unwrap().unwrap();
    assert!(w > v);
    assert_eq!(
        c.set_if_version("k", "again", v).unwrap(),
        None,
        "used once"
    );
    c.remove("k").unwrap();
    assert_eq!(c.set_if_version("k", "gone", w).unwrap(), None);
    assert!(!c.replace("k", "gone").unwrap());
    assert_eq!(c.get("k").unwrap(), None);
}

fn add_and_replace_with_ttl(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("ttls"));
    assert!(c.add_with_ttl("k", "v", Duration::from_secs(600)).unwrap());
    assert!(matches!(c.ttl("k").unwrap(), upcache::Ttl::Expires(_)));
    assert!(c.replace("k", "w").unwrap());
    assert!(
        matches!(c.ttl("k").unwrap(), upcache::Ttl::Expires(_)),
        "kept"
    );
    c.persist("k").unwrap();
    assert!(c
        .replace_with_ttl("k", "x", Duration::from_secs(5))
        .unwrap());
    assert!(matches!(c.ttl("k").unwrap(), upcache::Ttl::Expires(d) if d <= Duration::from_secs(5)));
    assert!(!c
        .replace_with_ttl("missing", "x", Duration::from_secs(5))
        .unwrap());
    assert_eq!(c.ttl("missing").unwrap(), upcache::Ttl::Missing);
    // A key that expired is missing for add.
    assert!(c
        .add_with_ttl("short", "1", Duration::from_millis(1))
        .unwrap());
    assert!(util::eventually(Duration::from_secs(10), || c
        .add("short", "2")
        .unwrap()));
    assert_eq!(c.get("short").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(c.ttl("short").unwrap(), upcache::Ttl::Forever);
    c.set_many_with_ttl([("a", "1"), ("b", "2")], Duration::from_secs(600))
        .unwrap();
    for k in ["a", "b"] {
        assert!(matches!(c.ttl(k).unwrap(), upcache::Ttl::Expires(_)), "{k}");
    }
    for bad in [Duration::ZERO, Duration::from_secs(u64::MAX / 1000)] {
        assert!(matches!(
            c.add_with_ttl("z", "v", bad),
            Err(Error::InvalidTtl { .. })
        ));
        assert!(matches!(
            c.set_many_with_ttl([("z", "v")], bad),
            Err(Error::InvalidTtl { .. })
        ));
    }
    assert_eq!(c.get("z").unwrap(), None);
}

fn get_many_answers_every_key_in_order(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("getmany"));
    let none: [&str; 0] = [];
    assert_eq!(c.get_many(none).unwrap(), Vec::<Option<Vec<u8>>>::new());
    c.set("a", "1").unwrap();
    c.set("e", "").unwrap();
    let big = vec![7u8; 100_000]; // sent from its segment, not copied
    c.set("big", &big).unwrap();
    let got = c
        .get_many(["a", "missing", "a", "e", "big", "", "a"])
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(b"1".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(Vec::new()),
            Some(big),
            None,
            Some(b"1".to_vec()),
        ]
    );
    // Values a server copies (up to 16 KiB each) until a reply has copied 1 MiB, then sends
    // from their segments: 100 values of 16 KiB come back whole and in order either way.
    let mid: Vec<(String, Vec<u8>)> = (0..100u8)
        .map(|i| (format!("mid{i}"), vec![i; 16 * 1024]))
        .collect();
    c.set_many(mid.iter().map(|(k, v)| (k, v))).unwrap();
    let got = c.get_many(mid.iter().map(|(k, _)| k)).unwrap();
    assert!(got
        .iter()
        .zip(&mid)
        .all(|(g, (_, v))| g.as_ref() == Some(v)));
    // Many keys in one frame.
    let keys: Vec<String> = (0..5000).map(|i| format!("key{i}")).collect();
    c.set_many(keys.iter().step_by(2).map(|k| (k.as_str(), k.as_str())))
        .unwrap();
    let got = c.get_many(&keys).unwrap();
    for (i, (k, v)) in keys.iter().zip(&got).enumerate() {
        assert_eq!(v.as_deref(), (i % 2 == 0).then_some(k.as_bytes()), "{k}");
    }
}

fn set_many_and_remove_many_with_duplicates_and_missing_keys(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("multi"));
    let empty: [(&str, &str); 0] = [];
    c.set_many(empty).unwrap();
    c.set_many([("a", "1"), ("b", "2"), ("a", "3")]).unwrap();
    assert_eq!(
        c.get("a").unwrap().as_deref(),
        Some(&b"3"[..]),
        "later wins"
    );
    assert_eq!(c.count().unwrap(), 2);
    assert_eq!(c.keys().unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
    let none: [&str; 0] = [];
    assert_eq!(c.remove_many(none).unwrap(), 0);
    assert_eq!(c.remove_many(["a", "missing", "a"]).unwrap(), 1);
    assert_eq!(c.get("a").unwrap(), None);
    assert_eq!(c.remove_many(["a", "b", "b"]).unwrap(), 1);
    assert_eq!(c.count().unwrap(), 0);
}

fn multi_writes_are_events_and_wake_waits(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("events"));
    let sub = c.subscribe_all().unwrap();
    c.set_many([("a", "1"), ("b", "2"), ("a", "3")]).unwrap();
    assert!(c.add("c", "4").unwrap());
    assert!(c.replace("c", "5").unwrap());
    let (_, v) = c.get_versioned("c").unwrap().unwrap();
    c.set_if_version("c", "6", v).unwrap().unwrap();
    assert_eq!(c.remove_many(["a", "missing", "a", "c"]).unwrap(), 2);
    c.set("end", "").unwrap();
    let mut got = Vec::new();
    loop {
        let e = sub
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("an event");
        let done = e.key == b"end";
        got.push((e.kind, e.key, e.value));
        if done {
            break;
        }
    }
    let set = |k: &str, v: &str| {
        (
            EventKind::Set,
            k.as_bytes().to_vec(),
            Some(v.as_bytes().to_vec()),
        )
    };
    let removed = |k: &str| (EventKind::Removed, k.as_bytes().to_vec(), None);
    let want = vec![
        set("a", "1"),
        set("b", "2"),
        set("a", "3"),
        set("c", "4"),
        set("c", "5"),
        set("c", "6"),
        removed("a"),
        removed("c"),
        set("end", ""),
    ];
    assert_eq!(got, want);
    // A wait for a value ends at the set_many that stores it.
    let c2 = c.clone();
    let waiter =
        std::thread::spawn(move || c2.wait_for("w", Some(b"yes"), Some(Duration::from_secs(30))));
    assert!(util::eventually(Duration::from_secs(10), || {
        c.stats().unwrap().waits == 1
    }));
    c.set_many([("w", "no"), ("w", "yes")]).unwrap();
    assert!(waiter.join().unwrap().unwrap());
}

fn failed_conditional_writes_are_not_events(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("noevent"));
    c.set("k", "v").unwrap();
    let sub = c.subscribe("k").unwrap();
    assert!(!c.add("k", "x").unwrap());
    assert_eq!(c.set_if_version("k", "x", Version::new(1)).unwrap(), None);
    c.remove("k").unwrap();
    assert!(!c.replace("k", "x").unwrap());
    assert_eq!(c.remove_many(["k"]).unwrap(), 0);
    c.set("k", "last").unwrap();
    // Events arrive in order: the removal, then the last set; nothing from the failed writes.
    let kinds: Vec<_> = (0..2)
        .map(|_| {
            let e = sub.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
            (e.kind, e.value)
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Removed, None),
            (EventKind::Set, Some(b"last".to_vec()))
        ]
    );
}

fn size_limits_are_checked_before_sending(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb
        .builder(&sb.name("limits"))
        .max_value_len(1000)
        .open()
        .unwrap();
    let long_key = vec![b'k'; 70_000];
    assert!(matches!(
        c.get_many([&long_key[..]]),
        Err(Error::KeyTooLarge { .. })
    ));
    // 300 keys of 1 byte pack to 1,500 bytes: over the 1,000-byte value limit.
    let keys: Vec<[u8; 1]> = (0..300u16).map(|i| [i as u8]).collect();
    assert!(matches!(
        c.get_many(&keys),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        c.remove_many(&keys),
        Err(Error::ValueTooLarge { .. })
    ));
    let pairs: Vec<([u8; 1], [u8; 1])> = keys.iter().map(|k| (*k, *k)).collect();
    assert!(matches!(
        c.set_many(pairs),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        c.add("k", vec![0u8; 1001]),
        Err(Error::ValueTooLarge { .. })
    ));
    // The handle is fine and nothing was written.
    assert_eq!(c.count().unwrap(), 0);
    assert_eq!(c.get_many(&keys[..100]).unwrap(), vec![None; 100]);
    // Values within the limit one by one but longer than it together: REPLY_TOO_LARGE (a reply
    // longer than the longest value would cost the client its connection), and the handle
    // goes on.
    c.set("a", vec![1u8; 600]).unwrap();
    c.set("b", vec![2u8; 600]).unwrap();
    assert!(matches!(
        c.get_many(["a", "b"]),
        Err(Error::Server { code, .. }) if code == ErrorCode::ReplyTooLarge
    ));
    assert_eq!(c.get_many(["b"]).unwrap(), vec![Some(vec![2u8; 600])]);
    assert_eq!(c.remove_many(["a", "b"]).unwrap(), 2);
    // At most 65,536 keys in one batch, checked before sending.
    let c = sb.open(&sb.name("batch"));
    let many: Vec<u32> = (0..=MAX_BATCH_KEYS).collect();
    let keys: Vec<[u8; 4]> = many.iter().map(|i| i.to_le_bytes()).collect();
    let too_many = |r: upcache::Result<()>| matches!(r, Err(Error::Server { code, .. }) if code == ErrorCode::BatchTooLarge);
    assert!(too_many(c.get_many(&keys).map(drop)));
    assert!(too_many(c.remove_many(&keys).map(drop)));
    assert!(too_many(c.set_many(keys.iter().map(|k| (k, k)))));
    assert_eq!(c.count().unwrap(), 0);
    let (most, _) = keys.split_at(MAX_BATCH_KEYS as usize);
    c.set_many(most.iter().map(|k| (k, k))).unwrap();
    assert_eq!(c.count().unwrap(), u64::from(MAX_BATCH_KEYS));
    let got = c.get_many(most).unwrap();
    assert!(got
        .iter()
        .zip(most)
        .all(|(v, k)| v.as_deref() == Some(&k[..])));
    assert_eq!(c.remove_many(most).unwrap(), u64::from(MAX_BATCH_KEYS));
}

fn pipelines_carry_multi_key_requests(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("pipe"));
    let replies = c
        .pipeline()
        .set("a", "1")
        .get_many(["a", "b"])
        .set_many([("b", "2")])
        .remove_many(["a", "x", "a"])
        .get_many(["a", "b"])
        .execute()
        .unwrap();
    let shown: Vec<String> = replies.iter().map(|r| format!("{r:?}")).collect();
    assert!(matches!(replies[0], PipelineReply::Done), "{shown:?}");
    assert!(
        matches!(&replies[1], PipelineReply::Values(v) if *v == vec![Some(b"1".to_vec()), None]),
        "{shown:?}"
    );
    assert!(matches!(replies[2], PipelineReply::Done), "{shown:?}");
    assert!(matches!(replies[3], PipelineReply::Count(1)), "{shown:?}");
    assert!(
        matches!(&replies[4], PipelineReply::Values(v) if *v == vec![None, Some(b"2".to_vec())]),
        "{shown:?}"
    );
    // A batch over the limit fails the whole pipeline before anything is sent.
    let long = vec![b'k'; 70_000];
    let e = c
        .pipeline()
        .set("sent?", "no")
        .get_many([&long[..]])
        .execute();
    assert!(matches!(e, Err(Error::KeyTooLarge { .. })), "{e:?}");
    assert_eq!(c.get("sent?").unwrap(), None);
}

fn the_async_client_makes_the_same_calls(t: TransportKind) {
    let sb = Sandbox::new(t);
    let name = sb.name("aio");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = sb.builder(&name).open_async().await.unwrap();
        assert_eq!(c.get_versioned("k").await.unwrap(), None);
        assert!(c.add("k", "1").await.unwrap());
        assert!(!c.add("k", "2").await.unwrap());
        let (v, ver) = c.get_versioned("k").await.unwrap().unwrap();
        assert_eq!(v, b"1");
        let next = c.set_if_version("k", "2", ver).await.unwrap().unwrap();
        assert!(next > ver);
        assert_eq!(c.set_if_version("k", "3", ver).await.unwrap(), None);
        assert!(c.replace("k", "4").await.unwrap());
        assert!(!c.replace("nope", "4").await.unwrap());
        assert!(c
            .add_with_ttl("t", "x", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(c
            .replace_with_ttl("t", "y", Duration::from_secs(60))
            .await
            .unwrap());
        c.set_many([("a", "1"), ("b", "2")]).await.unwrap();
        c.set_many_with_ttl([("c", "3")], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            c.get_many(["a", "b", "c", "k", "t", "none"]).await.unwrap(),
            vec![
                Some(b"1".to_vec()),
                Some(b"2".to_vec()),
                Some(b"3".to_vec()),
                Some(b"4".to_vec()),
                Some(b"y".to_vec()),
                None
            ]
        );
        assert_eq!(c.remove_many(["a", "b", "none"]).await.unwrap(), 2);
        assert!(matches!(
            c.add_with_ttl("z", "v", Duration::ZERO).await,
            Err(Error::InvalidTtl { .. })
        ));
    });
}
