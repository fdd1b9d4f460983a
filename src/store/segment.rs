//! [`Segment`]: a block of records that is only ever appended to, and the record format.
//!
//! A record is a key and its value with their lengths in front, as LEB128 varints, for a key
//! with a TTL its deadline, and the version of the write that stored it:
//! `varint(key_len << 1 | has_deadline) varint(value_len) [deadline: u64 LE] version: u64 LE
//! key value`, byte-packed (a 16-byte key with a 64-byte value takes 90 bytes, 98 with a
//! deadline). The version has a fixed width, so a rewrite with a value of the same length
//! keeps the record's length and can go in place. Segments are shared by reference count ([`std::rc::Rc`]): the store
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
        let ptr = match spares::take(cap) {
            Some(ptr) => ptr,
            None => {
                let layout = Layout::array::<u8>(cap).expect("segment size fits a layout");
                // SAFETY: the layout has a non-zero size.
                let raw = unsafe { alloc(layout) };
                let Some(ptr) = NonNull::new(raw) else {
                    handle_alloc_error(layout)
                };
                ptr
            }
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

    /// The records written into it, in order: each one's offset, its bytes and its key. (Every
    /// record the store ever wrote here, live or not: the store's index says which are live.)
    pub fn records(&self) -> impl Iterator<Item = (usize, &[u8], &[u8])> + '_ {
        let bytes = self.bytes();
        self.shapes().map(move |(at, shape)| {
            let rec = &bytes[at..at + shape.len()];
            (at, rec, &rec[shape.key_start..shape.value_start()])
        })
    }

    /// The offset and shape of each record written into it, in order (as [`Segment::records`]).
    pub(super) fn shapes(&self) -> impl Iterator<Item = (usize, RecordShape)> + '_ {
        let bytes = self.bytes();
        let mut off = 0;
        std::iter::from_fn(move || {
            if off >= bytes.len() {
                return None;
            }
            let shape = RecordShape::read(&bytes[off..]);
            let at = off;
            off += shape.len();
            Some((at, shape))
        })
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
        if !spares::keep(self.ptr, self.cap) {
            // SAFETY: allocated in `with_capacity` (or taken from the spares, which hold only
            // blocks so allocated) with this same layout, and not kept as a spare.
            unsafe { free_block(self.ptr, self.cap) }
        }
    }
}

/// Gives back a block of `cap` bytes that `with_capacity` allocated.
///
/// # Safety
/// `ptr` came from `alloc` with the layout of `cap` bytes and nothing uses it after this.
unsafe fn free_block(ptr: NonNull<u8>, cap: usize) {
    // SAFETY: the caller's contract.
    unsafe { dealloc(ptr.as_ptr(), Layout::array::<u8>(cap).expect("as made")) }
}

/// The blocks of dropped segments, kept for the next segments of the same size.
///
/// A store under a budget drops a segment for about every one it makes (eviction and
/// reclamation), nearly all of its one segment size; without this each would be a `free` and a `malloc`, and in a
/// budgeted server process (where blocks this size are mappings of their own, see
/// `server::release_freed_memory`) an `munmap`, an `mmap` and a page fault per 4 KiB touched:
/// 16 % of the server's time in SETs while evicting (perf, BENCHMARKS.md). The spares are at
/// most [`spares::MAX_BYTES`] per thread (a segment and its memory stay on the server's one
/// thread), so what they keep back from the allocator is bounded and small next to a budget;
/// they are not counted in the store's `memory_bytes`.
pub(super) mod spares {
    use std::cell::RefCell;
    use std::ptr::NonNull;

    /// Bytes of spare blocks a thread keeps at most.
    pub const MAX_BYTES: usize = 512 * 1024;

    /// Blocks no larger than this are kept (a segment's size; larger blocks hold one large
    /// record each and are rare).
    const MAX_BLOCK: usize = super::super::SEGMENT;

    struct Spares {
        blocks: Vec<(NonNull<u8>, usize)>,
        bytes: usize,
    }

    impl Drop for Spares {
        fn drop(&mut self) {
            for (ptr, cap) in self.blocks.drain(..) {
                // SAFETY: every block kept came from a segment's `alloc` with this size, and
                // nothing else refers to it while it is a spare.
                unsafe { super::free_block(ptr, cap) }
            }
        }
    }

    thread_local! {
        static SPARES: RefCell<Spares> = const {
            RefCell::new(Spares { blocks: Vec::new(), bytes: 0 })
        };
    }

