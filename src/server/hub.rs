//! Who listens to what: subscriptions and waits, looked up with the store's key hash.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;

use crate::protocol::{RequestId, SubId};

/// A subscriber: a connection (slab key and serial) and its subscription id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The connection's slab key.
    pub conn: usize,
    /// The subscription id on that connection.
    pub sub: SubId,
}

struct KeyEntry<T> {
    hash: u64,
    key: Box<[u8]>,
    items: SmallVec<[T; 2]>,
}

/// A map from key to a small list, keyed by the store's hash (hash once).
struct KeyMap<T>(HashTable<KeyEntry<T>>);

impl<T: PartialEq> KeyMap<T> {
    fn new() -> Self {
        KeyMap(HashTable::new())
    }
    fn get(&self, hash: u64, key: &[u8]) -> Option<&SmallVec<[T; 2]>> {
        self.0.find(hash, |e| &*e.key == key).map(|e| &e.items)
    }
    fn add(&mut self, hash: u64, key: &[u8], item: T) {
        match self.0.find_mut(hash, |e| &*e.key == key) {
            Some(e) => e.items.push(item),
            None => {
                let e = KeyEntry {
                    hash,
                    key: key.into(),
                    items: smallvec::smallvec![item],
                };
                self.0.insert_unique(hash, e, |e| e.hash);
            }
        }
    }
    fn remove(&mut self, hash: u64, key: &[u8], item: &T) {
        if let Ok(mut e) = self.0.find_entry(hash, |e| &*e.key == key) {
            let items = &mut e.get_mut().items;
            items.retain(|i| i != item);
            if items.is_empty() {
                e.remove();
            }
        }
    }
    fn take(&mut self, hash: u64, key: &[u8]) -> Option<SmallVec<[T; 2]>> {
        self.0
            .find_entry(hash, |e| &*e.key == key)
            .ok()
            .map(|e| e.remove().0.items)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// One pending `wait_for`.
#[derive(Debug)]
pub struct Waiter {
    /// The waiting connection's slab key.
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

/// Subscriptions and waits.
pub struct Hub {
    subs: KeyMap<Subscriber>,
    subs_all: Vec<Subscriber>,
    waits: Slab<(Waiter, u64)>,
    waits_by_key: KeyMap<usize>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    serial: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("waits", &self.waits.len())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            subs: KeyMap::new(),
            subs_all: Vec::new(),
            waits: Slab::new(),
            waits_by_key: KeyMap::new(),
            deadlines: BinaryHeap::new(),
            serial: 0,
        }
    }
}

impl Hub {
    /// Registers a subscription to `key` (`None`: every key).
    pub fn subscribe(&mut self, s: Subscriber, hash: u64, key: Option<&[u8]>) {
        match key {
            Some(k) => self.subs.add(hash, k, s),
            None => self.subs_all.push(s),
        }
    }

    /// Removes a subscription.
    pub fn unsubscribe(&mut self, s: Subscriber, hash: u64, key: Option<&[u8]>) {
        match key {
            Some(k) => self.subs.remove(hash, k, &s),
            None => self.subs_all.retain(|x| *x != s),
        }
    }

    /// The subscribers to a change of `key`: those of the key, then those of every key.
    pub fn subscribers(&self, hash: u64, key: &[u8]) -> SmallVec<[Subscriber; 4]> {
        let mut out: SmallVec<[Subscriber; 4]> = SmallVec::new();
        if let Some(v) = self.subs.get(hash, key) {
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&self.subs_all);
        out
    }

    /// Whether anyone listens at all (the fast path skips event building when not).
    pub fn is_idle(&self) -> bool {
        self.subs.0.is_empty() && self.subs_all.is_empty() && self.waits.is_empty()
    }

    /// Registers a wait; returns its slot.
    pub fn add_wait(&mut self, w: Waiter, deadline: Option<Instant>) -> usize {
        self.serial += 1;
        let (hash, key) = (w.hash, w.key.clone());
        let slot = self.waits.insert((w, self.serial));
        self.waits_by_key.add(hash, &key, slot);
        if let Some(d) = deadline {
            self.deadlines.push(Reverse((d, slot, self.serial)));
        }
        slot
    }

    /// Removes a wait (its connection closed).
    pub fn remove_wait(&mut self, slot: usize) -> Option<Waiter> {
        let (w, _) = self.waits.try_remove(slot)?;
        self.waits_by_key.remove(w.hash, &w.key, &slot);
        Some(w)
    }

