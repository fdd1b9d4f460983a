//! Who listens to what: subscriptions and waits, looked up with the store's key hash.
//!
//! Every operation costs O(1) per subscription, wait or connection it touches, never a search
//! through a list a client can make long (a connection may hold [`MAX_SUBS_PER_CONN`]
//! subscriptions and [`MAX_WAITS_PER_CONN`] waits, all on one key):
//!
//! - subscriptions and waits live in slabs; a subscription or wait is found by its slab index;
//! - each is a member of two lists: its key's (or the every-key list) and its connection's.
//!   A member records its position in both, so it leaves either with a `swap_remove` and the
//!   member moved into its place has its position updated (`Members`);
//! - a connection's subscription ids map to slab indices in a hash table.
//!
//! The order of members within a list is therefore not their registration order: the protocol
//! promises no order between the events of different subscriptions, nor between the wakes of
//! different waits.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use std::collections::HashMap;

use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;

use crate::protocol::{RequestId, SubId};

/// Most subscriptions on one connection.
pub const MAX_SUBS_PER_CONN: usize = 4096;
/// Most pending waits on one connection.
pub const MAX_WAITS_PER_CONN: usize = 65536;

/// Which of a member's two lists.
#[derive(Clone, Copy)]
enum List {
    /// Its key's list (or, for a subscription to every key, the every-key list).
    Key = 0,
    /// Its connection's list.
    Conn = 1,
}

/// Something that belongs to two [`Members`] lists and knows its position in each.
trait Member {
    fn pos(&mut self, list: List) -> &mut usize;
}

/// A list of slab indices whose members know their position (O(1) removal, order not kept).
#[derive(Debug, Default)]
struct Members(Vec<usize>);

impl Members {
    fn push<M: Member>(&mut self, slab: &mut Slab<M>, idx: usize, list: List) {
        *slab[idx].pos(list) = self.0.len();
        self.0.push(idx);
    }

    /// Removes member `idx` (which must be in this list) in O(1).
    fn remove<M: Member>(&mut self, slab: &mut Slab<M>, idx: usize, list: List) {
        let pos = *slab[idx].pos(list);
        debug_assert_eq!(self.0[pos], idx);
        self.0.swap_remove(pos);
        if let Some(&moved) = self.0.get(pos) {
            *slab[moved].pos(list) = pos;
        }
    }
}

/// What members listen to: a key, and for a wait for a value, that value.
type Topic<'a> = (&'a [u8], Option<&'a [u8]>);

/// A topic and the members listening to it.
struct KeyEntry {
    hash: u64,
    key: Box<[u8]>,
    value: Option<Box<[u8]>>,
    members: Members,
}

impl KeyEntry {
    fn is(&self, (key, value): Topic<'_>) -> bool {
        *self.key == *key && self.value.as_deref() == value
    }
}

/// Topic → members, keyed by the store's hash of the key (hash once), mixed with the hash of
/// the value for a wait for a value.
#[derive(Default)]
struct KeyMap(HashTable<KeyEntry>);

impl KeyMap {
    fn get(&self, hash: u64, topic: Topic<'_>) -> Option<&Members> {
        self.0.find(hash, |e| e.is(topic)).map(|e| &e.members)
    }

    fn add<M: Member>(&mut self, slab: &mut Slab<M>, hash: u64, topic: Topic<'_>, idx: usize) {
        let e = match self.0.find_mut(hash, |e| e.is(topic)) {
            Some(e) => e,
            None => {
                let e = KeyEntry {
                    hash,
                    key: topic.0.into(),
                    value: topic.1.map(Into::into),
                    members: Members::default(),
                };
                self.0.insert_unique(hash, e, |e| e.hash).into_mut()
            }
        };
        e.members.push(slab, idx, List::Key);
    }

    fn remove<M: Member>(&mut self, slab: &mut Slab<M>, hash: u64, topic: Topic<'_>, idx: usize) {
        if let Ok(mut e) = self.0.find_entry(hash, |e| e.is(topic)) {
            let members = &mut e.get_mut().members;
            members.remove(slab, idx, List::Key);
            if members.0.is_empty() {
                e.remove();
            }
        }
    }

