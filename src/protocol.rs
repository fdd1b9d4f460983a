//! The wire protocol, sans-IO: frames in, frames out, no sockets.
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
//! Encoding appends to a `Vec<u8>`; [`encode_header`] alone lets a server write a header into
//! its buffer and send the value from where it is stored (vectored writes).
//!
//! Decoding is strict: a frame whose fields do not fit its code (a `Get` that carries a value,
//! a boolean reply whose argument is 7) is [`DecodeError::Malformed`]. So every frame that
//! decodes re-encodes to the same bytes.

use std::fmt;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"UC";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;
/// The protocol version a client presents in [`Request::Hello`].
pub const VERSION: u64 = 1;
/// Longest key the protocol allows (64 KiB).
pub const MAX_KEY_LEN: u32 = 64 * 1024;
/// Default longest value (64 MiB); a server may be started with up to `u32::MAX`.
pub const DEFAULT_MAX_VALUE_LEN: u32 = 64 * 1024 * 1024;
/// Longest handshake token.
pub const MAX_TOKEN_LEN: usize = 64;
/// `arg` of a wait request that has no timeout.
pub const NO_TIMEOUT: u64 = u64::MAX;

/// A request id, chosen by the client and echoed by the reply.
pub type RequestId = u32;
/// A subscription id, chosen by the server, carried by every push of that subscription.
pub type SubId = u32;

/// What a decoder accepts. Checked from the header, before the body is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key accepted (at most [`MAX_KEY_LEN`]).
    pub max_key: u32,
    /// Longest value accepted.
    pub max_value: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key: MAX_KEY_LEN,
            max_value: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

impl Limits {
    /// Limits for a client reading replies: values as large as any server may send, and
    /// packed key/item chunks, which ride in the value field.
    pub const fn unlimited() -> Self {
        Limits {
            max_key: MAX_KEY_LEN,
            max_value: u32::MAX,
        }
    }
    /// The largest frame these limits admit.
    pub fn max_frame(&self) -> usize {
        HEADER_LEN + self.max_key as usize + self.max_value as usize
    }
}

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

/// Frame kinds (byte 2 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to server.
    Request = 1,
    /// Server to client, one per request, in request order.
    Reply = 2,
    /// Server to client, unprompted: subscription events and wake-ups.
    Push = 3,
}

/// The fixed header, as plain fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame kind byte.
    pub kind: u8,
    /// Opcode, reply code or push kind.
    pub code: u8,
    /// Request or subscription id.
    pub id: u32,
    /// Key length.
    pub key_len: u32,
    /// Value length.
    pub value_len: u32,
    /// Integer argument.
    pub arg: u64,
}

impl Header {
    /// The whole frame's length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.value_len as usize
    }
}

/// Writes a header into `out` (appends 24 bytes).
pub fn encode_header(out: &mut Vec<u8>, h: &Header) {
    let mut b = [0u8; HEADER_LEN];
    b[0..2].copy_from_slice(&MAGIC);
    b[2] = h.kind;
    b[3] = h.code;
    b[4..8].copy_from_slice(&h.id.to_le_bytes());
    b[8..12].copy_from_slice(&h.key_len.to_le_bytes());
    b[12..16].copy_from_slice(&h.value_len.to_le_bytes());
    b[16..24].copy_from_slice(&h.arg.to_le_bytes());
    out.extend_from_slice(&b);
}

fn read_header(buf: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
    if buf[0..2] != MAGIC {
        return Err(DecodeError::BadMagic([buf[0], buf[1]]));
    }
    let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let mut arg = [0u8; 8];
    arg.copy_from_slice(&buf[16..24]);
    Ok(Header {
        kind: buf[2],
        code: buf[3],
        id: u32_at(4),
        key_len: u32_at(8),
        value_len: u32_at(12),
        arg: u64::from_le_bytes(arg),
    })
}

/// A frame split into header and borrowed body, before the code is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The header.
    pub header: Header,
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
}

