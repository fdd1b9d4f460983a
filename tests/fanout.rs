//! Fan-out at the server's per-connection limits, over real sockets: one connection holding
//! 65,536 waits, another 4,096 subscriptions to one key, a `CLEAR` and 1,000 `SET`s of that
//! key, while a third client reads it. Every wait is woken exactly once, every subscription
//! accounts for every event (delivered, or counted in a `Lagged` push), the reader sees only
//! values that were stored, in order, and the whole run ends within a bound that linear work
//! meets with a wide margin and quadratic work (a search or a `retain` per wait or per event,
//! about 2·10⁹ to 1.6·10¹⁰ steps here) does not. Likewise closing a connection whose 65,536
//! waits share their key with another connection's 65,536: exactly its waits go, at a cost
//! linear in them. The bound is generous (the machine is noisy): it catches an algorithm, not
//! a slowdown.

mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use upcache::protocol::{
    decode_incoming, Decoded, Incoming, Limits, PushKind, Reply, Request, WakeReason, NO_TIMEOUT,
    VERSION,
};
use upcache::transports::{connect, Stream};
use upcache::{ServerInfo, ServerStats, TransportKind as Transport, UpCache};
use util::Sandbox;

each_transport!(
    waits_and_subscriptions_at_the_limits_fan_out_exactly_once,
    closing_a_connection_with_65536_waits_on_a_shared_key_is_linear,
);

/// The server's per-connection limits (`MAX_WAITS_PER_CONN`, `MAX_SUBS_PER_CONN`).
const WAITS: u32 = 65_536;
const SUBS: u32 = 4_096;
const SETS: u32 = 1_000;
/// Generous: a linear server in a debug build takes a few seconds here.
const BOUND: Duration = Duration::from_secs(60);
/// Frames written before their replies are read, when registering.
const BATCH: u32 = 4_096;
const HOT: &[u8] = b"fanout:hot";

/// A raw connection that reads frames from a buffer with a cursor (no copy per frame).
struct Raw {
    s: Stream,
    buf: Vec<u8>,
    at: usize,
}

