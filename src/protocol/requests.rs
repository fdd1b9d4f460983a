//! Requests: what a client sends.

use super::header::{decode_raw, encode_header, FrameKind, Header, RawFrame, HEADER_LEN, MAGIC};
use super::{
    check, word, Batch, DecodeError, Decoded, Field, Limits, Op, RequestId, SubId, MAX_TOKEN_LEN,
    MAX_VALUE_LEN_CAP,
};

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
        /// Milliseconds, or [`super::NO_TIMEOUT`].
        timeout_ms: u64,
    },
    /// Store a value with a TTL.
    SetTtl {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Milliseconds until the key expires.
        ttl_ms: u64,
    },
    /// Give an existing key a TTL.
    Expire {
        /// The key.
        key: &'a [u8],
        /// Milliseconds until the key expires.
        ttl_ms: u64,
    },
    /// Take a key's TTL away.
    Persist {
        /// The key.
        key: &'a [u8],
    },
    /// How long a key has left.
    Ttl {
        /// The key.
        key: &'a [u8],
    },
    /// Read a key and its version.
    GetVersioned {
        /// The key.
        key: &'a [u8],
    },
    /// Store a value only if the key holds this version.
    SetIfVersion {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// The version the key must hold.
        version: u64,
    },
    /// Store a value only if the key is missing.
    Add {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Milliseconds until the key expires, or 0 for no TTL.
        ttl_ms: u64,
    },
    /// Store a value only if the key is present.
    Replace {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Milliseconds until the key expires, or 0 to keep the key's TTL.
        ttl_ms: u64,
    },
    /// Read many keys.
    GetMany {
        /// The keys.
        keys: Batch<'a>,
    },
    /// Store many pairs.
    SetMany {
        /// The pairs.
        pairs: Batch<'a>,
        /// Milliseconds until every key expires, or 0 for `SET`'s rule (each key keeps its TTL).
        ttl_ms: u64,
    },
    /// Delete many keys.
    RemoveMany {
        /// The keys.
        keys: Batch<'a>,
    },
    /// Read a key, or take its lease (or wait for whoever holds it) when it is missing.
    GetOrLease {
        /// The key.
        key: &'a [u8],
        /// Milliseconds the lease lasts if this request gets it (1 ..=
        /// [`MAX_TTL_MS`](super::MAX_TTL_MS)).
        timeout_ms: u64,
    },
    /// Give up the lease that request `req` of this connection got (the computation failed).
    Release {
        /// The key.
        key: &'a [u8],
        /// The id of the `GetOrLease` request that got the lease.
        req: RequestId,
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

impl<'a> Request<'a> {
    /// The key the request names, if any (a server hashes it once, when it decodes the frame).
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        match *self {
            Request::Get { key }
            | Request::Set { key, .. }
            | Request::Exists { key }
            | Request::Remove { key }
            | Request::Incr { key, .. }
            | Request::Wait { key, .. }
            | Request::SetTtl { key, .. }
            | Request::Expire { key, .. }
            | Request::Persist { key }
            | Request::Ttl { key }
            | Request::GetVersioned { key }
            | Request::SetIfVersion { key, .. }
            | Request::Add { key, .. }
            | Request::Replace { key, .. }
            | Request::GetOrLease { key, .. }
            | Request::Release { key, .. }
            | Request::Subscribe { key: Some(key) } => Some(key),
            _ => None,
        }
    }

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
            Request::SetTtl { .. } => Op::SetTtl,
            Request::Expire { .. } => Op::Expire,
            Request::Persist { .. } => Op::Persist,
            Request::Ttl { .. } => Op::Ttl,
            Request::GetVersioned { .. } => Op::GetVersioned,
            Request::SetIfVersion { .. } => Op::SetIfVersion,
            Request::Add { .. } => Op::Add,
            Request::Replace { .. } => Op::Replace,
            Request::GetMany { .. } => Op::GetMany,
            Request::SetMany { .. } => Op::SetMany,
            Request::RemoveMany { .. } => Op::RemoveMany,
            Request::GetOrLease { .. } => Op::GetOrLease,
            Request::Release { .. } => Op::Release,
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
            Request::SetTtl { key, value, ttl_ms } => (Bytes(key), value, ttl_ms),
            Request::Expire { key, ttl_ms } => (Bytes(key), &[], ttl_ms),
            Request::Persist { key } | Request::Ttl { key } => (Bytes(key), &[], 0),
            Request::GetVersioned { key } => (Bytes(key), &[], 0),
            Request::SetIfVersion {
                key,
                value,
                version,
            } => (Bytes(key), value, version),
            Request::Add { key, value, ttl_ms } | Request::Replace { key, value, ttl_ms } => {
                (Bytes(key), value, ttl_ms)
            }
            Request::GetMany { keys } | Request::RemoveMany { keys } => {
                (Bytes(&[]), keys.body(), keys.len().into())
            }
            Request::SetMany { pairs, ttl_ms } => {
                let key = match ttl_ms {
                    0 => Bytes(&[]),
                    t => Field::Word(t.to_le_bytes()),
                };
                (key, pairs.body(), pairs.len().into())
            }
            Request::Incr { key, delta } => (Bytes(key), &[], delta as u64),
            Request::GetOrLease { key, timeout_ms } => (Bytes(key), &[], timeout_ms),
            Request::Release { key, req } => (Bytes(key), &[], u64::from(req)),
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

    fn from_raw(f: &RawFrame<'a>, max_key: u32) -> Result<Self, DecodeError> {
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
            // A TTL out of range decodes: the server answers BAD_TTL and goes on.
            Op::SetTtl => Request::SetTtl {
                key,
                value,
                ttl_ms: arg,
            },
            Op::Expire => {
                no_value()?;
                Request::Expire { key, ttl_ms: arg }
            }
            Op::Persist | Op::Ttl => {
                no_value()?;
                no_arg()?;
                if op == Op::Persist {
                    Request::Persist { key }
                } else {
                    Request::Ttl { key }
                }
            }
            Op::GetOrLease => {
                no_value()?;
                check(
                    (1..=super::MAX_TTL_MS).contains(&arg),
                    "a lease timeout must be 1 ms to 2^40 - 1 ms",
                )?;
                Request::GetOrLease {
                    key,
                    timeout_ms: arg,
                }
            }
            Op::Release => {
                no_value()?;
                check(arg <= u64::from(u32::MAX), "request id out of range")?;
                Request::Release {
                    key,
                    req: arg as RequestId,
                }
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
            Op::GetVersioned => {
                no_value()?;
                no_arg()?;
                Request::GetVersioned { key }
            }
            Op::SetIfVersion => Request::SetIfVersion {
                key,
                value,
                version: arg,
            },
            // A TTL out of range decodes: the server answers BAD_TTL and goes on.
            Op::Add => Request::Add {
                key,
                value,
                ttl_ms: arg,
            },
            Op::Replace => Request::Replace {
                key,
                value,
                ttl_ms: arg,
            },
            Op::GetMany | Op::RemoveMany => {
                no_key()?;
                let keys = Batch::parse(value, arg, false, max_key)?;
                if op == Op::GetMany {
                    Request::GetMany { keys }
                } else {
                    Request::RemoveMany { keys }
                }
            }
            Op::SetMany => {
                let ttl_ms = match key.len() {
                    0 => 0,
                    _ => word(key).filter(|&t| t != 0).ok_or(DecodeError::Malformed(
                        "a TTL must be empty or 8 bytes, not 0",
                    ))?,
                };
                Request::SetMany {
                    pairs: Batch::parse(value, arg, true, max_key)?,
                    ttl_ms,
                }
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
#[inline(always)]
pub fn decode_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<(RequestId, Request<'a>)>, DecodeError> {
    if let Some((frame, len)) = decode_get_or_set(buf, limits) {
        return Ok(Decoded::Frame(frame, len));
    }
    decode_request_general(buf, limits)
}

/// [`decode_request`] without its shortcut for `GET` and `SET`: every request through the
/// header checks of [`decode_raw`] and the fields' checks of [`Request::from_raw`]. The
/// shortcut must agree with it on every input (the request decoding fuzz target checks).
#[inline(never)]
pub(crate) fn decode_request_general<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<(RequestId, Request<'a>)>, DecodeError> {
    match decode_raw(buf, FrameKind::Request, limits)? {
        Decoded::Incomplete { need } => Ok(Decoded::Incomplete { need }),
        Decoded::Frame(f, len) => Ok(Decoded::Frame(
            (f.header.id, Request::from_raw(&f, limits.max_key)?),
            len,
        )),
    }
}

/// The first four bytes of a `GET` request's header (magic, kind, opcode) as one word.
const GET_WORD: u32 =
    u32::from_le_bytes([MAGIC[0], MAGIC[1], FrameKind::Request as u8, Op::Get as u8]);
/// The same for `SET`.
const SET_WORD: u32 =
    u32::from_le_bytes([MAGIC[0], MAGIC[1], FrameKind::Request as u8, Op::Set as u8]);

/// The requests of nearly every pipelined batch, read straight from the header: a whole `GET`
/// or `SET` frame within `limits` whose other fields are as [`Request::from_raw`] requires
/// (no argument; no value for `GET`). `None` for anything else, which the general path decodes
/// (and refuses, where it is wrong) exactly as before: this only answers sooner for frames that
/// path would accept.
#[inline(always)]
fn decode_get_or_set<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Option<((RequestId, Request<'a>), usize)> {
    let head = buf.first_chunk::<HEADER_LEN>()?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (first, id, key_len, value_len) = (word(0), word(4), word(8), word(12));
    let arg_is_zero = head[16..24] == [0; 8];
    if !arg_is_zero || key_len > limits.max_key {
        return None;
    }
    let key_end = HEADER_LEN + key_len as usize;
    if first == GET_WORD && value_len == 0 {
        let key = buf.get(HEADER_LEN..key_end)?;
        return Some(((id, Request::Get { key }), key_end));
    }
    if first == SET_WORD && value_len <= limits.max_value.min(MAX_VALUE_LEN_CAP) {
        let end = key_end + value_len as usize;
        let frame = buf.get(..end)?;
        let (key, value) = (&frame[HEADER_LEN..key_end], &frame[key_end..]);
        return Some(((id, Request::Set { key, value }), end));
    }
    None
}
