//! The wire protocol, sans-IO: frames in, frames out, no sockets. The only place in the crate
//! that reads or writes wire bytes.
//!
//! Every frame is a 24-byte little-endian header followed by `key_len` key bytes and then
//! `value_len` value bytes (`PROTOCOL.md` is the full specification):
//!
//! | offset | size | field                                                     |
//! |-------:|-----:|-----------------------------------------------------------|
//! | 0      | 2    | magic, the bytes `b"UC"`                                  |
//! | 2      | 1    | kind: 1 request, 2 reply, 3 push                          |
//! | 3      | 1    | code: an [`Op`], a reply code, or a [`PushKind`]          |
//! | 4      | 4    | id: request id (echoed by its reply), or subscription id  |
//! | 8      | 4    | key_len                                                   |
//! | 12     | 4    | value_len                                                 |
//! | 16     | 8    | arg: the frame's integer argument (delta, cursor, count…) |
//!
//! Decoding is zero-copy: [`decode_request`], [`decode_reply`] and [`decode_push`] return
//! frames that borrow key and value from the caller's buffer, together with the number of
//! bytes consumed, or [`Decoded::Incomplete`] with the total length the frame needs. A partial
//! frame is a normal outcome, not an error. [`Limits`] are checked from the header alone, so a
//! hostile length never makes the caller grow a buffer.
//!
//! Encoding appends to a `Vec<u8>`. For payloads sent from where they are stored (vectored
//! writes), the `*_head` encoders write only what precedes them: [`encode_value_head`],
//! [`encode_set_push_head`], [`Request::encode_head`]; [`encode_header`] writes any header.
//!
//! Decoding is strict: a frame whose fields do not fit its code (a `Get` that carries a value,
//! a boolean reply whose argument is 7) is [`DecodeError::Malformed`]. So every frame that
//! decodes re-encodes to the same bytes.
//!
//! | file | job |
//! |---|---|
//! | `header.rs` | the fixed header, [`decode_raw`], id helpers ([`peek_id`], [`set_frame_id`]) |
//! | `codes.rs` | opcodes, push kinds, wake reasons, error codes |
//! | `limits.rs` | [`Limits`] and the length constants, [`MAX_VALUE_LEN_CAP`] |
//! | `requests.rs` | [`Request`]: encode, decode |
//! | `replies.rs` | [`Reply`]: encode, decode, [`encode_value_head`] |
//! | `chunks.rs` | the packed body of a keys/items [`Chunk`] and its size rules |
//! | `batch.rs` | the bodies of the multi-key requests ([`Batch`]) and of their reply ([`Values`]) |
//! | `pushes.rs` | [`Push`], [`encode_set_push_head`], [`Incoming`] (replies and pushes mixed) |

use std::fmt;

mod batch;
mod chunks;
mod codes;
mod header;
mod limits;
mod pushes;
mod replies;
mod requests;

pub use batch::{Batch, Values, ABSENT, MAX_BATCH_KEYS};
pub use chunks::{
    chunk_body_bound, chunk_entry_len, Chunk, CHUNK_ENTRY_OVERHEAD, CHUNK_MAX_ENTRIES,
    CHUNK_SOFT_BYTES,
};
pub use codes::{ErrorCode, Op, PushKind, WakeReason};
pub use header::{
    decode_raw, encode_header, peek_id, read_header, set_frame_id, FrameKind, Header, RawFrame,
    HEADER_LEN, MAGIC,
};
pub use limits::{
    LimitError, Limits, DEFAULT_MAX_VALUE_LEN, MAX_KEY_LEN, MAX_TOKEN_LEN, MAX_VALUE_LEN_CAP,
};
pub use pushes::{
    decode_incoming, decode_push, encode_lease_value_head, encode_set_push_head, Incoming, Push,
};
pub use replies::{
    decode_reply, encode_value_head, encode_values_head, encode_versioned_head, Reply,
};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use requests::decode_request_general;
pub use requests::{decode_request, Request};

/// The protocol version a client presents in [`Request::Hello`].
pub const VERSION: u64 = 1;
/// `arg` of a wait request that has no timeout.
pub const NO_TIMEOUT: u64 = u64::MAX;
/// The longest TTL, in ms: 2^40 − 1, about 34.8 years.
pub const MAX_TTL_MS: u64 = (1 << 40) - 1;
/// The `TTL` reply for a key that has none.
pub const NO_TTL: u64 = u64::MAX;

