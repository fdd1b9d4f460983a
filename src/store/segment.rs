//! [`Segment`]: a block of records that is only ever appended to, and the record format.
//!
//! A record is a key and its value with their lengths in front, as LEB128 varints:
//! `varint(key_len) varint(value_len) key value`, byte-packed (a 16-byte key with a 64-byte
//! value takes 82 bytes). Segments are shared by reference count ([`std::rc::Rc`]): the store
//! holds one count per segment, and a reply or an event that sends a stored value without
//! copying it ([`super::Entry`]) holds another, so the bytes stay valid while the socket drains
//! even after the store has dropped the segment.
//!
//! Bytes once written are never written again while anyone else holds the segment: appending
//! only touches the unwritten tail, which no slice handed out covers, and rewriting bytes in
//! place ([`Segment::overwrite`]) takes `&mut`, which only the segment's one holder can have.
//! That is what makes sharing sound without locks; the count is not atomic, and `Segment` is
//! neither `Send` nor `Sync` (it holds a raw pointer and a `Cell`), so it stays on the
//! server's one thread.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::Cell;
use std::ptr::NonNull;

/// Longest varint a `u32` takes.
const MAX_VARINT: usize = 5;

/// A fixed-capacity block of bytes, appended to and then only read.
pub struct Segment {
    ptr: NonNull<u8>,
    cap: usize,
    /// Bytes written; `..len` is immutable from then on.
    len: Cell<usize>,
}

impl Segment {
    /// An empty segment of `cap` bytes (at least 1).
    pub fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(1);
        let layout = Layout::array::<u8>(cap).expect("segment size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        Segment {
            ptr,
            cap,
            len: Cell::new(0),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that can still be appended.
    pub fn room(&self) -> usize {
        self.cap - self.len.get()
    }

    /// The written bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `..len` was initialised by `append` and is never written again; the
        // allocation lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len.get()) }
    }

    /// Appends `parts` one after another and returns the offset of the first byte.
    ///
    /// Panics if they do not fit in [`Segment::room`] (callers check first).
    pub fn append(&self, parts: &[&[u8]]) -> usize {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let start = self.len.get();
        assert!(total <= self.cap - start, "segment overflow");
        let mut at = start;
        for p in parts {
            // SAFETY: `at + p.len() <= cap` (checked above), so the write is inside the
            // allocation, in the unwritten tail that no slice from `bytes` covers; `p` cannot
            // overlap it for the same reason.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), self.ptr.as_ptr().add(at), p.len());
            }
            at += p.len();
        }
        self.len.set(at);
        start
    }

    /// Replaces written bytes at `at` with `bytes`. Needs `&mut`: only a segment nobody else
    /// holds (see [`std::rc::Rc::get_mut`]) may change what it already holds.
    ///
    /// Panics if the range is not within the written bytes.
    pub fn overwrite(&mut self, at: usize, bytes: &[u8]) {
        let len = self.len.get();
        assert!(
            at <= len && bytes.len() <= len - at,
            "overwrite past the written bytes"
        );
        // SAFETY: in bounds (checked above) and initialised; `&mut self` means no slice from
        // `bytes` is alive.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len());
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len.get())
            .field("cap", &self.cap)
            .finish()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this same layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::array::<u8>(self.cap).expect("as made"),
            )
        }
    }
}

/// Where a record's parts are, relative to the record's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RecordShape {
    /// Offset of the key (the length of the two varints).
    pub key_start: usize,
    /// Key length.
    pub key_len: usize,
    /// Value length.
    pub value_len: usize,
}

impl RecordShape {
    /// Offset of the value.
    pub fn value_start(&self) -> usize {
        self.key_start + self.key_len
    }

    /// The whole record's length.
    pub fn len(&self) -> usize {
        self.value_start() + self.value_len
    }

    /// The header (the two varints) of a record of `key` and `value`, and its length.
    ///
    /// Panics if either is longer than `u32::MAX` bytes (the protocol's limits keep them far
    /// below).
    pub fn header(key: &[u8], value: &[u8]) -> ([u8; 2 * MAX_VARINT], usize) {
        let key_len = u32::try_from(key.len()).expect("key fits in u32 bytes");
        let value_len = u32::try_from(value.len()).expect("value fits in u32 bytes");
        let mut b = [0u8; 2 * MAX_VARINT];
        let n = put_varint(&mut b, key_len);
        let m = put_varint(&mut b[n..], value_len);
        (b, n + m)
    }

    /// Reads the shape of the record that starts at `bytes[0]`.
    ///
    /// The store only calls this on offsets where it wrote a record, so a malformed header is
    /// a bug in the store: it panics rather than misread.
    #[inline]
    pub fn read(bytes: &[u8]) -> RecordShape {
        // Keys and values under 128 bytes, the common case: one byte each.
        if let [k, v, ..] = *bytes {
            if k < 0x80 && v < 0x80 {
                return RecordShape {
                    key_start: 2,
                    key_len: k as usize,
                    value_len: v as usize,
                };
            }
        }
        let (key_len, n) = get_varint(bytes);
        let (value_len, m) = get_varint(&bytes[n..]);
        RecordShape {
            key_start: n + m,
            key_len: key_len as usize,
            value_len: value_len as usize,
        }
    }
}

fn put_varint(b: &mut [u8], mut v: u32) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        b[i] = v as u8 | 0x80;
        v >>= 7;
        i += 1;
    }
    b[i] = v as u8;
    i + 1
}

fn get_varint(b: &[u8]) -> (u32, usize) {
    let mut v = 0u32;
    for (i, &byte) in b.iter().take(MAX_VARINT).enumerate() {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return (v, i + 1);
        }
    }
    panic!("record header is not a varint: the store wrote something else here")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_their_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            65_536,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let mut b = [0u8; MAX_VARINT];
            let n = put_varint(&mut b, v);
            assert_eq!(get_varint(&b[..n]), (v, n), "{v}");
        }
        assert_eq!(RecordShape::header(&[0; 16], &[0; 64]).1, 2);
    }

    #[test]
    fn appended_bytes_stay_put_and_records_read_back() {
        let s = Segment::with_capacity(64);
        let (h, n) = RecordShape::header(b"abc", &[0; 200]);
        let value = [9u8; 40];
        assert!(s.room() >= n + 3 + 40);
        let a = s.append(&[&h[..n], b"abc", &value]);
        let first = &s.bytes()[a..];
        let b = s.append(&[b"xy"]);
        assert_eq!((a, b), (0, n + 43));
        assert_eq!(&first[n..n + 3], b"abc");
        let shape = RecordShape::read(&s.bytes()[a..]);
        assert_eq!(
            (shape.key_start, shape.key_len, shape.value_len),
            (3, 3, 200)
        );
        assert_eq!(s.room(), 64 - n - 45);
        let mut s = s;
        s.overwrite(n, b"xyz");
        assert_eq!(&s.bytes()[n..n + 3], b"xyz");
    }

    #[test]
    #[should_panic(expected = "segment overflow")]
    fn append_past_capacity_panics() {
        Segment::with_capacity(4).append(&[b"12345"]);
    }
}
