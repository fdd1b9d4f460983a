//! The server on the wire, spoken to in raw bytes over both transports: handshakes, hostile
//! frames, pipelining, pushes, and that one client's bad input never hurts another.

mod util;

use std::time::{Duration, Instant};

use upcache::protocol::{
    self, decode_incoming, decode_raw, encode_header, Chunk, Decoded, ErrorCode, FrameKind, Header,
    Incoming, Limits, Op, PushKind, Reply, Request, WakeReason, CHUNK_SOFT_BYTES, MAX_KEY_LEN,
    VERSION,
};
use upcache::transports::{connect, Stream};
use upcache::{TransportKind as Transport, UpCache};
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
    handshake_errors_carry_the_request_id_in_a_fixed_precedence,
    bytes_that_are_not_a_frame_get_bad_frame_with_id_0,
    a_second_hello_answers_the_version_and_changes_nothing,
    the_first_enumeration_request_needs_an_8_byte_bound,
    an_empty_or_cleared_cache_enumerates_as_one_empty_chunk,
    a_garbage_cursor_or_bound_is_not_an_error,
    an_enumeration_skips_keys_stored_again_and_sees_current_values,
    a_chunk_is_cut_after_the_entry_that_reaches_256_kib,
    incr_parses_decimal_strictly,
    remove_of_a_missing_key_sends_no_push_and_wakes_no_wait,
    clear_sends_cleared_to_every_subscription_even_when_empty,
    unsubscribe_sends_no_push_and_nothing_follows_it,
    woken_comes_after_the_reply_of_the_set_that_caused_it,
    subscription_ids_are_u32_per_connection,
    the_token_is_32_lowercase_hex_digits,
    a_max_value_over_the_cap_is_refused_before_any_server_starts,
    a_wait_ended_by_clear_is_woken_with_reason_cleared,
    pipelined_large_gets_read_late_all_get_replies,
    malformed_multi_key_bodies_get_bad_frame_with_their_id_then_close,
    multi_key_and_versioned_frames_on_the_wire,
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

    /// The next frame with every header field, or None at end of stream.
    fn frame(&mut self) -> Option<Frame> {
        read_frame(&self.s, &mut self.buf)
    }

    /// Sends raw bytes.
    fn raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Expects an error reply with this id, code and argument, then the server's close.
    fn expect_error_id_then_close(&mut self, id: u32, code: ErrorCode, arg: u64) {
        let f = self.frame().expect("an error reply");
        assert_eq!(
            (f.kind, f.code, f.id, f.arg),
            (2, code as u8, id, arg),
            "{f:?}"
        );
        assert_eq!(self.frame(), None, "the server closes the connection");
    }

    /// Sends `req` and returns its reply (no pushes expected in between).
    fn call(&mut self, req: &Request<'_>, id: u32) -> Frame {
        self.send(req, id);
        let f = self.frame().expect("a reply");
        assert_eq!((f.kind, f.id), (FrameKind::Reply as u8, id), "{f:?}");
        f
    }

    fn expect_error_then_close(&mut self, code: ErrorCode) {
        match self.recv() {
            Some(Owned::Error(c)) => assert_eq!(c, code),
            other => panic!("expected error {code:?}, got {other:?}"),
        }
        assert_eq!(self.recv(), None, "the server closes the connection");
    }
}

/// A frame with all its header fields, owned.
#[derive(Debug, PartialEq)]
struct Frame {
    kind: u8,
    code: u8,
    id: u32,
    key: Vec<u8>,
    value: Vec<u8>,
    arg: u64,
}

/// Reply codes (PROTOCOL.md §5).
const DONE: u8 = 0x00;
const BOOL: u8 = 0x03;
const INT: u8 = 0x04;
const UINT: u8 = 0x05;
const CHUNK: u8 = 0x06;

impl Frame {
    fn reply(code: u8, id: u32, arg: u64) -> Frame {
        Frame {
            kind: FrameKind::Reply as u8,
            code,
            id,
            key: Vec::new(),
            value: Vec::new(),
            arg,
        }
    }

    fn push(kind: PushKind, id: u32, key: &[u8], value: &[u8], arg: u64) -> Frame {
        Frame {
            kind: FrameKind::Push as u8,
            code: kind as u8,
            id,
            key: key.to_vec(),
            value: value.to_vec(),
            arg,
        }
    }

    fn error(code: ErrorCode, id: u32) -> Frame {
        let mut f = Frame::reply(code as u8, id, 0);
        f.value = code.message().as_bytes().to_vec();
        f
    }

    /// (next, bound, entries) of a chunk reply.
    fn chunk(&self, with_values: bool) -> (u64, u64, Vec<Entry>) {
        assert_eq!(self.code, CHUNK, "{self:?}");
        let bound = u64::from_le_bytes(self.key[..].try_into().expect("8-byte bound"));
        let entries = Chunk::new(&self.value, with_values)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        (self.arg, bound, entries)
    }
}

/// A key and its value (empty in a keys chunk).
type Entry = (Vec<u8>, Vec<u8>);

