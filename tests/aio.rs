//! The async client (`upcache::aio`, cargo feature `tokio`) through a real server process and
//! real sockets, over both transports: every operation, many tasks on one connection,
//! cancellation at every await point, subscriptions as streams, and what happens when the
//! server or the runtime goes away.
#![cfg(feature = "tokio")]

mod util;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use upcache::{aio, Error, EventKind, PipelineReply, TransportKind};
use util::Sandbox;

/// Generates one `#[test]` per transport for each `async fn name(t: TransportKind)`, run on a
/// multi-thread runtime (two workers) with a deadline, so a lost reply fails instead of hanging.
macro_rules! each_transport_async {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $( #[test] fn $name() { super::run(super::$name(upcache::TransportKind::Tcp)) } )*
        }
        mod unix {
            $( #[test] fn $name() { super::run(super::$name(upcache::TransportKind::Unix)) } )*
        }
    };
}

each_transport_async!(
    every_operation,
    streams_read_many_chunks_in_order,
    cancelled_requests_never_misroute_replies,
    a_thousand_tasks_share_one_connection,
    subscription_is_a_stream_of_events,
    cancelled_subscribes_are_unsubscribed,
    waits_and_cancelled_waits,
    server_gone_fails_calls_and_ends_streams,
    stuck_server_times_out_instead_of_hanging,
    large_values_wait_for_room_in_the_write_queue,
    writes_larger_than_the_socket_buffer_stay_in_order,
    ttls_expire_and_are_seen_as_events,
);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run(test: impl Future<Output = ()>) {
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("the test finished in time (no lost reply)")
    })
}

async fn open(sb: &Sandbox, tag: &str) -> aio::UpCache {
    sb.builder(&sb.name(tag))
        .open_async()
        .await
        .expect("open_async")
}

/// The next item of a stream, through the `Stream` trait itself.
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// xorshift64*: a small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Polls `fut` at most `polls` times and then drops it: `None` if it had not finished, so the
/// future is cancelled at exactly that await point (0: never polled at all).
struct PollLimit<F> {
    fut: Pin<Box<F>>,
    polls: usize,
}

impl<F: Future> Future for PollLimit<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if self.polls == 0 => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn limit<F: Future>(fut: F, polls: usize) -> PollLimit<F> {
    PollLimit {
        fut: Box::pin(fut),
        polls,
    }
}