/// Splits one frame of the given kind off the front of `buf`, checking `limits` from the header.
pub fn decode_raw<'a>(
    buf: &'a [u8],
    kind: FrameKind,
    limits: &Limits,
) -> Result<Decoded<RawFrame<'a>>, DecodeError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        // Check magic and kind as soon as they arrive, so garbage fails fast without waiting
        // for a whole header.
        let n = buf.len().min(2);
        if buf[..n] != MAGIC[..n] {
            let mut m = [0u8; 2];
            m[..n].copy_from_slice(&buf[..n]);
            return Err(DecodeError::BadMagic(m));
        }
        if let Some(&found) = buf.get(2) {
            if found != kind as u8 {
                return Err(DecodeError::WrongKind {
                    expected: kind as u8,
                    found,
                });
            }
        }
        return Ok(Decoded::Incomplete { need: HEADER_LEN });
    };
    let h = read_header(head)?;
    if h.kind != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind as u8,
            found: h.kind,
        });
    }
    if h.key_len > limits.max_key {
        return Err(DecodeError::KeyTooLarge {
            len: h.key_len,
            max: limits.max_key,
        });
    }
    if h.value_len > limits.max_value {
        return Err(DecodeError::ValueTooLarge {
            len: h.value_len,
            max: limits.max_value,
        });
    }
    let len = h.frame_len();
    if buf.len() < len {
        return Ok(Decoded::Incomplete { need: len });
    }
    let key_end = HEADER_LEN + h.key_len as usize;
    Ok(Decoded::Frame(
        RawFrame {
            header: h,
            key: &buf[HEADER_LEN..key_end],
            value: &buf[key_end..len],
        },
        len,
    ))
}

macro_rules! codes {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            /// Every code, in order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The code for a byte, if it is one.
            pub fn from_u8(b: u8) -> Option<Self> {
                match b { $($n => Some($name::$v),)* _ => None }
            }
        }
    };
}

codes! {
    /// Request opcodes (byte 3 of a request).
    pub enum Op {
        /// Handshake: key = token, arg = protocol version. Must be the first request.
        Hello = 0x01,
        /// key → value or nil.
        Get = 0x02,
        /// key, value → done.
        Set = 0x03,
        /// key → bool.
        Exists = 0x04,
        /// key → bool (whether it existed).
        Remove = 0x05,
        /// key, arg = delta (i64) → int, the new value.
        Incr = 0x06,
        /// → done.
        Clear = 0x07,
        /// → uint, the number of keys.
        Count = 0x08,
        /// arg = cursor → chunk of keys.
        Keys = 0x09,
        /// arg = cursor → chunk of items.
        Items = 0x0a,
        /// key, arg = timeout ms → done; later a `Woken` push with this request's id.
        Wait = 0x0b,
        /// key, value, arg = timeout ms → done or bool(true); as `Wait`, for a value.
        WaitValue = 0x0c,
        /// key → uint, a subscription id.
        Subscribe = 0x0d,
        /// → uint, a subscription id for every key.
        SubscribeAll = 0x0e,
        /// arg = subscription id → done.
        Unsubscribe = 0x0f,
        /// → text (JSON counters).
        Stats = 0x10,
        /// → done; the server then exits.
        Shutdown = 0x11,
        /// → done.
        Ping = 0x12,
    }
}

codes! {
    /// Push kinds (byte 3 of a push).
    pub enum PushKind {
        /// key was set (or incremented) to value. id = subscription.
        Set = 0x01,
        /// key was removed. id = subscription.
        Removed = 0x02,
        /// every key was removed. id = subscription.
        Cleared = 0x03,
        /// arg events for this subscription were dropped. id = subscription.
        Lagged = 0x04,
        /// A wait ended. id = the wait request's id; arg = a [`WakeReason`].
        Woken = 0x05,
        /// The subscription ended (server shutting down). id = subscription.
        Closed = 0x06,
    }
}

codes! {
    /// Why a wait ended (`arg` of a `Woken` push).
    pub enum WakeReason {
        /// The deadline passed.
        TimedOut = 0,
        /// The awaited event happened.
        Event = 1,
        /// The server is shutting down.
        Shutdown = 2,
        /// The cache was cleared.
        Cleared = 3,
    }
}

codes! {
    /// Error codes of an error reply (byte 3 of a reply, 0x40 and up). The value field holds a
    /// UTF-8 message for people; the code is what programs match on.
    pub enum ErrorCode {
        /// The stored value is not a decimal i64.
        NotAnInteger = 0x40,
        /// The increment would overflow an i64.
        Overflow = 0x41,
        /// A key over the server's limit (the connection is then closed).
        KeyTooLarge = 0x42,
        /// A value over the server's limit (the connection is then closed).
        ValueTooLarge = 0x43,
        /// An opcode this server does not know; the connection goes on.
        UnknownOp = 0x44,
        /// Bytes that are not a frame (the connection is then closed).
        BadFrame = 0x45,
        /// The handshake token was wrong or missing (the connection is then closed).
        Unauthorized = 0x46,
        /// The client's protocol version is not this server's (arg = the server's version).
        VersionMismatch = 0x47,
        /// The server is shutting down.
        ShuttingDown = 0x48,
        /// No such subscription on this connection.
        NoSuchSubscription = 0x49,
        /// A per-connection limit was reached (waits, subscriptions).
        Busy = 0x4a,
    }
}