/// An INCR case: (stored, delta, reply code, reply arg, stored after).
type IncrCase = (&'static [u8], i64, u8, i64, &'static [u8]);

/// A frame with these header fields and body.
fn frame_bytes(code: u8, id: u32, key: &[u8], value: &[u8], arg: u64) -> Vec<u8> {
    let mut b = Vec::new();
    encode_header(
        &mut b,
        &Header {
            kind: FrameKind::Request as u8,
            code,
            id,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            arg,
        },
    );
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    b
}

/// The next frame from `s` with every header field, `buf` holding what was read beyond it;
/// None at end of stream.
fn read_frame(s: &Stream, buf: &mut Vec<u8>) -> Option<Frame> {
    loop {
        let kind = match buf.get(2) {
            Some(&k) if k == FrameKind::Push as u8 => FrameKind::Push,
            _ => FrameKind::Reply,
        };
        match decode_raw(buf, kind, &Limits::unlimited()).unwrap() {
            Decoded::Frame(f, n) => {
                let h = f.header;
                let o = Frame {
                    kind: h.kind,
                    code: h.code,
                    id: h.id,
                    key: f.key.to_vec(),
                    value: f.value.to_vec(),
                    arg: h.arg,
                };
                buf.drain(..n);
                return Some(o);
            }
            Decoded::Incomplete { .. } => {
                let mut chunk = [0u8; 65536];
                match s.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
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

/// Many large GETs pipelined at once, the client reading nothing for 300 ms, so the server's
/// output passes its high-water mark and it stops reading that connection; then the client
/// reads: every reply arrives, in order. (It hung, mostly over TCP: a pause could end only on
/// a writable event that an edge-triggered poller never sends when the write that followed a
/// read had already drained the output.) Each read waits at most 5 s.
fn pipelined_large_gets_read_late_all_get_replies(t: Transport) {
    for (n, len) in [(2000u32, 64 << 10), (200, 1 << 20)] {
        let sb = Sandbox::new(t);
        let c = sb.open(&sb.name("late"));
        c.set(b"big", vec![b'x'; len]).unwrap();
        let mut r = Raw::hello(&c);
        let mut batch = Vec::new();
        for i in 0..n {
            Request::Get { key: b"big" }.encode(10 + i, &mut batch);
        }
        let (s, buf) = (&r.s, &mut r.buf);
        std::thread::scope(|scope| {
            // A thread writes while this one reads, so a server that stops reading cannot
            // block the test in its own write.
            scope.spawn(move || s.write_all(&batch).unwrap());
            // Read nothing for a while: the server's output passes its high-water mark.
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..n {
                let got =
                    read_frame(s, buf).unwrap_or_else(|| panic!("closed before reply {i} of {n}"));
                assert_eq!(
                    (got.id, got.code, got.value.len()),
                    (10 + i, 0x02, len),
                    "reply {i}"
                );
            }
        });
        assert_healthy(&c);
    }
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
        c.stats().unwrap().connections == 1
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
        c.stats().unwrap().connections == 1
    }));
}

fn handshake_errors_carry_the_request_id_in_a_fixed_precedence(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("precedence"));
    let tok = token(&c);
    // A wrong token wins over a wrong version; the error carries the HELLO's id.
    let mut r = Raw::connect(&c);
    r.send(
        &Request::Hello {
            version: VERSION + 1,
            token: b"00000000000000000000000000000000",
        },
        41,
    );
    r.expect_error_id_then_close(41, ErrorCode::Unauthorized, 0);
    // The right token with another version: VERSION_MISMATCH, arg = the server's version.
    let mut r = Raw::connect(&c);
    r.send(
        &Request::Hello {
            version: VERSION + 1,
            token: tok.as_bytes(),
        },
        42,
    );
    r.expect_error_id_then_close(42, ErrorCode::VersionMismatch, VERSION);
    // A 65-byte token is a malformed HELLO, whatever its bytes: BAD_FRAME with its id.
    let mut r = Raw::connect(&c);
    let long = [tok.as_bytes(), &[b'0'; 33]].concat();
    assert_eq!(long.len(), 65);
    r.raw(&frame_bytes(Op::Hello as u8, 43, &long, b"", VERSION));
    r.expect_error_id_then_close(43, ErrorCode::BadFrame, 0);
    // Any other request first: UNAUTHORIZED with its id.
    let mut r = Raw::connect(&c);
    r.send(&Request::Ping, 46);
    r.expect_error_id_then_close(46, ErrorCode::Unauthorized, 0);
    // Decoding comes before the handshake check: a malformed frame is BAD_FRAME, a value
    // over the limit VALUE_TOO_LARGE (arg = its length), each with the frame's id.
    let mut r = Raw::connect(&c);
    r.raw(&frame_bytes(Op::Get as u8, 47, b"k", b"v", 0));
    r.expect_error_id_then_close(47, ErrorCode::BadFrame, 0);
    let mut r = Raw::connect(&c);
    let mut b = Vec::new();
    encode_header(
        &mut b,
        &Header {
            kind: 1,
            code: Op::Set as u8,
            id: 48,
            key_len: 1,
            value_len: u32::MAX,
            arg: 0,
        },
    );
    r.raw(&b);
    r.expect_error_id_then_close(48, ErrorCode::ValueTooLarge, u32::MAX as u64);
    // An unknown opcode before HELLO is skipped with UNKNOWN_OP; the handshake can follow.
    let mut r = Raw::connect(&c);
    r.raw(&frame_bytes(0x7f, 44, b"k", b"", 0));
    assert_eq!(r.frame(), Some(Frame::error(ErrorCode::UnknownOp, 44)));
    r.send(
        &Request::Hello {
            version: VERSION,
            token: tok.as_bytes(),
        },
        1,
    );
    assert_eq!(r.frame(), Some(Frame::reply(UINT, 1, VERSION)));
    // The key length is checked from the header before the opcode: an unknown opcode with a
    // key over the limit is KEY_TOO_LARGE (arg = its length) and a close.
    let mut b = Vec::new();
    encode_header(
        &mut b,
        &Header {
            kind: 1,
            code: 0x7f,
            id: 45,
            key_len: MAX_KEY_LEN + 1,
            value_len: 0,
            arg: 0,
        },
    );
    r.raw(&b);
    r.expect_error_id_then_close(45, ErrorCode::KeyTooLarge, MAX_KEY_LEN as u64 + 1);
    assert_healthy(&c);
}

