//! [`Wheel`]: when keys with a TTL fall due, in O(1) per key, at any number of keys.
//!
//! A hierarchical timing wheel over milliseconds of the store's clock: 7 levels of 64 slots,
//! level `l` slot covering 64^l ms, so the wheel spans 2^42 ms (about 139 years) past its
//! current time. A key due at `t` is filed on the level where `t` and the current time first
//! differ (in groups of 6 bits), in the slot that `t`'s bits select there; a level's
//! occupied slots are a 64-bit mask. When time reaches a slot of level 0 its keys are due;
//! when it reaches a slot of a higher level, its keys are filed again, one level lower or
//! more. So a key is touched at most 7 times in its life, and finding the next due slot is a
//! few bit operations.
//!
//! An entry is 4 bytes: the key's shard and slot (see [`Wheel::pack`]). It holds no copy of
//! the deadline: the deadline lives in the key's record, and each time an entry is looked at
//! (filed again, or due) the record says whether it still applies. An entry whose record
//! has no deadline in the slot's time range any more (the key was removed, given another TTL,
//! or its slot reused by another key) is dropped then, so a key re-given a TTL leaves its old
//! entry behind until that entry's slot comes up, or until [`Wheel::sweep`] drops every such
//! entry at once (the store sweeps when entries outnumber keys with a TTL two to one, so
//! stale entries cost O(1) amortized per TTL given and at most as much memory as live ones).

use std::cell::Cell;

/// Bits of time per level.
const BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << BITS;
/// Levels.
pub const LEVELS: usize = 7;
/// Bits of an entry that name the slot within a shard.
pub const SLOT_BITS: u32 = 26;

/// A due time and what the wheel knows about an entry filed for it: the range of times of
/// the slot it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First ms of the range.
    pub start: u64,
    /// First ms after it.
    pub end: u64,
}

/// Keys by the millisecond they fall due.
pub struct Wheel {
    /// `LEVELS * SLOTS` lists of entries.
    slots: Box<[Vec<u32>]>,
    occupied: [u64; LEVELS],
    /// The wheel's current time: every entry filed is due after it.
    elapsed: u64,
    /// Entries filed.
    len: usize,
    /// [`Wheel::next_due`] once worked out, until the wheel next changes (every `&mut self`
    /// method clears it): a server asks before each write to a store with TTLs.
    next: Cell<Option<Option<u64>>>,
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .finish()
    }
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel {
            slots: (0..LEVELS * SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; LEVELS],
            elapsed: 0,
            len: 0,
            next: Cell::new(None),
        }
    }
}

/// Milliseconds one slot of `level` covers.
fn slot_range(level: usize) -> u64 {
    1 << (BITS as usize * level)
}

/// Milliseconds one turn of `level` covers.
fn level_range(level: usize) -> u64 {
    slot_range(level + 1)
}

impl Wheel {
    /// An entry for slot `slot` of shard `shard`. Slots go up to 2^26 per shard (a shard's
    /// slot table would then be a gigabyte).
    pub fn pack(shard: usize, slot: usize) -> u32 {
        debug_assert!(shard < 64);
        let slot = u32::try_from(slot)
            .ok()
            .filter(|&s| s < 1 << SLOT_BITS)
            .expect("a shard holds fewer than 2^26 slots");
        (shard as u32) << SLOT_BITS | slot
    }

    /// The shard and slot of an entry.
    pub fn unpack(entry: u32) -> (usize, usize) {
        (
            (entry >> SLOT_BITS) as usize,
            (entry & ((1 << SLOT_BITS) - 1)) as usize,
        )
    }

    /// The wheel's current time.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Entries filed (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the wheel's lists hold.
    pub fn allocated_bytes(&self) -> usize {
        self.slots.iter().map(|v| v.capacity() * 4).sum::<usize>()
            + self.slots.len() * std::mem::size_of::<Vec<u32>>()
    }

    fn level_for(&self, when: u64) -> usize {
        let masked = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros() as usize;
        (significant / BITS as usize).min(LEVELS - 1)
    }

    /// Whether an entry filed for `filed` (after the current time) also stands for `when`:
    /// both fall in the slot that holds it, so when that slot comes up the entry is filed
    /// again by the record's deadline, whichever of the two it is by then. (An entry filed
    /// earlier may sit a level higher than `filed` would be filed now; that slot holds this
    /// one's range too.) A key re-given a TTL close to its last one then needs no new entry.
    pub fn covers(&self, filed: u64, when: u64) -> bool {
        if filed <= self.elapsed || when <= self.elapsed {
            return false;
        }
        let level = self.level_for(filed);
        (filed ^ when) >> (BITS as usize * level) == 0
    }