    /// Takes the waits that a change of `key` ends: all of them for a removal (`value` None),
    /// those with no expected value or the expected one for a set.
    pub fn take_woken(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Vec<(usize, Waiter)> {
        let Some(slots) = self.waits_by_key.take(hash, key) else {
            return Vec::new();
        };
        let mut woken = Vec::new();
        for slot in slots {
            let fires = match (&self.waits[slot].0.expected, value) {
                (None, _) => true,
                (Some(want), Some(v)) => **want == *v,
                (Some(_), None) => false,
            };
            if fires {
                woken.push((slot, self.waits.remove(slot).0));
            } else {
                self.waits_by_key.add(hash, key, slot);
            }
        }
        woken
    }

    /// Takes every wait (a clear, or shutdown).
    pub fn take_all_waits(&mut self) -> Vec<(usize, Waiter)> {
        self.waits_by_key.clear();
        self.deadlines.clear();
        let slots: Vec<usize> = self.waits.iter().map(|(s, _)| s).collect();
        slots
            .into_iter()
            .map(|s| (s, self.waits.remove(s).0))
            .collect()
    }

    /// Takes the waits whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(usize, Waiter)> {
        let mut out = Vec::new();
        while let Some(&Reverse((d, slot, serial))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.waits.get(slot).is_some_and(|(_, s)| *s == serial) {
                out.extend(self.remove_wait(slot).map(|w| (slot, w)));
            }
        }
        out
    }

    /// The earliest wait deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of waits that already ended, so they do not cause idle wake-ups.
        while let Some(&Reverse((d, slot, serial))) = self.deadlines.peek() {
            if self.waits.get(slot).is_some_and(|(_, s)| *s == serial) {
                return Some(d);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Number of pending waits.
    pub fn wait_count(&self) -> usize {
        self.waits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiter(conn: usize, key: &[u8], expected: Option<&[u8]>) -> Waiter {
        Waiter {
            conn,
            req: conn as u32,
            hash: 7,
            key: key.into(),
            expected: expected.map(Into::into),
        }
    }

    #[test]
    fn waits_fire_by_key_and_value() {
        let mut h = Hub::default();
        h.add_wait(waiter(1, b"k", None), None);
        h.add_wait(waiter(2, b"k", Some(b"v")), None);
        h.add_wait(waiter(3, b"other", None), None);
        let w = h.take_woken(7, b"k", Some(b"x"));
        assert_eq!(w.iter().map(|w| w.1.conn).collect::<Vec<_>>(), vec![1]);
        assert!(
            h.take_woken(7, b"k", None).is_empty(),
            "a removal does not satisfy a value wait"
        );
        let w = h.take_woken(7, b"k", Some(b"v"));
        assert_eq!(w.iter().map(|w| w.1.conn).collect::<Vec<_>>(), vec![2]);
        assert_eq!(h.wait_count(), 1);
        assert_eq!(h.take_all_waits().len(), 1);
        assert!(h.is_idle());
    }

    #[test]
    fn deadlines_expire_in_order_and_skip_finished_waits() {
        let mut h = Hub::default();
        let t0 = Instant::now();
        let a = h.add_wait(waiter(1, b"a", None), Some(t0 + Duration::from_millis(10)));
        h.add_wait(waiter(2, b"b", None), Some(t0 + Duration::from_millis(20)));
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(10)));
        h.remove_wait(a);
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(20)));
        assert!(h.take_expired(t0 + Duration::from_millis(15)).is_empty());
        let e = h.take_expired(t0 + Duration::from_millis(20));
        assert_eq!(e.len(), 1);
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn subscribers_of_a_key_and_of_all() {
        let mut h = Hub::default();
        let s1 = Subscriber { conn: 1, sub: 1 };
        let s2 = Subscriber { conn: 2, sub: 1 };
        h.subscribe(s1, 7, Some(b"k"));
        h.subscribe(s2, 0, None);
        assert_eq!(h.subscribers(7, b"k").as_slice(), &[s1, s2]);
        assert_eq!(h.subscribers(7, b"j").as_slice(), &[s2]);
        h.unsubscribe(s1, 7, Some(b"k"));
        h.unsubscribe(s2, 0, None);
        assert!(h.is_idle());
    }
}