impl Raw {
    /// Connects and shakes hands (request id 0).
    fn hello(c: &UpCache) -> Raw {
        let s = connect(c.endpoint(), Duration::from_secs(2)).expect("connect");
        // Short reads, so that a stalled server shows as a deadline, not a read error.
        s.set_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut r = Raw {
            s,
            buf: Vec::with_capacity(1 << 17),
            at: 0,
        };
        let token = ServerInfo::read(c.connection_file())
            .expect("connection file")
            .token;
        r.send(&[Request::Hello {
            version: VERSION,
            token: token.as_bytes(),
        }]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = r.next(deadline, |f| match f {
            Incoming::Reply(0, Reply::Uint(v)) => v,
            other => panic!("handshake: {other:?}"),
        });
        assert_eq!(reply, VERSION);
        r
    }

    /// Writes `reqs` in one go, with ids counting up from the id of the first.
    fn send_from(&self, first_id: u32, reqs: &[Request<'_>]) {
        let mut b = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            r.encode(first_id + i as u32, &mut b);
        }
        self.s.write_all(&b).expect("write");
    }

    fn send(&self, reqs: &[Request<'_>]) {
        self.send_from(0, reqs)
    }

    /// Gives the next frame to `f`; panics at end of stream or once `deadline` passes.
    fn next<R>(&mut self, deadline: Instant, f: impl FnOnce(Incoming<'_>) -> R) -> R {
        loop {
            match decode_incoming(&self.buf[self.at..], &Limits::unlimited()).expect("frame") {
                Decoded::Frame(frame, n) => {
                    self.at += n;
                    return f(frame);
                }
                Decoded::Incomplete { .. } => {
                    self.buf.drain(..self.at);
                    self.at = 0;
                    let len = self.buf.len();
                    self.buf.resize(len + (1 << 16), 0);
                    let got = self.s.read(&mut self.buf[len..]);
                    self.buf.truncate(len + *got.as_ref().unwrap_or(&0));
                    match got {
                        Ok(0) => panic!("the server closed the connection"),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => panic!("read: {e}"),
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no frame before the deadline ({BOUND:?} after the work began)"
                    );
                }
            }
        }
    }

    /// Writes `reqs` in batches, ids from 1, and checks each batch's replies with `check`.
    fn register(&mut self, reqs: &[Request<'_>], mut check: impl FnMut(u32, Reply<'_>)) {
        let deadline = Instant::now() + BOUND;
        for (b, batch) in reqs.chunks(BATCH as usize).enumerate() {
            let first = 1 + b as u32 * BATCH;
            self.send_from(first, batch);
            for id in first..first + batch.len() as u32 {
                self.next(deadline, |f| match f {
                    Incoming::Reply(got, r) if got == id => check(id, r),
                    other => panic!("reply {id}: {other:?}"),
                });
            }
        }
    }

    /// Sends a PING (id `id`) and gives every frame before its reply to `f`: everything the
    /// server queued on this connection before it read the PING.
    fn until_ping(&mut self, id: u32, deadline: Instant, mut f: impl FnMut(Incoming<'_>)) {
        self.send_from(id, &[Request::Ping]);
        loop {
            let done = self.next(deadline, |frame| match frame {
                Incoming::Reply(got, Reply::Done) if got == id => true,
                other => {
                    f(other);
                    false
                }
            });
            if done {
                return;
            }
        }
    }

    /// The `waits` counter of the server's STATS (the JSON on the wire).
    fn waits_in_stats(&mut self, id: u32) -> u64 {
        self.send_from(id, &[Request::Stats]);
        self.next(Instant::now() + BOUND, |f| match f {
            Incoming::Reply(got, Reply::Text(json)) if got == id => {
                let stats: ServerStats = serde_json::from_slice(json).expect("stats json");
                stats.waits
            }
            other => panic!("stats: {other:?}"),
        })
    }
}

fn open(sb: &Sandbox, name: &str) -> UpCache {
    // A request may wait behind the work; the bound below is what the test asserts.
    sb.builder(name)
        .request_timeout(Some(BOUND * 2))
        .open()
        .expect("open")
}

fn value(i: u32) -> Vec<u8> {
    format!("{i:08}").into_bytes()
}

/// What one subscription received.
#[derive(Clone, Copy, Debug, Default)]
struct SubTally {
    cleared: u64,
    sets: u64,
    lagged: u64,
    last_set: u32,
}

impl SubTally {
    fn total(&self) -> u64 {
        self.cleared + self.sets + self.lagged
    }

    fn take(&mut self, kind: PushKind, v: &[u8], arg: u64) {
        match kind {
            PushKind::Cleared => {
                assert!(
                    self.cleared == 0 && self.last_set == 0,
                    "CLEARED twice, or after a SET event: {self:?}"
                );
                self.cleared += 1;
            }
            PushKind::Set => {
                let n: u32 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("SET event with a value never stored: {v:?}"));
                assert!(
                    n > self.last_set && n <= SETS,
                    "SET event {n} after {}: out of order or repeated",
                    self.last_set
                );
                self.last_set = n;
                self.sets += 1;
            }
            PushKind::Lagged => {
                assert!(arg > 0, "LAGGED with a count of 0");
                self.lagged += arg;
            }
            other => panic!("unexpected {other:?} push to a subscription"),
        }
    }
}

/// What the other client may see of `HOT` as time goes on: the value before the CLEAR, then
/// nothing, then the values set, in order (it may miss any of these stages, never go back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Before,
    Cleared,
    Set(u32),
}

fn seen(v: Option<Vec<u8>>) -> Seen {
    match v.as_deref() {
        Some(b"before") => Seen::Before,
        None => Seen::Cleared,
        Some(v) => Seen::Set(
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|n| (1..=SETS).contains(n))
                .unwrap_or_else(|| panic!("GET returned a value never stored: {v:?}")),
        ),
    }
}

fn waits_and_subscriptions_at_the_limits_fan_out_exactly_once(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("fanout");
    let c = open(&sb, &name);
    c.set(HOT, b"before").unwrap();

    // 65,536 waits, 64 to a key (so waits share keys), with no timeout.
    let keys: Vec<Vec<u8>> = (0..WAITS / 64)
        .map(|i| format!("wait:{i}").into_bytes())
        .collect();
    let waits: Vec<Request<'_>> = (0..WAITS as usize)
        .map(|i| Request::Wait {
            key: &keys[i % keys.len()],
            value: None,
            timeout_ms: NO_TIMEOUT,
        })
        .collect();
    let mut waiter = Raw::hello(&c);
    waiter.register(&waits, |id, r| assert_eq!(r, Reply::Done, "wait {id}"));

    // 4,096 subscriptions to HOT.
    let mut subscriber = Raw::hello(&c);
    let mut subs: HashMap<u32, usize> = HashMap::new();
    let subscribe = vec![Request::Subscribe { key: Some(HOT) }; SUBS as usize];
    subscriber.register(&subscribe, |id, r| match r {
        Reply::Uint(sub) => {
            let sub = u32::try_from(sub).expect("subscription id fits a push's id");
            assert!(
                subs.insert(sub, id as usize - 1).is_none(),
                "id {sub} twice"
            );
        }
        other => panic!("subscribe {id}: {other:?}"),
    });

    let reader = open(&sb, &name);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let deadline = t0 + BOUND;
    std::thread::scope(|s| {
        // Every wait's WOKEN push, counted by request id, up to a PING after the last one.
        let woken = s.spawn(move || {
            let mut count = vec![0u32; WAITS as usize + 1];
            let mut count_push = |f: Incoming<'_>| match f {
                Incoming::Push(p) if p.kind == PushKind::Woken => {
                    assert!(
                        p.arg != WakeReason::TimedOut as u64
                            && p.arg != WakeReason::Shutdown as u64,
                        "wait {} ended with reason {}, not by the CLEAR",
                        p.id,
                        p.arg
                    );
                    let slot = count
                        .get_mut(p.id as usize)
                        .filter(|_| p.id >= 1)
                        .unwrap_or_else(|| panic!("WOKEN for unknown request {}", p.id));
                    *slot += 1;
                }
                other => panic!("unexpected frame on the waiting connection: {other:?}"),
            };
            for _ in 0..WAITS {
                waiter.next(deadline, &mut count_push);
            }
            waiter.until_ping(WAITS + 1, deadline, &mut count_push);
            count
        });
        // Every subscription's events, read as they come (so that lag stays rare), until each
        // accounts for the CLEAR and every SET; then up to a PING, to catch extra events.
        let events = s.spawn(|| {
            let mut tally = vec![SubTally::default(); SUBS as usize];
            let mut accounted = 0;
            let mut take = |f: Incoming<'_>| -> bool {
                let Incoming::Push(p) = f else {
                    panic!("unexpected frame on the subscribed connection: {f:?}")
                };
                let i = *subs
                    .get(&p.id)
                    .unwrap_or_else(|| panic!("push for unknown subscription {}", p.id));
                let t = &mut tally[i];
                t.take(p.kind, p.value, p.arg);
                assert!(t.total() <= u64::from(SETS) + 1, "too many events: {t:?}");
                t.total() == u64::from(SETS) + 1
            };
            while accounted < SUBS {
                if subscriber.next(deadline, &mut take) {
                    accounted += 1;
                }
            }
            subscriber.until_ping(SUBS + 1, deadline, |f| {
                take(f);
            });
            tally
        });
        // The other client: GETs of HOT all along.
        let getter = s.spawn(|| {
            let (mut last, mut gets) = (Seen::Before, 0u64);
            while !stop.load(Ordering::Acquire) {
                let now = seen(reader.get(HOT).unwrap());
                assert!(now >= last, "GET saw {now:?} after {last:?}");
                assert!(
                    now != Seen::Before || last == Seen::Before,
                    "the old value came back"
                );
                (last, gets) = (now, gets + 1);
            }
            // Sent after the last SET's reply: it must see the last value.
            assert_eq!(
                reader.get(HOT).unwrap(),
                Some(value(SETS)),
                "GET after the last SET"
            );
            gets + 1
        });

        c.clear().unwrap();
        for i in 1..=SETS {
            assert!(
                Instant::now() < deadline,
                "{i} SETs not done within {BOUND:?}"
            );
            c.set(HOT, value(i)).unwrap();
        }
        stop.store(true, Ordering::Release);

        let count = woken.join().expect("waiting connection");
        let missing: Vec<usize> = (1..=WAITS as usize).filter(|&i| count[i] == 0).collect();
        let repeated: Vec<usize> = (1..=WAITS as usize).filter(|&i| count[i] > 1).collect();
        assert!(
            missing.is_empty() && repeated.is_empty(),
            "{} waits never woken (first {:?}), {} woken more than once (first {:?})",
            missing.len(),
            missing.first(),
            repeated.len(),
            repeated.first()
        );
        let tally = events.join().expect("subscribed connection");
        for (i, t) in tally.iter().enumerate() {
            assert_eq!(
                t.total(),
                u64::from(SETS) + 1,
                "subscription {i}: delivered and lagged must add up to the CLEAR and every SET: {t:?}"
            );
        }
        let lagged: u64 = tally.iter().map(|t| t.lagged).sum();
        let gets = getter.join().expect("reading client");
        assert!(gets >= 1);
        eprintln!(
            "{} waits woken, {} subscriptions × {} events ({lagged} reported lagged), {gets} GETs, in {:?}",
            WAITS,
            SUBS,
            SETS + 1,
            t0.elapsed()
        );
    });
    let took = t0.elapsed();
    assert!(
        took < BOUND,
        "a CLEAR waking {WAITS} waits and {SETS} SETs fanned out to {SUBS} subscriptions took {took:?}: more than linear work"
    );
}