impl ErrorCode {
    /// What the code means, for people (error replies carry it as their message).
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::NotAnInteger => "value is not a decimal 64-bit integer",
            ErrorCode::Overflow => "increment would overflow a 64-bit integer",
            ErrorCode::KeyTooLarge => "key too large",
            ErrorCode::ValueTooLarge => "value too large",
            ErrorCode::UnknownOp => "unknown operation",
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::Unauthorized => "wrong or missing token",
            ErrorCode::VersionMismatch => "protocol version mismatch",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::NoSuchSubscription => "no such subscription",
            ErrorCode::Busy => "too many waits or subscriptions on this connection",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A decoded request, borrowing key and value from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// The handshake.
    Hello {
        /// Protocol version of the client.
        version: u64,
        /// The token from the connection file.
        token: &'a [u8],
    },
    /// Read a key.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Store a value.
    Set {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Whether a key is present.
    Exists {
        /// The key.
        key: &'a [u8],
    },
    /// Delete a key.
    Remove {
        /// The key.
        key: &'a [u8],
    },
    /// Add to a decimal value.
    Incr {
        /// The key.
        key: &'a [u8],
        /// The amount to add (negative to decrement).
        delta: i64,
    },
    /// Delete every key.
    Clear,
    /// Number of keys.
    Count,
    /// A chunk of keys.
    Keys {
        /// 0 to start; then the `next` of the previous chunk.
        cursor: u64,
        /// 0 to start; then the `until` of the previous chunk (the snapshot bound).
        until: u64,
    },
    /// A chunk of key/value pairs.
    Items {
        /// 0 to start; then the `next` of the previous chunk.
        cursor: u64,
        /// 0 to start; then the `until` of the previous chunk (the snapshot bound).
        until: u64,
    },
    /// Wait for a change of a key, or for it to hold a value.
    Wait {
        /// The key.
        key: &'a [u8],
        /// The value awaited, if any.
        value: Option<&'a [u8]>,
        /// Milliseconds, or [`NO_TIMEOUT`].
        timeout_ms: u64,
    },
    /// Subscribe to one key (`Some`) or to every key (`None`).
    Subscribe {
        /// The key, or `None` for all keys.
        key: Option<&'a [u8]>,
    },
    /// End a subscription.
    Unsubscribe {
        /// Its id.
        sub: SubId,
    },
    /// Server counters.
    Stats,
    /// Stop the server.
    Shutdown,
    /// Do nothing, answer.
    Ping,
}

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

impl<'a> Request<'a> {
    /// The opcode.
    pub fn op(&self) -> Op {
        match self {
            Request::Hello { .. } => Op::Hello,
            Request::Get { .. } => Op::Get,
            Request::Set { .. } => Op::Set,
            Request::Exists { .. } => Op::Exists,
            Request::Remove { .. } => Op::Remove,
            Request::Incr { .. } => Op::Incr,
            Request::Clear => Op::Clear,
            Request::Count => Op::Count,
            Request::Keys { .. } => Op::Keys,
            Request::Items { .. } => Op::Items,
            Request::Wait { value: None, .. } => Op::Wait,
            Request::Wait { value: Some(_), .. } => Op::WaitValue,
            Request::Subscribe { key: Some(_) } => Op::Subscribe,
            Request::Subscribe { key: None } => Op::SubscribeAll,
            Request::Unsubscribe { .. } => Op::Unsubscribe,
            Request::Stats => Op::Stats,
            Request::Shutdown => Op::Shutdown,
            Request::Ping => Op::Ping,
        }
    }

    /// (key, value, arg) as they go on the wire.
    fn fields(&self) -> (Field<'a>, &'a [u8], u64) {
        use Field::Bytes;
        match *self {
            Request::Hello { version, token } => (Bytes(token), &[], version),
            Request::Get { key } | Request::Exists { key } | Request::Remove { key } => {
                (Bytes(key), &[], 0)
            }
            Request::Set { key, value } => (Bytes(key), value, 0),
            Request::Incr { key, delta } => (Bytes(key), &[], delta as u64),
            Request::Keys { cursor, until } | Request::Items { cursor, until } => {
                (Field::Word(until.to_le_bytes()), &[], cursor)
            }
            Request::Wait {
                key,
                value,
                timeout_ms,
            } => (Bytes(key), value.unwrap_or(&[]), timeout_ms),
            Request::Subscribe { key } => (Bytes(key.unwrap_or(&[])), &[], 0),
            Request::Unsubscribe { sub } => (Bytes(&[]), &[], sub as u64),
            Request::Clear
            | Request::Count
            | Request::Stats
            | Request::Shutdown
            | Request::Ping => (Bytes(&[]), &[], 0),
        }
    }

