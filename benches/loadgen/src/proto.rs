//! The three wire protocols the load generator speaks, as encoders and reply parsers over byte
//! buffers: upcache (the crate's own codec), RESP (Redis) and the memcached text protocol.

use memchr::memmem;
use upcache::protocol::{
    self, read_header, Decoded, ErrorCode, FrameKind, Limits, Reply, Request, HEADER_LEN,
};

/// Which protocol a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// upcache's binary protocol (also spoken by the floor server).
    Upcache,
    /// Redis's RESP.
    Resp,
    /// memcached's text protocol.
    Memcached,
}

impl Proto {
    /// Appends a GET of `key`.
    pub fn get(self, key: &[u8], id: u32, out: &mut Vec<u8>) {
        match self {
            Proto::Upcache => Request::Get { key }.encode(id, out),
            Proto::Resp => resp_command(&[b"GET", key], out),
            Proto::Memcached => {
                out.extend_from_slice(b"get ");
                out.extend_from_slice(key);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends a SET of `key` to `value`.
    pub fn set(self, key: &[u8], value: &[u8], id: u32, out: &mut Vec<u8>) {
        match self {
            Proto::Upcache => Request::Set { key, value }.encode(id, out),
            Proto::Resp => resp_command(&[b"SET", key, value], out),
            Proto::Memcached => {
                out.extend_from_slice(b"set ");
                out.extend_from_slice(key);
                out.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends a SET of `key` to `value` that expires `ttl_ms` milliseconds after the server
    /// applies it: upcache's `SET_TTL`, Redis's `SET .. PX`. Panics for memcached, whose TTLs
    /// are whole seconds (`expiry-lag` refuses memcached targets before it gets here).
    pub fn set_ttl(self, key: &[u8], value: &[u8], ttl_ms: u64, id: u32, out: &mut Vec<u8>) {
        match self {
            Proto::Upcache => Request::SetTtl { key, value, ttl_ms }.encode(id, out),
            Proto::Resp => resp_command(
                &[b"SET", key, value, b"PX", ttl_ms.to_string().as_bytes()],
                out,
            ),
            // memcached counts exptime in seconds: rounded up, so a key never goes early.
            Proto::Memcached => {
                out.extend_from_slice(b"set ");
                out.extend_from_slice(key);
                let secs = ttl_ms.div_ceil(1000);
                out.extend_from_slice(format!(" 0 {secs} {}\r\n", value.len()).as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends a request that removes every key: upcache's `CLEAR`, Redis's `FLUSHALL`,
    /// memcached's `flush_all`.
    pub fn flush(self, id: u32, out: &mut Vec<u8>) {
        match self {
            Proto::Upcache => Request::Clear.encode(id, out),
            Proto::Resp => resp_command(&[b"FLUSHALL"], out),
            Proto::Memcached => out.extend_from_slice(b"flush_all\r\n"),
        }
    }

    /// The length of the first whole reply in `buf`, or `None` if it is not all there.
    /// Panics on an error reply: a benchmark must not count failures as operations.
    pub fn reply_len(self, buf: &[u8]) -> Option<usize> {
        match self {
            Proto::Upcache => upcache_reply_len(buf),
            Proto::Resp => {
                let line = memmem::find(buf, b"\r\n")?;
                match buf[0] {
                    b'+' | b':' => Some(line + 2),
                    b'$' => {
                        let n: i64 = std::str::from_utf8(&buf[1..line]).ok()?.parse().ok()?;
                        if n < 0 {
                            return Some(line + 2);
                        }
                        let total = line + 2 + n as usize + 2;
                        (buf.len() >= total).then_some(total)
                    }
                    _ => panic!("redis error: {}", String::from_utf8_lossy(&buf[..line])),
                }
            }
            Proto::Memcached => {
                let line = memmem::find(buf, b"\r\n")?;
                if buf.starts_with(b"VALUE ") {
                    let bytes: usize = std::str::from_utf8(&buf[..line])
                        .ok()?
                        .rsplit(' ')
                        .next()?
                        .parse()
                        .ok()?;
                    let total = line + 2 + bytes + 2 + 5; // data, CRLF, "END\r\n"
                    (buf.len() >= total).then_some(total)
                } else if ["STORED", "END", "OK"]
                    .iter()
                    .any(|r| buf.starts_with(r.as_bytes()))
                {
                    Some(line + 2)
                } else {
                    panic!("memcached error: {}", String::from_utf8_lossy(&buf[..line]))
                }
            }
        }
    }
}

/// [`Proto::reply_len`] for upcache: from the header alone (the magic, the kind, the code and
/// the lengths) where the reply is not an error, which is every reply of a measured run; the
/// whole decoder otherwise, to say what is wrong. A load generator's parse per reply is part of
/// what it measures, so it does no more than it must.
fn upcache_reply_len(buf: &[u8]) -> Option<usize> {
    let h = read_header(buf.first_chunk::<HEADER_LEN>()?).ok();
    if let Some(h) = h.filter(|h| h.kind == FrameKind::Reply as u8) {
        if ErrorCode::from_u8(h.code).is_none() {
            let n = h.frame_len();
            return (buf.len() >= n).then_some(n);
        }
    }
    match protocol::decode_reply(buf, &Limits::unlimited()) {
        Ok(Decoded::Frame((_, Reply::Error { code, .. }), _)) => panic!("server error {code}"),
        Ok(Decoded::Frame((_, _), n)) => Some(n),
        Ok(Decoded::Incomplete { .. }) => None,
        Err(e) => panic!("bad reply: {e}"),
    }
}

/// Appends a RESP command: an array of one bulk string per argument.
pub fn resp_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first whole RESP array at the front of `buf` whose elements are bulk strings or
/// integers (what Redis sends a subscriber: `subscribe` confirmations and `message`s), as
/// the elements' bytes (an integer's digits) and the bytes consumed; `None` until it is all
/// there. Panics on anything else: a benchmark must not read past what it cannot parse.
pub fn resp_array(buf: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let end = at + memmem::find(&buf[at..], b"\r\n")?;
        Some((&buf[at..end], end + 2))
    };
    let number = |digits: &[u8]| -> usize {
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("bad RESP length {:?}", String::from_utf8_lossy(digits)))
    };
    let (head, mut at) = line(0)?;
    let Some(count) = head.strip_prefix(b"*") else {
        panic!("expected a RESP array: {}", String::from_utf8_lossy(head));
    };
    let mut elements = Vec::with_capacity(number(count));
    for _ in 0..elements.capacity() {
        let (l, next) = line(at)?;
        match l.first() {
            Some(b':') => {
                elements.push(&l[1..]);
                at = next;
            }
            Some(b'$') => {
                let end = next + number(&l[1..]);
                if buf.len() < end + 2 {
                    return None;
                }
                elements.push(&buf[next..end]);
                at = end + 2;
            }
            _ => panic!("unexpected RESP element: {}", String::from_utf8_lossy(l)),
        }
    }
    Some((elements, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_need_whole_replies() {
        let cases: [(Proto, &[u8]); 5] = [
            (Proto::Resp, b"$3\r\nabc\r\n"),
            (Proto::Resp, b"+OK\r\n"),
            (Proto::Resp, b"$-1\r\n"),
            (Proto::Memcached, b"VALUE k 0 3\r\nabc\r\nEND\r\n"),
            (Proto::Memcached, b"STORED\r\n"),
        ];
        for (p, reply) in cases {
            assert_eq!(p.reply_len(reply), Some(reply.len()), "{p:?} {reply:?}");
            for cut in 1..reply.len() {
                assert_eq!(
                    p.reply_len(&reply[..cut]),
                    None,
                    "{p:?} {:?}",
                    &reply[..cut]
                );
            }
        }
        let mut buf = Vec::new();
        Reply::Value(b"v").encode(1, &mut buf);
        assert_eq!(Proto::Upcache.reply_len(&buf), Some(buf.len()));
        assert_eq!(Proto::Upcache.reply_len(&buf[..buf.len() - 1]), None);
    }

    #[test]
    fn upcache_replies_are_measured_from_their_header() {
        for reply in [Reply::Value(b"value"), Reply::Done, Reply::Uint(1)] {
            let mut buf = Vec::new();
            reply.encode(9, &mut buf);
            buf.extend_from_slice(b"next");
            let whole = buf.len() - 4;
            assert_eq!(Proto::Upcache.reply_len(&buf), Some(whole), "{reply:?}");
            for cut in 0..whole {
                assert_eq!(
                    Proto::Upcache.reply_len(&buf[..cut]),
                    None,
                    "{reply:?} {cut}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "server error")]
    fn an_upcache_error_reply_is_not_counted() {
        let mut buf = Vec::new();
        Reply::Error {
            code: ErrorCode::ALL[0],
            arg: 0,
            message: b"no",
        }
        .encode(1, &mut buf);
        Proto::Upcache.reply_len(&buf);
    }

    #[test]
    fn resp_arrays_need_all_their_elements() {
        let mut msg = Vec::new();
        resp_command(
            &[b"message", b"__keyevent@0__:expired", b"k\r\n1"],
            &mut msg,
        );
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:expired\r\n:1\r\n";
        let both = [confirm.as_slice(), &msg].concat();
        let (first, n) = resp_array(&both).expect("whole");
        assert_eq!(first, [&b"subscribe"[..], b"__keyevent@0__:expired", b"1"]);
        assert_eq!(n, confirm.len());
        let (second, m) = resp_array(&both[n..]).expect("whole");
        assert_eq!(
            second,
            [&b"message"[..], b"__keyevent@0__:expired", b"k\r\n1"]
        );
        assert_eq!(m, msg.len());
        for cut in 0..msg.len() {
            assert_eq!(resp_array(&msg[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn expiring_sets_and_flushes_are_whole_requests() {
        let mut buf = Vec::new();
        Proto::Resp.set_ttl(b"k", b"v", 1500, 0, &mut buf);
        assert_eq!(
            buf,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
        buf.clear();
        Proto::Upcache.set_ttl(b"k", b"v", 1500, 7, &mut buf);
        match protocol::decode_request(&buf, &Limits::unlimited()) {
            Ok(Decoded::Frame((7, Request::SetTtl { key, value, ttl_ms }), n)) => {
                assert_eq!(
                    (key, value, ttl_ms, n),
                    (&b"k"[..], &b"v"[..], 1500, buf.len())
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Proto::Memcached.reply_len(b"OK\r\n"), Some(4));
    }
}