/// A request id, chosen by the client and echoed by the reply.
pub type RequestId = u32;
/// A subscription id, chosen by the server (1..=`u32::MAX`, per connection), carried by every
/// push of that subscription. The `SUBSCRIBE` reply carries it as a `UINT` whose value is
/// always at most `u32::MAX`; `UNSUBSCRIBE` sends it back in `arg`.
pub type SubId = u32;

/// The outcome of a decode call that did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole frame, borrowing from the buffer, and how many bytes it took.
    Frame(T, usize),
    /// Not enough bytes yet: the frame needs `need` bytes in all (a header's worth while the
    /// header itself is incomplete). `need` never exceeds [`Limits::max_frame`].
    Incomplete {
        /// Total bytes the buffer must hold before the next call can make progress.
        need: usize,
    },
}

/// Why bytes are not a frame. Every variant but [`DecodeError::UnknownCode`] leaves the stream
/// unsynchronised: the connection must be closed.
///
/// The checks run in this order, and the first that fails is the error: magic
/// ([`DecodeError::BadMagic`], as soon as one byte arrives), kind ([`DecodeError::WrongKind`],
/// as soon as the third byte arrives), then, once the 24-byte header is in, key length
/// ([`DecodeError::KeyTooLarge`]), value length ([`DecodeError::ValueTooLarge`]); then, once
/// the whole frame is in, the code ([`DecodeError::UnknownCode`]) and the fields' shape
/// ([`DecodeError::Malformed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame does not start with [`MAGIC`].
    BadMagic([u8; 2]),
    /// The kind byte is not the one this decoder reads.
    WrongKind {
        /// The kind expected.
        expected: u8,
        /// The kind found.
        found: u8,
    },
    /// The key length in the header is over the limit.
    KeyTooLarge {
        /// The length in the header.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The value length in the header is over the limit.
    ValueTooLarge {
        /// The length in the header.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The code is not one this version knows. The frame is whole and `len` bytes long, so a
    /// reader may skip it and answer with an error instead of closing.
    UnknownCode {
        /// The code byte.
        code: u8,
        /// The frame's id.
        id: u32,
        /// The frame's full length.
        len: usize,
    },
    /// The fields do not fit the code (a value on a `Get`, a key on a `Count`...).
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadMagic(m) => write!(f, "bad magic {m:02x?}: not an upcache frame"),
            DecodeError::WrongKind { expected, found } => {
                write!(f, "frame kind {found}, expected {expected}")
            }
            DecodeError::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes is over the limit of {max}")
            }
            DecodeError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes is over the limit of {max}")
            }
            DecodeError::UnknownCode { code, .. } => write!(f, "unknown code {code:#04x}"),
            DecodeError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A key field that is either borrowed or an 8-byte word (the snapshot bound of keys/items).
#[derive(Clone, Copy, Debug)]
enum Field<'a> {
    Bytes(&'a [u8]),
    Word([u8; 8]),
}

impl Field<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Field::Bytes(b) => b,
            Field::Word(w) => w,
        }
    }
}

/// The 8-byte little-endian word in `b`, if `b` is exactly 8 bytes.
fn word(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn check(ok: bool, why: &'static str) -> Result<(), DecodeError> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Malformed(why))
    }
}

