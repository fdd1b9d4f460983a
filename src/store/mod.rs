//! The store: keys and values in shards of hashbrown tables, owned by the server loop.
//!
//! Each key is hashed once with ahash ([`Store::hash`]); the hash picks the shard from bits
//! hashbrown does not use for probing (bits 51..57: hashbrown takes the top 7 bits for its
//! control bytes and the low bits for the bucket) and is passed on to the table lookup.
//!
//! A shard keeps its entries in a vector, in the order they were first stored, and a
//! `HashTable<u32>` of positions into it. An overwrite keeps the entry's place; a removal
//! leaves a tombstone that a later compaction (stable, so order survives) sweeps away. Every
//! entry carries a store-wide sequence number given when it was first stored, so
//! [`Store::scan`] walks all shards in one insertion order, resuming from a sequence number:
//! cursors stay valid across inserts, removals and compactions, and no server state is kept
//! between chunks.
//!
//! Key and value live in one reference-counted allocation ([`Entry`]), so a reply or an event
//! can hold on to a value while the socket drains, without copying it, even if the key is
//! overwritten meanwhile. The store belongs to the server's one thread (`Entry` is not `Send`).

mod entry;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use hashbrown::HashTable;

pub use entry::Entry;

use crate::protocol::Chunk;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;
const SHARD_SHIFT: u32 = 51;

/// A shard's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// Why an increment failed. The stored value is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrError {
    /// The stored value is not an ASCII decimal i64.
    NotAnInteger,
    /// The result would not fit an i64.
    Overflow,
}

struct Slot {
    seq: u64,
    entry: Option<Entry>,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    index: HashTable<u32>,
    dead: usize,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots[i as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.key() == key)
            })
            .map(|&i| i as usize)
    }

    fn live(&self) -> usize {
        self.slots.len() - self.dead
    }

    /// Drops tombstones, keeping order, and rebuilds the index.
    fn compact(&mut self, hasher: &ahash::RandomState) {
        self.slots.retain(|s| s.entry.is_some());
        self.dead = 0;
        self.index.clear();
        self.index.reserve(self.slots.len(), |_| 0);
        for (i, s) in self.slots.iter().enumerate() {
            let h = hasher.hash_one(s.entry.as_ref().map_or(&[][..], |e| e.key()));
            // Every position is distinct, so insert_unique needs no key comparison; the
            // rehash closure is not called because capacity was reserved above.
            let slots = &self.slots;
            self.index.insert_unique(h, i as u32, |&j| {
                hasher.hash_one(
                    slots[j as usize]
                        .entry
                        .as_ref()
                        .map_or(&[][..], |e| e.key()),
                )
            });
        }
    }
}

/// The whole key space.
pub struct Store {
    shards: Box<[Shard]>,
    hasher: ahash::RandomState,
    next_seq: u64,
    len: usize,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.len)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(ahash::RandomState::new())
    }
}