    /// The length of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        let (k, v, _) = self.fields();
        HEADER_LEN + k.as_slice().len() + v.len()
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Panics if the key or value is longer than `u32::MAX`: callers check [`Limits`] first.
    pub fn encode(&self, id: RequestId, out: &mut Vec<u8>) {
        let value = self.encode_head(id, out);
        out.extend_from_slice(value);
    }

    /// Appends the header and key to `out` and returns the value bytes, which complete the
    /// frame: a client sends them from where they are, with a vectored write.
    pub fn encode_head(&self, id: RequestId, out: &mut Vec<u8>) -> &'a [u8] {
        let (key, value, arg) = self.fields();
        let key = key.as_slice();
        let h = Header {
            kind: FrameKind::Request as u8,
            code: self.op() as u8,
            id,
            key_len: u32::try_from(key.len()).expect("key length checked by caller"),
            value_len: u32::try_from(value.len()).expect("value length checked by caller"),
            arg,
        };
        out.reserve(HEADER_LEN + key.len());
        encode_header(out, &h);
        out.extend_from_slice(key);
        value
    }

    fn from_raw(f: &RawFrame<'a>) -> Result<Self, DecodeError> {
        let h = &f.header;
        let Some(op) = Op::from_u8(h.code) else {
            return Err(DecodeError::UnknownCode {
                code: h.code,
                id: h.id,
                len: h.frame_len(),
            });
        };
        let (key, value, arg) = (f.key, f.value, h.arg);
        let no_value = || check(value.is_empty(), "this request carries no value");
        let no_key = || check(key.is_empty(), "this request carries no key");
        let no_arg = || check(arg == 0, "this request carries no argument");
        Ok(match op {
            Op::Hello => {
                no_value()?;
                check(key.len() <= MAX_TOKEN_LEN, "token too long")?;
                Request::Hello {
                    version: arg,
                    token: key,
                }
            }
            Op::Get | Op::Exists | Op::Remove => {
                no_value()?;
                no_arg()?;
                match op {
                    Op::Get => Request::Get { key },
                    Op::Exists => Request::Exists { key },
                    _ => Request::Remove { key },
                }
            }
            Op::Set => {
                no_arg()?;
                Request::Set { key, value }
            }
            Op::Incr => {
                no_value()?;
                Request::Incr {
                    key,
                    delta: arg as i64,
                }
            }
            Op::Keys | Op::Items => {
                no_value()?;
                let until = word(key).ok_or(DecodeError::Malformed("bound must be 8 bytes"))?;
                if op == Op::Keys {
                    Request::Keys { cursor: arg, until }
                } else {
                    Request::Items { cursor: arg, until }
                }
            }
            Op::Wait => {
                no_value()?;
                Request::Wait {
                    key,
                    value: None,
                    timeout_ms: arg,
                }
            }
            Op::WaitValue => Request::Wait {
                key,
                value: Some(value),
                timeout_ms: arg,
            },
            Op::Subscribe | Op::SubscribeAll => {
                no_value()?;
                no_arg()?;
                if op == Op::Subscribe {
                    Request::Subscribe { key: Some(key) }
                } else {
                    no_key()?;
                    Request::Subscribe { key: None }
                }
            }
            Op::Unsubscribe => {
                no_key()?;
                no_value()?;
                check(arg <= u32::MAX as u64, "subscription id out of range")?;
                Request::Unsubscribe { sub: arg as u32 }
            }
            Op::Clear | Op::Count | Op::Stats | Op::Shutdown | Op::Ping => {
                no_key()?;
                no_value()?;
                no_arg()?;
                match op {
                    Op::Clear => Request::Clear,
                    Op::Count => Request::Count,
                    Op::Stats => Request::Stats,
                    Op::Shutdown => Request::Shutdown,
                    _ => Request::Ping,
                }
            }
        })
    }
}

