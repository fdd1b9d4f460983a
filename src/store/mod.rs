//! The store: keys and values in shards of hashbrown tables, owned by the server loop.
//!
//! Each key is hashed once with ahash ([`Store::hash`]); bits 51..57 of the hash pick the
//! shard, and its low 24 bits are what the shard's index files the key under
//! (`index_hash`).
//!
//! A shard keeps its entries in a vector, in the order they were first stored, and a
//! `HashTable` of positions into it (each with where the key's record is, `Filed`), which
//! files each key under 24 bits of its hash that its slot keeps (`index_hash`): the table is
//! rehashed and rebuilt without reading a key.
//! An overwrite keeps the entry's place; a removal leaves a tombstone that a later compaction
//! (stable, so order survives) sweeps away, when tombstones outnumber the live entries or
//! when the vector would otherwise grow with a third of it tombstones. Every
//! entry carries a store-wide sequence number given when it was first stored, so
//! [`Store::scan`] walks all shards in one insertion order, resuming from a sequence number:
//! cursors stay valid across inserts, removals and compactions, and no server state is kept
//! between chunks.
//!
//! Keys and values are stored as records appended to per-shard segments ([`Segment`], 64 KiB,
//! or one of its own for a record over 16 KiB): no allocation and no allocator header per key.
//! A slot names its record by segment and offset. An overwrite with a value of the same size
//! rewrites the record in place when nothing but the store holds its segment; any other
//! overwrite appends a new record, and the old one becomes garbage, counted per segment. A
//! segment whose live bytes fall to half of what it holds is reclaimed by copying its live
//! records to the shard's current segment (records are found through the index, by hashing
//! their keys); one with none left is dropped. So garbage stays under half of any full
//! segment, and each byte reclaimed costs at most one byte copied. Segments are reference-counted, so a reply or an event ([`Entry`]) holds on to
//! a value while the socket drains, without copying it, even after the store moved or dropped
//! it. (So a connection that stops reading keeps alive the segments its queued replies name,
//! at most what the store held meanwhile; its queue itself is bounded by the server's
//! backpressure.) The store belongs to the server's one thread (`Entry` is not `Send`).
//!
//! A lookup follows three dependent loads after the hash: the index, the slot, the record.
//! With a store larger than the CPU's caches each can miss, so [`Store::prefetch`] lets a
//! caller with many keys at hand (a pipelined batch) start all their loads before it looks
//! any of them up; and as an index entry also says where the record is, it asks for the slot
//! and the record at once, two dependent loads instead of three.
//!
//! Per key with a 16-byte key and a 64-byte value: a 90-byte record (8 of them its version), a
//! 16-byte slot, and the hash index's 8-byte entry (position and record place) plus a control
//! byte per bucket.
//!
//! ## Versions
//!
//! Every write of a value (set, incr, the conditional and multi writes) takes the next number
//! of one store-wide counter ([`Store::next_version`]) and stores it in the record's header, so
//! a key's version is greater than every version the store handed out before it: also after
//! the key is removed and stored again, and after [`Store::clear`] (which keeps the counter).
//! Changing only a key's TTL ([`Store::set_deadline`]) keeps its version: the value did not
//! change. A server starts the counter from the wall clock ([`Store::start_versions_at`]), so
//! a version from an earlier server on the machine is not mistaken for a current one.
//!
//! ## The memory budget and eviction
//!
//! A store made [`Store::with_budget`] counts what it holds ([`Store::memory_bytes`]): the
//! whole capacity of its segments (live records, garbage, unused room), slot vectors, hash
//! indexes, the segment tables, the timing wheel and the ghost table. Each shard's share is
//! recomputed in O(1) (capacities, not walks) after each operation on it. A write that leaves
//! the store over its budget first expires due keys (up to 256), then evicts, one segment at
//! a time, shards taking turns, until the budget holds or nothing is left to evict but the
//! segments being filled and the one holding the key just written. Evicted and expired keys
//! wait in a list ([`Store::drain_gone`]) for the server to tell their listeners; with
//! [`Store::tell_evictions`] off (nobody listens) evicted keys are only counted
//! ([`Store::take_untold`]).
//!
//! The policy is S3-FIFO (Yang et al., SOSP '23) on segments. Each shard appends to two
//! segment FIFOs: new keys to the *small* queue, keys promoted or coming back to the *main*
//! one, and every key stored before the budget first ran out (since the store was made or
//! cleared) to the main one too: nothing needs filtering while everything fits, and those
//! keys are then the old keys that a scan of new ones must not push out (in the cache-aside
//! benchmark at α = 1.2 with a scan, where the cache had just filled when the scan came: 94.96
//! % of hits instead of 94.48, BENCHMARKS.md). A hit counts in two bits stolen from the top of
//! a slot's sequence number (a `Cell`: `get` takes `&self`; it writes only while the count is
//! below 3, and only with a budget), so the policy adds no byte to a key. Eviction takes the
//! oldest segment of the small queue while that queue holds more than a tenth of the store's
//! segment bytes (counted store-wide, as the queues are: a shard whose small queue has
//! nothing to give yet is passed over for one that has, rather than made to give from its
//! main queue), else of the main queue, and walks its records (found through the index, as
//! reclamation finds them; their index entries and slots are asked for in a first pass, so
//! that the cache misses overlap): a small-queue record that was hit moves to the main queue;
//! a main-queue record that was hit is appended again with its count one lower; the others
//! are evicted (a small-queue one leaves a tag in the ghost table, 4 bytes per 256 bytes of
//! budget, so that it enters the main queue if it comes back soon). Then the segment is
//! dropped: the bytes come back at once, with no garbage left behind, which is what
//! per-object policies (SIEVE, LRU) cannot give a log-structured store; its block is kept for
//! the next segment (`segment::spares`). Nothing is allocated per hit; an eviction walks one
//! segment (amortized O(1) per write). Segments are sized to the budget
//! ([`Store::segment_for`]: about 1/4096 of it, 1 KiB to 64 KiB), so the two being filled per
//! shard take at most 1/32 of it.
//!
//! Chosen by measurement (`eviction_tests::policy_simulation`, run with `cargo test --release
//! --lib policy_simulation -- --ignored --nocapture`): a 16 MiB budget, 2^20 keys of 16 bytes
//! with values of 64 to 512 bytes (about 300 MB in all), 3 M requests, each a GET then a SET
//! on a miss, keys drawn from a Zipf distribution; the scan variant inserts, mid-run, twice
//! the budget of new keys once. Hit ratios (keys held at the end; rerun 2026-11-30 with the
//! index tables kept through compactions unless four times too large, and slot vectors
//! compacted before they grow: within 0.001 of the runs before, with 0.3-0.9 % fewer keys):
//!
//! | Zipf α | scan | S3-FIFO (chosen) | CLOCK: one FIFO, 2-bit, on segments | exact LRU, record + 48 B/key |
//! |---:|:---:|---:|---:|---:|
//! | 0.8 | no  | **0.457** (43,133 keys) | 0.391 (43,167) | 0.379 (47,425) |
//! | 0.8 | yes | **0.457** (42,921) | 0.388 (43,185) | 0.377 (47,425) |
//! | 1.0 | no  | **0.752** (43,146) | 0.720 (43,161) | 0.711 (47,347) |
//! | 1.0 | yes | **0.752** (43,111) | 0.716 (43,073) | 0.708 (47,347) |
//! | 1.2 | no  | **0.934** (43,401) | 0.930 (43,309) | 0.928 (47,385) |
//! | 1.2 | yes | **0.933** (43,381) | 0.925 (43,342) | 0.923 (47,385) |
//!
//! S3-FIFO wins every row: by 6.5 points over the single FIFO with reinsertion and 8 over LRU
//! at α = 0.8, 3 and 4 at α = 1.0, and the scan costs it nothing (the scan's keys never
//! leave the small queue), while it costs the others up to half a point: one-hit keys take a
//! whole trip through their one queue. The LRU reference is given about 10 % more keys than the
//! store holds (its 48 bytes per key are less than what the store really spends on slots,
//! index and segment slack) and still loses. SIEVE was not built: it needs a per-object hand
//! over the slots, and its evictions leave garbage scattered over segments that must be
//! copied to be reclaimed, where the segment-level walk frees a whole segment at once.

mod entry;
#[cfg(test)]
mod eviction_tests;
mod segment;
mod wheel;

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use hashbrown::HashTable;

pub use entry::{Entry, Record};
use segment::RecordShape;
pub use segment::Segment;
use wheel::Wheel;

use crate::protocol::Chunk;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;
const SHARD_SHIFT: u32 = 51;
/// Size of a shared segment. Records longer than a quarter of it get a segment of their own,
/// sized to fit.
pub const SEGMENT: usize = 64 * 1024;

/// Bytes an allocator may put before a block it maps on its own (glibc: 16, rounded up; 32
/// leaves room), taken off a budgeted store's segment size (see [`Store::segment_for`]).
const BLOCK_HEADER: usize = 32;
/// `Slot::seg` of a removed key.
const DEAD: u32 = u32::MAX;
/// A hint ([`Store::prefetch`]) that names no slot.
pub const NO_HINT: u32 = u32::MAX;

/// An entry of a shard's index: the key's slot, and where the key's record was when the
/// entry was last told ([`Filed::seg`], [`Filed::off`]). The slot is the truth; the place is a
/// guess that lets [`Store::prefetch`] ask for the slot and the record at once, instead of
/// reading the slot first and then asking for the record (one cache miss after another). Every
/// move of a record tells its entry, so the guess is right but for segment ids from
/// [`NOWHERE`] up (a shard with 65,535 segments or more), which are filed as no guess; nothing
/// reads a record through it, so a wrong one would cost only a wasted prefetch.
#[derive(Clone, Copy)]
struct Filed {
    /// The key's slot in [`Shard::slots`].
    slot: u32,
    /// The record's segment id, or [`NOWHERE`] for an id of `u16::MAX` or more.
    seg: u16,
    /// The record's offset in its segment.
    off: u16,
}

/// [`Filed::seg`] of an entry whose record's segment id does not fit 16 bits, or is this mark
/// itself: no guess.
const NOWHERE: u16 = u16::MAX;

impl Filed {
    #[inline(always)]
    fn new(slot: u32, seg: u32, off: u16) -> Self {
        Filed {
            slot,
            seg: u16::try_from(seg).unwrap_or(NOWHERE),
            off,
        }
    }
}

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

/// A key's place in insertion order, where its record is, and the bits of its hash that its
/// shard's index files it under ([`index_hash`]).
struct Slot {
    /// The sequence number (below 2^54) in the low bits, bits 16..24 of [`Slot::index_bits`]
    /// above it, and the eviction policy's access count (0..=3) in the top two bits: a `Cell`,
    /// so that a read (`&Store`) can count a hit.
    seq: Cell<u64>,
    /// Segment id, or [`DEAD`].
    seg: u32,
    /// Where the record starts in its segment (a shared segment is at most [`SEGMENT`] bytes,
    /// and a record of a segment of its own starts at 0).
    off: u16,
    /// Bits 0..16 of [`Slot::index_bits`].
    tag: u16,
}