fn bytes_that_are_not_a_frame_get_bad_frame_with_id_0(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("notframe"));
    // Bad magic (judged from the first byte), and a right magic with the wrong kind, even with
    // a whole header whose id is 9: id 0.
    for junk in [&b"X"[..], &frame_bytes(Op::Ping as u8, 9, b"", b"", 0)[..]] {
        let mut junk = junk.to_vec();
        if junk.len() > 2 {
            junk[2] = FrameKind::Reply as u8;
        }
        let mut r = Raw::hello(&c);
        r.raw(&junk);
        r.expect_error_id_then_close(0, ErrorCode::BadFrame, 0);
    }
}

fn a_second_hello_answers_the_version_and_changes_nothing(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("hello2"));
    let mut r = Raw::hello(&c);
    // Neither token nor version is checked again.
    let f = r.call(
        &Request::Hello {
            version: 7,
            token: b"not the token",
        },
        2,
    );
    assert_eq!(f, Frame::reply(UINT, 2, VERSION));
    assert_eq!(r.call(&Request::Ping, 3), Frame::reply(DONE, 3, 0));
}

fn the_first_enumeration_request_needs_an_8_byte_bound(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("bound"));
    c.set(b"a", b"1").unwrap();
    for op in [Op::Keys, Op::Items] {
        // An empty bound is malformed.
        let mut r = Raw::hello(&c);
        r.raw(&frame_bytes(op as u8, 5, b"", b"", 0));
        r.expect_error_id_then_close(5, ErrorCode::BadFrame, 0);
        // Eight zero bytes start an enumeration.
        let mut r = Raw::hello(&c);
        r.raw(&frame_bytes(op as u8, 6, &[0; 8], b"", 0));
        let (next, bound, entries) = r.frame().unwrap().chunk(op == Op::Items);
        assert_eq!((next, entries.len()), (0, 1));
        assert_ne!(bound, 0, "the server picks the bound");
    }
}

fn an_empty_or_cleared_cache_enumerates_as_one_empty_chunk(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("emptychunk"));
    let mut r = Raw::hello(&c);
    let f = r.call(
        &Request::Keys {
            cursor: 0,
            until: 0,
        },
        2,
    );
    let (next, _, entries) = f.chunk(false);
    assert_eq!((next, entries.len()), (0, 0));
    c.set(b"a", b"1").unwrap();
    c.set(b"b", b"2").unwrap();
    assert_eq!(r.call(&Request::Clear, 3), Frame::reply(DONE, 3, 0));
    let f = r.call(
        &Request::Items {
            cursor: 0,
            until: 0,
        },
        4,
    );
    let (next, _, entries) = f.chunk(true);
    assert_eq!((next, entries.len()), (0, 0));
}

fn a_garbage_cursor_or_bound_is_not_an_error(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("garbagecursor"));
    for i in 0..10u8 {
        c.set([b'k', i], b"v").unwrap();
    }
    let mut r = Raw::hello(&c);
    // A cursor past the bound: one empty chunk, the end.
    let f = r.call(
        &Request::Keys {
            cursor: u64::MAX,
            until: 3,
        },
        2,
    );
    let (next, bound, entries) = f.chunk(false);
    assert_eq!((next, bound, entries.len()), (0, 3, 0));
    // A bound from nowhere: a valid chunk (here every key), no error, the connection goes on.
    let f = r.call(
        &Request::Items {
            cursor: 0,
            until: u64::MAX,
        },
        3,
    );
    let (next, bound, entries) = f.chunk(true);
    assert_eq!((next, bound, entries.len()), (0, u64::MAX, 10));
    assert_eq!(r.call(&Request::Ping, 4), Frame::reply(DONE, 4, 0));
}

