//! Replies: one per request, in request order.

use super::header::{decode_raw, encode_header, FrameKind, Header, RawFrame, HEADER_LEN, MAGIC};
use super::{
    check, len32, word, DecodeError, Decoded, ErrorCode, Field, Limits, RequestId, Values,
};

/// Reply codes below 0x40; 0x40 and up are [`ErrorCode`]s.
mod reply_code {
    pub const DONE: u8 = 0x00;
    pub const NIL: u8 = 0x01;
    pub const VALUE: u8 = 0x02;
    pub const BOOL: u8 = 0x03;
    pub const INT: u8 = 0x04;
    pub const UINT: u8 = 0x05;
    pub const CHUNK: u8 = 0x06;
    pub const TEXT: u8 = 0x07;
    pub const VERSIONED: u8 = 0x08;
    pub const VERSION: u8 = 0x09;
    pub const VALUES: u8 = 0x0a;
    pub const LEASED: u8 = 0x0c;
    pub const WAITING: u8 = 0x0d;
}

/// A decoded reply. Replies describe themselves: the code says which shape it is, so a reply
/// decodes without knowing its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The request was carried out (set, clear, unsubscribe, a registered wait...).
    Done,
    /// `get` of a missing key.
    Nil,
    /// `get` of a present key.
    Value(&'a [u8]),
    /// `exists`, `remove`, a wait already satisfied.
    Bool(bool),
    /// `incr`: the new value.
    Int(i64),
    /// `count`, a subscription id, the server's version in a handshake.
    Uint(u64),
    /// One chunk of `keys` or `items`: packed entries (see [`super::Chunk`]), the cursor for the
    /// next chunk (0 when this was the last) and the snapshot bound to send with it.
    Chunk {
        /// The cursor to ask for next, 0 at the end.
        next: u64,
        /// The snapshot bound: entries first stored after the enumeration began are left out.
        until: u64,
        /// The packed entries.
        body: &'a [u8],
    },
    /// `stats`: UTF-8 JSON.
    Text(&'a [u8]),
    /// `get_versioned` of a present key: its value and version.
    Versioned {
        /// The value.
        value: &'a [u8],
        /// Its version.
        version: u64,
    },
    /// A conditional write that was carried out: the key's new version.
    Version(u64),
    /// `get_many`: one value or absence per key asked for.
    Values(Values<'a>),
    /// `get_or_lease` of a missing key: the caller holds the key's lease; it computes the value
    /// and stores it (or releases the lease).
    Leased,
    /// `get_or_lease` of a missing key whose lease another request holds: a `LeaseValue` or
    /// `LeaseGranted` push with the request's id follows.
    Waiting,
    /// The request failed.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Code-specific detail (the server's version for `VersionMismatch`).
        arg: u64,
        /// A UTF-8 message for people.
        message: &'a [u8],
    },
}

impl<'a> Reply<'a> {
    /// (code, key, value, arg) as they go on the wire.
    fn fields(&self) -> (u8, Field<'a>, &'a [u8], u64) {
        use reply_code::*;
        let none = Field::Bytes(&[]);
        match *self {
            Reply::Done => (DONE, none, &[], 0),
            Reply::Nil => (NIL, none, &[], 0),
            Reply::Value(v) => (VALUE, none, v, 0),
            Reply::Bool(b) => (BOOL, none, &[], b as u64),
            Reply::Int(i) => (INT, none, &[], i as u64),
            Reply::Uint(u) => (UINT, none, &[], u),
            Reply::Chunk { next, until, body } => {
                (CHUNK, Field::Word(until.to_le_bytes()), body, next)
            }
            Reply::Text(t) => (TEXT, none, t, 0),
            Reply::Versioned { value, version } => (VERSIONED, none, value, version),
            Reply::Version(v) => (VERSION, none, &[], v),
            Reply::Values(v) => (VALUES, none, v.body(), v.len().into()),
            Reply::Leased => (LEASED, none, &[], 0),
            Reply::Waiting => (WAITING, none, &[], 0),
            Reply::Error { code, arg, message } => (code as u8, none, message, arg),
        }
    }

    /// The header of a reply: its key field (a `Chunk`'s 8-byte bound; empty for every
    /// other reply) and payload follow it. A server writes this header into its buffer and the payload from wherever
    /// it is stored.
    pub fn header(&self, id: RequestId) -> Header {
        let (code, key, value, arg) = self.fields();
        Header {
            kind: FrameKind::Reply as u8,
            code,
            id,
            key_len: key.as_slice().len() as u32,
            // Unreachable for a server's replies: a value is at most `MAX_VALUE_LEN_CAP`
            // (request decoding refuses more), and the longest chunk at that cap fits
            // (`chunk_body_bound`); stats text is small.
            value_len: u32::try_from(value.len()).expect("reply payload fits the protocol"),
            arg,
        }
    }

    /// Appends the whole encoded frame to `out`.
    #[inline]
    pub fn encode(&self, id: RequestId, out: &mut Vec<u8>) {
        use reply_code::*;
        // The replies without a payload (most of a server's) are one 24-byte write.
        let (code, arg) = match *self {
            Reply::Done => (DONE, 0),
            Reply::Nil => (NIL, 0),
            Reply::Bool(b) => (BOOL, b as u64),
            Reply::Int(i) => (INT, i as u64),
            Reply::Uint(u) => (UINT, u),
            _ => return self.encode_with_payload(id, out),
        };
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = FrameKind::Reply as u8;
        b[3] = code;
        b[4..8].copy_from_slice(&id.to_le_bytes());
        b[16..24].copy_from_slice(&arg.to_le_bytes());
        out.extend_from_slice(&b);
    }

    fn encode_with_payload(&self, id: RequestId, out: &mut Vec<u8>) {
        let (code, key, value, arg) = self.fields();
        let (key, value_len) = (key.as_slice(), len32(value.len()));
        out.reserve(HEADER_LEN + key.len() + value.len());
        encode_header(
            out,
            &Header {
                kind: FrameKind::Reply as u8,
                code,
                id,
                key_len: key.len() as u32,
                value_len,
                arg,
            },
        );
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }

    pub(super) fn from_raw(f: &RawFrame<'a>) -> Result<Self, DecodeError> {
        use reply_code::*;
        let h = &f.header;
        if h.code == CHUNK {
            let until = word(f.key).ok_or(DecodeError::Malformed("bound must be 8 bytes"))?;
            return Ok(Reply::Chunk {
                next: h.arg,
                until,
                body: f.value,
            });
        }
        check(f.key.is_empty(), "replies carry no key")?;
        let (value, arg) = (f.value, h.arg);
        let no_value = || check(value.is_empty(), "this reply carries no value");
        let no_arg = || check(arg == 0, "this reply carries no argument");
        Ok(match h.code {
            DONE | NIL | LEASED | WAITING => {
                no_value()?;
                no_arg()?;
                match h.code {
                    DONE => Reply::Done,
                    NIL => Reply::Nil,
                    LEASED => Reply::Leased,
                    _ => Reply::Waiting,
                }
            }
            VALUE => {
                no_arg()?;
                Reply::Value(value)
            }
            BOOL => {
                no_value()?;
                check(arg <= 1, "boolean out of range")?;
                Reply::Bool(arg == 1)
            }
            INT | UINT => {
                no_value()?;
                if h.code == INT {
                    Reply::Int(arg as i64)
                } else {
                    Reply::Uint(arg)
                }
            }
            TEXT => {
                no_arg()?;
                Reply::Text(value)
            }
            VERSIONED => Reply::Versioned {
                value,
                version: arg,
            },
            VERSION => {
                no_value()?;
                Reply::Version(arg)
            }
            VALUES => Reply::Values(Values::parse(value, arg)?),
            other => match ErrorCode::from_u8(other) {
                Some(code) => Reply::Error {
                    code,
                    arg,
                    message: value,
                },
                None => {
                    return Err(DecodeError::UnknownCode {
                        code: other,
                        id: h.id,
                        len: h.frame_len(),
                    })
                }
            },
        })
    }
}

/// Decodes one reply from the front of `buf`.
pub fn decode_reply<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<(RequestId, Reply<'a>)>, DecodeError> {
    match decode_raw(buf, FrameKind::Reply, limits)? {
        Decoded::Incomplete { need } => Ok(Decoded::Incomplete { need }),
        Decoded::Frame(f, len) => Ok(Decoded::Frame((f.header.id, Reply::from_raw(&f)?), len)),
    }
}

/// Appends the 24-byte header of a `VERSIONED` reply to request `id` carrying `version`, whose
/// `value_len` payload bytes the caller sends next (as [`encode_value_head`]).
#[inline]
pub fn encode_versioned_head(out: &mut Vec<u8>, id: RequestId, value_len: usize, version: u64) {
    encode_header(
        out,
        &Header {
            value_len: len32(value_len),
            ..Reply::Versioned {
                value: &[],
                version,
            }
            .header(id)
        },
    );
}

/// Appends the 24-byte header of a `VALUES` reply to request `id` of `count` entries whose
/// body, `body_len` bytes, the caller sends next: each entry's [`Values::entry_head`], then
/// its value from wherever it is stored. `body_len` fits a `u32` (the caller checks; see
/// [`ErrorCode::ReplyTooLarge`]).
#[inline]
pub fn encode_values_head(out: &mut Vec<u8>, id: RequestId, count: u32, body_len: u32) {
    encode_header(
        out,
        &Header {
            kind: FrameKind::Reply as u8,
            code: reply_code::VALUES,
            id,
            key_len: 0,
            value_len: body_len,
            arg: count.into(),
        },
    );
}

/// Appends the 24-byte header of a `VALUE` reply to request `id` whose `value_len` payload
/// bytes the caller sends next, from wherever they are stored (a server sends a stored value
/// without copying it).
///
/// `value_len` fits a `u32`: the value was admitted by [`Limits`] (checked in debug builds).
#[inline]
pub fn encode_value_head(out: &mut Vec<u8>, id: RequestId, value_len: usize) {
    encode_header(
        out,
        &Header {
            kind: FrameKind::Reply as u8,
            code: reply_code::VALUE,
            id,
            key_len: 0,
            value_len: len32(value_len),
            arg: 0,
        },
    );
}