/// Bits of [`Slot::seq`] that hold the sequence number: 2^54 keys stored (570 years at a
/// million new keys a second) before it would run into the hash bits above it.
const SEQ_BITS: u32 = 54;
/// Where the access count sits in [`Slot::seq`].
const FREQ_SHIFT: u32 = 62;
/// The sequence number's bits of [`Slot::seq`].
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// The bits of a key's hash that its shard's index is built on ([`index_bits`]).
const INDEX_BITS: u32 = 24;

/// The bits of a key's hash that its shard's index files it under: the low [`INDEX_BITS`]
/// (the shard was chosen by bits 51..57).
#[inline(always)]
fn index_bits(hash: u64) -> u32 {
    hash as u32 & ((1 << INDEX_BITS) - 1)
}

/// The hash a shard's index files a key under: [`index_bits`] of its hash, spread over 64
/// bits by a multiply with an odd constant (hashbrown takes a bucket from the low bits, a
/// bijection of the low bits of `bits`, and its control tag from the top ones, which all of
/// `bits` move). Each slot keeps these bits, so the index is rehashed (when removals' tombstones
/// use up its room) and rebuilt (at each compaction) from the slots alone, without reading any
/// key (a record, often a cache miss) or hashing it again: under a budget, where every new key
/// evicts one, that was about a tenth of a SET's instructions (`benches/instr.sh` with a
/// budget: 1,401 instructions per SET, 1,228 with this and the compaction changes). The cost:
/// two keys of a shard with the same 24 bits have the same hash, tag included, so a lookup of
/// one compares the other's key too (reading its slot and record). Of a shard's n keys about
/// n/2^24 have such a twin: 0.1 % at 16,000 keys a shard (a million in all), 9 % at 1.5
/// million a shard (100 million in all). Correct at any size.
#[inline(always)]
fn index_hash(bits: u32) -> u64 {
    u64::from(bits).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// [`index_hash`] of the key whose hash is `hash`.
#[inline(always)]
fn index_hash_of(hash: u64) -> u64 {
    index_hash(index_bits(hash))
}

impl Slot {
    fn new(seq: u64, bits: u32, seg: u32, off: u16) -> Self {
        debug_assert!(seq <= SEQ_MASK, "sequence numbers stay below 2^54");
        debug_assert!(bits < 1 << INDEX_BITS, "index bits are {INDEX_BITS} bits");
        Slot {
            seq: Cell::new(seq | u64::from(bits >> 16) << SEQ_BITS),
            seg,
            off,
            tag: bits as u16,
        }
    }

    /// The key's sequence number.
    #[inline]
    fn seq(&self) -> u64 {
        self.seq.get() & SEQ_MASK
    }

    /// [`index_bits`] of the key's hash, as the slot keeps them.
    #[inline]
    fn index_bits(&self) -> u32 {
        let high = (self.seq.get() >> SEQ_BITS) as u32 & ((1 << (FREQ_SHIFT - SEQ_BITS)) - 1);
        u32::from(self.tag) | high << 16
    }

    /// [`index_hash`] of the key.
    #[inline]
    fn index_hash(&self) -> u64 {
        index_hash(self.index_bits())
    }

    /// The access count since the policy last looked at the key (0..=3).
    #[inline]
    fn freq(&self) -> u8 {
        (self.seq.get() >> FREQ_SHIFT) as u8
    }

    fn set_freq(&self, f: u8) {
        let rest = self.seq.get() & ((1 << FREQ_SHIFT) - 1);
        self.seq.set(rest | u64::from(f) << FREQ_SHIFT);
    }

    /// Whether the slot names the record at `off` in segment `seg`.
    #[inline]
    fn is_at(&self, seg: u32, off: usize) -> bool {
        self.seg == seg && usize::from(self.off) == off
    }

    /// Counts a hit: writes only while the count is below 3.
    #[inline]
    fn touch(&self) {
        let v = self.seq.get();
        if v >> FREQ_SHIFT < 3 {
            self.seq.set(v + (1 << FREQ_SHIFT));
        }
    }
}

/// The eviction policy's queue a segment belongs to (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    /// New keys (S3-FIFO's small queue).
    Small = 0,
    /// Keys that were hit while in the small queue, or came back soon after leaving it; every
    /// key when there is no budget.
    Main = 1,
}

struct SegInfo {
    seg: Rc<Segment>,
    /// Bytes of live records in it.
    live: usize,
    /// The queue its records are in.
    queue: Queue,
    /// Tells it from a later segment with the same id in a queue's FIFO.
    epoch: u32,
}

/// The key of slot `i`; empty for a removed one.
#[inline]
fn key_of<'a>(slots: &'a [Slot], segs: &'a [Option<SegInfo>], i: u32) -> &'a [u8] {
    let slot = &slots[i as usize];
    if slot.seg == DEAD {
        return &[];
    }
    let seg = segs[slot.seg as usize]
        .as_ref()
        .expect("a live slot names a live segment")
        .seg
        .bytes();
    let off = usize::from(slot.off);
    let shape = RecordShape::read(&seg[off..]);
    &seg[off + shape.key_start..off + shape.value_start()]
}

/// Where `hash` sits in the ghost table, and the tag it leaves there (never 0, the empty
/// mark). Bits 8.. choose the place: the shard takes bits 51..57 and the index bits 0..24,
/// which only matters for keys of one shard, where the tag (bits 32..) still tells them
/// apart.
#[inline]
fn ghost_slot(ghost: &[u32], hash: u64) -> (usize, u32) {
    let at = (hash >> 8) as usize & (ghost.len() - 1);
    (at, (hash >> 32) as u32 | 1)
}

/// Whether two keys are equal: keys of 4 to 16 bytes (most keys) by two overlapping word
/// loads each, inline, instead of a call to `memcmp` per lookup.
#[inline(always)]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => match (a.first_chunk::<8>(), a.last_chunk::<8>()) {
            (Some(a0), Some(a1)) => Some(a0) == b.first_chunk() && Some(a1) == b.last_chunk(),
            _ => a == b,
        },
        4..=7 => match (a.first_chunk::<4>(), a.last_chunk::<4>()) {
            (Some(a0), Some(a1)) => Some(a0) == b.first_chunk() && Some(a1) == b.last_chunk(),
            _ => a == b,
        },
        _ => a == b,
    }
}

/// Asks the CPU to start loading the cache line holding `at` (a hint; a no-op where the
/// target has no prefetch instruction).
#[inline(always)]
fn prefetch_line<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint that never faults, and the address is a live reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

struct Shard {
    /// Size of a shared segment.
    segment: usize,
    slots: Vec<Slot>,
    index: HashTable<Filed>,
    dead: usize,
    /// Segments by id; `None` ids are in `free`.
    segs: Vec<Option<SegInfo>>,
    free: Vec<u32>,
    /// The shared segment records of each [`Queue`] are appended to.
    active: [Option<u32>; 2],
    /// Segments to look at once the current operation is done: they were sealed, or lost a
    /// record.
    check: Vec<u32>,
    /// With a budget: each queue's segments, oldest first, with their epochs (an entry whose
    /// segment was dropped meanwhile is skipped when it comes up).
    fifo: [VecDeque<(u32, u32)>; 2],
    /// Whether segments are filed in `fifo` (the store has a budget).
    evicting: bool,
    /// Epoch of the next segment made.
    epoch: u32,
    /// Bytes of the segments the store holds (their whole capacity), and of the small queue's.
    seg_bytes: usize,
    small_bytes: usize,
    /// What this shard last added to [`Store::bytes`], [`Store::seg_bytes`] and
    /// [`Store::small_bytes`].
    counted: [usize; 3],
}

impl Shard {
    fn new(segment: usize, evicting: bool) -> Self {
        Shard {
            segment,
            slots: Vec::new(),
            index: HashTable::new(),
            dead: 0,
            segs: Vec::new(),
            free: Vec::new(),
            active: [None; 2],
            check: Vec::new(),
            fifo: [VecDeque::new(), VecDeque::new()],
            evicting,
            epoch: 0,
            seg_bytes: 0,
            small_bytes: 0,
            counted: [0; 3],
        }
    }

    /// Bytes this shard holds: segments, slots, index and the small vectors, in O(1).
    fn bytes(&self) -> usize {
        self.seg_bytes
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.allocation_size()
            + self.segs.capacity() * std::mem::size_of::<Option<SegInfo>>()
            + (self.free.capacity() + self.check.capacity()) * 4
            + (self.fifo[0].capacity() + self.fifo[1].capacity()) * 8
    }

    fn info(&self, id: u32) -> &SegInfo {
        self.segs[id as usize]
            .as_ref()
            .expect("a live slot names a live segment")
    }

    fn info_mut(&mut self, id: u32) -> &mut SegInfo {
        self.segs[id as usize]
            .as_mut()
            .expect("a live slot names a live segment")
    }