    /// Files `entry` for `when`, which must be after the current time ([`Wheel::elapsed`]).
    pub fn insert(&mut self, when: u64, entry: u32) {
        self.next.set(None);
        debug_assert!(when > self.elapsed);
        let level = self.level_for(when);
        let slot = ((when >> (BITS as usize * level)) as usize) & (SLOTS - 1);
        self.slots[level * SLOTS + slot].push(entry);
        self.occupied[level] |= 1 << slot;
        self.len += 1;
    }

    /// The earliest occupied slot: its level, index and time range.
    fn next_slot(&self) -> Option<(usize, usize, Range)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let range = slot_range(level);
            let now_slot = ((self.elapsed / range) as usize) & (SLOTS - 1);
            let slot = (occupied.rotate_right(now_slot as u32).trailing_zeros() as usize
                + now_slot)
                & (SLOTS - 1);
            let start = self.slot_start(level, slot);
            return Some((
                level,
                slot,
                Range {
                    start,
                    end: start + range,
                },
            ));
        }
        None
    }

    /// The first ms of slot `slot` of `level`: in the level's current turn, or its next turn
    /// for a slot the current time has passed (only the top level files entries there, for
    /// times past the turn's end).
    fn slot_start(&self, level: usize, slot: usize) -> u64 {
        let range = slot_range(level);
        let level_start = self.elapsed & !(level_range(level) - 1);
        let start = level_start + slot as u64 * range;
        if start + range <= self.elapsed {
            start + level_range(level)
        } else {
            start
        }
    }

    /// The first millisecond at which an entry may be due, if any is filed.
    pub fn next_due(&self) -> Option<u64> {
        if let Some(next) = self.next.get() {
            return next;
        }
        let next = self.next_slot().map(|(_, _, r)| r.start.max(self.elapsed));
        self.next.set(Some(next));
        next
    }

    /// Takes the entries of the earliest occupied slot if it starts at or before `now`, and
    /// moves the wheel's time to its start. Level-0 entries (`range` is one ms) are due at
    /// `range.start`; higher ones are to be filed again ([`Wheel::refile`]) if their record's
    /// deadline is in `range`. Returns `None` (and moves the time to `now`) when nothing is
    /// due by `now`.
    pub fn pop(&mut self, now: u64) -> Option<(Range, Vec<u32>)> {
        self.next.set(None);
        match self.next_slot() {
            Some((level, slot, range)) if range.start <= now => {
                self.occupied[level] &= !(1 << slot);
                let entries = std::mem::take(&mut self.slots[level * SLOTS + slot]);
                self.len -= entries.len();
                self.elapsed = self.elapsed.max(range.start);
                Some((range, entries))
            }
            _ => {
                self.elapsed = self.elapsed.max(now);
                None
            }
        }
    }

    /// Files again an entry taken by [`Wheel::pop`] for deadline `when`; false if `when` is
    /// already due (then it is the caller's).
    pub fn refile(&mut self, when: u64, entry: u32) -> bool {
        self.next.set(None);
        if when <= self.elapsed {
            return false;
        }
        self.insert(when, entry);
        true
    }

    /// Keeps only the entries for which `keep(entry, range of its slot)` holds, and one of
    /// several equal entries in a slot.
    pub fn sweep(&mut self, mut keep: impl FnMut(u32, Range) -> bool) {
        self.next.set(None);
        for level in 0..LEVELS {
            for slot in 0..SLOTS {
                if self.slots[level * SLOTS + slot].is_empty() {
                    continue;
                }
                let start = self.slot_start(level, slot);
                let r = Range {
                    start,
                    end: start + slot_range(level),
                };
                let list = &mut self.slots[level * SLOTS + slot];
                let before = list.len();
                list.sort_unstable();
                list.dedup();
                list.retain(|&e| keep(e, r));
                self.len -= before - list.len();
                if list.is_empty() {
                    *list = Vec::new();
                    self.occupied[level] &= !(1 << slot);
                } else {
                    list.shrink_to(list.len() * 2);
                }
            }
        }
    }

    /// Rewrites every entry with `map` (`None` drops it): the store's slots of one shard
    /// moved.
    pub fn remap(&mut self, mut map: impl FnMut(u32) -> Option<u32>) {
        self.next.set(None);
        for (i, list) in self.slots.iter_mut().enumerate() {
            let before = list.len();
            remap_entries(list, &mut map);
            self.len -= before - list.len();
            if list.is_empty() {
                self.occupied[i / SLOTS] &= !(1 << (i % SLOTS));
            }
        }
    }
}