/// Decodes one request from the front of `buf`.
pub fn decode_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<(RequestId, Request<'a>)>, DecodeError> {
    match decode_raw(buf, FrameKind::Request, limits)? {
        Decoded::Incomplete { need } => Ok(Decoded::Incomplete { need }),
        Decoded::Frame(f, len) => Ok(Decoded::Frame((f.header.id, Request::from_raw(&f)?), len)),
    }
}

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
    /// One chunk of `keys` or `items`: packed entries (see [`Chunk`]), the cursor for the
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
            Reply::Error { code, arg, message } => (code as u8, none, message, arg),
        }
    }

    /// The header of a reply with no key bytes (every reply but `Chunk`): the payload
    /// follows it. A server writes this header into its buffer and the payload from wherever
    /// it is stored.
    pub fn header(&self, id: RequestId) -> Header {
        let (code, key, value, arg) = self.fields();
        Header {
            kind: FrameKind::Reply as u8,
            code,
            id,
            key_len: key.as_slice().len() as u32,
            value_len: u32::try_from(value.len()).expect("reply payload fits the protocol"),
            arg,
        }
    }

    /// Appends the whole encoded frame to `out`.
    pub fn encode(&self, id: RequestId, out: &mut Vec<u8>) {
        let (_, key, value, _) = self.fields();
        encode_header(out, &self.header(id));
        out.extend_from_slice(key.as_slice());
        out.extend_from_slice(value);
    }

    fn from_raw(f: &RawFrame<'a>) -> Result<Self, DecodeError> {
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
            DONE | NIL => {
                no_value()?;
                no_arg()?;
                if h.code == DONE {
                    Reply::Done
                } else {
                    Reply::Nil
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

/// TEMPORARY (replaced by the protocol split): header of a VALUE reply.
pub fn encode_value_head(out: &mut Vec<u8>, id: RequestId, value_len: usize) {
    let h = Header {
        value_len: value_len as u32,
        ..Reply::Value(&[]).header(id)
    };
    encode_header(out, &h);
}

/// TEMPORARY: header of a Set push.
pub fn encode_set_push_head(out: &mut Vec<u8>, sub: SubId, key_len: usize, value_len: usize) {
    let h = Header {
        kind: FrameKind::Push as u8,
        code: PushKind::Set as u8,
        id: sub,
        key_len: key_len as u32,
        value_len: value_len as u32,
        arg: 0,
    };
    encode_header(out, &h);
}

/// TEMPORARY: id of a partial frame.
pub fn peek_id(buf: &[u8]) -> RequestId {
    match buf.get(4..8) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
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
            PushKind::Removed => check(
                value.is_empty() && arg == 0,
                "removed event carries only a key",
            )?,
            PushKind::Cleared | PushKind::Closed => check(
                key.is_empty() && value.is_empty() && arg == 0,
                "this event carries no fields",
            )?,
            PushKind::Lagged => check(
                key.is_empty() && value.is_empty(),
                "lagged event carries only a count",
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

/// The packed body of a `keys` or `items` chunk: for each entry a little-endian `u32` key
/// length, then (items only) a `u32` value length, then the key, then (items only) the value.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    body: &'a [u8],
    with_values: bool,
}

impl<'a> Chunk<'a> {
    /// Reads `body` as keys (`with_values == false`) or items.
    pub fn new(body: &'a [u8], with_values: bool) -> Self {
        Chunk { body, with_values }
    }

    /// Appends one entry to a body under construction.
    pub fn push(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        if let Some(v) = value {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(key);
        if let Some(v) = value {
            out.extend_from_slice(v);
        }
    }
}

impl<'a> Iterator for Chunk<'a> {
    /// `(key, value)`; the value is empty for keys chunks. A truncated body yields `Err` once.
    type Item = Result<(&'a [u8], &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.body.is_empty() {
            return None;
        }
        let bad = Err(DecodeError::Malformed("truncated chunk"));
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let (a, b) = (self.body.get(..n)?, self.body.get(n..)?);
            self.body = b;
            Some(a)
        };
        let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let item = (|| {
            let klen = le(take(4)?);
            let vlen = if self.with_values { le(take(4)?) } else { 0 };
            Some((take(klen)?, take(vlen)?))
        })();
        match item {
            Some(i) => Some(Ok(i)),
            None => {
                self.body = &[];
                Some(bad)
            }
        }
    }
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
        ] {
            one_request(r);
        }
    }

    #[test]
    fn every_op_has_a_request() {
        assert_eq!(Op::ALL.len(), 18);
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
        let p = Push {
            kind: PushKind::Set,
            id: 2,
            key: b"k",
            value: b"v",
            arg: 0,
        };
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
    fn chunks_pack_and_unpack() {
        let mut body = Vec::new();
        Chunk::push(&mut body, b"a", Some(b"1"));
        Chunk::push(&mut body, b"", Some(b""));
        let got: Vec<_> = Chunk::new(&body, true).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(&b"a"[..], &b"1"[..]), (&b""[..], &b""[..])]);
        let mut it = Chunk::new(&body[..body.len() - 1], true);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
