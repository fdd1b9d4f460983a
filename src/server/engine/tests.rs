//! The engine with a mock socket and synthetic time: timers, backpressure with edge-triggered
//! readiness, fan-out order and cost.

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::{decode_incoming, Batch, Incoming, Reply, Request, VERSION};
use crate::server::mock::{pair, MockSocket, Peer};

const TOKEN: &[u8] = b"test-token";

fn engine(now: Instant, high_water: usize, low_water: usize) -> Engine<MockSocket> {
    let mut config = EngineConfig::new(
        true,
        Duration::from_secs(1),
        Limits::default(),
        TOKEN.into(),
    );
    config.high_water = high_water;
    config.low_water = low_water;
    Engine::new(config, Store::default(), now)
}

/// An engine whose store has a memory budget of `budget` bytes (S3-FIFO, fixed hash seeds), the
/// output marks at their defaults.
fn budgeted_engine(now: Instant, budget: u64) -> Engine<MockSocket> {
    let config = EngineConfig::new(
        true,
        Duration::from_secs(1),
        Limits::default(),
        TOKEN.into(),
    );
    let store = Store::with_budget(
        ahash::RandomState::with_seeds(1, 2, 3, 4),
        Store::segment_for(budget),
        budget,
        crate::store::Policy::S3Fifo,
    );
    Engine::new(config, store, now)
}

/// The key of fill `SET` number `i` ([`encode_fills`]).
fn fill_key(i: u32) -> String {
    format!("fill{i:06}")
}

/// Encodes the fill `SET`s numbered `range`: key [`fill_key`], 100 bytes of value, request id
/// 10 + the number (enough of them to push a budgeted engine into evicting).
fn encode_fills(out: &mut Vec<u8>, range: std::ops::Range<u32>) {
    for i in range {
        Request::Set {
            key: fill_key(i).as_bytes(),
            value: &[b'v'; 100],
        }
        .encode(10 + i, out);
    }
}

/// A decoded frame from the server, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Reply(u32, String),
    Push(PushKind, u32, u64),
}

/// Reads everything the peer has been sent into `buf`, then decodes the whole frames in it.
fn take_frames(peer: &Peer, buf: &mut Vec<u8>, max_read: usize) -> Vec<Frame> {
    buf.extend(peer.read(max_read));
    let mut frames = Vec::new();
    let mut at = 0;
    while let Ok(crate::protocol::Decoded::Frame(f, n)) =
        decode_incoming(&buf[at..], &Limits::unlimited())
    {
        frames.push(match f {
            Incoming::Reply(id, Reply::Value(v)) => Frame::Reply(id, format!("value {}", v.len())),
            Incoming::Reply(id, r) => Frame::Reply(id, format!("{r:?}")),
            Incoming::Push(p) => Frame::Push(p.kind, p.id, p.arg),
        });
        at += n;
    }
    buf.drain(..at);
    frames
}

fn request(id: u32, r: Request<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    r.encode(id, &mut b);
    b
}

/// A connection past its handshake, its send buffer holding `capacity` bytes.
fn connect(e: &mut Engine<MockSocket>, now: Instant, capacity: usize) -> (usize, Peer) {
    let (sock, peer) = pair(capacity);
    let slot = e.accept(sock, now);
    peer.send(&request(
        1,
        Request::Hello {
            version: VERSION,
            token: TOKEN,
        },
    ));
    peer.pump(e, slot, now);
    let mut buf = Vec::new();
    let got = take_frames(&peer, &mut buf, usize::MAX);
    assert_eq!(
        got,
        [Frame::Reply(1, format!("{:?}", Reply::Uint(VERSION)))]
    );
    (slot, peer)
}

#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (sock, _peer) = pair(1 << 16);
    e.accept(sock, t0);
    assert_eq!(e.next_deadline(), Some(t0 + HANDSHAKE_TIMEOUT));
    e.tick(t0 + HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(e.connections(), 1);
    e.tick(t0 + HANDSHAKE_TIMEOUT);
    assert_eq!(e.connections(), 0);
}

#[test]
fn a_ready_connection_outlives_the_handshake_deadline() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    connect(&mut e, t0, 1 << 16);
    e.tick(t0 + HANDSHAKE_TIMEOUT * 2);
    assert_eq!(e.connections(), 1);
}

#[test]
fn a_wrong_token_is_answered_with_its_id_then_closed() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (sock, peer) = pair(1 << 16);
    let slot = e.accept(sock, t0);
    peer.send(&request(
        9,
        Request::Hello {
            version: VERSION + 1,
            token: b"nope",
        },
    ));
    peer.pump(&mut e, slot, t0);
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0], Frame::Reply(9, s) if s.contains("Unauthorized")),
        "{got:?}"
    );
    assert_eq!(e.connections(), 0, "closed once its reply was sent");
}

