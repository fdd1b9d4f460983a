//! The packed body of a `KEYS`/`ITEMS` chunk, and the rules that bound its size.

use super::{len32, DecodeError, MAX_KEY_LEN};

/// Most entries in one chunk.
pub const CHUNK_MAX_ENTRIES: usize = 4096;
/// A chunk takes no more entries once its body holds this many bytes (256 KiB); it always
/// takes at least one. So a body is at most `CHUNK_SOFT_BYTES − 1` bytes plus one entry
/// ([`chunk_body_bound`]).
pub const CHUNK_SOFT_BYTES: usize = 256 * 1024;
/// Bytes an `ITEMS` entry adds besides its key and value: a `u32` key length and a `u32` value
/// length (a `KEYS` entry has only the key length).
pub const CHUNK_ENTRY_OVERHEAD: usize = 8;

/// The packed length of one entry: `value_len` `Some` for an items chunk, `None` for a keys
/// chunk. `None` when it does not fit a `u32` (no frame could carry it).
pub const fn chunk_entry_len(key_len: usize, value_len: Option<usize>) -> Option<u32> {
    let total = match value_len {
        Some(v) => (CHUNK_ENTRY_OVERHEAD as u64) + key_len as u64 + v as u64,
        None => 4 + key_len as u64,
    };
    if total > u32::MAX as u64 {
        None
    } else {
        Some(total as u32)
    }
}

/// The longest chunk body a server with this longest value can build: `CHUNK_SOFT_BYTES − 1`
/// bytes of earlier entries, then an items entry with a key of [`MAX_KEY_LEN`] and a value of
/// `max_value`. `None` when that does not fit a `u32`: such a server could not send the chunk
/// (see [`super::MAX_VALUE_LEN_CAP`]).
pub const fn chunk_body_bound(max_value: u32) -> Option<u32> {
    let Some(last) = chunk_entry_len(MAX_KEY_LEN as usize, Some(max_value as usize)) else {
        return None;
    };
    let total = last as u64 + CHUNK_SOFT_BYTES as u64 - 1;
    if total > u32::MAX as u64 {
        None
    } else {
        Some(total as u32)
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

    /// Appends one entry to a body under construction: `value` `Some` for an items chunk.
    /// Key and value lengths fit a `u32` (the store holds only what [`super::Limits`]
    /// admitted).
    pub fn push(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
        out.extend_from_slice(&len32(key.len()).to_le_bytes());
        if let Some(v) = value {
            out.extend_from_slice(&len32(v.len()).to_le_bytes());
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
    use super::super::{Limits, MAX_VALUE_LEN_CAP};
    use super::*;

    #[test]
    fn chunks_pack_and_unpack() {
        let mut body = Vec::new();
        Chunk::push(&mut body, b"a", Some(b"1"));
        assert_eq!(body.len() as u32, chunk_entry_len(1, Some(1)).unwrap());
        Chunk::push(&mut body, b"", Some(b""));
        let got: Vec<_> = Chunk::new(&body, true).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(&b"a"[..], &b"1"[..]), (&b""[..], &b""[..])]);
        let mut it = Chunk::new(&body[..body.len() - 1], true);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        let mut keys = Vec::new();
        Chunk::push(&mut keys, b"abc", None);
        assert_eq!(keys.len() as u32, chunk_entry_len(3, None).unwrap());
    }

    #[test]
    fn the_longest_chunk_at_the_value_cap_fits_a_frame() {
        // One entry with the longest key and a value of exactly the cap, after the most bytes
        // of earlier entries a chunk can hold before it is cut: exactly u32::MAX.
        assert_eq!(chunk_body_bound(MAX_VALUE_LEN_CAP), Some(u32::MAX));
        let one = chunk_entry_len(MAX_KEY_LEN as usize, Some(MAX_VALUE_LEN_CAP as usize));
        assert!(one.is_some_and(|n| n as usize + CHUNK_SOFT_BYTES - 1 == u32::MAX as usize));
        // One byte more and it would not: the cap is the largest value that fits.
        assert_eq!(chunk_body_bound(MAX_VALUE_LEN_CAP + 1), None);
        assert_eq!(chunk_body_bound(u32::MAX), None);
        assert_eq!(
            chunk_entry_len(MAX_KEY_LEN as usize, Some(u32::MAX as usize)),
            None
        );
        // Every limit a server can be given keeps its chunks inside the format.
        let l = Limits::new(MAX_VALUE_LEN_CAP).unwrap();
        assert!(chunk_body_bound(l.max_value).is_some());
        assert!(chunk_body_bound(Limits::default().max_value).is_some());
    }
}