async fn every_operation(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "ops").await;
    assert_eq!(c.get(b"k").await.unwrap(), None);
    c.set(b"k", b"v").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    c.set(b"", b"").await.unwrap();
    assert_eq!(c.get(b"").await.unwrap(), Some(Vec::new()));
    assert!(c.exists(b"k").await.unwrap());
    assert!(c.remove(b"k").await.unwrap());
    assert!(!c.remove(b"k").await.unwrap());
    assert!(!c.exists(b"k").await.unwrap());

    assert_eq!(c.incr(b"n").await.unwrap(), 1);
    assert_eq!(c.incr_by(b"n", 41).await.unwrap(), 42);
    assert_eq!(c.decr(b"n").await.unwrap(), 41);
    assert_eq!(c.get(b"n").await.unwrap().as_deref(), Some(&b"41"[..]));
    c.set(b"word", b"forty").await.unwrap();
    assert!(matches!(c.incr(b"word").await, Err(Error::NotAnInteger)));
    c.set(b"max", i64::MAX.to_string()).await.unwrap();
    assert!(matches!(c.incr(b"max").await, Err(Error::Overflow)));
    assert_eq!(
        c.get(b"max").await.unwrap(),
        Some(i64::MAX.to_string().into_bytes())
    );

    // Limits are checked before anything is sent.
    let long = vec![b'k'; 64 * 1024 + 1];
    assert!(matches!(c.get(&long).await, Err(Error::KeyTooLarge { .. })));

    assert_eq!(c.count().await.unwrap(), 4);
    assert_eq!(
        c.keys().await.unwrap(),
        vec![
            b"".to_vec(),
            b"n".to_vec(),
            b"word".to_vec(),
            b"max".to_vec()
        ]
    );
    let items = c.items().await.unwrap();
    assert_eq!(items[1], (b"n".to_vec(), b"41".to_vec()));
    assert_eq!(items.len(), 4);

    let replies = c
        .pipeline()
        .set(b"p", b"1")
        .get(b"p")
        .incr(b"p")
        .exists(b"p")
        .incr(b"word")
        .remove(b"p")
        .count()
        .execute()
        .await
        .unwrap();
    assert!(matches!(replies[0], PipelineReply::Done));
    assert!(matches!(&replies[1], PipelineReply::Value(Some(v)) if v == b"1"));
    assert!(matches!(replies[2], PipelineReply::Int(2)));
    assert!(matches!(replies[3], PipelineReply::Bool(true)));
    assert!(matches!(
        replies[4],
        PipelineReply::Failed(Error::NotAnInteger)
    ));
    assert!(matches!(replies[5], PipelineReply::Bool(true)));
    assert!(matches!(replies[6], PipelineReply::Count(4)));
    let mut p = c.pipeline();
    p.get(b"n").set(&long, b"x");
    assert!(matches!(p.execute().await, Err(Error::KeyTooLarge { .. })));
    assert!(p.is_empty());

    let s = c.stats().await.unwrap();
    assert_eq!(s.keys, 4);
    assert_eq!(s.protocol_errors, 0);
    c.clear().await.unwrap();
    assert_eq!(c.count().await.unwrap(), 0);

    // A blocking handle of the same cache sees what the async one wrote, and back.
    c.set(b"from async", b"1").await.unwrap();
    let name = c.name().to_owned();
    let b = sb.builder(&name);
    let seen = tokio::task::spawn_blocking(move || {
        let b = b.open().unwrap();
        b.set(b"from blocking", b"2").unwrap();
        b.get(b"from async").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(seen.as_deref(), Some(&b"1"[..]));
    assert_eq!(
        c.get(b"from blocking").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert!(c.connection_file().exists());
    assert_eq!(c.endpoint().kind(), t);
    c.close().await;
}

async fn streams_read_many_chunks_in_order(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "chunks").await;
    // More than one chunk of 4096 keys.
    let n = 10_000;
    let mut p = c.pipeline();
    for i in 0..n {
        p.set(format!("key {i}"), format!("value {i}"));
    }
    assert_eq!(p.execute().await.unwrap().len(), n);
    let mut keys = c.keys_stream();
    let mut i = 0;
    while let Some(k) = next(&mut keys).await {
        assert_eq!(k.unwrap(), format!("key {i}").into_bytes());
        i += 1;
    }
    assert_eq!(i, n);
    assert!(next(&mut keys).await.is_none(), "ended streams stay ended");
    let mut items = c.items_stream();
    let mut i = 0;
    while let Some(kv) = items.next_item().await {
        let (k, v) = kv.unwrap();
        assert_eq!(
            (k, v),
            (
                format!("key {i}").into_bytes(),
                format!("value {i}").into_bytes()
            )
        );
        i += 1;
    }
    assert_eq!(i, n);
    assert_eq!(c.keys().await.unwrap().len(), n);
}

fn value(i: usize) -> Vec<u8> {
    // Lengths differ from key to key, so a reply routed to the wrong request shows.
    format!("value {i};").repeat(1 + i % 13).into_bytes()
}

async fn cancelled_requests_never_misroute_replies(t: TransportKind) {
    const KEYS: usize = 500;
    const TASKS: u64 = 64;
    const ROUNDS: usize = 200;
    let sb = Sandbox::new(t);
    let c = open(&sb, "cancel").await;
    let mut p = c.pipeline();
    for i in 0..KEYS {
        p.set(format!("key {i}"), value(i));
    }
    p.execute().await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let c = c.clone();
        tasks.spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (task + 1));
            let (mut completed, mut cancelled) = (0u64, 0u64);
            for _ in 0..ROUNDS {
                let i = rng.below(KEYS);
                let j = rng.below(KEYS);
                // Cancel after 0, 1 or 2 polls, by a timer of a few microseconds (a random
                // point, including after the reply came but before it was read), or never.
                let polls = [0, 1, 2, usize::MAX][rng.below(4)];
                let micros = rng.below(300) as u64;
                let by_timer = rng.below(3) == 0;
                match rng.below(4) {
                    0 | 1 => {
                        let fut = c.get(format!("key {i}"));
                        let r = if by_timer {
                            tokio::time::timeout(Duration::from_micros(micros), fut)
                                .await
                                .ok()
                        } else {
                            limit(fut, polls).await
                        };
                        match r {
                            Some(v) => {
                                assert_eq!(v.unwrap(), Some(value(i)), "get of key {i}");
                                completed += 1;
                            }
                            None => cancelled += 1,
                        }
                    }
                    2 => {
                        let fut = async {
                            let mut p = c.pipeline();
                            p.get(format!("key {i}"))
                                .exists(b"nothing")
                                .get(format!("key {j}"));
                            p.execute().await
                        };
                        match limit(fut, polls).await {
                            Some(r) => {
                                let r = r.unwrap();
                                assert!(
                                    matches!(&r[0], PipelineReply::Value(Some(v)) if *v == value(i))
                                );
                                assert!(matches!(r[1], PipelineReply::Bool(false)));
                                assert!(
                                    matches!(&r[2], PipelineReply::Value(Some(v)) if *v == value(j))
                                );
                                completed += 1;
                            }
                            None => cancelled += 1,
                        }
                    }
                    _ => {
                        // A write to a key nobody reads, cancelled or not; then a read of it.
                        let key = format!("task {task}");
                        let _ = limit(c.set(&key, b"written"), polls).await;
                        let fut = c.incr_by(format!("counter {task}"), 0);
                        match limit(fut, polls).await {
                            Some(r) => {
                                assert_eq!(r.unwrap(), 0);
                                completed += 1;
                            }
                            None => cancelled += 1,
                        }
                    }
                }
            }
            (completed, cancelled)
        });
    }
    let (mut completed, mut cancelled) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (a, b) = r.expect("task");
        completed += a;
        cancelled += b;
    }
    assert!(completed > 0, "some requests completed");
    assert!(
        cancelled > 0,
        "some requests were cancelled after being sent"
    );
    // The connection is still in step: every key reads back right, one by one and all at once.
    for i in 0..KEYS {
        assert_eq!(c.get(format!("key {i}")).await.unwrap(), Some(value(i)));
    }
    let mut all = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let c = c.clone();
        all.spawn(async move { (i, c.get(format!("key {i}")).await.unwrap()) });
    }
    while let Some(r) = all.join_next().await {
        let (i, v) = r.unwrap();
        assert_eq!(v, Some(value(i)));
    }
    let s = c.stats().await.unwrap();
    assert_eq!(s.protocol_errors, 0);
    assert_eq!(s.accepted, 1, "one connection served every task");
}

