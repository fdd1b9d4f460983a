//! The bodies of the multi-key requests and their reply: a [`Batch`] of keys (`GET_MANY`,
//! `REMOVE_MANY`) or of key/value pairs (`SET_MANY`), and the [`Values`] of a `GET_MANY` reply.
//!
//! A batch is packed as a [`Chunk`] is: for each entry a little-endian `u32` key length, then
//! (pairs only) a `u32` value length, then the key, then (pairs only) the value. The frame's
//! `arg` holds the number of entries. A request's batch is checked whole when the frame is
//! decoded (count, lengths, key limit), so the server walks it afterwards without a check
//! that can fail and without allocating.
//!
//! A values body holds, for each key of the request in order, a little-endian `u32`: the
//! value's length followed by the value, or [`ABSENT`] (no bytes follow) for a missing key.

use super::{len32, Chunk, DecodeError};

/// Most entries in one batch: a server answers a larger one with
/// [`ErrorCode::BatchTooLarge`](super::ErrorCode::BatchTooLarge) and does nothing, so that
/// one request never makes it hold more than this many entries for its reply.
pub const MAX_BATCH_KEYS: u32 = 65_536;

/// The length word of a missing key in a [`Values`] body (no value length reaches it: values
/// are at most [`super::MAX_VALUE_LEN_CAP`]).
pub const ABSENT: u32 = u32::MAX;

/// The packed keys or key/value pairs of a multi-key request, already checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    body: &'a [u8],
    count: u32,
    with_values: bool,
}

impl<'a> Batch<'a> {
    /// Checks `body` as `count` packed keys (`with_values == false`) or pairs, each key at
    /// most `max_key` bytes long.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Malformed`] when the body is cut short, has bytes left over, holds
    /// another number of entries, or a key over `max_key`.
    pub fn parse(
        body: &'a [u8],
        count: u64,
        with_values: bool,
        max_key: u32,
    ) -> Result<Self, DecodeError> {
        let mut n = 0u64;
        for item in Chunk::new(body, with_values) {
            let (key, _) = item.map_err(|_| DecodeError::Malformed("truncated batch"))?;
            if key.len() > max_key as usize {
                return Err(DecodeError::Malformed(
                    "a key in the batch is over the limit",
                ));
            }
            n += 1;
        }
        if n != count {
            return Err(DecodeError::Malformed(
                "the batch holds another number of entries than its count",
            ));
        }
        Ok(Batch {
            body,
            count: n as u32,
            with_values,
        })
    }

    /// Packs `entries` into `out` and returns the batch: pairs when `with_values` (a `None`
    /// value packs as empty), else keys (values ignored). Lengths fit a `u32` (callers check
    /// keys and the whole body against [`super::Limits`]).
    pub fn pack<'k>(
        out: &'a mut Vec<u8>,
        with_values: bool,
        entries: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
    ) -> Batch<'a> {
        out.clear();
        let mut count = 0u32;
        for (key, value) in entries {
            Chunk::push(out, key, with_values.then(|| value.unwrap_or_default()));
            count += 1;
        }
        Batch {
            body: out,
            count,
            with_values,
        }
    }

    /// A batch of no entries.
    pub const fn empty(with_values: bool) -> Self {
        Batch {
            body: &[],
            count: 0,
            with_values,
        }
    }

    /// The packed bytes (the frame's value field).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Number of entries (the frame's `arg`).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in order: `(key, value)`, the value empty for a batch of keys.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        // Checked whole by `parse` (or built by `pack`): every item is `Ok`.
        Chunk::new(self.body, self.with_values).map_while(Result::ok)
    }
}

/// The body of a `VALUES` reply: one value or absence per key asked for, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values<'a> {
    body: &'a [u8],
    count: u32,
}