/// A length for a header field. Callers guarantee it fits (lengths are checked against
/// [`Limits`], whose values never exceed [`MAX_VALUE_LEN_CAP`], before anything is encoded).
fn len32(len: usize) -> u32 {
    debug_assert!(
        u32::try_from(len).is_ok(),
        "length {len} does not fit a u32"
    );
    len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_request(r: Request<'_>) {
        let mut buf = Vec::new();
        r.encode(7, &mut buf);
        assert_eq!(buf.len(), r.encoded_len());
        match decode_request(&buf, &Limits::default()).unwrap() {
            Decoded::Frame((id, back), n) => {
                assert_eq!((id, back, n), (7, r, buf.len()));
            }
            other => panic!("{other:?}"),
        }
        // Every strict prefix is incomplete, never an error.
        for cut in 0..buf.len() {
            assert!(matches!(
                decode_request(&buf[..cut], &Limits::default()),
                Ok(Decoded::Incomplete { .. })
            ));
        }
    }

    #[test]
    fn every_request_round_trips_and_prefixes_are_incomplete() {
        for r in [
            Request::Hello {
                version: VERSION,
                token: b"abc",
            },
            Request::Get { key: b"k" },
            Request::Set {
                key: b"k",
                value: b"",
            },
            Request::Set {
                key: b"",
                value: b"v",
            },
            Request::Exists { key: b"k" },
            Request::Remove { key: b"k" },
            Request::Incr {
                key: b"k",
                delta: i64::MIN,
            },
            Request::Clear,
            Request::Count,
            Request::Keys {
                cursor: 9,
                until: 3,
            },
            Request::Items {
                cursor: 0,
                until: 0,
            },
            Request::Wait {
                key: b"k",
                value: None,
                timeout_ms: NO_TIMEOUT,
            },
            Request::Wait {
                key: b"k",
                value: Some(b""),
                timeout_ms: 5,
            },
            Request::Subscribe { key: Some(b"") },
            Request::Subscribe { key: None },
            Request::Unsubscribe { sub: 3 },
            Request::Stats,
            Request::Shutdown,
            Request::Ping,
            Request::SetTtl {
                key: b"k",
                value: b"v",
                ttl_ms: MAX_TTL_MS,
            },
            Request::SetTtl {
                key: b"k",
                value: b"",
                ttl_ms: 0,
            },
            Request::Expire {
                key: b"k",
                ttl_ms: 1,
            },
            Request::Persist { key: b"k" },
            Request::Ttl { key: b"" },
            Request::GetVersioned { key: b"k" },
            Request::SetIfVersion {
                key: b"k",
                value: b"v",
                version: u64::MAX,
            },
            Request::Add {
                key: b"k",
                value: b"",
                ttl_ms: 0,
            },
            Request::Replace {
                key: b"",
                value: b"v",
                ttl_ms: MAX_TTL_MS + 1,
            },
        ] {
            one_request(r);
        }
        let mut keys = Vec::new();
        let keys = Batch::pack(&mut keys, false, [(&b"a"[..], None), (&b""[..], None)]);
        let mut pairs = Vec::new();
        let pairs = Batch::pack(&mut pairs, true, [(&b"a"[..], Some(&b"1"[..]))]);
        for r in [
            Request::GetMany { keys },
            Request::GetMany {
                keys: Batch::empty(false),
            },
            Request::RemoveMany { keys },
            Request::SetMany { pairs, ttl_ms: 0 },
            Request::SetMany { pairs, ttl_ms: 5 },
            Request::SetMany {
                pairs: Batch::empty(true),
                ttl_ms: u64::MAX,
            },
            Request::GetOrLease {
                key: b"k",
                timeout_ms: MAX_TTL_MS,
            },
            Request::Release {
                key: b"k",
                req: u32::MAX,
            },
        ] {
            one_request(r);
        }
    }

    /// A multi-key request whose body does not match its count, is cut short, names a key
    /// over the limit, or a `SET_MANY` whose TTL field is neither empty nor 8 bytes of a
    /// TTL other than 0: malformed, never a panic.
    #[test]
    fn malformed_batches_are_refused() {
        let mut keys = Vec::new();
        Batch::pack(&mut keys, false, [(&b"ab"[..], None)]);
        let bad = |code: Op, key: &[u8], value: &[u8], arg: u64, limits: &Limits| {
            let mut buf = Vec::new();
            encode_header(
                &mut buf,
                &Header {
                    kind: 1,
                    code: code as u8,
                    id: 1,
                    key_len: key.len() as u32,
                    value_len: value.len() as u32,
                    arg,
                },
            );
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
            let got = decode_request(&buf, limits);
            assert!(matches!(got, Err(DecodeError::Malformed(_))), "{got:?}");
        };
        let l = Limits::default();
        for op in [Op::GetMany, Op::RemoveMany] {
            bad(op, b"", &keys, 2, &l);
            bad(op, b"", &keys, 0, &l);
            bad(op, b"", &keys[..keys.len() - 1], 1, &l);
            bad(op, b"", &keys[..3], 1, &l);
            bad(op, b"x", &keys, 1, &l);
            let small = Limits {
                max_key: 1,
                max_value: 100,
            };
            bad(op, b"", &keys, 1, &small);
        }
        let mut pairs = Vec::new();
        Batch::pack(&mut pairs, true, [(&b"a"[..], Some(&b"1"[..]))]);
        bad(Op::SetMany, b"", &pairs, 2, &l);
        bad(Op::SetMany, b"", &keys, 1, &l); // keys where pairs belong
        bad(Op::SetMany, &[1, 2, 3], &pairs, 1, &l);
        bad(Op::SetMany, &0u64.to_le_bytes(), &pairs, 1, &l);
        bad(Op::GetVersioned, b"k", b"v", 0, &l);
        bad(Op::GetVersioned, b"k", b"", 1, &l);
    }

    #[test]
    fn every_op_has_a_request() {
        assert_eq!(Op::ALL.len(), 31);
        for op in Op::ALL {
            assert_eq!(Op::from_u8(*op as u8), Some(*op));
        }
    }

    #[test]
    fn replies_and_pushes_round_trip() {
        for r in [
            Reply::Done,
            Reply::Nil,
            Reply::Value(b"v"),
            Reply::Bool(true),
            Reply::Int(-5),
            Reply::Uint(u64::MAX),
            Reply::Chunk {
                next: 4,
                until: 8,
                body: b"xyz",
            },
            Reply::Text(b"{}"),
            Reply::Versioned {
                value: b"v",
                version: 7,
            },
            Reply::Versioned {
                value: b"",
                version: u64::MAX,
            },
            Reply::Version(3),
            Reply::Values(Values::parse(&[], 0).unwrap()),
            Reply::Values(Values::parse(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, b'x'], 2).unwrap()),
            Reply::Leased,
            Reply::Waiting,
            Reply::Error {
                code: ErrorCode::VersionMismatch,
                arg: 1,
                message: b"no",
            },
        ] {
            let mut buf = Vec::new();
            r.encode(9, &mut buf);
            assert_eq!(
                decode_reply(&buf, &Limits::unlimited()).unwrap(),
                Decoded::Frame((9, r), buf.len())
            );
            assert_eq!(
                decode_incoming(&buf, &Limits::unlimited()).unwrap(),
                Decoded::Frame(Incoming::Reply(9, r), buf.len())
            );
        }
        let push = |kind, key, value| Push {
            kind,
            id: 2,
            key,
            value,
            arg: 0,
        };
        for p in [
            push(PushKind::Set, b"k", b"v"),
            push(PushKind::LeaseValue, b"", b"v"),
            push(PushKind::LeaseGranted, b"", b""),
        ] {
            let mut buf = Vec::new();
            p.encode(&mut buf);
            assert_eq!(
                decode_push(&buf, &Limits::unlimited()).unwrap(),
                Decoded::Frame(p, buf.len())
            );
            assert_eq!(
                decode_incoming(&buf, &Limits::unlimited()).unwrap(),
                Decoded::Frame(Incoming::Push(p), buf.len())
            );
        }
        // The head encoder writes what a whole push would.
        let mut head = Vec::new();
        encode_lease_value_head(&mut head, 2, 1);
        head.push(b'v');
        let mut whole = Vec::new();
        push(PushKind::LeaseValue, b"", b"v").encode(&mut whole);
        assert_eq!(head, whole);
        // A lease value with a key, or a grant with a value, is malformed.
        for p in [
            push(PushKind::LeaseValue, b"k", b"v"),
            push(PushKind::LeaseGranted, b"", b"v"),
        ] {
            let mut buf = Vec::new();
            p.encode(&mut buf);
            assert!(matches!(
                decode_push(&buf, &Limits::unlimited()),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let mut buf = Vec::new();
        Request::Set {
            key: b"k",
            value: &[0u8; 100],
        }
        .encode(1, &mut buf);
        let small = Limits {
            max_key: 16,
            max_value: 10,
        };
        // Only the header is present: the limit still fires, before the body arrives.
        assert_eq!(
            decode_request(&buf[..HEADER_LEN], &small),
            Err(DecodeError::ValueTooLarge { len: 100, max: 10 })
        );
        let mut buf = Vec::new();
        Request::Get { key: &[1u8; 17] }.encode(1, &mut buf);
        assert_eq!(
            decode_request(&buf, &small),
            Err(DecodeError::KeyTooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn garbage_fails_fast_and_unknown_ops_are_skippable() {
        assert_eq!(
            decode_request(b"G", &Limits::default()),
            Err(DecodeError::BadMagic(*b"G\0"))
        );
        assert_eq!(
            decode_request(b"GET k\r\n", &Limits::default()),
            Err(DecodeError::BadMagic(*b"GE"))
        );
        let mut buf = Vec::new();
        encode_header(
            &mut buf,
            &Header {
                kind: 1,
                code: 0x7f,
                id: 5,
                key_len: 1,
                value_len: 0,
                arg: 0,
            },
        );
        buf.push(b'k');
        assert_eq!(
            decode_request(&buf, &Limits::default()),
            Err(DecodeError::UnknownCode {
                code: 0x7f,
                id: 5,
                len: 25
            })
        );
    }

    #[test]
    fn strict_shapes() {
        let mut buf = Vec::new();
        encode_header(
            &mut buf,
            &Header {
                kind: 1,
                code: Op::Get as u8,
                id: 1,
                key_len: 0,
                value_len: 1,
                arg: 0,
            },
        );
        buf.push(0);
        assert!(matches!(
            decode_request(&buf, &Limits::default()),
            Err(DecodeError::Malformed(_))
        ));
        let mut buf = Vec::new();
        encode_header(
            &mut buf,
            &Header {
                kind: 2,
                code: 0x03,
                id: 1,
                key_len: 0,
                value_len: 0,
                arg: 2,
            },
        );
        assert!(matches!(
            decode_reply(&buf, &Limits::default()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn wake_reasons_decode_including_cleared() {
        for reason in WakeReason::ALL {
            let p = Push {
                kind: PushKind::Woken,
                id: 4,
                key: b"",
                value: b"",
                arg: *reason as u64,
            };
            let mut buf = Vec::new();
            p.encode(&mut buf);
            assert_eq!(
                decode_push(&buf, &Limits::unlimited()),
                Ok(Decoded::Frame(p, buf.len()))
            );
        }
        assert_eq!(WakeReason::Cleared as u8, 3);
        let mut buf = Vec::new();
        Push {
            kind: PushKind::Woken,
            id: 4,
            key: b"",
            value: b"",
            arg: 4,
        }
        .encode(&mut buf);
        assert!(matches!(
            decode_push(&buf, &Limits::unlimited()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn head_encoders_match_whole_frames() {
        let mut head = Vec::new();
        encode_value_head(&mut head, 9, 3);
        let mut whole = Vec::new();
        Reply::Value(b"abc").encode(9, &mut whole);
        assert_eq!(head[..], whole[..HEADER_LEN]);
        head.extend_from_slice(b"abc");
        assert_eq!(head, whole);

        let mut head = Vec::new();
        encode_versioned_head(&mut head, 9, 3, 77);
        head.extend_from_slice(b"abc");
        let mut whole = Vec::new();
        Reply::Versioned {
            value: b"abc",
            version: 77,
        }
        .encode(9, &mut whole);
        assert_eq!(head, whole);

        let mut body = Vec::new();
        let values = Values::pack(&mut body, [Some(&b"ab"[..]), None]);
        let mut head = Vec::new();
        encode_values_head(&mut head, 9, 2, values.body().len() as u32);
        Values::entry_head(&mut head, Some(2));
        head.extend_from_slice(b"ab");
        Values::entry_head(&mut head, None);
        let mut whole = Vec::new();
        Reply::Values(values).encode(9, &mut whole);
        assert_eq!(head, whole);

        let mut head = Vec::new();
        encode_set_push_head(&mut head, 7, 1, 2);
        head.extend_from_slice(b"kvv");
        let mut whole = Vec::new();
        Push {
            kind: PushKind::Set,
            id: 7,
            key: b"k",
            value: b"vv",
            arg: 0,
        }
        .encode(&mut whole);
        assert_eq!(head, whole);
    }

    #[test]
    fn unsubscribe_carries_a_u32_subscription_id() {
        let mut buf = Vec::new();
        Request::Unsubscribe { sub: u32::MAX }.encode(3, &mut buf);
        assert_eq!(peek_id(&buf), 3);
        assert_eq!(buf[16..24], (u32::MAX as u64).to_le_bytes());
        // An id wider than 32 bits is malformed.
        buf[20] = 1;
        assert!(matches!(
            decode_request(&buf, &Limits::default()),
            Err(DecodeError::Malformed(_))
        ));
    }
}