    /// The record of a live slot.
    #[inline]
    fn record(&self, slot: &Slot) -> Record<'_> {
        Record::at(&self.info(slot.seg).seg, usize::from(slot.off))
    }

    /// The slot of `key` and its record, trying slot `hint` first (see [`Store::prefetch`]):
    /// keys are unique, so a live slot that holds `key` is its slot, and a wrong or stale hint
    /// only costs the comparison before the index is searched.
    #[inline(always)]
    fn find_hinted(&self, hash: u64, key: &[u8], hint: u32) -> Option<(usize, Record<'_>)> {
        if let Some(slot) = self.slots.get(hint as usize) {
            if slot.seg != DEAD {
                let record = self.record(slot);
                if same_key(record.key(), key) {
                    return Some((hint as usize, record));
                }
            }
        }
        self.find(hash, key)
    }

    /// The first index entry filed under the index bits of `hash` whose 7-bit tag matches (no
    /// key compared): the slot a lookup of the key most likely ends at. (`find` with a test that
    /// takes the first, which inlines, rather than `iter_hash`, whose every step is a call: 1 to
    /// 3 % less time per SET in the store, with or without a budget.)
    #[inline]
    fn first_candidate(&self, hash: u64) -> Option<Filed> {
        self.index.find(index_hash_of(hash), |_| true).copied()
    }

    /// The slot of `key` and its record.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<(usize, Record<'_>)> {
        let mut hit = None;
        self.index.find(index_hash_of(hash), |f| {
            let slot = &self.slots[f.slot as usize];
            if slot.seg == DEAD {
                return false;
            }
            let record = self.record(slot);
            let same = same_key(record.key(), key);
            if same {
                hit = Some((f.slot as usize, record));
            }
            same
        });
        hit
    }

    fn live(&self) -> usize {
        self.slots.len() - self.dead
    }

    fn new_segment(&mut self, cap: usize, queue: Queue) -> u32 {
        let seg = Segment::with_capacity(cap);
        let cap = seg.room();
        let epoch = self.epoch;
        self.epoch = self.epoch.wrapping_add(1);
        let info = Some(SegInfo {
            seg: Rc::new(seg),
            live: 0,
            queue,
            epoch,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.segs[id as usize] = info;
                id
            }
            None => {
                let id = u32::try_from(self.segs.len())
                    .ok()
                    .filter(|&id| id != DEAD)
                    .expect("a shard holds fewer than 2^32 - 1 segments");
                self.segs.push(info);
                id
            }
        };
        self.seg_bytes += cap;
        if queue == Queue::Small {
            self.small_bytes += cap;
        }
        if self.evicting {
            self.fifo[queue as usize].push_back((id, epoch));
        }
        id
    }

    /// Drops segment `id` (its live records were moved or removed).
    fn drop_segment(&mut self, id: u32) {
        if let Some(info) = self.segs[id as usize].take() {
            let cap = info.seg.len() + info.seg.room();
            self.seg_bytes -= cap;
            if info.queue == Queue::Small {
                self.small_bytes -= cap;
            }
            if self.active[info.queue as usize] == Some(id) {
                self.active[info.queue as usize] = None;
            }
            self.free.push(id);
        }
        // FIFO entries of dropped segments are skipped when they come up; sweep them when
        // they outnumber the segments, so the FIFOs stay O(segments).
        let stale = self.fifo[0].len() + self.fifo[1].len();
        if stale > 2 * (self.segs.len() - self.free.len()) + 16 {
            let segs = &self.segs;
            for q in &mut self.fifo {
                q.retain(|&(id, ep)| segs[id as usize].as_ref().is_some_and(|i| i.epoch == ep));
            }
        }
    }

    /// Appends one record made of `parts` to `queue`; returns its segment and offset.
    fn append(&mut self, queue: Queue, parts: &[&[u8]]) -> (u32, u16) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let id = if len > self.segment / 4 {
            self.new_segment(len, queue)
        } else {
            match self.active[queue as usize] {
                Some(a) if self.info(a).seg.room() >= len => a,
                sealed => {
                    self.check.extend(sealed);
                    let a = self.new_segment(self.segment, queue);
                    self.active[queue as usize] = Some(a);
                    a
                }
            }
        };
        let info = self.info_mut(id);
        let off = info.seg.append(parts);
        info.live += len;
        // A shared segment is at most `SEGMENT` (64 KiB) long (`Store::with_budget`), and a
        // segment of its own holds one record, at 0.
        let off = u16::try_from(off).expect("records start in the first 64 KiB of a segment");
        (id, off)
    }

    /// Replaces the header and value of slot `i` where they are, if the new record (`header`
    /// then the same key then `value`) is as long as the old one and nobody but the store holds
    /// the segment (no reply or event waiting to send from it). Then the record keeps its place
    /// and no garbage is made: the common case of a key rewritten with a value of the same
    /// size. The header is always rewritten: it holds the new version.
    fn overwrite_in_place(&mut self, i: usize, header: &[u8], value: &[u8]) -> bool {
        let (id, off) = (self.slots[i].seg, usize::from(self.slots[i].off));
        let info = self.info_mut(id);
        let shape = RecordShape::read(&info.seg.bytes()[off..]);
        if shape.key_start != header.len() || shape.value_len != value.len() {
            return false;
        }
        match Rc::get_mut(&mut info.seg) {
            Some(seg) => {
                // Same lengths: the varints are the same; the deadline and version may differ.
                seg.overwrite(off, header);
                seg.overwrite(off + shape.value_start(), value);
                true
            }
            None => false,
        }
    }

    /// Counts the record of a slot as garbage.
    fn forget(&mut self, seg: u32, off: u16) {
        let info = self.info_mut(seg);
        info.live -= RecordShape::read(&info.seg.bytes()[usize::from(off)..]).len();
        self.check.push(seg);
    }

    /// Drops or reclaims the segments in `check` that are mostly garbage. (Inline down to one
    /// test of an empty list, the case of most writes.)
    #[inline(always)]
    fn settle(&mut self, hasher: &ahash::RandomState) {
        if !self.check.is_empty() {
            self.settle_checked(hasher);
        }
    }

    #[inline(never)]
    fn settle_checked(&mut self, hasher: &ahash::RandomState) {
        while let Some(id) = self.check.pop() {
            let Some(info) = &self.segs[id as usize] else {
                continue; // listed twice and already gone
            };
            if Some(id) == self.active[info.queue as usize] {
                continue;
            }
            if info.live * 2 > info.seg.len() {
                continue;
            }
            if info.live > 0 {
                self.relocate(id, hasher);
            }
            self.drop_segment(id);
        }
    }

    /// The slot whose record is at `off` in segment `id`, found through the index by the
    /// record's key.
    fn slot_at(&self, id: u32, off: usize, key: &[u8], hasher: &ahash::RandomState) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(index_hash_of(hasher.hash_one(key)), |f| {
                slots[f.slot as usize].is_at(id, off)
            })
            .map(|f| f.slot)
    }

    /// Points live slot `i` at the record at `off` in segment `seg`, and tells its index entry
    /// (see [`Filed`]).
    fn move_slot(&mut self, i: usize, seg: u32, off: u16) {
        let slot = &mut self.slots[i];
        (slot.seg, slot.off) = (seg, off);
        let hash = slot.index_hash();
        let f = self
            .index
            .find_mut(hash, |f| f.slot as usize == i)
            .expect("a live slot is filed in the index");
        *f = Filed::new(f.slot, seg, off);
    }

    /// Copies the live records of segment `id` to the active segment of its queue.
    fn relocate(&mut self, id: u32, hasher: &ahash::RandomState) {
        let seg = Rc::clone(&self.info(id).seg);
        let queue = self.info(id).queue;
        for (off, rec, key) in seg.records() {
            if let Some(i) = self.slot_at(id, off, key, hasher) {
                let (seg, off) = self.append(queue, &[rec]);
                self.move_slot(i as usize, seg, off);
            }
        }
    }

    /// The oldest segment of the first queue in `order` (indexes of [`Queue`]) that has one
    /// to give, taken from its FIFO. Skips the segment being filled and `hold` (the one
    /// holding the record being written): at most two, so this is O(1) but for entries of
    /// segments dropped meanwhile, each taken out once. `None` when nothing else is left.
    fn next_victim(&mut self, order: &[usize], hold: Option<u32>) -> Option<u32> {
        for &q in order {
            let mut at = 0;
            while let Some(&(id, ep)) = self.fifo[q].get(at) {
                let info = self.segs[id as usize].as_ref().filter(|i| i.epoch == ep);
                let Some(info) = info else {
                    self.fifo[q].remove(at); // dropped by reclamation
                    continue;
                };
                if self.active[info.queue as usize] == Some(id) || hold == Some(id) {
                    at += 1;
                    continue;
                }
                self.fifo[q].remove(at);
                return Some(id);
            }
        }
        None
    }

    /// Gives back every segment, the ones being filled too (entries that replies still hold
    /// keep their own segments alive): the shard holds no key.
    fn reset_segments(&mut self) {
        self.segs = Vec::new();
        self.free = Vec::new();
        self.active = [None; 2];
        self.check = Vec::new();
        self.fifo = [VecDeque::new(), VecDeque::new()];
        self.seg_bytes = 0;
        self.small_bytes = 0;
    }

    /// Drops tombstones, keeping order, and rebuilds the index. With `moved`, fills it with
    /// where each old slot went (`u32::MAX` for a tombstone).
    ///
    /// Allocates nothing while the shard's size holds (and the store's reused `moved`
    /// vector is large enough): a budgeted server maps every block of 8 KiB and up on its own
    /// (`server::release_freed_memory`), so each allocation of a vector or table that size is
    /// an `mmap`, page faults and an `munmap` (measured before this was so: with a budget,
    /// every new key evicting one, about a tenth of the server's time, in the kernel).
    fn compact(&mut self, moved: Option<&mut Vec<u32>>) {
        if let Some(moved) = moved {
            moved.clear();
            let mut next = 0u32;
            moved.extend(self.slots.iter().map(|s| {
                if s.seg == DEAD {
                    u32::MAX
                } else {
                    next += 1;
                    next - 1
                }
            }));
        }
        self.slots.retain(|s| s.seg != DEAD);
        // Give back what a mass removal (or expiry) left unused; not the room that the next
        // tombstones will take (`Store::compact_before_growing`).
        if self.slots.capacity() > 3 * self.slots.len() {
            self.slots.shrink_to(2 * self.slots.len());
        }
        self.dead = 0;
        // Rebuilt in its own table, emptied, unless that holds four times what the live keys
        // need: a removal leaves a tombstone, which only a rehash clears, so a table under
        // churn may double, and a budget pays for room it does not use in keys (2.4 % fewer
        // held in the hit-ratio benchmark with every table kept at the size churn grew it
        // to); but one that only doubled is kept, or a shard whose key count drifts around a
        // table size would halve its table at each compaction and double it again soon after.
        // Built from the bits of the hashes the slots keep: no key is read. Every position is
        // distinct, so `insert_unique` needs no key comparison.
        self.index.clear();
        if self.index.capacity() / 4 >= self.slots.len() {
            // One more than the live keys: `put` compacts just before it inserts.
            self.index = HashTable::with_capacity(self.slots.len() + 1);
        }
        let (index, slots) = (&mut self.index, &self.slots);
        for (i, slot) in (0..).zip(slots) {
            index.insert_unique(slot.index_hash(), Filed::new(i, slot.seg, slot.off), |f| {
                slots[f.slot as usize].index_hash()
            });
        }
    }
}

/// The whole key space.
pub struct Store {
    /// An array, not a slice: a shard number is masked to `SHARDS`, so indexing needs no check.
    shards: Box<[Shard; SHARDS]>,
    hasher: ahash::RandomState,
    next_seq: u64,
    /// The version the next write gets.
    next_version: u64,
    len: usize,
    /// The store's clock, in ms: what TTLs count from and deadlines are compared with.
    now: u64,
    /// Keys with a TTL, by deadline.
    wheel: Wheel,
    /// Wheel entries found due but not yet expired (a turn's budget ran out).
    due: Vec<u32>,
    /// Live keys with a TTL.
    ttl_keys: usize,
    /// The memory budget in bytes (0: none).
    budget: usize,
    /// The sum of every shard's [`Shard::bytes`] (kept up to date in O(1) per operation;
    /// [`Store::memory_bytes`] adds the wheel's and the ghost's).
    bytes: usize,
    /// The sums of every shard's segment bytes and small-queue segment bytes (as `bytes`): the
    /// policy's share of the small queue is store-wide, as its queues are.
    seg_bytes: usize,
    small_bytes: usize,
    /// A shard that must not be compacted now: `put` holds a slot index of it while it makes
    /// room.
    hold: Option<usize>,
    /// The eviction policy's small-queue share, in tenths of the store's segment bytes.
    small_tenths: usize,
    /// Where the next eviction looks first (shards take turns).
    cursor: usize,
    /// Keys recently evicted from the small queue, as tags of their hashes in a table
    /// indexed by hash (S3-FIFO's ghost queue): such a key coming back goes to the main
    /// queue. Empty without a budget.
    ghost: Box<[u32]>,
    /// Keys that left for the budget (or expired while the policy looked), not yet taken by
    /// [`Store::drain_gone`].
    gone: Vec<Gone>,
    /// Whether evicted keys are listed in `gone` ([`Store::tell_evictions`]); when not, they
    /// are counted in `untold`.
    tell_evicted: bool,
    untold: u64,
    /// Keys evicted since start.
    evicted: u64,
    /// The records of the segment being evicted (kept to reuse its allocation).
    victims: Vec<Victim>,
    /// Where a compacted shard's slots went (kept to reuse its allocation).
    moved: Vec<u32>,
    /// Whether the budget has run out since the store was made or cleared (something was
    /// evicted): until then new keys go to the main queue.
    full: bool,
}