    /// A spare block of exactly `cap` bytes, if one is kept.
    pub fn take(cap: usize) -> Option<NonNull<u8>> {
        if cap > MAX_BLOCK {
            return None;
        }
        SPARES
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let at = s.blocks.iter().rposition(|&(_, c)| c == cap)?;
                s.bytes -= cap;
                Some(s.blocks.swap_remove(at).0)
            })
            .ok()
            .flatten()
    }

    /// Keeps the block of a dropped segment as a spare; false: the caller frees it. When the
    /// spares are full the oldest go first (freed here), so that blocks of a size no segment
    /// asks for again (a large record's own block) cannot take the room for good.
    pub fn keep(ptr: NonNull<u8>, cap: usize) -> bool {
        if cap > MAX_BLOCK {
            return false;
        }
        SPARES
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let mut old = 0;
                while s.bytes + cap > MAX_BYTES {
                    let (p, c) = s.blocks[old];
                    // SAFETY: a spare came from a segment's `alloc` with this size, and
                    // nothing else refers to it.
                    unsafe { super::free_block(p, c) };
                    s.bytes -= c;
                    old += 1;
                }
                s.blocks.drain(..old);
                s.bytes += cap;
                s.blocks.push((ptr, cap));
                true
            })
            .unwrap_or(false)
    }

    /// Bytes of spare blocks this thread holds (tests).
    #[cfg(test)]
    pub fn held() -> usize {
        SPARES.with(|s| s.borrow().bytes)
    }
}

/// Where a record's parts are, relative to the record's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RecordShape {
    /// Offset of the key (after the two varints, the deadline if there is one, and the
    /// version: the 8 bytes before the key).
    pub key_start: usize,
    /// Key length.
    pub key_len: usize,
    /// Value length.
    pub value_len: usize,
    /// Whether the 8 bytes before the version hold a deadline.
    pub has_deadline: bool,
}

/// Bytes of the version in every record header.
pub(super) const VERSION_LEN: usize = 8;
/// Longest record header: two varints, a deadline and the version.
pub(super) const MAX_HEADER: usize = 2 * MAX_VARINT + 8 + VERSION_LEN;

impl RecordShape {
    /// Offset of the value.
    pub fn value_start(&self) -> usize {
        self.key_start + self.key_len
    }

    /// The whole record's length.
    pub fn len(&self) -> usize {
        self.value_start() + self.value_len
    }