fn an_enumeration_skips_keys_stored_again_and_sees_current_values(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("restored"));
    let key = |i: u32| format!("k{i:05}").into_bytes();
    let mut p = c.pipeline();
    for i in 0..5000 {
        p.set(key(i), b"old");
    }
    assert_eq!(
        p.execute().unwrap().len(),
        5000,
        "the pipeline also checks set_frame_id"
    );
    let mut r = Raw::hello(&c);
    let f = r.call(
        &Request::Items {
            cursor: 0,
            until: 0,
        },
        2,
    );
    let (mut next, bound, first) = f.chunk(true);
    assert_eq!(first.len(), 4096, "a chunk holds at most 4096 entries");
    assert_ne!(next, 0);
    // Between chunks: one key not yet returned is removed and stored again (a new key now),
    // one returned key likewise, and one not yet returned is overwritten.
    for i in [4500, 10] {
        assert!(c.remove(key(i)).unwrap());
        c.set(key(i), b"again").unwrap();
    }
    c.set(key(4600), b"new").unwrap();
    let mut rest = Vec::new();
    let mut id = 3;
    while next != 0 {
        let f = r.call(
            &Request::Items {
                cursor: next,
                until: bound,
            },
            id,
        );
        let (n, b, entries) = f.chunk(true);
        assert_eq!(b, bound, "the bound stays the same");
        rest.extend(entries);
        next = n;
        id += 1;
    }
    let want: Vec<Entry> = (4096..5000)
        .filter(|&i| i != 4500)
        .map(|i| {
            let v: &[u8] = if i == 4600 { b"new" } else { b"old" };
            (key(i), v.to_vec())
        })
        .collect();
    assert_eq!(rest, want);
}

fn a_chunk_is_cut_after_the_entry_that_reaches_256_kib(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("chunkcut"));
    let value = vec![7u8; 100 * 1024];
    for k in [b"a", b"b", b"c", b"d"] {
        c.set(k, &value).unwrap();
    }
    let mut r = Raw::hello(&c);
    let f = r.call(
        &Request::Items {
            cursor: 0,
            until: 0,
        },
        2,
    );
    let body_len = f.value.len();
    let (next, bound, entries) = f.chunk(true);
    let last = protocol::chunk_entry_len(1, Some(value.len())).unwrap() as usize;
    // Entries are taken while the body is under 256 KiB: the body without its last entry is
    // under, the body is at or over (else it would have taken the next one).
    assert_eq!(entries.len(), 3);
    assert!(body_len - last < CHUNK_SOFT_BYTES && body_len >= CHUNK_SOFT_BYTES);
    assert_ne!(next, 0);
    let f = r.call(
        &Request::Items {
            cursor: next,
            until: bound,
        },
        3,
    );
    let (next, _, entries) = f.chunk(true);
    assert_eq!((next, entries.len()), (0, 1));
}

fn incr_parses_decimal_strictly(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("incrparse"));
    let mut r = Raw::hello(&c);
    let not_int = ErrorCode::NotAnInteger as u8;
    let cases: &[IncrCase] = &[
        (b"", 1, not_int, 0, b""),
        (
            b"99999999999999999999",
            1,
            not_int,
            0,
            b"99999999999999999999",
        ),
        (
            b"-99999999999999999999",
            1,
            not_int,
            0,
            b"-99999999999999999999",
        ),
        (b"007", 1, INT, 8, b"8"),
        (b"+5", 1, INT, 6, b"6"),
        (b"-0", 0, INT, 0, b"0"),
        (b" 5", 1, not_int, 0, b" 5"),
        (b"5 ", 1, not_int, 0, b"5 "),
        (b"5\n", 1, not_int, 0, b"5\n"),
        (b"+", 1, not_int, 0, b"+"),
        (b"-", 1, not_int, 0, b"-"),
        (b"0x10", 1, not_int, 0, b"0x10"),
        (b"1e3", 1, not_int, 0, b"1e3"),
        (
            b"9223372036854775807",
            1,
            ErrorCode::Overflow as u8,
            0,
            b"9223372036854775807",
        ),
        (
            b"-9223372036854775808",
            -1,
            ErrorCode::Overflow as u8,
            0,
            b"-9223372036854775808",
        ),
        (
            b"-9223372036854775808",
            0,
            INT,
            i64::MIN,
            b"-9223372036854775808",
        ),
    ];
    for (i, &(stored, delta, code, arg, after)) in cases.iter().enumerate() {
        let id = i as u32 + 10;
        c.set(b"n", stored).unwrap();
        let f = r.call(&Request::Incr { key: b"n", delta }, id);
        assert_eq!((f.code, f.arg as i64), (code, arg), "{stored:?} + {delta}");
        assert_eq!(c.get(b"n").unwrap().as_deref(), Some(after), "{stored:?}");
    }
    // A missing key counts as 0.
    let f = r.call(
        &Request::Incr {
            key: b"missing",
            delta: -4,
        },
        99,
    );
    assert_eq!((f.code, f.arg as i64), (INT, -4));
}

