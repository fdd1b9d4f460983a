//! [`Entry`]: a stored key and value, in place in their segment.
//!
//! An `Entry` owns a count of its [`Segment`], so it can go into an output queue and be sent
//! without copying, even if the key is overwritten or the store drops the segment meanwhile.
//! A [`Record`] is the same view borrowed from the store, for reading without touching the
//! count; [`Record::to_entry`] turns it into an `Entry`.

use std::borrow::Borrow;
use std::fmt;
use std::rc::Rc;

use super::segment::{RecordShape, Segment};

/// A key and value in a segment. `S` is how the segment is held: owned (`Rc<Segment>`, the
/// default) or borrowed from the store (`&Rc<Segment>`, see [`Record`]).
pub struct Entry<S = Rc<Segment>> {
    seg: S,
    /// Offset of the key in the segment; the value follows it.
    start: u32,
    key_len: u32,
    value_len: u32,
    /// Whether the 8 bytes before the version hold the record's deadline.
    has_deadline: bool,
}

/// An [`Entry`] borrowed from the store.
pub type Record<'a> = Entry<&'a Rc<Segment>>;

impl<S: Borrow<Rc<Segment>>> Entry<S> {
    /// The key and value of the record at `off` in `seg`.
    #[inline]
    pub(super) fn at(seg: S, off: usize) -> Self {
        let shape = RecordShape::read(&seg.borrow().bytes()[off..]);
        Entry {
            start: (off + shape.key_start) as u32,
            key_len: shape.key_len as u32,
            value_len: shape.value_len as u32,
            has_deadline: shape.has_deadline,
            seg,
        }
    }

    /// The 8-byte word `back` bytes before the key.
    #[inline]
    fn word_before_key(&self, back: usize) -> Option<u64> {
        let start = self.start as usize;
        let b = self.seg.borrow().bytes();
        b.get(start.checked_sub(back)?..start - back + 8)
            .and_then(|d| d.try_into().ok())
            .map(u64::from_le_bytes)
    }

    /// When the record expires (ms on the store's clock), if it has a TTL.
    #[inline]
    pub fn deadline(&self) -> Option<u64> {
        if !self.has_deadline {
            return None;
        }
        // The store wrote 8 deadline bytes before the version of every record whose header
        // says so.
        self.word_before_key(16)
    }

    /// The version of the write that stored this value (see [`super::Store::set`]): the 8
    /// bytes before the key, in every record.
    #[inline]
    pub fn version(&self) -> u64 {
        self.word_before_key(8)
            .expect("every record holds a version before its key")
    }

    /// Whether the record has expired by `now` (ms on the store's clock).
    #[inline]
    pub fn is_due(&self, now: u64) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }

    /// Key then value.
    pub fn bytes(&self) -> &[u8] {
        let start = self.start as usize;
        &self.seg.borrow().bytes()[start..start + self.len()]
    }

    /// Length of key and value together.
    pub fn len(&self) -> usize {
        self.key_len as usize + self.value_len as usize
    }

    /// Whether key and value are both empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the key: where the value starts in [`Entry::bytes`].
    pub fn key_len(&self) -> usize {
        self.key_len as usize
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.bytes()[..self.key_len()]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.bytes()[self.key_len()..]
    }

    /// An owned entry: holds a count of the segment, for sending later.
    pub fn to_entry(&self) -> Entry {
        Entry {
            seg: Rc::clone(self.seg.borrow()),
            start: self.start,
            key_len: self.key_len,
            value_len: self.value_len,
            has_deadline: self.has_deadline,
        }
    }
}

impl Entry {
    /// An entry in a segment of its own, holding copies of `key` and `value` (version 0).
    ///
    /// Panics if either is longer than `u32::MAX` bytes (the protocol's limits keep them far
    /// below).
    pub fn new(key: &[u8], value: &[u8]) -> Self {
        let (h, n) = RecordShape::header(key, value, None, 0);
        let seg = Segment::with_capacity(n + key.len() + value.len());
        let off = seg.append(&[&h[..n], key, value]);
        Entry::at(Rc::new(seg), off)
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        self.to_entry()
    }
}

impl<S: Borrow<Rc<Segment>>> fmt::Debug for Entry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_key_and_value_and_outlives_the_store_count() {
        let e = Entry::new(b"key", b"value");
        assert_eq!(
            (e.key(), e.value(), e.bytes()),
            (&b"key"[..], &b"value"[..], &b"keyvalue"[..])
        );
        let c = e.clone();
        drop(e);
        assert_eq!(c.value(), b"value");
        let seg = Rc::new(Segment::with_capacity(100));
        let (h, n) = RecordShape::header(b"k", b"vv", Some(3), 42);
        let off = seg.append(&[&h[..n], b"k", b"vv"]);
        let owned = Record::at(&seg, off).to_entry();
        drop(seg);
        assert_eq!((owned.key(), owned.value()), (&b"k"[..], &b"vv"[..]));
        assert_eq!((owned.version(), owned.deadline()), (42, Some(3)));
        let empty = Entry::new(b"", b"");
        assert!(empty.key().is_empty() && empty.value().is_empty() && empty.is_empty());
    }
}