impl<'a> Values<'a> {
    /// Checks `body` as `count` values.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Malformed`] when it is cut short, has bytes left over or holds another
    /// number of entries.
    pub fn parse(body: &'a [u8], count: u64) -> Result<Self, DecodeError> {
        let v = Values {
            body,
            count: u32::try_from(count)
                .map_err(|_| DecodeError::Malformed("value count out of range"))?,
        };
        let mut rest = body;
        let mut n = 0u64;
        while !rest.is_empty() {
            (_, rest) = next_value(rest).ok_or(DecodeError::Malformed("truncated values"))?;
            n += 1;
        }
        if n != count {
            return Err(DecodeError::Malformed(
                "the values body holds another number of entries than its count",
            ));
        }
        Ok(v)
    }

    /// Packs `values` into `out` and returns the body (for tests and fuzzing; a server sends
    /// values from where they are stored with [`Values::entry_head`]).
    pub fn pack<'v>(
        out: &'a mut Vec<u8>,
        values: impl IntoIterator<Item = Option<&'v [u8]>>,
    ) -> Values<'a> {
        out.clear();
        let mut count = 0;
        for v in values {
            Self::entry_head(out, v.map(<[u8]>::len));
            out.extend_from_slice(v.unwrap_or_default());
            count += 1;
        }
        Values { body: out, count }
    }

    /// Appends the length word of one entry: the value's length, or [`ABSENT`]; its bytes
    /// follow.
    #[inline]
    pub fn entry_head(out: &mut Vec<u8>, value_len: Option<usize>) {
        out.extend_from_slice(&value_len.map_or(ABSENT, len32).to_le_bytes());
    }

    /// The bytes one entry takes: 4, plus the value's length.
    #[inline]
    pub fn entry_len(value_len: Option<usize>) -> u64 {
        4 + value_len.unwrap_or(0) as u64
    }

    /// The packed bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values in order, `None` for a missing key.
    pub fn iter(&self) -> impl Iterator<Item = Option<&'a [u8]>> {
        let mut rest = self.body;
        // Checked whole by `parse` (or built by `pack`): every entry is there.
        std::iter::from_fn(move || {
            let (v, r) = next_value(rest)?;
            rest = r;
            Some(v)
        })
    }
}

/// The first entry of a values body and the rest; `None` when it is cut short or empty.
fn next_value(b: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
    let rest = &b[4..];
    if len == ABSENT {
        return Some((None, rest));
    }
    let len = len as usize;
    Some((Some(rest.get(..len)?), rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pack_parse_and_iterate() {
        let mut buf = Vec::new();
        let b = Batch::pack(&mut buf, false, [(&b"a"[..], None), (&b""[..], None)]);
        let (body, n) = (b.body().to_vec(), b.len());
        let back = Batch::parse(&body, n.into(), false, 16).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![(&b"a"[..], &b""[..]), (&b""[..], &b""[..])]
        );
        assert!(Batch::parse(&body, 3, false, 16).is_err(), "count");
        assert!(Batch::parse(&body[..body.len() - 1], 2, false, 16).is_err());
        assert!(Batch::parse(&body, 2, false, 0).is_err(), "key limit");
        let mut buf = Vec::new();
        let p = Batch::pack(&mut buf, true, [(&b"k"[..], Some(&b"vv"[..]))]);
        let body = p.body().to_vec();
        let back = Batch::parse(&body, 1, true, 16).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![(&b"k"[..], &b"vv"[..])]
        );
        assert!(Batch::parse(&[], 0, true, 16).unwrap().is_empty());
        assert!(Batch::parse(&[], 1, true, 16).is_err());
    }

    #[test]
    fn values_pack_parse_and_iterate() {
        let mut buf = Vec::new();
        let v = Values::pack(&mut buf, [Some(&b"x"[..]), None, Some(&b""[..])]);
        assert_eq!(v.len(), 3);
        let body = v.body().to_vec();
        assert_eq!(
            body.len() as u64,
            Values::entry_len(Some(1)) + Values::entry_len(None) + Values::entry_len(Some(0))
        );
        let back = Values::parse(&body, 3).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![Some(&b"x"[..]), None, Some(&b""[..])]
        );
        assert!(Values::parse(&body, 2).is_err());
        assert!(Values::parse(&body[..body.len() - 1], 3).is_err());
        assert!(Values::parse(&[1, 0, 0, 0], 1).is_err(), "value cut short");
        assert!(Values::parse(&[], u64::MAX).is_err());
    }
}