#[test]
fn an_erring_connection_that_takes_no_reply_is_closed_at_the_close_deadline() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    // The handshake reply (24 bytes) fills the send buffer, so the error reply stays queued.
    let (slot, peer) = {
        let (sock, peer) = pair(24);
        let slot = e.accept(sock, t0);
        peer.send(&request(
            1,
            Request::Hello {
                version: VERSION,
                token: TOKEN,
            },
        ));
        peer.pump(&mut e, slot, t0);
        (slot, peer)
    };
    let t1 = t0 + Duration::from_secs(1);
    peer.send(b"garbage that is not a frame at all");
    peer.pump(&mut e, slot, t1);
    assert!(e.pending_output(slot).unwrap() > 0);
    e.tick(t1 + CLOSE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(e.connections(), 1);
    e.tick(t1 + CLOSE_TIMEOUT);
    assert_eq!(e.connections(), 0);
    assert_eq!(e.stats(t0).protocol_errors, 1);
}

/// `n` pipelined GETs of a `len`-byte value, sent at once; the peer reads nothing until the
/// server has paused, then reads `chunk` bytes at a time, with only the edges a real poller
/// would report. Every reply must arrive.
fn pipelined_gets_read_late(
    n: u32,
    len: usize,
    capacity: usize,
    chunk: usize,
    marks: (usize, usize),
) {
    let t0 = Instant::now();
    let mut e = engine(t0, marks.0, marks.1);
    let (slot, peer) = connect(&mut e, t0, capacity);
    peer.send(&request(
        2,
        Request::Set {
            key: b"k",
            value: &vec![7u8; len],
        },
    ));
    let mut batch = Vec::new();
    for id in 0..n {
        Request::Get { key: b"k" }.encode(100 + id, &mut batch);
    }
    peer.send(&batch);
    peer.pump(&mut e, slot, t0);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in 0..(n as usize * (len + 64) / chunk + 1000) {
        got.extend(take_frames(&peer, &mut buf, chunk));
        peer.pump(&mut e, slot, t0);
        if got.len() == n as usize + 1 {
            break;
        }
    }
    assert_eq!(got.len(), n as usize + 1, "every request got its reply");
    assert_eq!(got[0], Frame::Reply(2, "Done".into()));
    for (i, f) in got[1..].iter().enumerate() {
        assert_eq!(*f, Frame::Reply(100 + i as u32, format!("value {len}")));
    }
    assert_eq!(peer.unread(), 0);
    assert_eq!(e.pending_output(slot), Some(0));
}

#[test]
fn pipelined_large_gets_read_late_all_get_replies() {
    pipelined_gets_read_late(500, 64 << 10, 256 << 10, 64 << 10, (HIGH_WATER, LOW_WATER));
}

#[test]
fn pipelined_huge_gets_read_late_all_get_replies() {
    pipelined_gets_read_late(40, 1 << 20, 256 << 10, 100_000, (HIGH_WATER, LOW_WATER));
}

#[test]
fn a_pause_that_ends_in_the_write_after_a_read_resumes() {
    // The send buffer takes everything at once, so no write ever stops at WouldBlock and no
    // writable edge ever comes: the pause must end in the write that follows the read.
    pipelined_gets_read_late(300, 1000, 1 << 30, 1 << 30, (4000, 1000));
    // Tiny marks, small reads: many pauses, some ending on writable edges.
    pipelined_gets_read_late(300, 1000, 3000, 777, (4000, 1000));
}

#[test]
fn woken_follows_the_reply_of_the_set_that_woke_it_and_clear_has_its_own_reason() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (slot, peer) = connect(&mut e, t0, 1 << 20);
    let mut out = Vec::new();
    for (id, r) in [
        (
            2,
            Request::Wait {
                key: b"k",
                value: None,
                timeout_ms: 60_000,
            },
        ),
        (
            3,
            Request::Set {
                key: b"k",
                value: b"v",
            },
        ),
        (
            4,
            Request::Wait {
                key: b"k",
                value: Some(b"never"),
                timeout_ms: 60_000,
            },
        ),
        (5, Request::Clear),
    ] {
        r.encode(id, &mut out);
    }
    peer.send(&out);
    peer.pump(&mut e, slot, t0);
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    let woken = |id, reason: WakeReason| Frame::Push(PushKind::Woken, id, reason as u64);
    assert_eq!(
        got,
        [
            Frame::Reply(2, "Done".into()),
            Frame::Reply(3, "Done".into()),
            woken(2, WakeReason::Event),
            Frame::Reply(4, "Done".into()),
            Frame::Reply(5, "Done".into()),
            woken(4, WakeReason::Cleared),
        ]
    );
}

#[test]
fn a_wait_times_out_on_synthetic_time() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (slot, peer) = connect(&mut e, t0, 1 << 20);
    peer.send(&request(
        2,
        Request::Wait {
            key: b"k",
            value: None,
            timeout_ms: 250,
        },
    ));
    peer.pump(&mut e, slot, t0);
    assert_eq!(e.next_deadline(), Some(t0 + Duration::from_millis(250)));
    e.tick(t0 + Duration::from_millis(249));
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    assert_eq!(got, [Frame::Reply(2, "Done".into())]);
    e.tick(t0 + Duration::from_millis(250));
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    assert_eq!(
        got,
        [Frame::Push(PushKind::Woken, 2, WakeReason::TimedOut as u64)]
    );
}

