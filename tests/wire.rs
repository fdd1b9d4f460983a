//! The server on the wire, spoken to in raw bytes over both transports: handshakes, hostile
//! frames, pipelining, pushes, and that one client's bad input never hurts another.

mod util;

use std::time::{Duration, Instant};

use upcache::protocol::{
    self, decode_incoming, encode_header, Decoded, ErrorCode, FrameKind, Header, Incoming, Limits,
    PushKind, Reply, Request, VERSION,
};
use upcache::transports::{connect, Stream};
use upcache::{Transport, UpCache};
use util::{rss_kib, server_pid, Sandbox};

each_transport!(
    wrong_token_is_refused_and_closed,
    requests_before_the_handshake_are_refused,
    garbage_gets_an_error_then_close_and_others_go_on,
    oversized_frames_fail_from_the_header_without_buffering,
    truncated_frame_then_disconnect_leaves_the_server_fine,
    unknown_opcode_is_an_error_and_the_connection_goes_on,
    half_sent_frame_never_delays_another_client,
    pipelined_frames_get_replies_in_order,
    pushes_are_distinct_frames,
    a_client_that_never_reads_cannot_grow_server_memory,
);

/// A raw connection with a read buffer.
struct Raw {
    s: Stream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(c: &UpCache) -> Raw {
        let s = connect(c.endpoint(), Duration::from_secs(2)).unwrap();
        s.set_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { s, buf: Vec::new() }
    }

    fn hello(c: &UpCache) -> Raw {
        let mut r = Raw::connect(c);
        let token = token(c);
        r.send(
            &Request::Hello {
                version: VERSION,
                token: token.as_bytes(),
            },
            1,
        );
        assert_eq!(
            r.recv(),
            Some(owned(Incoming::Reply(1, Reply::Uint(VERSION))))
        );
        r
    }

    fn send(&mut self, req: &Request<'_>, id: u32) {
        let mut b = Vec::new();
        req.encode(id, &mut b);
        self.s.write_all(&b).unwrap();
    }

    /// The next frame, or None at end of stream.
    fn recv(&mut self) -> Option<Owned> {
        loop {
            match decode_incoming(&self.buf, &Limits::unlimited()).unwrap() {
                Decoded::Frame(f, n) => {
                    let o = owned(f);
                    self.buf.drain(..n);
                    return Some(o);
                }
                Decoded::Incomplete { .. } => {
                    let mut chunk = [0u8; 65536];
                    match self.s.read(&mut chunk) {
                        Ok(0) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
        }
    }

    fn expect_error_then_close(&mut self, code: ErrorCode) {
        match self.recv() {
            Some(Owned::Error(c)) => assert_eq!(c, code),
            other => panic!("expected error {code:?}, got {other:?}"),
        }
        assert_eq!(self.recv(), None, "the server closes the connection");
    }
}

/// Frames, owned, for comparisons.
#[derive(Debug, PartialEq)]
enum Owned {
    Reply(u32, String),
    Error(ErrorCode),
    Push(PushKind, u32, Vec<u8>, Vec<u8>),
}

fn owned(f: Incoming<'_>) -> Owned {
    match f {
        Incoming::Reply(_, Reply::Error { code, .. }) => Owned::Error(code),
        Incoming::Reply(id, r) => Owned::Reply(id, format!("{r:?}")),
        Incoming::Push(p) => Owned::Push(p.kind, p.id, p.key.to_vec(), p.value.to_vec()),
    }
}

fn token(c: &UpCache) -> String {
    upcache::ServerInfo::read(c.connection_file())
        .unwrap()
        .token
}

fn assert_healthy(c: &UpCache) {
    c.set(b"health", b"ok").unwrap();
    assert_eq!(c.get(b"health").unwrap().as_deref(), Some(&b"ok"[..]));
}

fn wrong_token_is_refused_and_closed(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("token"));
    let mut r = Raw::connect(&c);
    r.send(
        &Request::Hello {
            version: VERSION,
            token: b"0123456789abcdef0123456789abcdef",
        },
        1,
    );
    r.expect_error_then_close(ErrorCode::Unauthorized);
    let mut r = Raw::connect(&c);
    r.send(
        &Request::Hello {
            version: VERSION + 1,
            token: token(&c).as_bytes(),
        },
        1,
    );
    r.expect_error_then_close(ErrorCode::VersionMismatch);
    assert_healthy(&c);
}

fn requests_before_the_handshake_are_refused(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("nohello"));
    c.set(b"secret", b"x").unwrap();
    let mut r = Raw::connect(&c);
    r.send(&Request::Get { key: b"secret" }, 1);
    r.expect_error_then_close(ErrorCode::Unauthorized);
    assert_healthy(&c);
}

fn garbage_gets_an_error_then_close_and_others_go_on(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("garbage"));
    c.set(b"keep", b"me").unwrap();
    for junk in [
        &b"GET keep\r\n"[..],
        b"\x00\x01\x02\x03",
        b"UC\x09\x00\x00\x00\x00\x00",
    ] {
        let mut r = Raw::hello(&c);
        r.s.write_all(junk).unwrap();
        r.expect_error_then_close(ErrorCode::BadFrame);
    }
    // A frame with fields that do not fit its opcode (a value on a get).
    let mut r = Raw::hello(&c);
    let mut b = Vec::new();
    encode_header(
        &mut b,
        &Header {
            kind: 1,
            code: protocol::Op::Get as u8,
            id: 2,
            key_len: 1,
            value_len: 1,
            arg: 0,
        },
    );
    b.extend_from_slice(b"kv");
    r.s.write_all(&b).unwrap();
    r.expect_error_then_close(ErrorCode::BadFrame);
    assert_eq!(
        c.get(b"keep").unwrap().as_deref(),
        Some(&b"me"[..]),
        "nothing stored was lost"
    );
    assert_healthy(&c);
}