async fn a_thousand_tasks_share_one_connection(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "tasks").await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000usize {
        let (c, barrier) = (c.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let key = format!("task {i}");
            c.set(&key, value(i)).await.unwrap();
            assert_eq!(c.get(&key).await.unwrap(), Some(value(i)));
            assert!(c.incr(b"total").await.unwrap() >= 1);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    assert_eq!(
        c.get(b"total").await.unwrap().as_deref(),
        Some(&b"1000"[..])
    );
    let s = c.stats().await.unwrap();
    assert_eq!(s.accepted, 1);
    assert_eq!(s.connections, 1);
    assert_eq!(s.keys, 1001);
}

async fn subscription_is_a_stream_of_events(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "subs").await;
    let mut one = c.subscribe(b"watched").await.unwrap();
    let mut all = c.subscribe_all().await.unwrap();
    assert_eq!(one.try_recv().unwrap(), None);
    // Another handle (its own connections) makes the changes.
    let other = sb
        .builder(c.name())
        .open_async()
        .await
        .expect("second handle");
    for v in ["1", "2", "3"] {
        other.set(b"watched", v).await.unwrap();
    }
    other.set(b"elsewhere", b"x").await.unwrap();
    other.remove(b"watched").await.unwrap();
    other.clear().await.unwrap();
    for v in ["1", "2", "3"] {
        let e = next(&mut one).await.expect("event");
        assert_eq!(
            (e.key.as_slice(), e.kind, e.value.as_deref()),
            (&b"watched"[..], EventKind::Set, Some(v.as_bytes()))
        );
    }
    let e = one.recv().await.unwrap();
    assert_eq!(
        (e.key.as_slice(), e.kind),
        (&b"watched"[..], EventKind::Removed)
    );
    assert_eq!(one.recv().await.unwrap().kind, EventKind::Cleared);
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let e = all.recv().await.unwrap();
        kinds.push((String::from_utf8(e.key).unwrap(), e.kind));
    }
    assert_eq!(
        kinds,
        [
            ("watched".into(), EventKind::Set),
            ("watched".into(), EventKind::Set),
            ("watched".into(), EventKind::Set),
            ("elsewhere".into(), EventKind::Set),
            ("watched".into(), EventKind::Removed),
            (String::new(), EventKind::Cleared),
        ]
    );
    // A dropped subscription unsubscribes: once a wait sent after the unsubscribe on the same
    // (event) connection has its answer, the server has applied it.
    drop(one);
    assert!(!c
        .wait_for(b"watched", None, Some(Duration::ZERO))
        .await
        .unwrap());
    assert_eq!(other.stats().await.unwrap().subscriptions, 1);
    other.set(b"watched", b"4").await.unwrap();
    assert_eq!(all.recv().await.unwrap().value.as_deref(), Some(&b"4"[..]));
}