    fn take(&mut self, hash: u64, topic: Topic<'_>) -> Option<Members> {
        self.0
            .find_entry(hash, |e| e.is(topic))
            .ok()
            .map(|e| e.remove().0.members)
    }
}

/// One subscription.
#[derive(Debug)]
pub struct Sub {
    /// The subscribing connection's slot.
    pub conn: usize,
    /// Its id on that connection.
    pub id: SubId,
    /// Events dropped since the last `Lagged` push.
    pub lagged: u64,
    hash: u64,
    key: Option<Box<[u8]>>,
    pos: [usize; 2],
}

impl Member for Sub {
    fn pos(&mut self, list: List) -> &mut usize {
        &mut self.pos[list as usize]
    }
}

/// One pending `wait_for`.
#[derive(Debug)]
pub struct Waiter {
    /// The waiting connection's slot.
    pub conn: usize,
    /// The wait request's id (the `Woken` push echoes it).
    pub req: RequestId,
    /// The key's hash.
    pub hash: u64,
    /// The key.
    pub key: Box<[u8]>,
    /// The value awaited, if any.
    pub expected: Option<Box<[u8]>>,
}

struct Wait {
    waiter: Waiter,
    serial: u64,
    pos: [usize; 2],
}

impl Member for Wait {
    fn pos(&mut self, list: List) -> &mut usize {
        &mut self.pos[list as usize]
    }
}

/// A connection's listeners.
#[derive(Debug, Default)]
struct ConnListeners {
    subs: Members,
    waits: Members,
    ids: HashMap<SubId, usize>,
    next_sub: SubId,
    /// How many of its subscriptions have `lagged > 0`.
    lagging: usize,
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Subscriptions and waits.
#[derive(Default)]
pub struct Hub {
    subs: Slab<Sub>,
    subs_by_key: KeyMap,
    subs_all: Members,
    waits: Slab<Wait>,
    waits_by_key: KeyMap,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    serial: u64,
    /// Indexed by connection slot.
    conns: Vec<ConnListeners>,
    /// Hashes awaited values, so a wait for a value is found by key and value together.
    values: ahash::RandomState,
    /// Pending waits for a value (a change hashes its value only when there are some).
    value_waits: usize,
    /// Leases of missing keys and their waiters (`GET_OR_LEASE`): a store of a leased key
    /// ends its lease, so writes publish their change while any lease exists.
    pub leases: super::leases::Leases,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscriptions", &self.subs.len())
            .field("waits", &self.waits.len())
            .finish()
    }
}