/// Subscribes on `r` and returns the subscription id.
fn subscribe(r: &mut Raw, key: Option<&[u8]>, id: u32) -> u32 {
    let f = r.call(&Request::Subscribe { key }, id);
    assert_eq!(f.code, UINT, "{f:?}");
    u32::try_from(f.arg).expect("subscription ids are u32")
}

fn remove_of_a_missing_key_sends_no_push_and_wakes_no_wait(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("removemissing"));
    let mut r = Raw::hello(&c);
    let sub = subscribe(&mut r, Some(b"k"), 1);
    let all = subscribe(&mut r, None, 2);
    let wait = Request::Wait {
        key: b"k",
        value: None,
        timeout_ms: protocol::NO_TIMEOUT,
    };
    assert_eq!(r.call(&wait, 3), Frame::reply(DONE, 3, 0));
    assert_eq!(
        r.call(&Request::Remove { key: b"k" }, 4),
        Frame::reply(BOOL, 4, 0)
    );
    // Had the remove sent anything, it would come before the set's reply and pushes.
    r.send(
        &Request::Set {
            key: b"k",
            value: b"v",
        },
        5,
    );
    assert_eq!(r.frame(), Some(Frame::reply(DONE, 5, 0)));
    let mut pushes: Vec<Frame> = (0..3).map(|_| r.frame().unwrap()).collect();
    pushes.sort_by_key(|f| (f.code, f.id));
    assert_eq!(
        pushes,
        [
            Frame::push(PushKind::Set, sub, b"k", b"v", 0),
            Frame::push(PushKind::Set, all, b"k", b"v", 0),
            Frame::push(PushKind::Woken, 3, b"", b"", WakeReason::Event as u64),
        ]
    );
}

fn clear_sends_cleared_to_every_subscription_even_when_empty(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("clearempty"));
    let mut r = Raw::hello(&c);
    let sub = subscribe(&mut r, Some(b"never stored"), 1);
    let all = subscribe(&mut r, None, 2);
    r.send(&Request::Clear, 3);
    assert_eq!(r.frame(), Some(Frame::reply(DONE, 3, 0)));
    let mut pushes: Vec<Frame> = (0..2).map(|_| r.frame().unwrap()).collect();
    pushes.sort_by_key(|f| f.id);
    assert_eq!(
        pushes,
        [
            Frame::push(PushKind::Cleared, sub, b"", b"", 0),
            Frame::push(PushKind::Cleared, all, b"", b"", 0),
        ]
    );
    assert_eq!(r.call(&Request::Ping, 4), Frame::reply(DONE, 4, 0));
}

fn unsubscribe_sends_no_push_and_nothing_follows_it(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("unsub"));
    let mut r = Raw::hello(&c);
    let sub = subscribe(&mut r, Some(b"k"), 1);
    r.send(
        &Request::Set {
            key: b"k",
            value: b"1",
        },
        2,
    );
    assert_eq!(r.frame(), Some(Frame::reply(DONE, 2, 0)));
    assert_eq!(
        r.frame(),
        Some(Frame::push(PushKind::Set, sub, b"k", b"1", 0))
    );
    // No CLOSED push: the DONE is the last frame of the subscription.
    assert_eq!(
        r.call(&Request::Unsubscribe { sub }, 3),
        Frame::reply(DONE, 3, 0)
    );
    assert_eq!(
        r.call(
            &Request::Set {
                key: b"k",
                value: b"2"
            },
            4
        ),
        Frame::reply(DONE, 4, 0)
    );
    assert_eq!(r.call(&Request::Ping, 5), Frame::reply(DONE, 5, 0));
    // A second unsubscribe of the same id.
    let f = r.call(&Request::Unsubscribe { sub }, 6);
    assert_eq!(f, Frame::error(ErrorCode::NoSuchSubscription, 6));
}

fn woken_comes_after_the_reply_of_the_set_that_caused_it(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("wokenorder"));
    let mut r = Raw::hello(&c);
    let wait = Request::Wait {
        key: b"k",
        value: Some(b"v"),
        timeout_ms: protocol::NO_TIMEOUT,
    };
    assert_eq!(r.call(&wait, 5), Frame::reply(DONE, 5, 0));
    r.send(
        &Request::Set {
            key: b"k",
            value: b"v",
        },
        6,
    );
    assert_eq!(r.frame(), Some(Frame::reply(DONE, 6, 0)));
    assert_eq!(
        r.frame(),
        Some(Frame::push(
            PushKind::Woken,
            5,
            b"",
            b"",
            WakeReason::Event as u64
        ))
    );
}