async fn cancelled_subscribes_are_unsubscribed(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "cancel-sub").await;
    let _live = c.subscribe(b"k").await.unwrap();
    let mut cancelled = 0;
    for i in 0..200 {
        // Polled once (sent, reply not read) or twice, then dropped.
        if limit(c.subscribe(format!("k{i}")), 1 + i % 2)
            .await
            .is_none()
        {
            cancelled += 1;
        }
    }
    assert!(cancelled > 0);
    // Every subscribe reply routed before this one's queued its unsubscribe, and this wait is
    // sent after them on the same connection: once it answers, the server has applied them.
    let mut sub = c.subscribe(b"probe").await.unwrap();
    assert!(!c
        .wait_for(b"probe", None, Some(Duration::ZERO))
        .await
        .unwrap());
    assert_eq!(c.stats().await.unwrap().subscriptions, 2);
    c.set(b"probe", b"p").await.unwrap();
    assert_eq!(sub.recv().await.unwrap().value.as_deref(), Some(&b"p"[..]));
}

async fn waits_and_cancelled_waits(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "waits").await;
    // A wait for a value, satisfied by another task.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.wait_for(b"ready", Some(b"yes"), None).await })
    };
    // Cancelled waits on the same connection, at once and after being sent.
    for polls in [0, 1, 1, 1] {
        assert!(limit(
            c.wait_for(b"ready", Some(b"yes"), Some(Duration::from_secs(60))),
            polls
        )
        .await
        .is_none());
    }
    // Registered before this set (woken by it) or after (the key already holds the value):
    // true either way.
    c.set(b"ready", b"yes").await.unwrap();
    assert!(waiter.await.unwrap().unwrap());
    assert!(c
        .wait_for(b"ready", Some(b"yes"), Some(Duration::ZERO))
        .await
        .unwrap());
    assert!(!c
        .wait_for(b"ready", Some(b"never"), Some(Duration::from_millis(20)))
        .await
        .unwrap());
    // A wait for a change, woken by a change made after it was registered (which this task
    // cannot see: it changes the key until the wait returns).
    let change = {
        let c = c.clone();
        tokio::spawn(async move { c.wait_for(b"k", None, Some(Duration::from_secs(30))).await })
    };
    while !change.is_finished() {
        c.incr(b"k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(change.await.unwrap().unwrap());
}

async fn server_gone_fails_calls_and_ends_streams(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = sb
        .builder(&sb.name("gone"))
        .auto_kill(false)
        .open_async()
        .await
        .unwrap();
    let mut sub = c.subscribe_all().await.unwrap();
    c.set(b"k", b"before").await.unwrap();
    c.shutdown_server().await.unwrap();
    // Events queued before the end are still delivered, then the stream ends.
    let e = next(&mut sub).await.expect("queued event");
    assert_eq!(e.value.as_deref(), Some(&b"before"[..]));
    assert!(next(&mut sub).await.is_none());
    assert!(matches!(sub.recv().await, Err(Error::ServerGone { .. })));
    // Every later call fails at once, never hangs.
    let mut gone = false;
    for _ in 0..1000 {
        match c.get(b"k").await {
            Err(Error::ServerGone { .. }) => {
                gone = true;
                break;
            }
            // The server's reply to a get sent before it closed.
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(gone);
    assert!(matches!(
        c.wait_for(b"k", None, None).await,
        Err(Error::ServerGone { .. })
    ));
}

async fn stuck_server_times_out_instead_of_hanging(t: TransportKind) {
    let sb = Sandbox::new(t);
    let timeout = Duration::from_millis(300);
    let c = sb
        .builder(&sb.name("stuck"))
        .request_timeout(Some(timeout))
        .open_async()
        .await
        .unwrap();
    c.set(b"k", b"v").await.unwrap();
    let pid = util::server_pid(c.connection_file());
    util::kill(pid, libc::SIGSTOP);
    let t0 = std::time::Instant::now();
    let e = c.get(b"k").await.unwrap_err();
    let took = t0.elapsed();
    util::kill(pid, libc::SIGCONT);
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(took >= timeout, "never before the timeout: {took:?}");
    assert!(
        matches!(c.count().await, Err(Error::Timeout { .. })),
        "the handle stays closed"
    );
    // The server itself is fine: a new handle works.
    let d = sb.builder(c.name()).open_async().await.unwrap();
    assert_eq!(d.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

async fn large_values_wait_for_room_in_the_write_queue(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "large").await;
    // Each value is over the write queue's 4 MiB mark: all but the first wait for the writer.
    let big = |i: usize| vec![b'a' + i as u8; (6 << 20) + i];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4 {
        let c = c.clone();
        tasks.spawn(async move { c.set(format!("big {i}"), big(i)).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    for i in 0..4 {
        assert_eq!(c.get(format!("big {i}")).await.unwrap(), Some(big(i)));
    }
}

async fn writes_larger_than_the_socket_buffer_stay_in_order(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "medium").await;
    // 64 tasks queue 200 KB sets at once: a caller that writes the queue itself (16 of them,
    // over 3 MB) fills the socket's buffer and leaves the rest to the writer task, in order.
    let medium = |i: usize| {
        let mut v = format!("value {i} ").repeat(20_000).into_bytes();
        v.truncate(200_000 + i);
        v
    };
    for round in 0..3 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let c = c.clone();
            tasks.spawn(async move { c.set(format!("m {round} {i}"), medium(i)).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
    }
    for round in 0..3 {
        for i in 0..64 {
            let v = c.get(format!("m {round} {i}")).await.unwrap();
            assert!(v == Some(medium(i)), "value {round} {i}");
        }
    }
    assert_eq!(c.stats().await.unwrap().protocol_errors, 0);
}

/// Opening runs the election on the blocking pool: it works on a current-thread runtime too.
#[tokio::test(flavor = "current_thread")]
async fn opens_and_runs_on_a_current_thread_runtime() {
    let sb = Sandbox::new(TransportKind::Tcp);
    let c = open(&sb, "current").await;
    c.set(b"k", b"v").await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let c = c.clone();
        set.spawn(async move { c.incr(b"n").await.map(|n| (i, n)) });
    }
    let mut seen = Vec::new();
    while let Some(r) = set.join_next().await {
        seen.push(r.unwrap().unwrap().1);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).collect::<Vec<i64>>());
}

/// When the runtime that opened a handle shuts down, its tasks are gone: calls from another
/// runtime fail with `ServerGone` instead of waiting for ever.
#[test]
fn calls_fail_once_the_opening_runtime_is_gone() {
    let sb = Sandbox::new(TransportKind::Unix);
    let first = runtime();
    let c = first.block_on(async {
        let c = open(&sb, "runtime").await;
        c.set(b"k", b"v").await.unwrap();
        c
    });
    drop(first);
    let r = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(30), c.get(b"k"))
            .await
            .expect("no hang")
    });
    assert!(matches!(r, Err(Error::ServerGone { .. })), "{r:?}");
}

async fn ttls_expire_and_are_seen_as_events(t: TransportKind) {
    let sb = Sandbox::new(t);
    let c = open(&sb, "ttl").await;
    let hour = Duration::from_secs(3600);
    c.set_with_ttl(b"k", b"v", hour).await.unwrap();
    assert!(matches!(c.ttl(b"k").await.unwrap(), upcache::Ttl::Expires(d) if d > hour / 2));
    assert!(c.persist(b"k").await.unwrap());
    assert_eq!(c.ttl(b"k").await.unwrap(), upcache::Ttl::Forever);
    assert!(!c.expire(b"missing", hour).await.unwrap());
    assert!(matches!(
        c.set_with_ttl(b"x", b"y", Duration::ZERO).await,
        Err(Error::InvalidTtl { .. })
    ));
    let mut sub = c.subscribe(b"k").await.unwrap();
    assert!(c.expire(b"k", Duration::from_millis(50)).await.unwrap());
    let e = std::future::poll_fn(|cx| Pin::new(&mut sub).poll_next(cx))
        .await
        .unwrap();
    assert_eq!((e.kind, e.key.as_slice()), (EventKind::Expired, &b"k"[..]));
    assert_eq!(c.get(b"k").await.unwrap(), None);
    let replies = c
        .pipeline()
        .set_with_ttl(b"p", b"1", hour)
        .ttl(b"p")
        .ttl(b"none")
        .execute()
        .await
        .unwrap();
    assert!(matches!(replies[0], PipelineReply::Done));
    assert!(matches!(
        replies[1],
        PipelineReply::Ttl(upcache::Ttl::Expires(_))
    ));
    assert!(matches!(
        replies[2],
        PipelineReply::Ttl(upcache::Ttl::Missing)
    ));
}