fn closing_a_connection_with_65536_waits_on_a_shared_key_is_linear(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("fanout-close");
    let c = open(&sb, &name);
    // Two connections with 65,536 waits each, all on one key: the key's list holds 131,072.
    let waits = vec![
        Request::Wait {
            key: HOT,
            value: None,
            timeout_ms: NO_TIMEOUT,
        };
        WAITS as usize
    ];
    let mut closing = Raw::hello(&c);
    closing.register(&waits, |id, r| assert_eq!(r, Reply::Done, "wait {id}"));
    let mut staying = Raw::hello(&c);
    staying.register(&waits, |id, r| assert_eq!(r, Reply::Done, "wait {id}"));
    let mut observer = Raw::hello(&c);
    assert_eq!(observer.waits_in_stats(1), 2 * u64::from(WAITS));

    let t0 = Instant::now();
    drop(closing);
    // The server sees the close when it next reads that socket; other connections are not
    // ordered with it, so ask until its waits are gone (each answer is a real request).
    let mut id = 2;
    loop {
        let left = observer.waits_in_stats(id);
        assert!(
            left >= u64::from(WAITS),
            "{left} waits left: the close removed waits of another connection"
        );
        if left == u64::from(WAITS) {
            break;
        }
        assert!(
            t0.elapsed() < BOUND,
            "the closed connection's waits are still registered"
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    // The other connection's waits on that key are all still there: one SET wakes each once.
    c.set(HOT, b"after").unwrap();
    let deadline = t0 + BOUND;
    let mut count = vec![0u32; WAITS as usize + 1];
    let mut count_push = |f: Incoming<'_>| match f {
        Incoming::Push(p) if p.kind == PushKind::Woken && (1..=WAITS).contains(&p.id) => {
            assert_eq!(
                p.arg,
                WakeReason::Event as u64,
                "wait {} woken by the SET",
                p.id
            );
            count[p.id as usize] += 1;
        }
        other => panic!("unexpected frame on the staying connection: {other:?}"),
    };
    for _ in 0..WAITS {
        staying.next(deadline, &mut count_push);
    }
    staying.until_ping(WAITS + 1, deadline, &mut count_push);
    let wrong = (1..=WAITS as usize).filter(|&i| count[i] != 1).count();
    assert_eq!(wrong, 0, "{wrong} waits not woken exactly once");
    assert_eq!(observer.waits_in_stats(id + 1), 0);
    let took = t0.elapsed();
    assert!(
        took < BOUND,
        "closing a connection with {WAITS} waits on a key shared with {WAITS} others took {took:?}: more than linear work"
    );
}