fn a_wait_ended_by_clear_is_woken_with_reason_cleared(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("clearreason"));
    let mut r = Raw::hello(&c);
    let waits = [
        Request::Wait {
            key: b"k",
            value: None,
            timeout_ms: protocol::NO_TIMEOUT,
        },
        Request::Wait {
            key: b"k2",
            value: Some(b"v"),
            timeout_ms: protocol::NO_TIMEOUT,
        },
    ];
    for (i, w) in waits.iter().enumerate() {
        assert_eq!(r.call(w, i as u32 + 1), Frame::reply(DONE, i as u32 + 1, 0));
    }
    r.send(&Request::Clear, 3);
    assert_eq!(r.frame(), Some(Frame::reply(DONE, 3, 0)));
    let mut pushes: Vec<Frame> = (0..2).map(|_| r.frame().unwrap()).collect();
    pushes.sort_by_key(|f| f.id);
    let cleared = WakeReason::Cleared as u64;
    assert_eq!(
        pushes,
        [
            Frame::push(PushKind::Woken, 1, b"", b"", cleared),
            Frame::push(PushKind::Woken, 2, b"", b"", cleared),
        ]
    );
    // Through the client: a wait for a value ended by a clear is false.
    let waiter = c.clone();
    let h = std::thread::spawn(move || waiter.wait_for(b"x", Some(b"v"), None));
    let mut stats = Raw::hello(&c);
    // The wait is registered once the server counts it.
    assert!(util::eventually(Duration::from_secs(10), || {
        let f = stats.call(&Request::Stats, 9);
        let s: upcache::ServerStats = serde_json::from_slice(&f.value).unwrap();
        s.waits == 1
    }));
    c.clear().unwrap();
    assert!(!h.join().unwrap().unwrap());
}

fn subscription_ids_are_u32_per_connection(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("subids"));
    let mut a = Raw::hello(&c);
    let mut b = Raw::hello(&c);
    // Each connection numbers its own subscriptions from 1.
    assert_eq!(subscribe(&mut a, Some(b"k"), 1), 1);
    assert_eq!(subscribe(&mut b, None, 1), 1);
    assert_eq!(subscribe(&mut a, None, 2), 2);
    // 0 is never an id.
    let f = a.call(&Request::Unsubscribe { sub: 0 }, 3);
    assert_eq!(f, Frame::error(ErrorCode::NoSuchSubscription, 3));
    // An id wider than 32 bits is a malformed frame.
    a.raw(&frame_bytes(
        Op::Unsubscribe as u8,
        4,
        b"",
        b"",
        1 << 32 | 1,
    ));
    a.expect_error_id_then_close(4, ErrorCode::BadFrame, 0);
    // The other connection's subscription 1 is untouched.
    assert_eq!(
        b.call(&Request::Unsubscribe { sub: 1 }, 2),
        Frame::reply(DONE, 2, 0)
    );
}

fn the_token_is_32_lowercase_hex_digits(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("tokenformat"));
    let tok = token(&c);
    assert_eq!(tok.len(), 32, "{tok}");
    assert!(
        tok.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{tok}"
    );
    // The comparison is exact: the same digits in upper case are refused.
    let mut r = Raw::connect(&c);
    r.send(
        &Request::Hello {
            version: VERSION,
            token: tok.to_uppercase().as_bytes(),
        },
        8,
    );
    r.expect_error_id_then_close(8, ErrorCode::Unauthorized, 0);
}

fn a_max_value_over_the_cap_is_refused_before_any_server_starts(t: Transport) {
    let sb = Sandbox::new(t);
    let name = sb.name("cap");
    let Err(e) = sb
        .builder(&name)
        .max_value_len(protocol::MAX_VALUE_LEN_CAP + 1)
        .open()
    else {
        panic!("opened with a max_value_len over the cap");
    };
    assert!(
        matches!(
            e,
            upcache::Error::InvalidOption {
                option: "max_value_len",
                ..
            }
        ),
        "{e}"
    );
    assert!(!sb.file(&name).exists(), "no election took place");
}

/// A multi-key request whose body does not hold its count of entries, is cut inside an
/// entry, names a key over 64 KiB, or a `SET_MANY` with a TTL field that is neither empty nor
/// 8 bytes of a TTL above 0: `BAD_FRAME` with the frame's id, then a close; nothing of the
/// batch was applied; other clients go on.
fn malformed_multi_key_bodies_get_bad_frame_with_their_id_then_close(t: Transport) {
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("badbatch"));
    let mut keys = Vec::new();
    for k in [&b"a"[..], b"bb"] {
        Chunk::push(&mut keys, k, None);
    }
    let mut pairs = Vec::new();
    Chunk::push(&mut pairs, b"x", Some(b"1"));
    let mut long = Vec::new();
    Chunk::push(&mut long, &vec![b'k'; MAX_KEY_LEN as usize + 1], None);
    let cases: Vec<(Op, Vec<u8>, Vec<u8>, u64)> = vec![
        (Op::GetMany, vec![], keys.clone(), 3),
        (Op::GetMany, vec![], keys[..keys.len() - 1].to_vec(), 2),
        (Op::GetMany, b"k".to_vec(), keys.clone(), 2),
        (Op::GetMany, vec![], long.clone(), 1),
        (Op::RemoveMany, vec![], keys.clone(), 1),
        (Op::RemoveMany, vec![], vec![1, 0], 1),
        (Op::SetMany, vec![], pairs.clone(), 0),
        (Op::SetMany, vec![], keys.clone(), 2),
        (Op::SetMany, vec![1, 2], pairs.clone(), 1),
        (Op::SetMany, 0u64.to_le_bytes().to_vec(), pairs.clone(), 1),
        (Op::GetVersioned, b"k".to_vec(), b"v".to_vec(), 0),
    ];
    for (i, (op, key, value, arg)) in cases.into_iter().enumerate() {
        let mut r = Raw::hello(&c);
        let id = 40 + i as u32;
        r.raw(&frame_bytes(op as u8, id, &key, &value, arg));
        r.expect_error_id_then_close(id, ErrorCode::BadFrame, 0);
    }
    assert_eq!(
        c.get("x").unwrap(),
        None,
        "no pair of a refused batch is stored"
    );
    assert_healthy(&c);
}