#[test]
fn the_most_waits_on_one_key_are_woken_by_one_clear_and_released_by_one_close() {
    let t0 = Instant::now();
    let mut e = engine(t0, usize::MAX, 1);
    let (a, peer_a) = connect(&mut e, t0, usize::MAX);
    let (b, peer_b) = connect(&mut e, t0, usize::MAX);
    let mut out = Vec::new();
    for id in 0..MAX_WAITS_PER_CONN as u32 {
        Request::Wait {
            key: b"k",
            value: None,
            timeout_ms: 60_000,
        }
        .encode(id + 10, &mut out);
    }
    Request::Wait {
        key: b"k",
        value: None,
        timeout_ms: 60_000,
    }
    .encode(5, &mut out);
    peer_a.send(&out);
    peer_a.pump(&mut e, a, t0);
    let got = take_frames(&peer_a, &mut Vec::new(), usize::MAX);
    assert_eq!(got.len(), MAX_WAITS_PER_CONN + 1);
    assert!(matches!(&got[MAX_WAITS_PER_CONN], Frame::Reply(5, s) if s.contains("Busy")));
    assert_eq!(e.hub.wait_count(), MAX_WAITS_PER_CONN);
    peer_b.send(&request(2, Request::Clear));
    peer_b.pump(&mut e, b, t0);
    let mut woken: Vec<u32> = take_frames(&peer_a, &mut Vec::new(), usize::MAX)
        .into_iter()
        .map(|f| match f {
            Frame::Push(PushKind::Woken, id, r) if r == WakeReason::Cleared as u64 => id,
            other => panic!("{other:?}"),
        })
        .collect();
    woken.sort_unstable();
    assert_eq!(
        woken,
        (10..10 + MAX_WAITS_PER_CONN as u32).collect::<Vec<_>>()
    );
    assert_eq!(e.hub.wait_count(), 0);
    // Register them again and close: every one is released.
    peer_a.send(&out);
    peer_a.pump(&mut e, a, t0);
    assert_eq!(e.hub.wait_count(), MAX_WAITS_PER_CONN);
    e.close(a, t0);
    assert_eq!(e.hub.wait_count(), 0);
    assert!(e.hub.is_idle());
}

#[test]
fn events_reach_every_subscription_and_lag_is_reported_after_a_drain() {
    let t0 = Instant::now();
    let mut e = engine(t0, usize::MAX, 1);
    let (a, peer_a) = connect(&mut e, t0, 1 << 30);
    let (b, peer_b) = connect(&mut e, t0, 1 << 30);
    let mut out = Vec::new();
    for id in 0..MAX_SUBS_PER_CONN as u32 {
        Request::Subscribe { key: Some(b"k") }.encode(id + 10, &mut out);
    }
    peer_a.send(&out);
    peer_a.pump(&mut e, a, t0);
    assert_eq!(
        take_frames(&peer_a, &mut Vec::new(), usize::MAX).len(),
        MAX_SUBS_PER_CONN
    );
    let mut sets = Vec::new();
    for id in 0..10 {
        Request::Set {
            key: b"k",
            value: b"v",
        }
        .encode(id, &mut sets);
    }
    peer_b.send(&sets);
    peer_b.pump(&mut e, b, t0);
    let got = take_frames(&peer_a, &mut Vec::new(), usize::MAX);
    assert_eq!(got.len(), 10 * MAX_SUBS_PER_CONN);
    assert!(got
        .iter()
        .all(|f| matches!(f, Frame::Push(PushKind::Set, _, 0))));
    assert_eq!(e.stats(t0).events, 10 * MAX_SUBS_PER_CONN as u64);
}

#[test]
fn a_client_that_keeps_its_socket_full_cannot_keep_the_loop_from_others() {
    let t0 = Instant::now();
    let mut e = engine(t0, usize::MAX, 1);
    let (a, peer_a) = connect(&mut e, t0, usize::MAX);
    let (b, peer_b) = connect(&mut e, t0, usize::MAX);
    // More than a turn's reads of pipelined requests.
    let mut flood = Vec::new();
    while flood.len() < (crate::server::conn_io::READS_PER_TURN + 4) * (64 << 10) {
        Request::Exists { key: b"k" }.encode(7, &mut flood);
    }
    peer_a.send(&flood);
    peer_b.send(&request(2, Request::Ping));
    // One turn of the loop: both are readable.
    e.read_event(a, t0, false);
    assert!(peer_a.unsent() > 0, "a's turn ended before its input did");
    e.read_event(b, t0, false);
    assert_eq!(
        take_frames(&peer_b, &mut Vec::new(), usize::MAX),
        [Frame::Reply(2, "Done".into())]
    );
    assert!(e.has_parked());
    assert!(e.next_deadline().is_some_and(|d| d <= t0));
    // The next turns go on with a, with no new event.
    for _ in 0..10 {
        e.tick(t0);
    }
    assert_eq!(peer_a.unsent(), 0);
    let n = take_frames(&peer_a, &mut Vec::new(), usize::MAX).len();
    assert_eq!(
        n,
        flood.len() / request(7, Request::Exists { key: b"k" }).len()
    );
}