impl Store {
    /// An empty store hashing with `hasher` (fixed seeds make runs repeatable).
    pub fn new(hasher: ahash::RandomState) -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher,
            next_seq: 1,
            len: 0,
        }
    }

    /// The one hash of a key, reused for the shard choice and the lookup.
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard a hash selects.
    #[inline]
    pub fn shard_of(hash: u64) -> ShardId {
        ShardId((hash >> SHARD_SHIFT) as usize & (SHARDS - 1))
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[Self::shard_of(hash).0]
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of keys in one shard.
    pub fn shard_len(&self, id: ShardId) -> usize {
        self.shards[id.0].live()
    }

    /// The entry for `key` (`hash` from [`Store::hash`]).
    #[inline]
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        let s = self.shard(hash);
        s.find(hash, key).and_then(|i| s.slots[i].entry.as_ref())
    }

    /// Stores `value` under `key`, keeping the key's place if it exists. Returns the new entry.
    pub fn set(&mut self, hash: u64, key: &[u8], value: &[u8]) -> &Entry {
        self.put(hash, Entry::new(key, value))
    }

    fn put(&mut self, hash: u64, entry: Entry) -> &Entry {
        let hasher = &self.hasher;
        let shard = &mut self.shards[Self::shard_of(hash).0];
        let pos = match shard.find(hash, entry.key()) {
            Some(i) => {
                shard.slots[i].entry = Some(entry);
                i
            }
            None => {
                let i = shard.slots.len();
                let pos = u32::try_from(i).expect("a shard holds fewer than 2^32 entries");
                shard.slots.push(Slot {
                    seq: self.next_seq,
                    entry: Some(entry),
                });
                self.next_seq += 1;
                self.len += 1;
                let slots = &shard.slots;
                shard.index.insert_unique(hash, pos, |&j| {
                    hasher.hash_one(
                        slots[j as usize]
                            .entry
                            .as_ref()
                            .map_or(&[][..], |e| e.key()),
                    )
                });
                i
            }
        };
        shard.slots[pos].entry.as_ref().expect("just stored")
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let shard = &mut self.shards[Self::shard_of(hash).0];
        let slots = &shard.slots;
        let found = shard.index.find_entry(hash, |&i| {
            slots[i as usize]
                .entry
                .as_ref()
                .is_some_and(|e| e.key() == key)
        });
        let Ok(found) = found else { return false };
        let (pos, _) = found.remove();
        shard.slots[pos as usize].entry = None;
        shard.dead += 1;
        self.len -= 1;
        if shard.dead > 32 && shard.dead > shard.live() {
            shard.compact(&self.hasher);
        }
        true
    }

    /// Adds `delta` to the decimal value of `key` (a missing key counts as 0) and stores the
    /// result in ASCII decimal. On error the value is unchanged.
    pub fn incr(&mut self, hash: u64, key: &[u8], delta: i64) -> Result<(i64, &Entry), IncrError> {
        let current = match self.get(hash, key) {
            None => 0,
            Some(e) => parse_i64(e.value()).ok_or(IncrError::NotAnInteger)?,
        };
        let new = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let digits = itoa_buf(new);
        let entry = self.put(hash, Entry::new(key, digits.as_str().as_bytes()));
        Ok((new, entry))
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        for s in self.shards.iter_mut() {
            *s = Shard::default();
        }
        self.len = 0;
    }

    /// The sequence number the next new key will get: the snapshot bound of an enumeration
    /// that starts now.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends to `out` (in [`Chunk`] format) the entries first stored at a sequence number in
    /// `from..until`, in insertion order, stopping after `max_entries` entries or once `out`
    /// holds `max_bytes` (at least one entry is always taken). Returns the cursor to resume
    /// from, or 0 when nothing is left.
    ///
    /// Consistency: a key present for the whole enumeration is returned exactly once; a key
    /// first stored after it began (sequence ≥ `until`) is not returned; a key removed before
    /// its chunk is read is not returned; values are those at the time their chunk is read.
    pub fn scan(
        &self,
        from: u64,
        until: u64,
        with_values: bool,
        max_entries: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> u64 {
        // A k-way merge over the shards, each already in sequence order.
        let mut heads: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
        for (si, s) in self.shards.iter().enumerate() {
            let i = s.slots.partition_point(|slot| slot.seq < from);
            if let Some(slot) = s.slots.get(i) {
                if slot.seq < until {
                    heads.push(Reverse((slot.seq, si, i)));
                }
            }
        }
        let mut taken = 0;
        while let Some(Reverse((seq, si, i))) = heads.pop() {
            if taken >= max_entries || (taken > 0 && out.len() >= max_bytes) {
                return seq;
            }
            let slots = &self.shards[si].slots;
            if let Some(e) = &slots[i].entry {
                Chunk::push(out, e.key(), with_values.then(|| e.value()));
                taken += 1;
            }
            if let Some(next) = slots.get(i + 1) {
                if next.seq < until {
                    heads.push(Reverse((next.seq, si, i + 1)));
                }
            }
        }
        0
    }
}

/// Parses an ASCII decimal i64: an optional sign, then digits, nothing else.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Formats an i64 in ASCII decimal without allocating.
fn itoa_buf(n: i64) -> DecBuf {
    let mut b = DecBuf {
        buf: [0; 20],
        start: 20,
    };
    let neg = n < 0;
    let mut u = n.unsigned_abs();
    loop {
        b.start -= 1;
        b.buf[b.start] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        b.start -= 1;
        b.buf[b.start] = b'-';
    }
    b
}

struct DecBuf {
    buf: [u8; 20],
    start: usize,
}