fn oversized_frames_fail_from_the_header_without_buffering(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("huge"));
    let pid = server_pid(c.connection_file());
    let before = rss_kib(pid);
    for (key_len, value_len, code) in [
        (64 * 1024 + 1, 0, ErrorCode::KeyTooLarge),
        (1, u32::MAX, ErrorCode::ValueTooLarge),
        (1, 64 * 1024 * 1024 + 1, ErrorCode::ValueTooLarge),
    ] {
        let mut r = Raw::hello(&c);
        let mut b = Vec::new();
        let h = Header {
            kind: FrameKind::Request as u8,
            code: protocol::Op::Set as u8,
            id: 9,
            key_len,
            value_len,
            arg: 0,
        };
        encode_header(&mut b, &h);
        b.extend(std::iter::repeat_n(b'x', 1000));
        r.s.write_all(&b).unwrap();
        r.expect_error_then_close(code);
    }
    // Many connections announce frames at the limit but send only a little of them.
    let mut raws: Vec<Raw> = (0..20)
        .map(|_| {
            let r = Raw::hello(&c);
            let mut b = Vec::new();
            let h = Header {
                kind: 1,
                code: protocol::Op::Set as u8,
                id: 3,
                key_len: 1,
                value_len: 64 << 20,
                arg: 0,
            };
            encode_header(&mut b, &h);
            b.extend_from_slice(&[b'x'; 4096]);
            r.s.write_all(&b).unwrap();
            r
        })
        .collect();
    assert_healthy(&c);
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "server memory stays bounded: {before} KiB -> {after} KiB"
    );
    raws.clear();
    assert_healthy(&c);
}

fn truncated_frame_then_disconnect_leaves_the_server_fine(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("trunc"));
    for cut in [1, 5, 23, 24, 30] {
        let r = Raw::hello(&c);
        let mut b = Vec::new();
        Request::Set {
            key: b"key",
            value: b"value that is cut",
        }
        .encode(2, &mut b);
        r.s.write_all(&b[..cut]).unwrap();
        drop(r);
    }
    assert_eq!(c.get(b"key").unwrap(), None, "a cut frame is never applied");
    assert!(util::eventually(Duration::from_secs(5), || {
        c.stats().unwrap().contains("\"connections\":1")
    }));
    assert_healthy(&c);
}

fn unknown_opcode_is_an_error_and_the_connection_goes_on(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("unknown"));
    let mut r = Raw::hello(&c);
    let mut b = Vec::new();
    encode_header(
        &mut b,
        &Header {
            kind: 1,
            code: 0x7e,
            id: 5,
            key_len: 3,
            value_len: 2,
            arg: 9,
        },
    );
    b.extend_from_slice(b"abcde");
    Request::Ping.encode(6, &mut b);
    r.s.write_all(&b).unwrap();
    assert_eq!(r.recv(), Some(Owned::Error(ErrorCode::UnknownOp)));
    assert_eq!(r.recv(), Some(Owned::Reply(6, "Done".into())));
}