#[test]
fn a_run_of_gets_answers_each_as_a_single_get_would() {
    // Output marks far away, and so close that the connection pauses inside every run.
    gets_answer_as_single_gets(HIGH_WATER, LOW_WATER);
    gets_answer_as_single_gets(100, 50);
}

/// One window holding hits (copied), values over `COPY_MAX` (sent in place, each ending a
/// segment of the run), a miss, a due key, and a SET between GETs: the replies, in order, and
/// the counters must be those of each GET served alone.
fn gets_answer_as_single_gets(high_water: usize, low_water: usize) {
    let t0 = Instant::now();
    let mut e = engine(t0, high_water, low_water);
    let (slot, peer) = connect(&mut e, t0, 1 << 24);
    let long = vec![9u8; COPY_MAX + 1];
    let mut setup = Vec::new();
    Request::Set {
        key: b"a",
        value: b"short",
    }
    .encode(2, &mut setup);
    Request::Set {
        key: b"b",
        value: &long,
    }
    .encode(3, &mut setup);
    Request::SetTtl {
        key: b"d",
        value: b"soon",
        ttl_ms: 1,
    }
    .encode(4, &mut setup);
    peer.send(&setup);
    peer.pump(&mut e, slot, t0);
    assert_eq!(take_frames(&peer, &mut Vec::new(), usize::MAX).len(), 3);
    let before = e.stats(t0);

    let mut batch = Vec::new();
    for (id, key) in [
        (10, "a"),
        (11, "c"),
        (12, "b"),
        (13, "b"),
        (14, "a"),
        (15, "d"),
    ] {
        Request::Get {
            key: key.as_bytes(),
        }
        .encode(id, &mut batch);
    }
    Request::Set {
        key: b"c",
        value: b"new",
    }
    .encode(16, &mut batch);
    for (id, key) in [(17, "c"), (18, "b"), (19, "a")] {
        Request::Get {
            key: key.as_bytes(),
        }
        .encode(id, &mut batch);
    }
    let t1 = t0 + Duration::from_millis(5);
    peer.send(&batch);
    let mut bytes = Vec::new();
    let mut got = Vec::new();
    for _ in 0..100 {
        peer.pump(&mut e, slot, t1);
        bytes.extend(peer.read(usize::MAX));
        let mut at = 0;
        while let Ok(crate::protocol::Decoded::Frame(f, n)) =
            decode_incoming(&bytes[at..], &Limits::unlimited())
        {
            got.push(match f {
                Incoming::Reply(id, Reply::Value(v)) => (id, Some(v.to_vec())),
                Incoming::Reply(id, Reply::Nil) => (id, None),
                Incoming::Reply(id, Reply::Done) => (id, Some(b"DONE".to_vec())),
                other => panic!("unexpected frame {other:?}"),
            });
            at += n;
        }
        bytes.drain(..at);
        if got.len() == 10 {
            break;
        }
    }
    assert!(bytes.is_empty(), "only whole frames");
    let short = Some(b"short".to_vec());
    assert_eq!(
        got,
        [
            (10, short.clone()),
            (11, None),
            (12, Some(long.clone())),
            (13, Some(long.clone())),
            (14, short.clone()),
            (15, None),
            (16, Some(b"DONE".to_vec())),
            (17, Some(b"new".to_vec())),
            (18, Some(long)),
            (19, short),
        ]
    );
    let after = e.stats(t1);
    assert_eq!(after.requests - before.requests, 10);
    assert_eq!(after.gets - before.gets, 9);
    assert_eq!(after.hits - before.hits, 7);
    assert_eq!(after.misses - before.misses, 2);
    assert_eq!(e.pending_output(slot), Some(0));
}

#[test]
fn a_run_of_sets_with_nobody_listening_answers_each_as_a_single_set_would() {
    // Under a budget, with nobody subscribed: SETs that evict, one whose value the budget
    // cannot hold (its error in its place, the run going on after it), and GETs after them.
    let t0 = Instant::now();
    let budget = 256 << 10;
    let mut e = budgeted_engine(t0, budget);
    let (slot, peer) = connect(&mut e, t0, 1 << 30);
    let mut out = Vec::new();
    encode_fills(&mut out, 0..2_001);
    Request::Set {
        key: b"huge",
        value: &vec![0; budget as usize],
    }
    .encode(9, &mut out);
    encode_fills(&mut out, 2_001..4_000);
    Request::Get {
        key: fill_key(3_999).as_bytes(),
    }
    .encode(5, &mut out);
    Request::Get { key: b"huge" }.encode(6, &mut out);
    peer.send(&out);
    peer.pump(&mut e, slot, t0);
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    assert_eq!(got.len(), 4_003, "one reply per request, no pushes");
    let ids: Vec<u32> = got
        .iter()
        .map(|f| match f {
            Frame::Reply(id, _) => *id,
            Frame::Push(..) => panic!("nobody listens: {f:?}"),
        })
        .collect();
    let mut want: Vec<u32> = (10..10 + 4_000).collect();
    want.insert(2_001, 9);
    want.extend([5, 6]);
    assert_eq!(ids, want, "in request order");
    assert!(
        matches!(&got[2_001], Frame::Reply(9, r) if r.contains("OverBudget")),
        "{:?}",
        got[2_001]
    );
    assert_eq!(got[4_001], Frame::Reply(5, "value 100".into()));
    assert_eq!(got[4_002], Frame::Reply(6, "Nil".into()));
    let stats = e.stats(t0);
    assert!(stats.evicted > 100, "{stats:?}");
    assert_eq!(stats.keys + stats.evicted, 4_000);
    assert!(stats.memory_bytes <= budget + (16 << 10), "{stats:?}");
}