/// The new frames as PROTOCOL.md describes them: `VERSIONED` (value, version in arg),
/// `VERSION`, `NIL` when a condition fails, `VALUES` (a u32 length or 0xFFFFFFFF per key),
/// `UINT` for `REMOVE_MANY`, `BAD_TTL` (connection goes on) for a TTL out of range.
fn multi_key_and_versioned_frames_on_the_wire(t: Transport) {
    const NIL: u8 = 0x01;
    const VERSIONED: u8 = 0x08;
    const VERSION_REPLY: u8 = 0x09;
    const VALUES: u8 = 0x0a;
    let sb = Sandbox::new(t);
    let c = sb.open(&sb.name("multiwire"));
    let mut r = Raw::hello(&c);
    let f = r.call(&Request::GetVersioned { key: b"k" }, 2);
    assert_eq!(f, Frame::reply(NIL, 2, 0));
    let add = frame_bytes(Op::Add as u8, 3, b"k", b"v1", 0);
    r.raw(&add);
    let f = r.frame().unwrap();
    assert_eq!(
        (f.code, f.id, f.value.len()),
        (VERSION_REPLY, 3, 0),
        "{f:?}"
    );
    let v1 = f.arg;
    r.raw(&frame_bytes(Op::Add as u8, 4, b"k", b"v2", 0));
    assert_eq!(r.frame().unwrap(), Frame::reply(NIL, 4, 0));
    let f = r.call(&Request::GetVersioned { key: b"k" }, 5);
    assert_eq!((f.code, f.value, f.arg), (VERSIONED, b"v1".to_vec(), v1));
    r.raw(&frame_bytes(Op::SetIfVersion as u8, 6, b"k", b"v3", v1 + 1));
    assert_eq!(r.frame().unwrap(), Frame::reply(NIL, 6, 0));
    r.raw(&frame_bytes(Op::SetIfVersion as u8, 7, b"k", b"v3", v1));
    let f = r.frame().unwrap();
    assert!(f.code == VERSION_REPLY && f.arg > v1, "{f:?}");
    r.raw(&frame_bytes(Op::Replace as u8, 8, b"none", b"x", 0));
    assert_eq!(r.frame().unwrap(), Frame::reply(NIL, 8, 0));
    // TTLs out of range: BAD_TTL, nothing stored, the connection goes on.
    r.raw(&frame_bytes(
        Op::Add as u8,
        9,
        b"t",
        b"x",
        protocol::MAX_TTL_MS + 1,
    ));
    assert_eq!(r.frame().unwrap(), Frame::error(ErrorCode::BadTtl, 9));
    let mut pairs = Vec::new();
    Chunk::push(&mut pairs, b"p", Some(b"1"));
    Chunk::push(&mut pairs, b"q", Some(b""));
    let ttl = (protocol::MAX_TTL_MS + 1).to_le_bytes();
    r.raw(&frame_bytes(Op::SetMany as u8, 10, &ttl, &pairs, 2));
    assert_eq!(r.frame().unwrap(), Frame::error(ErrorCode::BadTtl, 10));
    r.raw(&frame_bytes(Op::SetMany as u8, 11, b"", &pairs, 2));
    assert_eq!(r.frame().unwrap(), Frame::reply(DONE, 11, 0));
    let mut keys = Vec::new();
    for k in [&b"p"[..], b"t", b"q", b"k"] {
        Chunk::push(&mut keys, k, None);
    }
    r.raw(&frame_bytes(Op::GetMany as u8, 12, b"", &keys, 4));
    let f = r.frame().unwrap();
    assert_eq!((f.code, f.id, f.arg), (VALUES, 12, 4), "{f:?}");
    let mut want = Vec::new();
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(b"1");
    want.extend_from_slice(&u32::MAX.to_le_bytes());
    want.extend_from_slice(&0u32.to_le_bytes());
    want.extend_from_slice(&2u32.to_le_bytes());
    want.extend_from_slice(b"v3");
    assert_eq!(f.value, want);
    r.raw(&frame_bytes(Op::RemoveMany as u8, 13, b"", &keys, 4));
    assert_eq!(r.frame().unwrap(), Frame::reply(UINT, 13, 3));
    r.raw(&frame_bytes(Op::GetMany as u8, 14, b"", b"", 0));
    assert_eq!(r.frame().unwrap(), Frame::reply(VALUES, 14, 0));
    // One entry over the most a batch may hold: BATCH_TOO_LARGE, nothing done, and the
    // connection goes on.
    let n = protocol::MAX_BATCH_KEYS as usize + 1;
    let empty_keys = vec![0u8; 4 * n];
    let mut empty_pairs = Vec::new();
    for _ in 0..n {
        Chunk::push(&mut empty_pairs, b"", Some(b""));
    }
    for (op, body) in [
        (Op::GetMany, &empty_keys),
        (Op::RemoveMany, &empty_keys),
        (Op::SetMany, &empty_pairs),
    ] {
        r.raw(&frame_bytes(op as u8, 15, b"", body, n as u64));
        assert_eq!(
            r.frame().unwrap(),
            Frame::error(ErrorCode::BatchTooLarge, 15)
        );
    }
    assert_eq!(
        r.call(&Request::Exists { key: b"" }, 16),
        Frame::reply(BOOL, 16, 0)
    );
}