impl Hub {
    fn conn(&mut self, conn: usize) -> &mut ConnListeners {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, ConnListeners::default);
        }
        &mut self.conns[conn]
    }

    /// Registers a subscription of connection `conn` to `key` (`None`: every key) and returns
    /// its id: per connection, from 1, wrapping past `u32::MAX` to 1 and skipping ids in use.
    pub fn subscribe(&mut self, conn: usize, hash: u64, key: Option<&[u8]>) -> Result<SubId, Full> {
        let cl = self.conn(conn);
        if cl.ids.len() >= MAX_SUBS_PER_CONN {
            return Err(Full);
        }
        let mut id = cl.next_sub.max(1);
        while cl.ids.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        cl.next_sub = id.wrapping_add(1).max(1);
        let idx = self.subs.insert(Sub {
            conn,
            id,
            lagged: 0,
            hash,
            key: key.map(Into::into),
            pos: [0; 2],
        });
        match key {
            Some(k) => self.subs_by_key.add(&mut self.subs, hash, (k, None), idx),
            None => self.subs_all.push(&mut self.subs, idx, List::Key),
        }
        let cl = &mut self.conns[conn];
        cl.ids.insert(id, idx);
        cl.subs.push(&mut self.subs, idx, List::Conn);
        Ok(id)
    }

    /// Removes subscription `id` of connection `conn`; false if it has none such.
    pub fn unsubscribe(&mut self, conn: usize, id: SubId) -> bool {
        let Some(&idx) = self.conns.get(conn).and_then(|c| c.ids.get(&id)) else {
            return false;
        };
        self.remove_sub(idx);
        true
    }

    fn remove_sub(&mut self, idx: usize) {
        let (conn, id, lagged) = {
            let s = &self.subs[idx];
            (s.conn, s.id, s.lagged)
        };
        let cl = &mut self.conns[conn];
        cl.ids.remove(&id);
        cl.subs.remove(&mut self.subs, idx, List::Conn);
        if lagged > 0 {
            cl.lagging -= 1;
        }
        self.unlink_sub(idx);
    }

    /// Removes subscription `idx` from its key's list and the slab (its connection's list is
    /// the caller's).
    fn unlink_sub(&mut self, idx: usize) {
        let (hash, key) = {
            let s = &mut self.subs[idx];
            (s.hash, s.key.take())
        };
        match key {
            Some(k) => self
                .subs_by_key
                .remove(&mut self.subs, hash, (&k, None), idx),
            None => self.subs_all.remove(&mut self.subs, idx, List::Key),
        }
        self.subs.remove(idx);
    }

    /// The slab indices of the subscriptions a change of `key` reaches: those of the key,
    /// then those of every key. Valid until the next registration or removal.
    pub fn subscribers(&self, hash: u64, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let of_key = self
            .subs_by_key
            .get(hash, (key, None))
            .map_or(&[][..], |m| &m.0);
        of_key.iter().chain(&self.subs_all.0).copied()
    }

    /// The slab indices of connection `conn`'s subscriptions.
    pub fn subs_of(&self, conn: usize) -> &[usize] {
        self.conns.get(conn).map_or(&[], |c| &c.subs.0)
    }

    /// Every subscription's slab index.
    pub fn all_subs(&self) -> impl Iterator<Item = usize> + '_ {
        self.subs.iter().map(|(i, _)| i)
    }

    /// A subscription by slab index.
    pub fn sub(&self, idx: usize) -> &Sub {
        &self.subs[idx]
    }

    /// Counts one event dropped for subscription `idx`.
    pub fn add_lag(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        if s.lagged == 0 {
            let conn = s.conn;
            self.conns[conn].lagging += 1;
        }
        self.subs[idx].lagged += 1;
    }

    /// Takes subscription `idx`'s dropped-event count (0 if none).
    pub fn take_lag(&mut self, idx: usize) -> u64 {
        let s = &mut self.subs[idx];
        let n = std::mem::take(&mut s.lagged);
        if n > 0 {
            let conn = s.conn;
            self.conns[conn].lagging -= 1;
        }
        n
    }

    /// Whether any subscription of connection `conn` has dropped events to report.
    pub fn is_lagging(&self, conn: usize) -> bool {
        self.conns.get(conn).is_some_and(|c| c.lagging > 0)
    }

    /// Whether anyone listens at all (the fast path skips event building when not).
    pub fn is_idle(&self) -> bool {
        self.subs.is_empty() && self.waits.is_empty() && self.leases.is_empty()
    }

    /// The hash a wait is filed under: its key's, mixed with its value's for a wait for a value.
    fn wait_hash(&self, hash: u64, value: Option<&[u8]>) -> u64 {
        match value {
            None => hash,
            Some(v) => hash ^ self.values.hash_one(v).rotate_left(29),
        }
    }

    /// Registers a wait of connection `w.conn`, ending at `deadline` if any.
    pub fn add_wait(&mut self, w: Waiter, deadline: Option<Instant>) -> Result<(), Full> {
        let conn = w.conn;
        if self.conn(conn).waits.0.len() >= MAX_WAITS_PER_CONN {
            return Err(Full);
        }
        self.serial += 1;
        let hash = self.wait_hash(w.hash, w.expected.as_deref());
        let value_wait = w.expected.is_some();
        // The topic's bytes move out while the slab is borrowed for the list, then back.
        let mut w = w;
        let (key, value) = (std::mem::take(&mut w.key), w.expected.take());
        let idx = self.waits.insert(Wait {
            waiter: w,
            serial: self.serial,
            pos: [0; 2],
        });
        self.waits_by_key
            .add(&mut self.waits, hash, (&key, value.as_deref()), idx);
        let w = &mut self.waits[idx].waiter;
        (w.key, w.expected) = (key, value);
        self.conns[conn]
            .waits
            .push(&mut self.waits, idx, List::Conn);
        self.value_waits += usize::from(value_wait);
        if let Some(d) = deadline {
            self.deadlines.push(Reverse((d, idx, self.serial)));
            // Deadlines of waits that ended otherwise stay in the heap until they come up:
            // drop them once they are half of it, so they cost O(1) amortized, not memory.
            if self.deadlines.len() > 2 * self.waits.len() + 64 {
                let waits = &self.waits;
                self.deadlines.retain(|Reverse((_, i, serial))| {
                    waits.get(*i).is_some_and(|w| w.serial == *serial)
                });
            }
        }
        Ok(())
    }

    /// Removes wait `idx` from its connection's list and the slab (not from its topic's list).
    fn release_wait(&mut self, idx: usize) -> Waiter {
        let conn = self.waits[idx].waiter.conn;
        self.conns[conn]
            .waits
            .remove(&mut self.waits, idx, List::Conn);
        self.unlink_wait(idx, false)
    }

    /// Removes wait `idx` from the slab, and from its topic's list when `from_topic`.
    fn unlink_wait(&mut self, idx: usize, from_topic: bool) -> Waiter {
        if from_topic {
            let w = &mut self.waits[idx].waiter;
            let (key, value, hash) = (std::mem::take(&mut w.key), w.expected.take(), w.hash);
            let hash = self.wait_hash(hash, value.as_deref());
            self.waits_by_key
                .remove(&mut self.waits, hash, (&key, value.as_deref()), idx);
            let w = &mut self.waits[idx].waiter;
            (w.key, w.expected) = (key, value);
        }
        let w = self.waits.remove(idx).waiter;
        self.value_waits -= usize::from(w.expected.is_some());
        w
    }

    fn remove_wait(&mut self, idx: usize) -> Waiter {
        let conn = self.waits[idx].waiter.conn;
        self.conns[conn]
            .waits
            .remove(&mut self.waits, idx, List::Conn);
        self.unlink_wait(idx, true)
    }

    /// Takes the waits that a change of `key` ends, in O(1) per wait ended: those for any
    /// change, and for a set (`value` is the new value) those that awaited that value. A
    /// removal (`value` None) ends no wait for a value.
    pub fn take_woken(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) -> Vec<Waiter> {
        let mut lists: SmallVec<[Members; 2]> = SmallVec::new();
        lists.extend(self.waits_by_key.take(hash, (key, None)));
        if let Some(v) = value.filter(|_| self.value_waits > 0) {
            let vhash = self.wait_hash(hash, Some(v));
            lists.extend(self.waits_by_key.take(vhash, (key, Some(v))));
        }
        let mut woken = Vec::new();
        for members in lists {
            for idx in members.0 {
                woken.push(self.release_wait(idx));
            }
        }
        woken
    }

    /// Takes every wait (a clear, or shutdown).
    pub fn take_all_waits(&mut self) -> Vec<Waiter> {
        self.waits_by_key.0.clear();
        self.deadlines.clear();
        self.value_waits = 0;
        for c in &mut self.conns {
            c.waits.0.clear();
        }
        std::mem::take(&mut self.waits)
            .into_iter()
            .map(|(_, w)| w.waiter)
            .collect()
    }

    /// Takes the waits whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Waiter> {
        let mut out = Vec::new();
        while let Some(&Reverse((d, idx, serial))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.waits.get(idx).is_some_and(|w| w.serial == serial) {
                out.push(self.remove_wait(idx));
            }
        }
        out
    }

    /// The earliest wait deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of waits that already ended, so they do not cause idle wake-ups.
        while let Some(&Reverse((d, idx, serial))) = self.deadlines.peek() {
            if self.waits.get(idx).is_some_and(|w| w.serial == serial) {
                return Some(d);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Removes every subscription and wait of connection `conn` (it closed), each in O(1).
    pub fn close_conn(&mut self, conn: usize) {
        let Some(cl) = self.conns.get_mut(conn) else {
            return;
        };
        let cl = std::mem::take(cl);
        for idx in cl.subs.0 {
            self.unlink_sub(idx);
        }
        for idx in cl.waits.0 {
            self.unlink_wait(idx, true);
        }
    }

    /// Number of pending waits.
    pub fn wait_count(&self) -> usize {
        self.waits.len()
    }

    /// Number of subscriptions.
    pub fn sub_count(&self) -> usize {
        self.subs.len()
    }

    /// Number of pending waits of connection `conn`.
    pub fn waits_of(&self, conn: usize) -> usize {
        self.conns.get(conn).map_or(0, |c| c.waits.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The store's hash of `key`: tests use real hashes, as the engine does (keys that all
    /// hashed alike would make every lookup a probe through all of them).
    fn hash(key: &[u8]) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key)
    }

    fn waiter(conn: usize, key: &[u8], expected: Option<&[u8]>) -> Waiter {
        Waiter {
            conn,
            req: conn as u32,
            hash: hash(key),
            key: key.into(),
            expected: expected.map(Into::into),
        }
    }

    fn conns_of(w: &[Waiter]) -> Vec<usize> {
        let mut v: Vec<usize> = w.iter().map(|w| w.conn).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn waits_fire_by_key_and_value() {
        let mut h = Hub::default();
        h.add_wait(waiter(1, b"k", None), None).unwrap();
        h.add_wait(waiter(2, b"k", Some(b"v")), None).unwrap();
        h.add_wait(waiter(3, b"other", None), None).unwrap();
        assert_eq!(
            conns_of(&h.take_woken(hash(b"k"), b"k", Some(b"x"))),
            vec![1]
        );
        assert!(
            h.take_woken(hash(b"k"), b"k", None).is_empty(),
            "a removal does not satisfy a value wait"
        );
        assert_eq!(
            conns_of(&h.take_woken(hash(b"k"), b"k", Some(b"v"))),
            vec![2]
        );
        assert_eq!(h.wait_count(), 1);
        assert_eq!(h.take_all_waits().len(), 1);
        assert!(h.is_idle());
        assert_eq!(h.waits_of(3), 0);
    }

    #[test]
    fn deadlines_expire_in_order_and_skip_finished_waits() {
        let mut h = Hub::default();
        let t0 = Instant::now();
        h.add_wait(waiter(1, b"a", None), Some(t0 + Duration::from_millis(10)))
            .unwrap();
        h.add_wait(waiter(2, b"b", None), Some(t0 + Duration::from_millis(20)))
            .unwrap();
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(10)));
        h.close_conn(1);
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(20)));
        assert!(h.take_expired(t0 + Duration::from_millis(15)).is_empty());
        assert_eq!(
            conns_of(&h.take_expired(t0 + Duration::from_millis(20))),
            [2]
        );
        assert_eq!(h.next_deadline(), None);
        assert!(h.is_idle());
    }

    #[test]
    fn subscribers_of_a_key_and_of_all() {
        let mut h = Hub::default();
        let a = h.subscribe(1, hash(b"k"), Some(b"k")).unwrap();
        let b = h.subscribe(2, 0, None).unwrap();
        assert_eq!((a, b), (1, 1), "ids are per connection");
        let conns = |h: &Hub, key: &[u8]| -> Vec<usize> {
            h.subscribers(hash(key), key)
                .map(|i| h.sub(i).conn)
                .collect()
        };
        assert_eq!(conns(&h, b"k"), [1, 2]);
        assert_eq!(conns(&h, b"j"), [2]);
        assert!(h.unsubscribe(1, a));
        assert!(!h.unsubscribe(1, a), "already gone");
        assert!(h.unsubscribe(2, b));
        assert!(h.is_idle());
    }

    #[test]
    fn removal_from_the_middle_keeps_every_other_member_reachable() {
        let mut h = Hub::default();
        let ids: Vec<SubId> = (0..10)
            .map(|_| h.subscribe(3, hash(b"k"), Some(b"k")).unwrap())
            .collect();
        for w in 0..10 {
            h.add_wait(waiter(3, b"k", Some(&[w])), None).unwrap();
        }
        for &id in ids.iter().step_by(3) {
            assert!(h.unsubscribe(3, id));
        }
        let mut left: Vec<SubId> = h
            .subscribers(hash(b"k"), b"k")
            .map(|i| h.sub(i).id)
            .collect();
        left.sort_unstable();
        let want: Vec<SubId> = ids.iter().copied().filter(|i| (i - 1) % 3 != 0).collect();
        assert_eq!(left, want);
        assert_eq!(h.subs_of(3).len(), want.len());
        // Wake values 4 then 0: the rest stay registered and reachable.
        assert_eq!(h.take_woken(hash(b"k"), b"k", Some(&[4])).len(), 1);
        assert_eq!(h.take_woken(hash(b"k"), b"k", Some(&[0])).len(), 1);
        assert_eq!(h.waits_of(3), 8);
        assert_eq!(h.take_woken(hash(b"k"), b"k", None).len(), 0);
        h.close_conn(3);
        assert!(h.is_idle());
        assert_eq!(h.subscribers(hash(b"k"), b"k").count(), 0);
    }

    #[test]
    fn limits_per_connection_and_ids_skip_those_in_use() {
        let mut h = Hub::default();
        for _ in 0..MAX_SUBS_PER_CONN {
            h.subscribe(0, 1, None).unwrap();
        }
        assert_eq!(h.subscribe(0, 1, None), Err(Full));
        assert!(h.unsubscribe(0, 2));
        h.conns[0].next_sub = 1;
        assert_eq!(h.subscribe(0, 1, None), Ok(2), "1 is in use, 2 is free");
        for i in 0..MAX_WAITS_PER_CONN {
            h.add_wait(waiter(5, &i.to_le_bytes(), None), None).unwrap();
        }
        assert_eq!(h.add_wait(waiter(5, b"x", None), None), Err(Full));
        assert_eq!(h.take_all_waits().len(), MAX_WAITS_PER_CONN);
        assert_eq!(h.waits_of(5), 0);
    }

    #[test]
    fn lag_counts_per_connection() {
        let mut h = Hub::default();
        let a = h.subscribe(0, 1, None).unwrap();
        h.subscribe(0, 1, None).unwrap();
        let idx = h.subs_of(0)[0];
        assert!(!h.is_lagging(0));
        h.add_lag(idx);
        h.add_lag(idx);
        assert!(h.is_lagging(0));
        assert_eq!(h.take_lag(idx), 2);
        assert_eq!(h.take_lag(idx), 0);
        assert!(!h.is_lagging(0));
        h.add_lag(idx);
        assert!(h.unsubscribe(0, h.sub(idx).id));
        assert!(
            !h.is_lagging(0),
            "an unsubscribed lagging subscription no longer counts"
        );
        let _ = a;
    }

    #[test]
    fn a_change_wakes_only_the_waits_for_its_value_and_a_removal_none_of_them() {
        let mut h = Hub::default();
        for i in 0..100u8 {
            h.add_wait(waiter(1, b"k", Some(&[i])), None).unwrap();
        }
        h.add_wait(waiter(2, b"k", Some(&[7])), None).unwrap();
        assert!(h.take_woken(hash(b"k"), b"k", None).is_empty());
        assert!(h.take_woken(hash(b"k"), b"k", Some(&[200])).is_empty());
        assert_eq!(
            conns_of(&h.take_woken(hash(b"k"), b"k", Some(&[7]))),
            [1, 2]
        );
        assert_eq!(h.wait_count(), 99);
        h.close_conn(1);
        assert!(h.is_idle());
        assert_eq!(h.value_waits, 0);
    }

    #[test]
    fn deadlines_of_ended_waits_do_not_pile_up() {
        let mut h = Hub::default();
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..10_000 {
            h.add_wait(waiter(1, b"k", None), Some(far)).unwrap();
            assert_eq!(h.take_woken(hash(b"k"), b"k", Some(b"v")).len(), 1);
        }
        assert!(
            h.deadlines.len() <= 2 * h.wait_count() + 65,
            "{}",
            h.deadlines.len()
        );
    }
}