#[test]
fn a_peer_that_closes_its_side_after_pipelining_gets_every_reply() {
    let t0 = Instant::now();
    let mut e = engine(t0, 4096, 1024);
    let (slot, peer) = connect(&mut e, t0, 512);
    let mut batch = Vec::new();
    for id in 0..200 {
        Request::Set {
            key: b"k",
            value: &[b'v'; 100],
        }
        .encode(id, &mut batch);
        Request::Get { key: b"k" }.encode(1000 + id, &mut batch);
    }
    peer.send(&batch);
    peer.close();
    peer.pump(&mut e, slot, t0);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        got.extend(take_frames(&peer, &mut buf, 300));
        peer.pump(&mut e, slot, t0);
        if e.connections() == 0 && peer.unread() == 0 {
            break;
        }
    }
    got.extend(take_frames(&peer, &mut buf, usize::MAX));
    assert_eq!(got.len(), 400, "every request was answered");
    assert_eq!(got[399], Frame::Reply(1199, "value 100".into()));
    assert_eq!(e.connections(), 0, "closed once its replies were written");
    assert_eq!(e.stats(t0).protocol_errors, 0);
}

#[test]
fn events_past_the_output_limit_are_dropped_counted_and_reported_as_lagged() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    // The subscriber's socket takes 64 KiB and its peer does not read for now.
    let (a, peer_a) = connect(&mut e, t0, 64 << 10);
    let (b, peer_b) = connect(&mut e, t0, 1 << 20);
    peer_a.send(&request(2, Request::Subscribe { key: Some(b"k") }));
    peer_a.pump(&mut e, a, t0);
    let value = vec![b'v'; 256 << 10];
    let sets = 80; // 20 MiB of events: more than SUB_OUT_LIMIT
    for id in 0..sets {
        peer_b.send(&request(
            id,
            Request::Set {
                key: b"k",
                value: &value,
            },
        ));
        peer_b.pump(&mut e, b, t0);
        take_frames(&peer_b, &mut Vec::new(), usize::MAX);
    }
    assert!(e.stats(t0).events_dropped > 0);
    let mut buf = Vec::new();
    let (mut events, mut lagged) = (0u64, 0u64);
    for _ in 0..100_000 {
        for f in take_frames(&peer_a, &mut buf, 1 << 20) {
            match f {
                Frame::Push(PushKind::Set, 1, 0) => events += 1,
                Frame::Push(PushKind::Lagged, 1, n) => lagged += n,
                Frame::Reply(2, _) => {}
                other => panic!("{other:?}"),
            }
        }
        peer_a.pump(&mut e, a, t0);
        if events + lagged == sets as u64 {
            break;
        }
    }
    assert!(lagged > 0);
    assert_eq!(
        events + lagged,
        sets as u64,
        "every event delivered or counted"
    );
    assert_eq!(lagged, e.stats(t0).events_dropped);
}

#[test]
fn a_key_expires_at_its_millisecond_on_synthetic_time_and_not_before() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (a, peer_a) = connect(&mut e, t0, 1 << 20);
    let (b, peer_b) = connect(&mut e, t0, 1 << 20);
    peer_b.send(&request(2, Request::Subscribe { key: None }));
    peer_b.pump(&mut e, b, t0);
    take_frames(&peer_b, &mut Vec::new(), usize::MAX);
    peer_a.send(&request(
        3,
        Request::SetTtl {
            key: b"k",
            value: b"v",
            ttl_ms: 100,
        },
    ));
    peer_a.pump(&mut e, a, t0);
    assert_eq!(
        take_frames(&peer_a, &mut Vec::new(), usize::MAX),
        [Frame::Reply(3, "Done".into())]
    );
    take_frames(&peer_b, &mut Vec::new(), usize::MAX);
    assert!(e
        .next_deadline()
        .is_some_and(|d| d <= t0 + Duration::from_millis(100)));
    let t99 = t0 + Duration::from_millis(99);
    e.tick(t99);
    peer_a.send(&request(4, Request::Get { key: b"k" }));
    peer_a.pump(&mut e, a, t99);
    assert_eq!(
        take_frames(&peer_a, &mut Vec::new(), usize::MAX),
        [Frame::Reply(4, "value 1".into())]
    );
    assert!(take_frames(&peer_b, &mut Vec::new(), usize::MAX).is_empty());
    let t100 = t0 + Duration::from_millis(100);
    e.tick(t100);
    assert_eq!(
        take_frames(&peer_b, &mut Vec::new(), usize::MAX),
        [Frame::Push(PushKind::Expired, 1, 0)]
    );
    peer_a.send(&request(5, Request::Get { key: b"k" }));
    peer_a.pump(&mut e, a, t100);
    assert_eq!(
        take_frames(&peer_a, &mut Vec::new(), usize::MAX),
        [Frame::Reply(5, "Nil".into())]
    );
    assert_eq!(e.stats(t0).expired, 1);
}