    /// The header of a record of `key` and `value` that expires at `deadline` (ms on the
    /// store's clock) and was written as `version`, and its length:
    /// `varint(key_len << 1 | has_deadline)`, `varint(value_len)`, then the deadline as 8
    /// little-endian bytes if there is one, then the version as 8 little-endian bytes.
    ///
    /// Panics if the key is longer than `u32::MAX / 2` bytes or the value than `u32::MAX`
    /// (the protocol's limits keep them far below).
    pub fn header(
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
        version: u64,
    ) -> ([u8; MAX_HEADER], usize) {
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|&k| k <= u32::MAX >> 1)
            .expect("key fits in u32::MAX / 2 bytes");
        let value_len = u32::try_from(value.len()).expect("value fits in u32 bytes");
        let mut b = [0u8; MAX_HEADER];
        let n = put_varint(&mut b, key_len << 1 | u32::from(deadline.is_some()));
        let mut n = n + put_varint(&mut b[n..], value_len);
        if let Some(d) = deadline {
            b[n..n + 8].copy_from_slice(&d.to_le_bytes());
            n += 8;
        }
        b[n..n + VERSION_LEN].copy_from_slice(&version.to_le_bytes());
        (b, n + VERSION_LEN)
    }

    /// Reads the shape of the record that starts at `bytes[0]`.
    ///
    /// The store only calls this on offsets where it wrote a record, so a malformed header is
    /// a bug in the store: it panics rather than misread.
    #[inline]
    pub fn read(bytes: &[u8]) -> RecordShape {
        // Keys under 64 bytes and values under 128 bytes, the common case: one byte each.
        if let [k, v, ..] = *bytes {
            if k < 0x80 && v < 0x80 {
                let has_deadline = k & 1 == 1;
                return RecordShape {
                    key_start: 2 + 8 * usize::from(has_deadline) + VERSION_LEN,
                    key_len: (k >> 1) as usize,
                    value_len: v as usize,
                    has_deadline,
                };
            }
        }
        Self::read_long(bytes)
    }

    /// [`RecordShape::read`] for a key of 64 bytes or more or a value of 128 or more, out of
    /// line, so that the one-byte case inlines small into every lookup.
    #[inline(never)]
    fn read_long(bytes: &[u8]) -> RecordShape {
        let (k, n) = get_varint(bytes);
        let (value_len, m) = get_varint(&bytes[n..]);
        let has_deadline = k & 1 == 1;
        RecordShape {
            key_start: n + m + 8 * usize::from(has_deadline) + VERSION_LEN,
            key_len: (k >> 1) as usize,
            value_len: value_len as usize,
            has_deadline,
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
        assert_eq!(RecordShape::header(&[0; 16], &[0; 64], None, 1).1, 10);
        assert_eq!(RecordShape::header(&[0; 16], &[0; 64], Some(7), 1).1, 18);
    }

    #[test]
    fn dropped_blocks_are_reused_and_the_spares_stay_bounded() {
        // Each test runs on a thread of its own, so these spares are this test's.
        let a = Segment::with_capacity(8192);
        a.append(&[b"old bytes"]);
        let at = a.ptr;
        drop(a);
        assert_eq!(spares::held(), 8192);
        let b = Segment::with_capacity(8192);
        assert_eq!(
            b.ptr, at,
            "the next segment of that size takes the dropped block"
        );
        assert_eq!((b.len(), b.room()), (0, 8192), "and starts empty");
        assert_eq!(spares::held(), 0);
        // Another size is not served from it.
        drop(b);
        let c = Segment::with_capacity(4096);
        assert_ne!(c.ptr, at);
        drop(c);
        // Dropping many keeps at most MAX_BYTES; larger-than-segment blocks are never kept.
        let many: Vec<_> = (0..200).map(|_| Segment::with_capacity(8192)).collect();
        drop(many);
        assert!(spares::held() <= spares::MAX_BYTES);
        assert!(spares::held() >= spares::MAX_BYTES - 8192);
        let before = spares::held();
        drop(Segment::with_capacity(super::super::SEGMENT + 1));
        assert_eq!(spares::held(), before);
        // Odd-sized blocks (large records' own) filling the spares age out: the next block of
        // the common size is still kept and served.
        let odd: Vec<_> = (0..30).map(|_| Segment::with_capacity(20_001)).collect();
        drop(odd);
        assert!(spares::held() <= spares::MAX_BYTES);
        let d = Segment::with_capacity(8192);
        let at = d.ptr;
        drop(d);
        assert_eq!(Segment::with_capacity(8192).ptr, at);
    }

    #[test]
    fn records_walks_every_record_in_order() {
        let s = Segment::with_capacity(256);
        let mut want = Vec::new();
        for (key, value, deadline) in [
            (&b"k1"[..], &b"v"[..], None),
            (&b"key2"[..], &[7u8; 130][..], Some(99)),
            (&b""[..], &b""[..], None),
        ] {
            let (h, n) = RecordShape::header(key, value, deadline, 3);
            let off = s.append(&[&h[..n], key, value]);
            want.push((off, n + key.len() + value.len(), key.to_vec()));
        }
        let got: Vec<(usize, usize, Vec<u8>)> = s
            .records()
            .map(|(off, rec, key)| (off, rec.len(), key.to_vec()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn appended_bytes_stay_put_and_records_read_back() {
        let s = Segment::with_capacity(72);
        let (h, n) = RecordShape::header(b"abc", &[0; 200], None, 5);
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
            (11, 3, 200)
        );
        assert!(!shape.has_deadline);
        assert_eq!(s.room(), 72 - n - 45);
        let mut s = s;
        s.overwrite(n, b"xyz");
        assert_eq!(&s.bytes()[n..n + 3], b"xyz");
    }

    #[test]
    fn a_deadline_rides_in_the_header_of_short_and_long_records() {
        for (key, value) in [
            (&[1u8; 3][..], &[2u8; 5][..]),
            (&[1u8; 300][..], &[2u8; 70_000][..]),
        ] {
            let s = Segment::with_capacity(80_000);
            let (h, n) = RecordShape::header(key, value, Some(u64::MAX - 5), u64::MAX - 9);
            let at = s.append(&[&h[..n], key, value]);
            let rec = &s.bytes()[at..];
            let shape = RecordShape::read(rec);
            assert_eq!((shape.key_len, shape.value_len), (key.len(), value.len()));
            let word = |at: usize| u64::from_le_bytes(rec[at..at + 8].try_into().unwrap());
            assert!(shape.has_deadline);
            assert_eq!(word(shape.key_start - 16), u64::MAX - 5);
            assert_eq!(word(shape.key_start - 8), u64::MAX - 9);
            assert_eq!(&rec[shape.key_start..shape.value_start()], key);
            assert_eq!(shape.len(), n + key.len() + value.len());
        }
    }

    #[test]
    #[should_panic(expected = "segment overflow")]
    fn append_past_capacity_panics() {
        Segment::with_capacity(4).append(&[b"12345"]);
    }
}
