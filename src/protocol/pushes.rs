//! Pushes: frames the server sends unprompted (subscription events, wake-ups), and
//! [`Incoming`], what a connection that carries both replies and pushes reads.

use super::header::{decode_raw, encode_header, FrameKind, Header, RawFrame};
use super::{
    check, len32, DecodeError, Decoded, Limits, PushKind, Reply, RequestId, SubId, WakeReason,
};

/// A decoded push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Push<'a> {
    /// What happened.
    pub kind: PushKind,
    /// The subscription (or, for `Woken`, the wait request) it belongs to.
    pub id: u32,
    /// The key (`Set`, `Removed`).
    pub key: &'a [u8],
    /// The new value (`Set`).
    pub value: &'a [u8],
    /// Dropped events (`Lagged`), or a [`WakeReason`] (`Woken`).
    pub arg: u64,
}

impl<'a> Push<'a> {
    /// The header of this push; key and value follow it.
    pub fn header(&self) -> Header {
        Header {
            kind: FrameKind::Push as u8,
            code: self.kind as u8,
            id: self.id,
            // Unreachable for a server's pushes: keys come from decoded requests (at most
            // `MAX_KEY_LEN`) and values from the store (at most `MAX_VALUE_LEN_CAP`).
            key_len: u32::try_from(self.key.len()).expect("key fits the protocol"),
            value_len: u32::try_from(self.value.len()).expect("value fits the protocol"),
            arg: self.arg,
        }
    }

    /// Appends the whole encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_header(out, &self.header());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }

    fn from_raw(f: &RawFrame<'a>) -> Result<Self, DecodeError> {
        let h = &f.header;
        let Some(kind) = PushKind::from_u8(h.code) else {
            return Err(DecodeError::UnknownCode {
                code: h.code,
                id: h.id,
                len: h.frame_len(),
            });
        };
        let (key, value, arg) = (f.key, f.value, h.arg);
        match kind {
            PushKind::Set => check(arg == 0, "set event carries no argument")?,
            PushKind::Removed | PushKind::Expired => check(
                value.is_empty() && arg == 0,
                "removed and expired events carry only a key",
            )?,
            PushKind::Cleared | PushKind::Closed => check(
                key.is_empty() && value.is_empty() && arg == 0,
                "this event carries no fields",
            )?,
            PushKind::Lagged => check(
                key.is_empty() && value.is_empty(),
                "lagged event carries only a count",
            )?,
            PushKind::LeaseValue => check(
                key.is_empty() && arg == 0,
                "a lease value carries only the value",
            )?,
            PushKind::LeaseGranted => check(
                key.is_empty() && value.is_empty() && arg == 0,
                "a lease grant carries no fields",
            )?,
            PushKind::Woken => {
                check(
                    key.is_empty() && value.is_empty(),
                    "wake carries only a reason",
                )?;
                check(
                    arg < 256 && WakeReason::from_u8(arg as u8).is_some(),
                    "bad wake reason",
                )?;
            }
        }
        Ok(Push {
            kind,
            id: h.id,
            key,
            value,
            arg,
        })
    }
}

/// Decodes one push from the front of `buf`.
pub fn decode_push<'a>(buf: &'a [u8], limits: &Limits) -> Result<Decoded<Push<'a>>, DecodeError> {
    match decode_raw(buf, FrameKind::Push, limits)? {
        Decoded::Incomplete { need } => Ok(Decoded::Incomplete { need }),
        Decoded::Frame(f, len) => Ok(Decoded::Frame(Push::from_raw(&f)?, len)),
    }
}

/// A server-to-client frame: what a client reading a connection that carries both replies
/// and pushes gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A reply to a request.
    Reply(RequestId, Reply<'a>),
    /// A push.
    Push(Push<'a>),
}

/// Decodes one reply or push from the front of `buf`.
pub fn decode_incoming<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<Incoming<'a>>, DecodeError> {
    let kind = match buf.get(2) {
        Some(&k) if k == FrameKind::Push as u8 => FrameKind::Push,
        _ => FrameKind::Reply,
    };
    match decode_raw(buf, kind, limits)? {
        Decoded::Incomplete { need } => Ok(Decoded::Incomplete { need }),
        Decoded::Frame(f, len) => {
            let item = match kind {
                FrameKind::Push => Incoming::Push(Push::from_raw(&f)?),
                _ => Incoming::Reply(f.header.id, Reply::from_raw(&f)?),
            };
            Ok(Decoded::Frame(item, len))
        }
    }
}

/// Appends the 24-byte header of a `Set` push for subscription `sub` whose key (`key_len`
/// bytes) and then value (`value_len` bytes) the caller sends next, from wherever they are
/// stored.
///
/// Both lengths fit a `u32`: the entry was admitted by [`Limits`] (checked in debug builds).
pub fn encode_set_push_head(out: &mut Vec<u8>, sub: SubId, key_len: usize, value_len: usize) {
    encode_header(
        out,
        &Header {
            kind: FrameKind::Push as u8,
            code: PushKind::Set as u8,
            id: sub,
            key_len: len32(key_len),
            value_len: len32(value_len),
            arg: 0,
        },
    );
}

/// Appends the 24-byte header of a `LeaseValue` push for the waiting `GetOrLease` request
/// `req`, whose `value_len` value bytes the caller sends next, from wherever they are stored.
///
/// `value_len` fits a `u32`: the value was admitted by [`Limits`] (checked in debug builds).
pub fn encode_lease_value_head(out: &mut Vec<u8>, req: RequestId, value_len: usize) {
    encode_header(
        out,
        &Header {
            kind: FrameKind::Push as u8,
            code: PushKind::LeaseValue as u8,
            id: req,
            key_len: 0,
            value_len: len32(value_len),
            arg: 0,
        },
    );
}