/// A record of the segment being evicted, as the first pass of [`Store::evict_segment`]
/// read it.
struct Victim {
    /// Its key's hash.
    hash: u64,
    /// Where it starts in the segment, and its length.
    off: usize,
    len: usize,
    /// Whether it has a deadline.
    has_deadline: bool,
}

/// A key that left the store without being asked to (see [`Store::drain_gone`]).
#[derive(Debug)]
pub enum Gone {
    /// Evicted to keep the store within its budget.
    Evicted(Entry),
    /// Its TTL ran out: the budget expires due keys before it evicts anything.
    Expired(Entry),
}

/// The eviction policy, chosen by measurement (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// S3-FIFO on segments: new keys enter a small FIFO queue (a tenth of the memory); those
    /// hit there move to the main queue, the others leave (and are remembered in a ghost
    /// table, so that one coming back soon enters the main queue); the main queue reinserts a
    /// key hit since the policy last looked (its count, up to 3, goes down by one) and evicts
    /// the others. The default.
    S3Fifo,
    /// One FIFO queue with reinsertion of hit keys (CLOCK with a 2-bit count, on segments):
    /// S3-FIFO without its small queue, the reference it is measured against.
    Clock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.len)
            .field("next_seq", &self.next_seq)
            .field("budget", &self.budget)
            .field("bytes", &self.bytes)
            .field("next_version", &self.next_version)
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
        Store::with_segment_size(hasher, SEGMENT)
    }

    /// An empty store with shared segments of `segment` bytes instead of [`SEGMENT`]: tests
    /// and fuzzing use small ones, so that segments fill and are reclaimed within a few
    /// operations. Panics if `segment` is larger than [`SEGMENT`].
    pub fn with_segment_size(hasher: ahash::RandomState, segment: usize) -> Self {
        Store::with_budget(hasher, segment, 0, Policy::S3Fifo)
    }

    /// The segment size for a budget of `max_memory` bytes (0: none): [`SEGMENT`], or less
    /// for a small budget, so that the segments being filled (two per shard) stay within
    /// 1/32 of it. Under a budget the size is a power of two less [`BLOCK_HEADER`], so that
    /// a block and the allocator's header fill whole pages: a budgeted server maps each block
    /// of 8 KiB or more on its own (`server::release_freed_memory`), and a power of two plus
    /// a header would take one more page, made resident whenever a record reaches the
    /// block's last bytes (measured: 3-5 MiB more RSS on a 64 MiB budget, 16 KiB segments,
    /// once blocks are reused). Segments of 16 KiB and up (budgets of 64 MiB and more) are
    /// such mappings; smaller ones (8,160 B and less) now come from the heap, where the
    /// spares (`segment::spares`) and blocks of one size keep them from fragmenting it
    /// (32 MiB budget, `benches/evicting.sh`: 37.5 MiB RSS, 46 MiB as 8 KiB mappings).
    pub fn segment_for(max_memory: u64) -> usize {
        if max_memory == 0 {
            return SEGMENT;
        }
        let per = (max_memory / (2 * SHARDS as u64 * 32)).max(1024);
        (1usize << per.ilog2()).clamp(1024, SEGMENT) - BLOCK_HEADER
    }

    /// An empty store that keeps what it holds within `max_memory` bytes (0: no limit) by
    /// evicting with `policy`, with shared segments of `segment` bytes ([`Store::segment_for`]
    /// in a server). Slack: after an operation the store may hold more than the budget by
    /// the growth of one shard's slot vector and index, one segment and one record, until
    /// the next write that appends a record (a value rewritten in place changes no count and
    /// looks for no room) (and an operation never evicts the segments being filled, so a budget
    /// smaller than two segments per shard can be exceeded by them).
    ///
    /// Panics if `segment` is larger than [`SEGMENT`] (a slot keeps a record's offset in 16
    /// bits).
    pub fn with_budget(
        hasher: ahash::RandomState,
        segment: usize,
        max_memory: u64,
        policy: Policy,
    ) -> Self {
        // A slot keeps a record's offset in 16 bits.
        assert!(
            segment <= SEGMENT,
            "shared segments are at most {SEGMENT} bytes"
        );
        let budget = usize::try_from(max_memory).unwrap_or(usize::MAX);
        let ghost = if budget == 0 {
            Box::default()
        } else {
            // About one entry per 256 bytes of budget: as many as the keys it may hold.
            let n = (budget / 256).clamp(64, 1 << 24).next_power_of_two();
            vec![0u32; n].into_boxed_slice()
        };
        let mut store = Store {
            shards: Box::new(std::array::from_fn(|_| Shard::new(segment, budget > 0))),
            hasher,
            next_seq: 1,
            next_version: 1,
            len: 0,
            now: 0,
            wheel: Wheel::default(),
            due: Vec::new(),
            ttl_keys: 0,
            budget,
            bytes: 0,
            small_tenths: match policy {
                Policy::S3Fifo => 1,
                Policy::Clock => 0,
            },
            cursor: 0,
            hold: None,
            ghost,
            gone: Vec::new(),
            tell_evicted: true,
            untold: 0,
            victims: Vec::new(),
            moved: Vec::new(),
            seg_bytes: 0,
            small_bytes: 0,
            full: false,
            evicted: 0,
        };
        store.recount_all();
        store
    }

    /// The budget in bytes (0: none).
    pub fn max_memory(&self) -> u64 {
        self.budget as u64
    }

    /// Bytes held as the budget counts them: segments (live records, garbage and unused
    /// room), slots, hash indexes, the timing wheel (4 bytes per entry plus its lists) and
    /// the ghost table. Kept up to date in O(1) per operation.
    pub fn memory_bytes(&self) -> u64 {
        (self.bytes + self.side_bytes()) as u64
    }

    /// Keys evicted for the budget since the store was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Whether a record of this key and value can be stored at all under the budget: it may
    /// take at most half of it (a larger one is refused, and nothing is evicted for it).
    #[inline]
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        self.budget == 0 || key_len + value_len + segment::MAX_HEADER <= self.budget / 2
    }

    /// Whether keys left without being asked to and wait in [`Store::drain_gone`].
    #[inline]
    pub fn has_gone(&self) -> bool {
        !self.gone.is_empty() || self.untold > 0
    }

    /// Whether evicted keys are listed for [`Store::drain_gone`] (the default) or only
    /// counted ([`Store::take_untold`]): a server with nobody listening needs only the count,
    /// and skips making an entry per evicted key.
    #[inline]
    pub fn tell_evictions(&mut self, on: bool) {
        self.tell_evicted = on;
    }

    /// How many keys were evicted without being listed since the last call.
    pub fn take_untold(&mut self) -> u64 {
        std::mem::take(&mut self.untold)
    }

    /// Takes the keys that left for the budget (evicted, or expired because the budget looked
    /// for room; evicted ones only while [`Store::tell_evictions`] is on): a server tells
    /// their listeners. A store with a budget keeps them until
    /// this is called.
    pub fn drain_gone(&mut self) -> std::vec::Drain<'_, Gone> {
        self.gone.drain(..)
    }

    /// Takes the list of keys that left (as [`Store::drain_gone`]) whole, to walk it while
    /// the store is used; give it back emptied with [`Store::recycle_gone`], so that its
    /// room is reused and nothing is allocated per eviction.
    pub fn take_gone(&mut self) -> Vec<Gone> {
        std::mem::take(&mut self.gone)
    }

    /// Gives back the (emptied) list from [`Store::take_gone`].
    pub fn recycle_gone(&mut self, mut list: Vec<Gone>) {
        list.clear();
        if self.gone.is_empty() {
            self.gone = list;
        }
    }

    /// Bytes of the timing wheel and the ghost table, as counted in [`Store::memory_bytes`].
    fn side_bytes(&self) -> usize {
        self.wheel.len() * 4
            + wheel::LEVELS * 64 * 24
            + self.due.capacity() * 4
            + self.ghost.len() * 4
            + self.victims.capacity() * std::mem::size_of::<Victim>()
            + self.moved.capacity() * 4
    }

    /// Recounts one shard's bytes (O(1)).
    #[inline]
    fn recount(&mut self, shard: usize) {
        let s = &mut self.shards[shard];
        let now = [s.bytes(), s.seg_bytes, s.small_bytes];
        let [was_bytes, was_seg, was_small] = s.counted;
        self.bytes = self.bytes + now[0] - was_bytes;
        self.seg_bytes = self.seg_bytes + now[1] - was_seg;
        self.small_bytes = self.small_bytes + now[2] - was_small;
        s.counted = now;
    }

    /// Recounts everything (construction and `clear`).
    fn recount_all(&mut self) {
        (self.bytes, self.seg_bytes, self.small_bytes) = (0, 0, 0);
        for s in self.shards.iter_mut() {
            s.counted = [s.bytes(), s.seg_bytes, s.small_bytes];
            self.bytes += s.counted[0];
            self.seg_bytes += s.counted[1];
            self.small_bytes += s.counted[2];
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

    /// Bytes held in segments (live records, garbage and unused room) across all shards.
    pub fn segment_bytes(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.segs.iter().flatten())
            .map(|i| i.seg.len() + i.seg.room())
            .sum::<usize>()
    }

    /// Whether every shard's index files each live slot once, under its index bits, and no
    /// other, each entry with its record's place ([`Filed`]; tests, walks every key).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn index_is_exact(&self) -> bool {
        self.shards.iter().all(|s| {
            let live = s.slots.iter().filter(|slot| slot.seg != DEAD).count();
            // As many entries as live slots, and each live slot found under its own hash, with
            // its record's place: so no slot is filed twice and none is missing.
            s.index.len() == live
                && (0..).zip(&s.slots).all(|(i, slot)| {
                    slot.seg == DEAD
                        || s.index
                            .find(slot.index_hash(), |f| f.slot == i)
                            .is_some_and(|f| match f.seg {
                                NOWHERE => slot.seg >= u32::from(NOWHERE),
                                seg => slot.is_at(u32::from(seg), usize::from(f.off)),
                            })
                })
        })
    }

    /// Bytes of live records across all shards.
    pub fn live_bytes(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.segs.iter().flatten())
            .map(|i| i.live)
            .sum()
    }

    /// Bytes the store has allocated: segments, slots and hash indexes (not counting the
    /// allocator's own overhead, a few small vectors, or segments that only replies still hold).
    pub fn allocated_bytes(&self) -> usize {
        self.segment_bytes()
            + self
                .shards
                .iter()
                .map(|s| {
                    s.slots.capacity() * std::mem::size_of::<Slot>()
                        + s.index.allocation_size()
                        + s.segs.capacity() * std::mem::size_of::<Option<SegInfo>>()
                })
                .sum::<usize>()
            + self.wheel.allocated_bytes()
            + self.due.capacity() * 4
            + self.victims.capacity() * std::mem::size_of::<Victim>()
            + self.moved.capacity() * 4
    }

    /// Bytes a record of this key and value takes in a segment, with or without a deadline.
    pub fn record_len(key: &[u8], value: &[u8], has_deadline: bool) -> usize {
        let (_, n) = RecordShape::header(key, value, has_deadline.then_some(0), 0);
        n + key.len() + value.len()
    }

    /// Whether the segments hold at most what reclamation promises: every segment other than
    /// a shard's current one is more than half live and, if shared, more than three quarters
    /// written, so all segments together take less than 8/3 of the live bytes plus one shared
    /// segment per shard (two with a budget).
    pub fn footprint_is_bounded(&self) -> bool {
        let segment = self.shards[0].segment;
        // With a budget each shard fills two segments: the small queue's and the main one's.
        let filling = if self.budget > 0 { 2 } else { 1 };
        3 * self.segment_bytes() <= 8 * self.live_bytes() + 3 * filling * SHARDS * segment
    }

    /// Whether some shard holds a segment the policy could evict (one not being filled, nor
    /// the one holding `written`, the key just written): a store over its budget after a
    /// write has none (tests; walks every segment).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn has_victim(&self, written: Option<&[u8]>) -> bool {
        let held = written.and_then(|k| {
            let h = self.hash(k);
            let (i, _) = self.shard(h).find(h, k)?;
            Some((Self::shard_of(h).0, self.shard(h).slots[i].seg))
        });
        self.shards.iter().enumerate().any(|(si, s)| {
            s.segs.iter().enumerate().any(|(id, i)| {
                i.as_ref().is_some_and(|i| {
                    s.active[i.queue as usize] != Some(id as u32) && held != Some((si, id as u32))
                })
            })
        })
    }

    /// The entry for `key` (`hash` from [`Store::hash`]); `None` for a key whose TTL ran out
    /// by the store's clock ([`Store::set_time`]), even before it is expired.
    #[inline]
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Record<'_>> {
        self.get_hinted(hash, key, NO_HINT)
    }

    /// [`Store::get`], with the hint [`Store::prefetch`] gave for this key.
    #[inline(always)]
    pub fn get_hinted(&self, hash: u64, key: &[u8], hint: u32) -> Option<Record<'_>> {
        let s = self.shard(hash);
        let (i, record) = s.find_hinted(hash, key, hint)?;
        if record.is_due(self.now) {
            return None;
        }
        if self.budget != 0 {
            s.slots[i].touch();
        }
        Some(record)
    }

    /// Whether any key has a TTL (else nothing can be due).
    #[inline]
    pub fn has_deadlines(&self) -> bool {
        self.ttl_keys > 0
    }

    /// Whether `key` is stored with a TTL that ran out by the store's clock but has not been
    /// expired yet ([`Store::expire_due`]): a server expires it before it writes the key.
    #[inline]
    pub fn is_due(&self, hash: u64, key: &[u8]) -> bool {
        self.is_due_hinted(hash, key, NO_HINT)
    }

    /// [`Store::is_due`], trying slot `hint` first (see [`Store::prefetch`]).
    #[inline]
    pub fn is_due_hinted(&self, hash: u64, key: &[u8], hint: u32) -> bool {
        // No lookup while no key can be due yet (`next_expiry` is never after the earliest
        // deadline, or `now` if that has passed): the common case of a write to a store whose
        // keys have TTLs.
        self.ttl_keys > 0
            && self.may_be_due()
            && self
                .shard(hash)
                .find_hinted(hash, key, hint)
                .is_some_and(|(_, r)| r.is_due(self.now))
    }

    /// Sets the store's clock (ms; it never goes back). Deadlines are `now + ttl`.
    pub fn set_time(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// The store's clock.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of live keys with a TTL (expired ones not yet removed included).
    pub fn ttl_keys(&self) -> usize {
        self.ttl_keys
    }

    /// The key's deadline: `None` if the key is missing (or due), `Some(None)` if it has no
    /// TTL.
    pub fn deadline(&self, hash: u64, key: &[u8]) -> Option<Option<u64>> {
        self.get(hash, key).map(|r| r.deadline())
    }

    /// Starts loading into the cache the records of the keys with these hashes (from
    /// [`Store::hash`]), without waiting for them and without reading them, and writes into
    /// `hints` (as long as `hashes`) where each key's slot probably is, for
    /// [`Store::get_hinted`] and [`Store::set_hinted`] ([`NO_HINT`] where the index names no
    /// candidate). A server that looks up many keys at once (a pipelined batch) calls this
    /// first, so that their cache misses overlap instead of following one another: one pass
    /// walks the indexes and asks, for each key, for its slot and its record at once (the
    /// index entry says where both are, [`Filed`]); the lookups that follow start from the
    /// hint instead of searching the index again. Changes nothing; a hint is checked before it
    /// is used, so one made stale by a write in between costs only that check.
    pub fn prefetch(&self, hashes: &[u64], hints: &mut [u32]) {
        for (&hash, hint) in hashes.iter().zip(hints.iter_mut()) {
            let s = self.shard(hash);
            // The first candidate: another key of the shard shares the 7-bit tag rarely (or,
            // rarer, all 24 index bits).
            let Some(f) = s.first_candidate(hash) else {
                *hint = NO_HINT;
                if !self.ghost.is_empty() {
                    // A new key under a budget: a SET of it reads its ghost entry.
                    prefetch_line(&self.ghost[ghost_slot(&self.ghost, hash).0]);
                }
                continue;
            };
            *hint = f.slot;
            if let Some(slot) = s.slots.get(f.slot as usize) {
                prefetch_line(&slot.seq);
            }
            if f.seg == NOWHERE {
                continue;
            }
            // The lines of the record's first 128 bytes (two or three, records being packed):
            // its lengths, the key, and a short value. Two lines left the last of a 90-byte
            // record (a 10-byte header, a 16-byte key, a 64-byte value) unloaded whenever it
            // started past byte 38 of its line, and the copy of its value waited for it (the
            // server's user time per GET at depth 64 x 4 went 157-172 -> 138-150 ns with the
            // third). (In the same pass as the index: a second pass for the records, as
            // before the index said where they are, measured slower.)
            if let Some(Some(info)) = s.segs.get(usize::from(f.seg)) {
                let bytes = info.seg.bytes();
                let off = usize::from(f.off);
                for at in [off, off + 64, off + 127] {
                    if let Some(byte) = bytes.get(at) {
                        prefetch_line(byte);
                    }
                }
            }
        }
    }

    /// Stores `value` under `key`, keeping the key's place and its TTL if it exists. Returns
    /// the new entry, whose [`Record::version`] is new. A key whose TTL ran out is replaced by a new one (the caller expires it
    /// first to tell its listeners, see [`Store::is_due`]).
    ///
    /// Panics if the key or the value is longer than `u32::MAX` bytes (the protocol's limits
    /// keep them far below).
    #[inline]
    pub fn set(&mut self, hash: u64, key: &[u8], value: &[u8]) -> Record<'_> {
        self.set_hinted(hash, key, value, NO_HINT)
    }

    /// [`Store::set`], with the hint [`Store::prefetch`] gave for this key.
    #[inline]
    pub fn set_hinted(&mut self, hash: u64, key: &[u8], value: &[u8], hint: u32) -> Record<'_> {
        let found = self.find_live_hinted(hash, key, hint);
        self.put(hash, found, key, value, found.and_then(|(_, d)| d), None)
    }

    /// Stores `value` under `key` with the deadline `deadline` (ms on the store's clock, after
    /// [`Store::now`]), keeping the key's place if it exists.
    pub fn set_with_deadline(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        deadline: u64,
    ) -> Record<'_> {
        self.set_with_deadline_hinted(hash, key, value, deadline, NO_HINT)
    }

    /// [`Store::set_with_deadline`], trying slot `hint` first (see [`Store::prefetch`]).
    pub fn set_with_deadline_hinted(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        deadline: u64,
        hint: u32,
    ) -> Record<'_> {
        let found = self.find_live_hinted(hash, key, hint);
        self.put(hash, found, key, value, Some(deadline), None)
    }

    /// Stores `value` under `key` only if the key holds a value of version `version`: the new
    /// entry then (a new version; the key keeps its place and TTL), `None` if the key is
    /// missing (or due) or holds another version.
    pub fn set_if_version(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        version: u64,
    ) -> Option<Record<'_>> {
        let found = self.find_live(hash, key)?;
        let shard = self.shard(hash);
        if shard.record(&shard.slots[found.0]).version() != version {
            return None;
        }
        Some(self.put(hash, Some(found), key, value, found.1, None))
    }

    /// Stores `value` under `key` only if the key is missing (or due), with `deadline` (ms on
    /// the store's clock) if `Some`: the new entry, or `None` when the key is present.
    pub fn add(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Option<Record<'_>> {
        if self.find_live(hash, key).is_some() {
            return None;
        }
        Some(self.put(hash, None, key, value, deadline, None))
    }

    /// Stores `value` under `key` only if the key is present (and not due): the new entry,
    /// or `None`. `deadline` `None` keeps the key's TTL (as [`Store::set`]), `Some` replaces
    /// it (as [`Store::set_with_deadline`]).
    pub fn replace(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Option<Record<'_>> {
        let found = self.find_live(hash, key)?;
        Some(self.put(hash, Some(found), key, value, deadline.or(found.1), None))
    }

    /// The version the next write will get: greater than every version handed out so far.
    pub fn next_version(&self) -> u64 {
        self.next_version
    }

    /// Makes the next version at least `first` (a server passes the wall clock in ns, so its
    /// versions are greater than those of an earlier server). Never lowers the counter.
    pub fn start_versions_at(&mut self, first: u64) {
        self.next_version = self.next_version.max(first);
    }

    /// Gives an existing key the deadline `deadline`, or takes its TTL away (`None`); false if
    /// the key is missing, or when taking away a TTL it does not have. The key keeps its
    /// version: its value did not change.
    pub fn set_deadline(&mut self, hash: u64, key: &[u8], deadline: Option<u64>) -> bool {
        let Some((i, record)) = self.shard(hash).find(hash, key) else {
            return false;
        };
        if record.is_due(self.now) || (deadline.is_none() && record.deadline().is_none()) {
            return false;
        }
        let (value, old, version) = (record.value().to_vec(), record.deadline(), record.version());
        self.put(hash, Some((i, old)), key, &value, deadline, Some(version));
        true
    }

    /// The slot of `key` and its deadline; a key whose TTL ran out is removed first (as if it
    /// were not there).
    #[inline]
    fn find_live(&mut self, hash: u64, key: &[u8]) -> Option<(usize, Option<u64>)> {
        self.find_live_hinted(hash, key, NO_HINT)
    }

    /// [`Store::find_live`], trying slot `hint` first.
    #[inline(always)]
    fn find_live_hinted(
        &mut self,
        hash: u64,
        key: &[u8],
        hint: u32,
    ) -> Option<(usize, Option<u64>)> {
        match self.shard(hash).find_hinted(hash, key, hint) {
            Some((_, r)) if r.is_due(self.now) => {
                self.remove(hash, key);
                None
            }
            Some((i, r)) => Some((i, r.deadline())),
            None => None,
        }
    }

    /// Stores `value` under `key`, whose slot and current deadline are `found` (from
    /// [`Store::find_live`]), with `deadline`, as `version` (`None`: the next version).
    fn put(
        &mut self,
        hash: u64,
        found: Option<(usize, Option<u64>)>,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
        version: Option<u64>,
    ) -> Record<'_> {
        let version = version.unwrap_or_else(|| {
            let v = self.next_version;
            self.next_version += 1;
            v
        });
        let (header, n) = RecordShape::header(key, value, deadline, version);
        let shard_id = Self::shard_of(hash).0;
        if found.is_none() {
            self.compact_before_growing(shard_id);
        }
        let hasher = &self.hasher;
        let shard = &mut self.shards[shard_id];
        let old_deadline = found.and_then(|(_, d)| d);
        let found = found.map(|(i, _)| i);
        self.ttl_keys =
            self.ttl_keys + usize::from(deadline.is_some()) - usize::from(old_deadline.is_some());
        let in_place = found.filter(|&i| shard.overwrite_in_place(i, &header[..n], value));
        let pos = match (in_place, found) {
            (Some(i), _) => i,
            (None, Some(i)) => {
                let queue = shard.info(shard.slots[i].seg).queue;
                let (seg, off) = shard.append(queue, &[&header[..n], key, value]);
                let (old_seg, old_off) = (shard.slots[i].seg, shard.slots[i].off);
                shard.move_slot(i, seg, off);
                shard.forget(old_seg, old_off);
                i
            }
            (None, None) => {
                // Without a budget, or with one FIFO (`Policy::Clock`), every key is in the
                // main queue; so is every key stored before the budget first ran out (nothing
                // has to be filtered while everything fits: keys that came while it did are
                // the old keys a scan must not push out, and a scan's keys would come to the
                // small queue, the only one evicted while it holds its share).
                let queue = if self.budget == 0 || self.small_tenths == 0 || !self.full {
                    Queue::Main
                } else {
                    let (at, tag) = ghost_slot(&self.ghost, hash);
                    if self.ghost[at] == tag {
                        self.ghost[at] = 0;
                        Queue::Main
                    } else {
                        Queue::Small
                    }
                };
                let (seg, off) = shard.append(queue, &[&header[..n], key, value]);
                let i = shard.slots.len();
                let pos = u32::try_from(i).expect("a shard holds fewer than 2^32 entries");
                shard
                    .slots
                    .push(Slot::new(self.next_seq, index_bits(hash), seg, off));
                self.next_seq += 1;
                self.len += 1;
                let slots = &shard.slots;
                shard
                    .index
                    .insert_unique(index_hash_of(hash), Filed::new(pos, seg, off), |f| {
                        slots[f.slot as usize].index_hash()
                    });
                i
            }
        };
        // A key keeps its slot when rewritten, so an entry filed for its old deadline still
        // names it: a new one is needed only for a deadline outside that entry's slot.
        let covered = |d: u64| old_deadline.is_some_and(|o| self.wheel.covers(o, d));
        let unchanged = |deadline: Option<u64>| match deadline {
            None => old_deadline.is_none(),
            Some(d) => covered(d),
        };
        if in_place.is_some() && unchanged(deadline) {
            // Rewritten where it was, with no TTL before or after or a deadline its filed entry
            // covers: no byte counted changed, no segment was sealed or lost a record, no entry
            // is filed and no key gained or lost a TTL: nothing to settle, recount, file, sweep
            // or evict.
            let shard = &self.shards[shard_id];
            return shard.record(&shard.slots[pos]);
        }
        if in_place.is_none() {
            shard.settle(hasher);
        }
        if let Some(d) = deadline.filter(|&d| !covered(d)) {
            Self::file(
                &mut self.wheel,
                &mut self.due,
                d,
                Wheel::pack(shard_id, pos),
            );
        }
        self.sweep_if_stale();
        self.recount(shard_id);
        if self.budget != 0 && self.bytes + self.side_bytes() > self.budget {
            self.make_room(Some((shard_id, pos)));
        }
        let shard = &self.shards[shard_id];
        shard.record(&shard.slots[pos])
    }

    /// Brings the store back within its budget: expires due keys first, then evicts by the
    /// policy, one segment at a time, shards taking turns, until the budget holds or nothing
    /// but the segments being filled is left. `hold` is a slot (shard, index) that must stay:
    /// the key being written. (Kept out of line: one write in many evicts, and `put` stays
    /// small without it.)
    #[inline(never)]
    fn make_room(&mut self, hold: Option<(usize, usize)>) {
        self.hold = hold.map(|h| h.0);
        if self.may_be_due() {
            let mut gone = std::mem::take(&mut self.gone);
            self.expire_due(256, |e| gone.push(Gone::Expired(e)));
            self.gone = gone;
        }
        // The queue to take from is chosen store-wide: the small one while it holds more than
        // `small_tenths` tenths of all segment bytes, else the main one. Shards in turn; one
        // with nothing to give from that queue (it may hold only the segment being filled)
        // is passed over, and only after a whole round found nothing (`strict` off) may a
        // shard give from the other queue.
        let (mut idle, mut strict) = (0, true);
        while self.bytes + self.side_bytes() > self.budget {
            if idle == SHARDS {
                if !strict {
                    break;
                }
                (idle, strict) = (0, false);
            }
            let small_first =
                self.small_tenths > 0 && self.small_bytes * 10 > self.seg_bytes * self.small_tenths;
            let first = if small_first {
                Queue::Small
            } else {
                Queue::Main
            };
            let first = first as usize;
            let both = [first, 1 - first];
            let order = if strict { &both[..1] } else { &both[..] };
            let sid = self.cursor;
            self.cursor = (self.cursor + 1) % SHARDS;
            let shard = &mut self.shards[sid];
            let keep = hold.filter(|h| h.0 == sid).map(|h| shard.slots[h.1].seg);
            match shard.next_victim(order, keep) {
                Some(id) => {
                    idle = 0;
                    strict = true;
                    self.full = true;
                    self.evict_segment(sid, id);
                }
                None => idle += 1,
            }
        }
        self.hold = None;
    }

    /// The policy's look at one segment of shard `sid`: its records move on (a small-queue
    /// record that was hit goes to the main queue; a main-queue record that was hit is
    /// appended again, its count one lower) or leave (evicted, or expired if due); then the
    /// segment is dropped. Each record moved on has a lower count or left the small queue,
    /// so a run of these ends.
    fn evict_segment(&mut self, sid: usize, id: u32) {
        let now = self.now;
        let hasher = &self.hasher;
        let shard = &mut self.shards[sid];
        let seg = Rc::clone(&shard.info(id).seg);
        let queue = shard.info(id).queue;
        // First pass: hash every record's key and ask for its index group, slot and ghost
        // entry, so that the cache misses of the whole segment overlap instead of coming one
        // after another in the pass that follows (as `prefetch` does for a window of requests).
        // (Hashing first, then probing in a loop of its own: a short loop body lets the
        // processor run more probes' misses at once.) Each record's header is read once, here.
        let mut victims = std::mem::take(&mut self.victims);
        victims.clear();
        let bytes = seg.bytes();
        victims.extend(seg.shapes().map(|(off, shape)| Victim {
            hash: hasher.hash_one(&bytes[off + shape.key_start..off + shape.value_start()]),
            off,
            len: shape.len(),
            has_deadline: shape.has_deadline,
        }));
        for v in &victims {
            if let Some(f) = shard.first_candidate(v.hash) {
                prefetch_line(&shard.slots[f.slot as usize].seq);
            }
        }
        if queue == Queue::Small {
            for v in &victims {
                prefetch_line(&self.ghost[ghost_slot(&self.ghost, v.hash).0]);
            }
        }
        for v in &victims {
            let slots = &shard.slots;
            let found = shard.index.find_entry(index_hash_of(v.hash), |f| {
                slots[f.slot as usize].is_at(id, v.off)
            });
            let Ok(found) = found else {
                continue; // garbage: the key was rewritten elsewhere or removed
            };
            let i = found.get().slot as usize;
            let due = v.has_deadline && Record::at(&seg, v.off).is_due(now);
            let f = shard.slots[i].freq();
            if !due && f > 0 {
                let (to, f) = match queue {
                    Queue::Small => (Queue::Main, 0),
                    Queue::Main => (Queue::Main, f.saturating_sub(1)),
                };
                let (s2, o2) = shard.append(to, &[&bytes[v.off..v.off + v.len]]);
                shard.move_slot(i, s2, o2);
                shard.slots[i].set_freq(f);
                continue;
            }
            found.remove();
            if v.has_deadline {
                self.ttl_keys -= 1;
            }
            shard.slots[i].seg = DEAD;
            shard.dead += 1;
            self.len -= 1;
            if due {
                self.gone
                    .push(Gone::Expired(Record::at(&seg, v.off).to_entry()));
                continue;
            }
            self.evicted += 1;
            if self.tell_evicted {
                self.gone
                    .push(Gone::Evicted(Record::at(&seg, v.off).to_entry()));
            } else {
                self.untold += 1;
            }
            if queue == Queue::Small {
                let (at, tag) = ghost_slot(&self.ghost, v.hash);
                self.ghost[at] = tag;
            }
        }
        self.victims = victims;
        shard.drop_segment(id);
        shard.settle(hasher);
        if shard.live() == 0 {
            shard.reset_segments();
        }
        self.compact_if_sparse(sid);
        self.recount(sid);
    }

    /// Compacts shard `sid` if tombstones outnumber its keys, and follows its wheel entries
    /// to their new slots (not while `put` holds a slot of it).
    fn compact_if_sparse(&mut self, id: usize) {
        let shard = &self.shards[id];
        if self.hold == Some(id) || shard.dead <= 32 || shard.dead <= shard.live() {
            return;
        }
        self.compact_shard(id);
    }

    /// Compacts shard `id` where its slot vector would otherwise grow for the key about to be
    /// stored, if a third of its slots or more are tombstones: under churn (a budget evicting
    /// as keys come) the vector then keeps its size instead of doubling, to be halved again
    /// at the next compaction, each a reallocation.
    fn compact_before_growing(&mut self, id: usize) {
        let shard = &self.shards[id];
        let n = shard.slots.len();
        if n == shard.slots.capacity() && shard.dead > 32 && shard.dead * 3 >= n {
            self.compact_shard(id);
        }
    }

    /// Compacts shard `id` and follows its wheel entries to their new slots.
    fn compact_shard(&mut self, id: usize) {
        let shard = &mut self.shards[id];
        if self.wheel.is_empty() && self.due.is_empty() {
            shard.compact(None);
            return;
        }
        let mut moved = std::mem::take(&mut self.moved);
        shard.compact(Some(&mut moved));
        // Wheel entries name slots: follow this shard's to their new places.
        let map = |e: u32| {
            let (sh, sl) = Wheel::unpack(e);
            if sh != id {
                return Some(e);
            }
            let to = *moved.get(sl)?;
            (to != u32::MAX).then(|| Wheel::pack(id, to as usize))
        };
        self.wheel.remap(map);
        wheel::remap_entries(&mut self.due, map);
        self.moved = moved;
    }

    /// Files a wheel entry for `deadline` (past the wheel's time, or among the due ones).
    fn file(wheel: &mut Wheel, due: &mut Vec<u32>, deadline: u64, entry: u32) {
        if deadline > wheel.elapsed() {
            wheel.insert(deadline, entry);
        } else {
            due.push(entry);
        }
    }

    /// The record a wheel entry names, if its slot is live.
    fn record_of(shards: &[Shard], entry: u32) -> Option<Record<'_>> {
        let (shard, slot) = Wheel::unpack(entry);
        let shard = &shards[shard];
        let slot = shard.slots.get(slot)?;
        (slot.seg != DEAD).then(|| shard.record(slot))
    }

    /// Drops stale wheel entries once they are as many as the live ones (see [`wheel`]).
    fn sweep_if_stale(&mut self) {
        if self.wheel.len() <= 2 * self.ttl_keys + 1024 {
            return;
        }
        let shards = &self.shards;
        self.wheel.sweep(|e, r| {
            Self::record_of(&shards[..], e)
                .and_then(|rec| rec.deadline())
                .is_some_and(|d| (r.start..r.end).contains(&d))
        });
    }

    /// Whether a key may be due by the store's clock ([`Store::next_expiry`] has come).
    #[inline]
    fn may_be_due(&self) -> bool {
        self.next_expiry().is_some_and(|t| t <= self.now)
    }

    /// The first ms at which a key may fall due, if any has a TTL: a server wakes then.
    pub fn next_expiry(&self) -> Option<u64> {
        if !self.due.is_empty() {
            return Some(self.now);
        }
        self.wheel.next_due()
    }

    /// Removes up to `limit` keys whose TTL ran out by the store's clock, in deadline order,
    /// calling `expired` with each one's last entry (which outlives the removal). Returns
    /// false when no key is due any more, true when more may be (a server spreads a large
    /// batch over several turns).
    pub fn expire_due(&mut self, limit: usize, mut expired: impl FnMut(Entry)) -> bool {
        let mut n = 0;
        loop {
            while let Some(e) = self.due.pop() {
                if n == limit {
                    self.due.push(e);
                    return true;
                }
                let Some(rec) = Self::record_of(&self.shards[..], e) else {
                    continue;
                };
                if !rec.is_due(self.now) {
                    continue; // stale: the key has another deadline, filed on its own
                }
                let entry = rec.to_entry();
                let hash = self.hasher.hash_one(entry.key());
                self.remove(hash, entry.key());
                expired(entry);
                n += 1;
            }
            let Some((range, entries)) = self.wheel.pop(self.now) else {
                return false;
            };
            for e in entries {
                let Some(d) = Self::record_of(&self.shards[..], e).and_then(|r| r.deadline())
                else {
                    continue;
                };
                if !(range.start..range.end).contains(&d) {
                    continue; // stale
                }
                if !self.wheel.refile(d, e) {
                    self.due.push(e);
                }
            }
        }
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let shard = &mut self.shards[Self::shard_of(hash).0];
        let (slots, segs) = (&shard.slots, &shard.segs);
        let found = shard.index.find_entry(index_hash_of(hash), |f| {
            slots[f.slot as usize].seg != DEAD && same_key(key_of(slots, segs, f.slot), key)
        });
        let Ok(found) = found else { return false };
        let i = found.remove().0.slot;
        if shard.record(&shard.slots[i as usize]).deadline().is_some() {
            self.ttl_keys -= 1;
        }
        let slot = &mut shard.slots[i as usize];
        let (seg, off) = (slot.seg, slot.off);
        slot.seg = DEAD;
        shard.forget(seg, off);
        shard.dead += 1;
        self.len -= 1;
        shard.settle(&self.hasher);
        if shard.live() == 0 {
            shard.reset_segments();
        }
        let id = Self::shard_of(hash).0;
        self.compact_if_sparse(id);
        self.recount(id);
        true
    }

    /// Adds `delta` to the decimal value of `key` (a missing key counts as 0) and stores the
    /// result in ASCII decimal. On error the value is unchanged.
    pub fn incr(
        &mut self,
        hash: u64,
        key: &[u8],
        delta: i64,
    ) -> Result<(i64, Record<'_>), IncrError> {
        let current = match self.get(hash, key) {
            None => 0,
            Some(record) => parse_i64(record.value()).ok_or(IncrError::NotAnInteger)?,
        };
        let new = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let digits = itoa_buf(new);
        let found = self.find_live(hash, key);
        let keep = found.and_then(|(_, d)| d);
        Ok((
            new,
            self.put(hash, found, key, digits.as_str().as_bytes(), keep, None),
        ))
    }

    /// Removes every key. The version counter goes on: versions stay greater than any before.
    pub fn clear(&mut self) {
        for s in self.shards.iter_mut() {
            *s = Shard::new(s.segment, self.budget > 0);
        }
        self.len = 0;
        self.wheel = Wheel::default();
        self.due = Vec::new();
        self.ttl_keys = 0;
        self.ghost.fill(0);
        self.full = false;
        self.victims = Vec::new();
        self.moved = Vec::new();
        self.recount_all();
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
            let i = s.slots.partition_point(|slot| slot.seq() < from);
            if let Some(slot) = s.slots.get(i) {
                if slot.seq() < until {
                    heads.push(Reverse((slot.seq(), si, i)));
                }
            }
        }
        let mut taken = 0;
        while let Some(Reverse((seq, si, i))) = heads.pop() {
            if taken >= max_entries || (taken > 0 && out.len() >= max_bytes) {
                return seq;
            }
            let shard = &self.shards[si];
            let slot = &shard.slots[i];
            if slot.seg != DEAD {
                let e = shard.record(slot);
                if !e.is_due(self.now) {
                    Chunk::push(out, e.key(), with_values.then(|| e.value()));
                    taken += 1;
                }
            }
            if let Some(next) = shard.slots.get(i + 1) {
                if next.seq() < until {
                    heads.push(Reverse((next.seq(), si, i + 1)));
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
    fn a_slot_keeps_its_hash_bits_through_counts_and_moves() {
        for (seq, hash) in [
            (1, 0),
            (SEQ_MASK, u64::MAX),
            (12_345, 0xdead_beef_cafe_f00d),
        ] {
            let slot = Slot::new(seq, index_bits(hash), 7, u16::MAX);
            let check = |slot: &Slot, f: u8| {
                assert_eq!(slot.seq(), seq);
                assert_eq!(slot.freq(), f);
                assert_eq!(slot.index_bits(), index_bits(hash));
                assert_eq!(slot.index_hash(), index_hash_of(hash));
            };
            check(&slot, 0);
            for f in 1..=3 {
                slot.touch();
                check(&slot, f);
            }
            slot.touch();
            check(&slot, 3);
            slot.set_freq(1);
            check(&slot, 1);
            slot.set_freq(0);
            check(&slot, 0);
        }
        // The multiply spreads the bits to hashbrown's 7-bit tag (the top bits): every tag
        // comes up among 4,096 consecutive values.
        let tags: std::collections::HashSet<_> =
            (0..1u32 << 12).map(|b| index_hash(b) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }

    /// A new key may compact its shard before it is stored (its slot vector full, a third of
    /// it tombstones): keys with a TTL, whose wheel entries name slots, still expire at their
    /// deadlines, and every key is found.
    #[test]
    fn keys_with_ttls_survive_a_compaction_inside_a_write() {
        let mut s = store();
        // Keys of shard 0 only, each with a TTL: 512 of them fill its slot vector exactly.
        let keys: Vec<Vec<u8>> = (0..)
            .map(|i: u32| format!("key{i}").into_bytes())
            .filter(|k| Store::shard_of(s.hash(k)).0 == 0)
            .take(520)
            .collect();
        for (i, k) in (0u64..).zip(&keys[..512]) {
            let h = s.hash(k);
            s.set_with_deadline(h, k, b"v", 1_000 + i % 100);
        }
        // 200 removed: fewer tombstones than keys (no compaction yet), more than a third.
        for k in &keys[..200] {
            let h = s.hash(k);
            assert!(s.remove(h, k));
        }
        let sh = &s.shards[0];
        assert_eq!(
            (sh.slots.len(), sh.slots.capacity(), sh.dead),
            (512, 512, 200)
        );
        // A new key compacts the shard before it is stored.
        for (i, k) in (0u64..).zip(&keys[512..]) {
            let h = s.hash(k);
            s.set_with_deadline(h, k, b"w", 2_000 + i);
        }
        let sh = &s.shards[0];
        assert_eq!(
            (sh.slots.len(), sh.slots.capacity(), sh.dead),
            (320, 512, 0)
        );
        for k in &keys[200..] {
            let h = s.hash(k);
            assert!(s.get(h, k).is_some());
        }
        // Every wheel entry followed its key to its new slot.
        let mut expired = Vec::new();
        s.set_time(1_099);
        s.expire_due(usize::MAX, |e| expired.push(e.key().to_vec()));
        expired.sort();
        let mut want = keys[200..512].to_vec();
        want.sort();
        assert_eq!(expired, want);
        s.set_time(2_099);
        expired.clear();
        s.expire_due(usize::MAX, |e| expired.push(e.key().to_vec()));
        assert_eq!(expired.len(), 8);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn same_key_agrees_with_slice_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same_key(&a, &a.clone()), "{n}");
            assert!(!same_key(&a, &a[..n.saturating_sub(1)]) || n == 0);
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same_key(&a, &b), "len {n}, differs at {at}");
            }
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

    /// A shard with more segments than an index entry's 16 bits name: the entries of records in
    /// the segments past them say nowhere ([`Filed`]), and every key is still found, with a
    /// hint or without, also after they move (each rewrite with a longer value moves the key's
    /// record to a new segment, and frees the old one for the next key's).
    #[test]
    fn records_past_the_16_bit_segment_ids_are_found() {
        // Segments of 256 bytes: each 80-byte value takes a segment of its own.
        let mut s = Store::with_segment_size(ahash::RandomState::with_seeds(1, 2, 3, 4), 256);
        let keys: Vec<Vec<u8>> = (0u32..)
            .map(|i| i.to_le_bytes().to_vec())
            .filter(|k| Store::shard_of(s.hash(k)) == ShardId(0))
            .take(usize::from(NOWHERE) + 500)
            .collect();
        let value = |k: &[u8], round: u8| {
            let mut v = vec![round; 80 + usize::from(round)];
            v[..4].copy_from_slice(k);
            v
        };
        for round in 0..2 {
            for k in &keys {
                let h = s.hash(k);
                s.set(h, k, &value(k, round));
            }
            assert!(s.shards[0].segs.len() > usize::from(NOWHERE));
            assert!(s.index_is_exact(), "round {round}");
            let hashes: Vec<u64> = keys.iter().map(|k| s.hash(k)).collect();
            let mut hints = vec![NO_HINT; keys.len()];
            s.prefetch(&hashes, &mut hints);
            for ((k, &h), &hint) in keys.iter().zip(&hashes).zip(&hints) {
                assert_ne!(hint, NO_HINT);
                let got = s.get_hinted(h, k, hint).map(|e| e.value().to_vec());
                assert_eq!(got, Some(value(k, round)));
                assert_eq!(s.get(h, k).map(|e| e.value().to_vec()), got);
            }
        }
    }

    #[test]
    fn prefetch_changes_nothing_for_any_hash() {
        let mut s = store();
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys {
            let h = s.hash(k);
            s.set(h, k, k);
        }
        for k in keys.iter().step_by(2) {
            let h = s.hash(k);
            s.remove(h, k);
        }
        // Live slots, removed ones, absent keys, and hashes no key has.
        let mut hashes: Vec<u64> = keys.iter().map(|k| s.hash(k)).collect();
        hashes.extend([s.hash(b"absent"), 0, u64::MAX, 1 << 51]);
        let mut hints = vec![0; hashes.len()];
        s.prefetch(&hashes, &mut hints);
        s.prefetch(&[], &mut []);
        assert_eq!(s.len(), 100);
        for (i, k) in keys.iter().enumerate() {
            let got = s.get(s.hash(k), k).map(|e| e.value().to_vec());
            assert_eq!(got, (i % 2 == 1).then(|| k.clone()), "key {i}");
            // The key's own hint, another key's, and none all find the same.
            for hint in [hints[i], hints[(i + 1) % keys.len()], NO_HINT, 7] {
                let got = s.get_hinted(s.hash(k), k, hint).map(|e| e.value().to_vec());
                assert_eq!(got, (i % 2 == 1).then(|| k.clone()), "key {i} hint {hint}");
            }
        }
        // Live keys were hinted to their own slots.
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
            assert_ne!(hints[i], NO_HINT, "key {i}");
            let e = s.set_hinted(s.hash(k), k, b"new", hints[i]);
            assert_eq!(e.value(), b"new");
        }
        assert_eq!(s.len(), 100);
        // A stale hint after a clear: the key is gone, and setting it makes one key.
        s.clear();
        s.prefetch(&hashes, &mut hints);
        assert!(s.is_empty());
        let k = &keys[1];
        assert!(s.get_hinted(s.hash(k), k, 1).is_none());
        s.set_hinted(s.hash(k), k, b"v", 1);
        assert_eq!(s.len(), 1);
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

    /// Sum of the record lengths of what the store should hold.
    pub(super) fn expected_live(s: &Store) -> usize {
        scan_all(s, true, 1000)
            .iter()
            .map(|(k, v)| Store::record_len(k, v, false))
            .sum()
    }

    #[test]
    fn overwrite_churn_reclaims_segments_and_keeps_every_value() {
        for segment in [256, 4096, SEGMENT] {
            let mut s =
                Store::with_segment_size(ahash::RandomState::with_seeds(1, 2, 3, 4), segment);
            let mut want = std::collections::HashMap::new();
            for round in 0..40u32 {
                for i in 0..500u32 {
                    let k = format!("key{i}");
                    let v = vec![b'a' + (round % 26) as u8; ((i * 7 + round * 13) % 90) as usize];
                    set(&mut s, k.as_bytes(), &v);
                    want.insert(k, v);
                }
                assert_eq!(s.live_bytes(), expected_live(&s), "segment {segment}");
                assert!(s.index_is_exact(), "segment {segment}, round {round}");
                assert!(
                    s.footprint_is_bounded(),
                    "segment {segment}: {} held for {} live",
                    s.segment_bytes(),
                    s.live_bytes()
                );
            }
            for (k, v) in &want {
                let h = s.hash(k.as_bytes());
                assert_eq!(s.get(h, k.as_bytes()).unwrap().value(), &v[..]);
            }
            for i in 0..500u32 {
                let k = format!("key{i}");
                let h = s.hash(k.as_bytes());
                assert!(s.remove(h, k.as_bytes()));
            }
            assert_eq!((s.live_bytes(), s.len()), (0, 0));
            assert!(s.footprint_is_bounded());
        }
    }

    #[test]
    fn held_entries_outlive_relocation_overwrite_and_clear() {
        let mut s = Store::with_segment_size(ahash::RandomState::with_seeds(1, 2, 3, 4), 256);
        let mut held = Vec::new();
        for i in 0..200u32 {
            let k = format!("k{}", i % 10);
            let v = format!("value {i}");
            let h = s.hash(k.as_bytes());
            held.push((s.set(h, k.as_bytes(), v.as_bytes()).to_entry(), k, v));
        }
        s.clear();
        for (e, k, v) in &held {
            assert_eq!((e.key(), e.value()), (k.as_bytes(), v.as_bytes()));
        }
    }

    #[test]
    fn same_size_overwrite_is_in_place_unless_the_segment_is_held() {
        let mut s = store();
        set(&mut s, b"k", b"0000");
        let base = s.segment_bytes();
        let h = s.hash(b"k");
        for i in 0..10_000u32 {
            s.set(h, b"k", format!("{:04}", i % 10_000).as_bytes());
        }
        assert_eq!(
            (s.segment_bytes(), s.live_bytes()),
            (base, Store::record_len(b"k", b"0000", false))
        );
        let held = s.get(h, b"k").unwrap().to_entry();
        s.set(h, b"k", b"abcd");
        assert_eq!(held.value(), b"9999");
        assert_eq!(s.get(h, b"k").unwrap().value(), b"abcd");
    }

    #[test]
    fn large_values_get_their_own_segment_and_free_it() {
        let mut s = store();
        set(&mut s, b"big", b"x"); // the shard's shared segment
        let base = s.segment_bytes();
        let big = vec![7u8; 100_000];
        set(&mut s, b"big", &big);
        assert_eq!(
            s.segment_bytes(),
            base + Store::record_len(b"big", &big, false)
        );
        set(&mut s, b"big", b"now small");
        assert_eq!(s.segment_bytes(), base);
        let h = s.hash(b"big");
        assert_eq!(s.get(h, b"big").unwrap().value(), b"now small");
    }

    #[test]
    fn a_due_key_is_seen_before_its_expiry_runs_and_no_key_early() {
        let mut s = store();
        let (a, b, c) = (&b"a-key"[..], &b"b-key"[..], &b"c-key"[..]);
        let (ha, hb, hc) = (s.hash(a), s.hash(b), s.hash(c));
        s.set_with_deadline(ha, a, b"1", 100);
        s.set(hb, b, b"2");
        // Another key in `a`'s shard, in slot 1 (`a` is the shard's first, in slot 0).
        let other = (0..)
            .map(|i| format!("other-{i}").into_bytes())
            .find(|k| Store::shard_of(s.hash(k)) == Store::shard_of(ha) && k != b && k != c)
            .expect("some key lands in any shard");
        let ho = s.hash(&other);
        s.set(ho, &other, b"4");
        s.set_time(99);
        assert!(!s.is_due(ha, a) && !s.is_due(hb, b));
        // Due at its deadline, before `expire_due` has run; also through its own slot as the
        // hint, a hint past the slots, and one that names another key's slot.
        s.set_time(100);
        assert!(s.is_due(ha, a));
        let other_slot = if Store::shard_of(hb) == Store::shard_of(ha) {
            2
        } else {
            1
        };
        let shard = &s.shards[Store::shard_of(ha).0];
        let named = shard.record(&shard.slots[other_slot as usize]);
        assert_eq!(named.key(), &other[..], "the hint names `other`");
        for hint in [0, 1_000, other_slot] {
            assert!(s.is_due_hinted(ha, a, hint), "hint {hint}");
        }
        assert!(!s.is_due(hb, b) && !s.is_due(hc, c));
        // A key given a deadline the clock passes later, once the first is expired.
        let mut gone = Vec::new();
        s.expire_due(10, |e| gone.push(e.key().to_vec()));
        assert_eq!(gone, [a.to_vec()]);
        assert!(!s.is_due(ha, a));
        s.set_with_deadline(hc, c, b"3", 5_000);
        s.set_time(4_999);
        assert!(!s.is_due(hc, c));
        s.set_time(70_000);
        assert!(s.is_due(hc, c), "due long after, past several wheel levels");
    }

    #[test]
    fn every_write_gets_a_greater_version_and_ttl_changes_keep_it() {
        let mut s = store();
        let h = s.hash(b"k");
        let v1 = s.set(h, b"k", b"a").version();
        let v2 = s.set(h, b"k", b"b").version(); // same length: rewritten in place
        assert!(v2 > v1);
        assert_eq!(s.get(h, b"k").unwrap().version(), v2);
        assert!(s.set_deadline(h, b"k", Some(1000)));
        assert_eq!(
            s.get(h, b"k").unwrap().version(),
            v2,
            "a TTL change keeps it"
        );
        assert!(s.set_deadline(h, b"k", None));
        assert_eq!(s.get(h, b"k").unwrap().version(), v2);
        let v3 = s.incr(h, b"n", 1).unwrap().1.version();
        assert!(v3 > v2);
        assert!(s.remove(h, b"k"));
        let v4 = s.set(h, b"k", b"a").version();
        assert!(v4 > v3, "re-created after removal");
        s.clear();
        let v5 = s.set(h, b"k", b"a").version();
        assert!(v5 > v4, "after a clear");
        assert_eq!(s.next_version(), v5 + 1);
        s.start_versions_at(1_000_000);
        assert_eq!(s.set(h, b"k", b"a").version(), 1_000_000);
        s.start_versions_at(5); // never lowers the counter
        assert_eq!(s.next_version(), 1_000_001);
    }

    #[test]
    fn conditional_writes() {
        let mut s = store();
        let h = s.hash(b"k");
        assert!(s.replace(h, b"k", b"x", None).is_none());
        assert!(s.set_if_version(h, b"k", b"x", 1).is_none());
        assert!(s.get(h, b"k").is_none());
        let v = s.add(h, b"k", b"a", None).unwrap().version();
        assert!(s.add(h, b"k", b"b", None).is_none());
        assert_eq!(s.get(h, b"k").unwrap().value(), b"a");
        assert!(s.set_if_version(h, b"k", b"b", v + 1).is_none());
        let w = s.set_if_version(h, b"k", b"bb", v).unwrap().version();
        assert!(w > v);
        assert!(
            s.set_if_version(h, b"k", b"c", v).is_none(),
            "stale version"
        );
        assert_eq!(s.get(h, b"k").unwrap().value(), b"bb");
        // replace keeps the TTL unless given one; add on a due key adds.
        s.set_time(10);
        let r = s.replace(h, b"k", b"c", Some(20)).unwrap().version();
        assert!(r > w);
        assert!(s.replace(h, b"k", b"d", None).is_some());
        assert_eq!(s.deadline(h, b"k"), Some(Some(20)));
        s.set_time(20);
        assert!(s.replace(h, b"k", b"e", None).is_none(), "due: gone");
        assert!(s.add(h, b"k", b"f", Some(30)).is_some());
        assert_eq!(s.deadline(h, b"k"), Some(Some(30)));
        assert_eq!((s.len(), s.ttl_keys()), (1, 1));
    }

    #[test]
    fn in_place_rewrites_write_the_new_version_even_without_a_deadline() {
        let mut s = store();
        set(&mut s, b"k", b"0000");
        let base = s.segment_bytes();
        let h = s.hash(b"k");
        let mut last = 0;
        for i in 0..100u32 {
            let v = s.set(h, b"k", format!("{i:04}").as_bytes()).version();
            assert!(v > last);
            assert_eq!(s.get(h, b"k").unwrap().version(), v);
            last = v;
        }
        assert_eq!(s.segment_bytes(), base, "rewritten in place");
    }

    #[test]
    fn itoa_matches_std() {
        for n in [0, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN] {
            assert_eq!(itoa_buf(n).as_str(), n.to_string());
        }
    }
}