/// The lease requests on the wire (PROTOCOL.md §4, "Leases"): exact bytes of the replies and
/// pushes, and malformed lease requests.
mod lease {
    use super::*;

    each_transport!(
        lease_replies_and_pushes_have_their_codes,
        malformed_lease_requests_are_bad_frames
    );

    /// Reply codes of `GET_OR_LEASE`.
    const LEASED: u8 = 0x0c;
    const WAITING: u8 = 0x0d;

    fn get_or_lease(r: &mut Raw, id: u32, timeout_ms: u64) -> Frame {
        r.call(
            &Request::GetOrLease {
                key: b"k",
                timeout_ms,
            },
            id,
        )
    }

    fn lease_replies_and_pushes_have_their_codes(t: Transport) {
        let sb = Sandbox::new(t);
        let c = sb.open(&sb.name("lease-wire"));
        let (mut a, mut b, mut w) = (Raw::hello(&c), Raw::hello(&c), Raw::hello(&c));
        assert_eq!(get_or_lease(&mut a, 7, 60_000), Frame::reply(LEASED, 7, 0));
        assert_eq!(get_or_lease(&mut b, 8, 60_000), Frame::reply(WAITING, 8, 0));
        assert_eq!(get_or_lease(&mut w, 9, 60_000), Frame::reply(WAITING, 9, 0));
        // The holder gives up: the first waiter gets the lease, by its request's id.
        let f = a.call(&Request::Release { key: b"k", req: 7 }, 10);
        assert_eq!(f, Frame::reply(BOOL, 10, 1));
        assert_eq!(
            b.frame().unwrap(),
            Frame::push(PushKind::LeaseGranted, 8, b"", b"", 0)
        );
        assert_eq!(
            (PushKind::LeaseGranted as u8, PushKind::LeaseValue as u8),
            (0x0a, 0x09)
        );
        // A plain SET by the new holder serves the other waiter: the value, no key.
        assert_eq!(
            b.call(
                &Request::Set {
                    key: b"k",
                    value: b"v"
                },
                11
            ),
            Frame::reply(DONE, 11, 0)
        );
        assert_eq!(
            w.frame().unwrap(),
            Frame::push(PushKind::LeaseValue, 9, b"", b"v", 0)
        );
        // Present: a VALUE reply, as GET.
        let f = get_or_lease(&mut a, 12, 1);
        assert_eq!((f.code, f.value.as_slice()), (0x02, &b"v"[..]));
        // A release of a lease nobody holds changes nothing.
        let f = a.call(&Request::Release { key: b"k", req: 12 }, 13);
        assert_eq!(f, Frame::reply(BOOL, 13, 0));
    }

    fn malformed_lease_requests_are_bad_frames(t: Transport) {
        let sb = Sandbox::new(t);
        let c = sb.open(&sb.name("lease-bad"));
        let cases: [(Op, &[u8], &[u8], u64); 5] = [
            // A lease timeout of 0, or over 2^40 - 1 ms.
            (Op::GetOrLease, b"k", b"", 0),
            (Op::GetOrLease, b"k", b"", 1 << 40),
            // A value on either request.
            (Op::GetOrLease, b"k", b"v", 1000),
            (Op::Release, b"k", b"v", 1),
            // A request id wider than 32 bits.
            (Op::Release, b"k", b"", 1 << 32),
        ];
        for (i, (op, key, value, arg)) in cases.into_iter().enumerate() {
            let mut r = Raw::hello(&c);
            let id = 100 + i as u32;
            r.raw(&frame_bytes(op as u8, id, key, value, arg));
            r.expect_error_id_then_close(id, ErrorCode::BadFrame, 0);
        }
        // The largest timeout is fine; the server is healthy.
        let mut r = Raw::hello(&c);
        r.raw(&frame_bytes(
            Op::GetOrLease as u8,
            1,
            b"k",
            b"",
            (1 << 40) - 1,
        ));
        assert_eq!(r.frame().unwrap(), Frame::reply(LEASED, 1, 0));
        assert_healthy(&c);
        assert_eq!(c.stats().unwrap().leases, 1);
        drop(r);
        // Its connection closed: the lease is gone.
        assert!(util::eventually(Duration::from_secs(10), || c
            .stats()
            .unwrap()
            .leases
            == 0));
    }
}