#[test]
fn a_due_key_is_never_read_and_a_write_to_it_follows_its_expired_event() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (a, peer) = connect(&mut e, t0, 1 << 20);
    let mut out = Vec::new();
    Request::Subscribe { key: Some(b"k") }.encode(2, &mut out);
    Request::SetTtl {
        key: b"k",
        value: b"old",
        ttl_ms: 50,
    }
    .encode(3, &mut out);
    peer.send(&out);
    peer.pump(&mut e, a, t0);
    take_frames(&peer, &mut Vec::new(), usize::MAX);
    // Requests that arrive at the deadline, before any tick: the key is gone for them.
    let t50 = t0 + Duration::from_millis(50);
    let mut out = Vec::new();
    Request::Exists { key: b"k" }.encode(4, &mut out);
    Request::Ttl { key: b"k" }.encode(5, &mut out);
    Request::Set {
        key: b"k",
        value: b"new",
    }
    .encode(6, &mut out);
    Request::Ttl { key: b"k" }.encode(7, &mut out);
    peer.send(&out);
    peer.pump(&mut e, a, t50);
    assert_eq!(
        take_frames(&peer, &mut Vec::new(), usize::MAX),
        [
            Frame::Reply(4, "Bool(false)".into()),
            Frame::Reply(5, "Nil".into()),
            Frame::Reply(6, "Done".into()),
            Frame::Push(PushKind::Expired, 1, 0),
            Frame::Push(PushKind::Set, 1, 0),
            Frame::Reply(7, format!("{:?}", Reply::Uint(crate::protocol::NO_TTL))),
        ]
    );
}

#[test]
fn a_mass_expiry_is_spread_over_turns() {
    let t0 = Instant::now();
    let mut e = engine(t0, usize::MAX, 1);
    let (a, peer) = connect(&mut e, t0, usize::MAX);
    let n = 3 * super::super::expiry::EXPIRE_PER_TURN + 5;
    let mut out = Vec::new();
    for i in 0..n {
        Request::SetTtl {
            key: format!("k{i}").as_bytes(),
            value: b"v",
            ttl_ms: 10,
        }
        .encode(1, &mut out);
    }
    peer.send(&out);
    peer.pump(&mut e, a, t0);
    let t10 = t0 + Duration::from_millis(10);
    let mut turns = 0;
    while !e.store.is_empty() {
        e.tick(t10);
        turns += 1;
        assert!(turns <= 4, "every turn expires its share");
        if !e.store.is_empty() {
            assert!(
                e.next_deadline().is_some_and(|d| d <= t10),
                "the next turn comes at once"
            );
        }
    }
    assert_eq!(turns, 4);
    assert_eq!(e.stats(t0).expired, n as u64);
}

#[test]
fn conditional_and_multi_writes_to_a_due_key_expire_it_first() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (a, peer) = connect(&mut e, t0, 1 << 20);
    let mut out = Vec::new();
    Request::Subscribe { key: None }.encode(2, &mut out);
    for (i, k) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
        Request::SetTtl {
            key: k,
            value: b"old",
            ttl_ms: 50,
        }
        .encode(3 + i as u32, &mut out);
    }
    peer.send(&out);
    peer.pump(&mut e, a, t0);
    take_frames(&peer, &mut Vec::new(), usize::MAX);
    let version_before = e.store().next_version();
    // At the deadline, before any tick: to ADD the key is missing (its EXPIRED first, as the
    // reply depends on it), REPLACE finds nothing, SET_MANY replies first and then expires
    // and stores.
    let t50 = t0 + Duration::from_millis(50);
    let mut out = Vec::new();
    Request::Add {
        key: b"a",
        value: b"new",
        ttl_ms: 0,
    }
    .encode(10, &mut out);
    Request::Replace {
        key: b"b",
        value: b"new",
        ttl_ms: 0,
    }
    .encode(11, &mut out);
    let mut body = Vec::new();
    let pairs = Batch::pack(&mut body, true, [(&b"c"[..], Some(&b"new"[..]))]);
    Request::SetMany { pairs, ttl_ms: 0 }.encode(12, &mut out);
    peer.send(&out);
    peer.pump(&mut e, a, t50);
    let v = version_before;
    assert_eq!(
        take_frames(&peer, &mut Vec::new(), usize::MAX),
        [
            Frame::Push(PushKind::Expired, 1, 0),
            Frame::Reply(10, format!("{:?}", Reply::Version(v))),
            Frame::Push(PushKind::Set, 1, 0),
            Frame::Push(PushKind::Expired, 1, 0),
            Frame::Reply(11, "Nil".into()),
            Frame::Reply(12, "Done".into()),
            Frame::Push(PushKind::Expired, 1, 0),
            Frame::Push(PushKind::Set, 1, 0),
        ]
    );
    let s = e.store();
    assert_eq!((s.len(), s.ttl_keys(), s.next_version()), (2, 0, v + 2));
}