fn half_sent_frame_never_delays_another_client(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("half"));
    let mut slow = Raw::hello(&c);
    let mut b = Vec::new();
    Request::Set {
        key: b"slow",
        value: &vec![1u8; 1 << 20],
    }
    .encode(2, &mut b);
    slow.s.write_all(&b[..100]).unwrap();
    let t0 = Instant::now();
    for i in 0..1000u32 {
        c.set(i.to_le_bytes(), b"fast").unwrap();
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
    slow.s.write_all(&b[100..]).unwrap();
    assert_eq!(slow.recv(), Some(Owned::Reply(2, "Done".into())));
    assert_eq!(c.get(b"slow").unwrap().unwrap().len(), 1 << 20);
}

fn pipelined_frames_get_replies_in_order(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("pipelined"));
    let mut r = Raw::hello(&c);
    let mut b = Vec::new();
    Request::Set {
        key: b"a",
        value: b"1",
    }
    .encode(10, &mut b);
    Request::Get { key: b"a" }.encode(11, &mut b);
    Request::Incr {
        key: b"a",
        delta: 5,
    }
    .encode(12, &mut b);
    Request::Get { key: b"missing" }.encode(13, &mut b);
    Request::Count.encode(14, &mut b);
    // Sent byte by byte: frames split anywhere still decode.
    for byte in &b {
        r.s.write_all(std::slice::from_ref(byte)).unwrap();
    }
    let got: Vec<_> = (0..5).map(|_| r.recv().unwrap()).collect();
    assert_eq!(
        got,
        vec![
            Owned::Reply(10, "Done".into()),
            Owned::Reply(11, format!("{:?}", Reply::Value(b"1"))),
            Owned::Reply(12, "Int(6)".into()),
            Owned::Reply(13, "Nil".into()),
            Owned::Reply(14, "Uint(1)".into()),
        ]
    );
}

fn pushes_are_distinct_frames(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("push"));
    let mut r = Raw::hello(&c);
    r.send(&Request::Subscribe { key: Some(b"k") }, 2);
    let sub = match r.recv() {
        Some(Owned::Reply(2, s)) => s
            .trim_start_matches("Uint(")
            .trim_end_matches(')')
            .parse::<u32>()
            .unwrap(),
        other => panic!("{other:?}"),
    };
    c.set(b"k", b"v").unwrap();
    assert!(c.remove(b"k").unwrap());
    assert_eq!(
        r.recv(),
        Some(Owned::Push(
            PushKind::Set,
            sub,
            b"k".to_vec(),
            b"v".to_vec()
        ))
    );
    assert_eq!(
        r.recv(),
        Some(Owned::Push(
            PushKind::Removed,
            sub,
            b"k".to_vec(),
            Vec::new()
        ))
    );
    // Replies keep their order among pushes.
    r.send(&Request::Ping, 3);
    assert_eq!(r.recv(), Some(Owned::Reply(3, "Done".into())));
}

fn a_client_that_never_reads_cannot_grow_server_memory(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("noread"));
    c.set(b"big", vec![7u8; 64 * 1024]).unwrap();
    let pid = server_pid(c.connection_file());
    let before = rss_kib(pid);
    let r = Raw::hello(&c);
    r.s.set_timeout(Some(Duration::from_millis(500))).unwrap();
    // Ask for the 64 KiB value over and over and never read: up to 4 million requests (108 MB;
    // 256 TiB of replies if the server kept reading), stopping at the first write that blocks.
    let mut frame = Vec::new();
    Request::Get { key: b"big" }.encode(2, &mut frame);
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 1000)
        .collect();
    let mut sent = 0usize;
    while sent < 4_000_000 {
        match r.s.write_all(&batch) {
            Ok(()) => sent += 1000,
            // The socket is full: the server stopped reading this connection.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(sent < 4_000_000, "the server stopped reading: backpressure");
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "server memory stays bounded: {before} KiB -> {after} KiB"
    );
    // Others are served meanwhile.
    assert_healthy(&c);
    drop(r);
    assert!(util::eventually(Duration::from_secs(5), || {
        c.stats().unwrap().contains("\"connections\":1")
    }));
}