/// Rewrites every entry of `list` with `map` in place, dropping those it maps to `None` (a
/// wheel slot's list, or the store's entries found due and not yet expired).
pub fn remap_entries(list: &mut Vec<u32>, mut map: impl FnMut(u32) -> Option<u32>) {
    list.retain_mut(|e| match map(*e) {
        Some(to) => {
            *e = to;
            true
        }
        None => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops everything due by `now`, filing higher-level entries again by the deadlines in
    /// `deadlines` (indexed by entry) as the store does; returns (entry, due time) in order.
    fn run(w: &mut Wheel, deadlines: &[u64], now: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while let Some((range, entries)) = w.pop(now) {
            for e in entries {
                let d = deadlines[e as usize];
                if d < range.start || d >= range.end {
                    continue; // stale
                }
                if !w.refile(d, e) {
                    out.push((e, range.start));
                }
            }
        }
        out
    }

    #[test]
    fn entries_fall_due_at_their_millisecond_across_every_level() {
        let mut w = Wheel::default();
        let deadlines: Vec<u64> = vec![
            1,
            63,
            64,
            65,
            4095,
            4096,
            300_000,
            86_400_000,
            10 * 365 * 86_400_000,
            (1 << 40) - 1,
        ];
        for (i, &d) in deadlines.iter().enumerate() {
            w.insert(d, i as u32);
        }
        let mut got = Vec::new();
        for &d in &deadlines {
            assert_eq!(
                w.next_due().map(|n| n <= d),
                Some(true),
                "next due before {d}"
            );
            got.extend(run(&mut w, &deadlines, d));
            assert_eq!(got.last().map(|&(_, t)| t), Some(d), "due exactly at {d}");
        }
        assert_eq!(got.len(), deadlines.len());
        assert!(w.is_empty());
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn nothing_is_due_early_and_a_jump_in_time_fires_all_that_passed() {
        let mut w = Wheel::default();
        let deadlines: Vec<u64> = (0..1000).map(|i| 10 + i * 37).collect();
        for (i, &d) in deadlines.iter().enumerate() {
            w.insert(d, i as u32);
        }
        assert!(run(&mut w, &deadlines, 9).is_empty());
        let got = run(&mut w, &deadlines, 10 + 500 * 37);
        assert_eq!(got.len(), 501);
        assert!(got.iter().all(|&(e, t)| deadlines[e as usize] == t));
        assert_eq!(w.next_due(), Some(10 + 501 * 37));
    }

    #[test]
    fn next_due_follows_every_change() {
        let mut w = Wheel::default();
        assert_eq!(w.next_due(), None);
        w.insert(5_000, 1);
        let first = w.next_due().expect("an entry");
        assert!(first <= 5_000);
        assert_eq!(w.next_due(), Some(first), "asked again, unchanged");
        w.insert(7, 2);
        assert_eq!(w.next_due(), Some(7), "an earlier entry");
        assert_eq!(w.pop(7).map(|(_, e)| e), Some(vec![2]));
        let after = w.next_due().expect("the later entry");
        assert!(after > 7 && after <= 5_000);
        w.sweep(|_, _| false);
        assert_eq!(w.next_due(), None, "swept empty");
        w.insert(9_000, 3);
        assert!(w.next_due().is_some_and(|n| n <= 9_000));
        w.remap(|_| None);
        assert_eq!(w.next_due(), None, "remapped away");
    }

    #[test]
    fn a_sweep_drops_stale_and_duplicate_entries() {
        let mut w = Wheel::default();
        for e in 0..100 {
            w.insert(1000, e);
            w.insert(1000, e);
            w.insert(5_000_000, e);
        }
        assert_eq!(w.len(), 300);
        // Entries below 50 now expire at 1000, the others at 5,000,000.
        w.sweep(|e, r| {
            let d = if e < 50 { 1000 } else { 5_000_000 };
            (r.start..r.end).contains(&d)
        });
        assert_eq!(w.len(), 100);
        w.remap(|e| (e % 2 == 0).then_some(e + 1000));
        assert_eq!(w.len(), 50);
    }

    #[test]
    fn an_entry_covers_the_deadlines_of_its_slot_only() {
        let mut w = Wheel::default();
        w.insert(3_600_000, 7);
        // An hour away: level 3, slots of 262,144 ms.
        assert!(w.covers(3_600_000, 3_600_500));
        assert!(!w.covers(3_600_000, 3_600_000 + 262_144));
        assert!(
            w.covers(5, 5) && !w.covers(5, 6),
            "level 0: the same ms only"
        );
        // Re-given TTLs within the slot keep one entry, and it falls due at the last one.
        let deadlines = [3_600_123u64; 8];
        let got = {
            let mut out = Vec::new();
            while let Some((range, entries)) = w.pop(4_000_000) {
                for e in entries {
                    let d = deadlines[e as usize];
                    if (range.start..range.end).contains(&d) && !w.refile(d, e) {
                        out.push((e, range.start));
                    }
                }
            }
            out
        };
        assert_eq!(got, [(7, 3_600_123)]);
    }

    #[test]
    fn entries_pack_shard_and_slot() {
        let e = Wheel::pack(63, (1 << SLOT_BITS) - 1);
        assert_eq!(Wheel::unpack(e), (63, (1 << SLOT_BITS) - 1));
        assert_eq!(Wheel::unpack(Wheel::pack(5, 7)), (5, 7));
    }
}