/// Every frame the peer was sent, with a lease push's value: `(code, id, value)`.
fn lease_frames(peer: &Peer) -> Vec<String> {
    let buf = peer.read(usize::MAX);
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(crate::protocol::Decoded::Frame(f, n)) =
        decode_incoming(&buf[at..], &Limits::unlimited())
    {
        out.push(match f {
            Incoming::Reply(id, Reply::Value(v)) => {
                format!("{id} value {}", String::from_utf8_lossy(v))
            }
            Incoming::Reply(id, r) => format!("{id} {r:?}"),
            Incoming::Push(p) => {
                format!("{:?} {} {}", p.kind, p.id, String::from_utf8_lossy(p.value))
            }
        });
        at += n;
    }
    assert_eq!(at, buf.len(), "only whole frames");
    out
}

fn get_or_lease(
    peer: &Peer,
    e: &mut Engine<MockSocket>,
    slot: usize,
    id: u32,
    ms: u64,
    now: Instant,
) {
    peer.send(&request(
        id,
        Request::GetOrLease {
            key: b"k",
            timeout_ms: ms,
        },
    ));
    peer.pump(e, slot, now);
}

/// Three connections ask for missing key `k`: the first holds the lease, the others wait.
fn leased_with_two_waiters(e: &mut Engine<MockSocket>, now: Instant) -> [(usize, Peer); 3] {
    let conns = [
        connect(e, now, 1 << 20),
        connect(e, now, 1 << 20),
        connect(e, now, 1 << 20),
    ];
    for (i, (slot, peer)) in conns.iter().enumerate() {
        get_or_lease(peer, e, *slot, 10 + i as u32, 60_000, now);
    }
    assert_eq!(lease_frames(&conns[0].1), ["10 Leased"]);
    assert_eq!(lease_frames(&conns[1].1), ["11 Waiting"]);
    assert_eq!(lease_frames(&conns[2].1), ["12 Waiting"]);
    let s = e.stats(now);
    assert_eq!((s.leases, s.lease_waiters), (1, 2));
    conns
}

#[test]
fn a_release_passes_the_lease_to_the_first_waiter_and_a_store_serves_the_rest() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let [(a, pa), (b, pb), (_, pc)] = leased_with_two_waiters(&mut e, t0);
    // A release naming another request of the holder's connection changes nothing.
    pa.send(&request(20, Request::Release { key: b"k", req: 99 }));
    pa.send(&request(21, Request::Release { key: b"k", req: 10 }));
    pa.pump(&mut e, a, t0);
    assert_eq!(lease_frames(&pa), ["20 Bool(false)", "21 Bool(true)"]);
    assert_eq!(lease_frames(&pb), ["LeaseGranted 11 "]);
    assert!(lease_frames(&pc).is_empty());
    assert_eq!(e.stats(t0).lease_handoffs, 1);
    pb.send(&request(
        30,
        Request::Set {
            key: b"k",
            value: b"v1",
        },
    ));
    pb.pump(&mut e, b, t0);
    assert_eq!(lease_frames(&pb), ["30 Done"]);
    assert_eq!(lease_frames(&pc), ["LeaseValue 12 v1"]);
    let s = e.stats(t0);
    assert_eq!((s.leases, s.lease_waiters), (0, 0));
    // Present now: the value at once.
    get_or_lease(&pa, &mut e, a, 40, 60_000, t0);
    assert_eq!(lease_frames(&pa), ["40 value v1"]);
}

#[test]
fn the_holders_close_passes_the_lease_on_at_once() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let [(a, pa), (_, pb), (c, pc)] = leased_with_two_waiters(&mut e, t0);
    pa.close();
    pa.pump(&mut e, a, t0);
    assert_eq!(lease_frames(&pb), ["LeaseGranted 11 "]);
    assert!(lease_frames(&pc).is_empty());
    // Anyone's write serves the waiters, here an increment by a waiter's own connection.
    pc.send(&request(
        31,
        Request::Incr {
            key: b"k",
            delta: 5,
        },
    ));
    pc.pump(&mut e, c, t0);
    assert_eq!(lease_frames(&pc), ["31 Int(5)", "LeaseValue 12 5"]);
    assert!(lease_frames(&pb).is_empty(), "the holder gets no push");
    assert_eq!(e.stats(t0).leases, 0);
}