impl DecBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(ahash::RandomState::with_seeds(1, 2, 3, 4))
    }

    fn set(s: &mut Store, k: &[u8], v: &[u8]) {
        let h = s.hash(k);
        s.set(h, k, v);
    }

    fn scan_all(s: &Store, with_values: bool, max_entries: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let until = s.next_seq();
        let (mut cursor, mut all) = (0, Vec::new());
        loop {
            let mut out = Vec::new();
            let next = s.scan(
                cursor,
                until,
                with_values,
                max_entries,
                usize::MAX,
                &mut out,
            );
            for item in Chunk::new(&out, with_values) {
                let (k, v) = item.unwrap();
                all.push((k.to_vec(), v.to_vec()));
            }
            if next == 0 {
                return all;
            }
            cursor = next;
        }
    }

    #[test]
    fn get_set_remove() {
        let mut s = store();
        let h = s.hash(b"a");
        assert!(s.get(h, b"a").is_none());
        s.set(h, b"a", b"");
        assert_eq!(s.get(h, b"a").unwrap().value(), b"");
        s.set(h, b"a", b"2");
        assert_eq!(s.get(h, b"a").unwrap().value(), b"2");
        assert_eq!(s.len(), 1);
        assert!(s.remove(h, b"a"));
        assert!(!s.remove(h, b"a"));
        assert!(s.is_empty());
    }

    #[test]
    fn incr_semantics() {
        let mut s = store();
        let h = s.hash(b"n");
        assert_eq!(s.incr(h, b"n", 1).unwrap().0, 1);
        assert_eq!(s.incr(h, b"n", -3).unwrap().0, -2);
        assert_eq!(s.get(h, b"n").unwrap().value(), b"-2");
        s.set(h, b"n", i64::MAX.to_string().as_bytes());
        assert_eq!(s.incr(h, b"n", 1).unwrap_err(), IncrError::Overflow);
        assert_eq!(
            s.get(h, b"n").unwrap().value(),
            i64::MAX.to_string().as_bytes()
        );
        s.set(h, b"n", b"4x");
        assert_eq!(s.incr(h, b"n", 1).unwrap_err(), IncrError::NotAnInteger);
        assert_eq!(s.get(h, b"n").unwrap().value(), b"4x");
        s.set(h, b"n", b"");
        assert_eq!(s.incr(h, b"n", 1).unwrap_err(), IncrError::NotAnInteger);
        s.set(h, b"n", i64::MIN.to_string().as_bytes());
        assert_eq!(s.incr(h, b"n", 0).unwrap().0, i64::MIN);
        assert_eq!(
            s.get(h, b"n").unwrap().value(),
            i64::MIN.to_string().as_bytes()
        );
    }

    #[test]
    fn scan_is_insertion_ordered_and_overwrite_keeps_place() {
        let mut s = store();
        for i in 0..1000u32 {
            set(&mut s, format!("k{i}").as_bytes(), b"v");
        }
        set(&mut s, b"k5", b"new");
        for i in (0..1000u32).step_by(3) {
            let k = format!("k{i}");
            let h = s.hash(k.as_bytes());
            assert!(s.remove(h, k.as_bytes()));
        }
        let got = scan_all(&s, true, 7);
        let want: Vec<_> = (0..1000u32)
            .filter(|i| i % 3 != 0)
            .map(|i| {
                let v: &[u8] = if i == 5 { b"new" } else { b"v" };
                (format!("k{i}").into_bytes(), v.to_vec())
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.len(), want.len());
    }

    #[test]
    fn scan_cursor_survives_changes_between_chunks() {
        let mut s = store();
        for i in 0..100u32 {
            set(&mut s, format!("k{i}").as_bytes(), b"v");
        }
        let until = s.next_seq();
        let mut out = Vec::new();
        let mut next = s.scan(0, until, false, 10, usize::MAX, &mut out);
        // Between chunks: remove most keys (forcing compactions) and add new ones.
        for i in 10..90u32 {
            let k = format!("k{i}");
            let h = s.hash(k.as_bytes());
            s.remove(h, k.as_bytes());
            set(&mut s, format!("new{i}").as_bytes(), b"v");
        }
        set(&mut s, b"k50", b"back"); // re-added after removal: a new key now, not returned
        while next != 0 {
            next = s.scan(next, until, false, 10, usize::MAX, &mut out);
        }
        let keys: Vec<_> = Chunk::new(&out, false)
            .map(|r| r.unwrap().0.to_vec())
            .collect();
        let want: Vec<_> = (0..10u32)
            .chain(90..100)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn scan_takes_at_least_one_entry_per_chunk() {
        let mut s = store();
        set(&mut s, b"big", &[7u8; 1000]);
        set(&mut s, b"b", b"");
        let mut out = Vec::new();
        let next = s.scan(0, s.next_seq(), true, 100, 10, &mut out);
        assert_ne!(next, 0);
        assert_eq!(Chunk::new(&out, true).count(), 1);
    }

    #[test]
    fn clear_empties_every_shard() {
        let mut s = store();
        for i in 0..500u32 {
            set(&mut s, &i.to_le_bytes(), b"x");
        }
        assert!((0..SHARDS).filter(|&i| s.shard_len(ShardId(i)) > 0).count() > SHARDS / 2);
        s.clear();
        assert_eq!(s.len(), 0);
        assert!(scan_all(&s, false, 10).is_empty());
    }

    #[test]
    fn itoa_matches_std() {
        for n in [0, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN] {
            assert_eq!(itoa_buf(n).as_str(), n.to_string());
        }
    }
}
