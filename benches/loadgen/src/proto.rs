//! The three wire protocols the load generator speaks, as encoders and reply parsers over byte
//! buffers: upcache (the crate's own codec), RESP (Redis) and the memcached text protocol.

use memchr::memmem;
use upcache::protocol::{self, Decoded, Limits, Reply, Request};

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
            Proto::Resp => {
                out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
                bulk(key, out);
            }
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
            Proto::Resp => {
                out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                bulk(key, out);
                bulk(value, out);
            }
            Proto::Memcached => {
                out.extend_from_slice(b"set ");
                out.extend_from_slice(key);
                out.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The length of the first whole reply in `buf`, or `None` if it is not all there.
    /// Panics on an error reply: a benchmark must not count failures as operations.
    pub fn reply_len(self, buf: &[u8]) -> Option<usize> {
        match self {
            Proto::Upcache => match protocol::decode_reply(buf, &Limits::unlimited()) {
                Ok(Decoded::Frame((_, Reply::Error { code, .. }), _)) => {
                    panic!("server error {code}")
                }
                Ok(Decoded::Frame((_, _), n)) => Some(n),
                Ok(Decoded::Incomplete { .. }) => None,
                Err(e) => panic!("bad reply: {e}"),
            },
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
                } else if buf.starts_with(b"STORED") || buf.starts_with(b"END") {
                    Some(line + 2)
                } else {
                    panic!("memcached error: {}", String::from_utf8_lossy(&buf[..line]))
                }
            }
        }
    }
}

fn bulk(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
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
}