#[test]
fn a_lease_past_its_timeout_passes_on_with_the_next_holders_timeout() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (a, pa) = connect(&mut e, t0, 1 << 20);
    let (b, pb) = connect(&mut e, t0, 1 << 20);
    get_or_lease(&pa, &mut e, a, 10, 100, t0);
    get_or_lease(&pb, &mut e, b, 11, 50, t0);
    assert_eq!(lease_frames(&pa), ["10 Leased"]);
    assert_eq!(lease_frames(&pb), ["11 Waiting"]);
    assert_eq!(e.next_deadline(), Some(t0 + Duration::from_millis(100)));
    e.tick(t0 + Duration::from_millis(99));
    assert!(lease_frames(&pb).is_empty());
    let t1 = t0 + Duration::from_millis(100);
    e.tick(t1);
    assert_eq!(lease_frames(&pb), ["LeaseGranted 11 "]);
    assert_eq!(e.next_deadline(), Some(t1 + Duration::from_millis(50)));
    // The old holder no longer holds it.
    pa.send(&request(20, Request::Release { key: b"k", req: 10 }));
    pa.pump(&mut e, a, t1);
    assert_eq!(lease_frames(&pa), ["20 Bool(false)"]);
    e.tick(t1 + Duration::from_millis(50));
    assert_eq!(e.stats(t1).leases, 0, "no waiter left: the lease ends");
    assert_eq!(
        e.next_deadline(),
        Some(t0 + HANDSHAKE_TIMEOUT),
        "only the (spent) handshake timers are left"
    );
}

#[test]
fn a_waiter_that_disconnects_is_skipped() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let [(a, pa), (b, pb), (_, pc)] = leased_with_two_waiters(&mut e, t0);
    pb.close();
    pb.pump(&mut e, b, t0);
    assert_eq!(e.stats(t0).lease_waiters, 1);
    pa.send(&request(21, Request::Release { key: b"k", req: 10 }));
    pa.pump(&mut e, a, t0);
    assert_eq!(lease_frames(&pa), ["21 Bool(true)"]);
    assert_eq!(lease_frames(&pc), ["LeaseGranted 12 "]);
}

#[test]
fn a_second_request_of_the_holders_connection_waits_and_remove_or_clear_leave_leases_alone() {
    let t0 = Instant::now();
    let mut e = engine(t0, HIGH_WATER, LOW_WATER);
    let (a, pa) = connect(&mut e, t0, 1 << 20);
    get_or_lease(&pa, &mut e, a, 10, 60_000, t0);
    get_or_lease(&pa, &mut e, a, 11, 60_000, t0);
    pa.send(&request(12, Request::Remove { key: b"k" }));
    pa.send(&request(13, Request::Clear));
    pa.send(&request(14, Request::Release { key: b"k", req: 10 }));
    pa.pump(&mut e, a, t0);
    assert_eq!(
        lease_frames(&pa),
        [
            "10 Leased",
            "11 Waiting",
            "12 Bool(false)",
            "13 Done",
            "14 Bool(true)",
            "LeaseGranted 11 "
        ]
    );
}

#[test]
fn an_eviction_follows_the_reply_of_the_set_that_caused_it_and_over_budget_evicts_nothing() {
    let t0 = Instant::now();
    let budget = 256 << 10;
    let mut e = budgeted_engine(t0, budget);
    let (a, peer) = connect(&mut e, t0, 1 << 30);
    let mut out = Vec::new();
    Request::Subscribe {
        key: Some(b"victim"),
    }
    .encode(2, &mut out);
    Request::Set {
        key: b"victim",
        value: b"never read",
    }
    .encode(3, &mut out);
    encode_fills(&mut out, 0..4_000);
    peer.send(&out);
    peer.pump(&mut e, a, t0);
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    let at = got
        .iter()
        .position(|f| matches!(f, Frame::Push(PushKind::Evicted, _, 0)))
        .expect("the unread key is evicted");
    // Right after the reply of the SET whose write evicted it, and only once.
    assert!(
        matches!(got[at - 1], Frame::Reply(id, _) if id >= 10),
        "{:?}",
        &got[at - 1]
    );
    assert_eq!(
        got.iter()
            .filter(|f| matches!(f, Frame::Push(PushKind::Evicted, _, _)))
            .count(),
        1
    );
    let before = e.stats(t0);
    assert!(before.evicted > 100, "{before:?}");
    assert_eq!(before.keys + before.evicted, 4_001);
    assert!(before.memory_bytes <= budget + (16 << 10), "{before:?}");
    // A value over half the budget: an error, nothing stored or evicted, and the connection
    // goes on.
    let big = vec![0u8; budget as usize / 2];
    let mut out = Vec::new();
    Request::Set {
        key: b"big",
        value: &big,
    }
    .encode(9_000, &mut out);
    Request::Ping.encode(9_001, &mut out);
    peer.send(&out);
    peer.pump(&mut e, a, t0);
    let got = take_frames(&peer, &mut Vec::new(), usize::MAX);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        matches!(&got[0], Frame::Reply(9_000, r) if r.contains("OverBudget")),
        "{got:?}"
    );
    assert_eq!(got[1], Frame::Reply(9_001, format!("{:?}", Reply::Done)));
    let after = e.stats(t0);
    assert_eq!((after.keys, after.evicted), (before.keys, before.evicted));
}
