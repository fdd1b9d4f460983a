//! Leases: who computes a missing key, and who waits for it (`GET_OR_LEASE`, `RELEASE`).
//!
//! A lease belongs to one request of one connection (its *holder*) and lasts until one of:
//!
//! - the key is stored by anyone (any write: `SET`, `SET_TTL`, `INCR`...): the lease ends and
//!   every waiter gets the stored value ([`Leases::fulfil`]);
//! - its holder releases it (`RELEASE`, its computation failed), its holder's connection
//!   closes, or its deadline passes: the lease passes to the first waiter, in the order the
//!   waiters asked, with that waiter's own timeout ([`Leases::release`], [`Leases::close_conn`],
//!   [`Leases::take_expired`]); with no waiter left it simply ends.
//!
//! While a lease exists its key is absent (every store ends it), so removals, expiry and clears
//! do not touch leases.
//!
//! Every operation costs O(1) per lease or waiter it touches, never a search through a list a
//! client can make long: leases and waiters live in slabs; a lease is found by the store's key
//! hash; a lease's waiters form a doubly linked queue (FIFO handoff, O(1) removal of a waiter
//! whose connection closes); each connection lists the leases it holds and the waits it has,
//! and every member records its position there, so it leaves with a `swap_remove`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use slab::Slab;

use super::hub::MAX_WAITS_PER_CONN;
use crate::protocol::RequestId;

/// No index (an end of a waiter queue).
const NIL: usize = usize::MAX;

/// A request of a connection: a lease's holder, or a waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The connection's slot.
    pub conn: usize,
    /// The `GET_OR_LEASE` request's id (pushes and `RELEASE` name it).
    pub req: RequestId,
}

struct Lease {
    hash: u64,
    key: Box<[u8]>,
    holder: Ticket,
    /// Tells the live deadline in the heap from those of earlier holders.
    serial: u64,
    /// First and last waiter ([`NIL`] when none).
    head: usize,
    tail: usize,
    /// Position in the holder connection's `held` list.
    pos: usize,
}

struct Waiter {
    who: Ticket,
    timeout: Duration,
    lease: usize,
    prev: usize,
    next: usize,
    /// Position in the connection's `waiting` list.
    pos: usize,
}

#[derive(Default)]
struct ConnLeases {
    held: Vec<usize>,
    waiting: Vec<usize>,
}

/// What a `GET_OR_LEASE` of a missing key gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request holds the key's lease now.
    Leased,
    /// Another request holds it: this one waits.
    Waiting,
    /// The connection has [`MAX_WAITS_PER_CONN`] leases and lease waits already.
    Busy,
}

/// `RELEASE` by a connection that does not hold that lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotHolder;

/// Every lease and lease waiter of a server.
#[derive(Default)]
pub struct Leases {
    leases: Slab<Lease>,
    by_key: HashTable<usize>,
    waiters: Slab<Waiter>,
    /// Indexed by connection slot.
    conns: Vec<ConnLeases>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    serial: u64,
    /// Leases passed on to a waiter since start (release, close, timeout).
    pub handoffs: u64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("held", &self.leases.len())
            .field("waiting", &self.waiters.len())
            .finish()
    }
}

/// Appends `idx` to a connection's list; returns its position.
fn push_pos(list: &mut Vec<usize>, idx: usize) -> usize {
    list.push(idx);
    list.len() - 1
}

impl Leases {
    fn conn(&mut self, conn: usize) -> &mut ConnLeases {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, ConnLeases::default);
        }
        &mut self.conns[conn]
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let leases = &self.leases;
        self.by_key.find(hash, |&i| *leases[i].key == *key).copied()
    }

    /// Leases held now.
    pub fn held(&self) -> usize {
        self.leases.len()
    }

    /// Requests waiting for a lease's value now.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Whether there is no lease at all.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// `who` asks for the lease of missing key `key`: it gets it if nobody holds it (until
    /// `now + timeout`), else it waits behind the waiters already there (also when its own
    /// connection holds the lease: another request of the same connection computes).
    pub fn request(
        &mut self,
        who: Ticket,
        hash: u64,
        key: &[u8],
        timeout: Duration,
        now: Instant,
    ) -> Outcome {
        let cl = self.conn(who.conn);
        if cl.held.len() + cl.waiting.len() >= MAX_WAITS_PER_CONN {
            return Outcome::Busy;
        }
        match self.find(hash, key) {
            Some(lease) => {
                let w = self.waiters.insert(Waiter {
                    who,
                    timeout,
                    lease,
                    prev: self.leases[lease].tail,
                    next: NIL,
                    pos: 0,
                });
                let l = &mut self.leases[lease];
                match l.tail {
                    NIL => l.head = w,
                    t => self.waiters[t].next = w,
                }
                l.tail = w;
                self.waiters[w].pos = push_pos(&mut self.conns[who.conn].waiting, w);
                Outcome::Waiting
            }
            None => {
                let idx = self.leases.insert(Lease {
                    hash,
                    key: key.into(),
                    holder: who,
                    serial: 0,
                    head: NIL,
                    tail: NIL,
                    pos: 0,
                });
                let leases = &self.leases;
                self.by_key.insert_unique(hash, idx, |&i| leases[i].hash);
                self.hold(idx, who, timeout, now);
                Outcome::Leased
            }
        }
    }

    /// Makes `who` the holder of lease `idx` until `now + timeout`.
    fn hold(&mut self, idx: usize, who: Ticket, timeout: Duration, now: Instant) {
        self.serial += 1;
        let pos = push_pos(&mut self.conn(who.conn).held, idx);
        let l = &mut self.leases[idx];
        (l.holder, l.serial, l.pos) = (who, self.serial, pos);
        if let Some(d) = now.checked_add(timeout) {
            self.deadlines.push(Reverse((d, idx, self.serial)));
            // Deadlines of leases that ended otherwise stay in the heap until they come up:
            // drop them once they are half of it, so they cost O(1) amortized, not memory.
            if self.deadlines.len() > 2 * self.leases.len() + 64 {
                let leases = &self.leases;
                self.deadlines
                    .retain(|Reverse((_, i, s))| leases.get(*i).is_some_and(|l| l.serial == *s));
            }
        }
    }

    /// Takes lease `idx` from its holder's connection list.
    fn unhold(&mut self, idx: usize) {
        let (conn, pos) = {
            let l = &self.leases[idx];
            (l.holder.conn, l.pos)
        };
        let held = &mut self.conns[conn].held;
        held.swap_remove(pos);
        if let Some(&moved) = held.get(pos) {
            self.leases[moved].pos = pos;
        }
    }

    /// Removes waiter `w` from its lease's queue, its connection's list and the slab.
    fn unlink_waiter(&mut self, w: usize) -> Waiter {
        let waiter = self.waiters.remove(w);
        match waiter.prev {
            NIL => self.leases[waiter.lease].head = waiter.next,
            p => self.waiters[p].next = waiter.next,
        }
        match waiter.next {
            NIL => self.leases[waiter.lease].tail = waiter.prev,
            n => self.waiters[n].prev = waiter.prev,
        }
        let waiting = &mut self.conns[waiter.who.conn].waiting;
        waiting.swap_remove(waiter.pos);
        if let Some(&moved) = waiting.get(waiter.pos) {
            self.waiters[moved].pos = waiter.pos;
        }
        waiter
    }

    /// Removes lease `idx` (already taken from its holder's list); returns its waiters, in
    /// queue order.
    fn remove(&mut self, idx: usize) -> Vec<Ticket> {
        let mut out = Vec::new();
        while self.leases[idx].head != NIL {
            out.push(self.unlink_waiter(self.leases[idx].head).who);
        }
        let l = self.leases.remove(idx);
        if let Ok(e) = self.by_key.find_entry(l.hash, |&i| i == idx) {
            e.remove();
        }
        out
    }

    /// Passes lease `idx` (already taken from its holder's list) to its first waiter, or ends
    /// it when none is left; returns the new holder.
    fn hand_off(&mut self, idx: usize, now: Instant) -> Option<Ticket> {
        let head = self.leases[idx].head;
        if head == NIL {
            self.remove(idx);
            return None;
        }
        let w = self.unlink_waiter(head);
        self.hold(idx, w.who, w.timeout, now);
        self.handoffs += 1;
        Some(w.who)
    }

    /// The key was stored: its lease (if any) ends; returns the waiters, who get the value.
    pub fn fulfil(&mut self, hash: u64, key: &[u8]) -> Vec<Ticket> {
        let Some(idx) = self.find(hash, key) else {
            return Vec::new();
        };
        self.unhold(idx);
        self.remove(idx)
    }

    /// `RELEASE` of the lease request `who.req` got: passes it on (returns the new holder, if a
    /// waiter was there), or [`NotHolder`] if `who` does not hold the key's lease (it never
    /// did, it timed out, or the key was stored meanwhile).
    pub fn release(
        &mut self,
        who: Ticket,
        hash: u64,
        key: &[u8],
        now: Instant,
    ) -> Result<Option<Ticket>, NotHolder> {
        let idx = self.find(hash, key).ok_or(NotHolder)?;
        if self.leases[idx].holder != who {
            return Err(NotHolder);
        }
        self.unhold(idx);
        Ok(self.hand_off(idx, now))
    }

    /// Connection `conn` closed: its waits end, and each lease it held passes on; returns the
    /// new holders.
    pub fn close_conn(&mut self, conn: usize, now: Instant) -> Vec<Ticket> {
        if conn >= self.conns.len() {
            return Vec::new();
        }
        // Its waiters first, so that none of its leases passes to itself.
        while let Some(&w) = self.conns[conn].waiting.last() {
            self.unlink_waiter(w);
        }
        let held = std::mem::take(&mut self.conns[conn].held);
        held.into_iter()
            .filter_map(|idx| self.hand_off(idx, now))
            .collect()
    }

    /// Leases whose deadline is at or before `now` pass on; returns the new holders.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Ticket> {
        let mut out = Vec::new();
        while let Some(&Reverse((d, idx, serial))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.leases.get(idx).is_some_and(|l| l.serial == serial) {
                self.unhold(idx);
                out.extend(self.hand_off(idx, now));
            }
        }
        out
    }

    /// The earliest lease deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of leases that ended or passed on, so they cause no idle wake-ups.
        while let Some(&Reverse((d, idx, serial))) = self.deadlines.peek() {
            if self.leases.get(idx).is_some_and(|l| l.serial == serial) {
                return Some(d);
            }
            self.deadlines.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &[u8]) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key)
    }

    fn t(conn: usize, req: RequestId) -> Ticket {
        Ticket { conn, req }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn first_gets_the_lease_then_waiters_queue_and_a_store_serves_them_all() {
        let mut l = Leases::default();
        let now = Instant::now();
        let k = b"k";
        assert_eq!(l.request(t(1, 10), hash(k), k, T, now), Outcome::Leased);
        assert_eq!(l.request(t(2, 20), hash(k), k, T, now), Outcome::Waiting);
        assert_eq!(l.request(t(1, 11), hash(k), k, T, now), Outcome::Waiting);
        assert_eq!(
            l.request(t(3, 30), hash(b"j"), b"j", T, now),
            Outcome::Leased
        );
        assert_eq!((l.held(), l.waiting()), (2, 2));
        assert_eq!(l.fulfil(hash(k), k), [t(2, 20), t(1, 11)]);
        assert_eq!(l.fulfil(hash(k), k), []);
        assert_eq!((l.held(), l.waiting()), (1, 0));
        assert_eq!(l.release(t(1, 10), hash(b"j"), b"j", now), Err(NotHolder));
        assert_eq!(l.release(t(3, 30), hash(b"j"), b"j", now), Ok(None));
        assert!(l.is_empty());
    }

    #[test]
    fn release_close_and_timeout_hand_off_in_order() {
        let mut l = Leases::default();
        let now = Instant::now();
        let k = b"k";
        let h = hash(k);
        l.request(t(1, 1), h, k, T, now);
        for c in 2..=5 {
            assert_eq!(
                l.request(t(c, c as u32), h, k, Duration::from_millis(c as u64), now),
                Outcome::Waiting
            );
        }
        assert_eq!(
            l.release(t(1, 2), h, k, now),
            Err(NotHolder),
            "wrong request id"
        );
        assert_eq!(l.release(t(1, 1), h, k, now), Ok(Some(t(2, 2))));
        assert_eq!(l.handoffs, 1);
        // Waiter 3 leaves: the lease skips it.
        assert!(l.close_conn(3, now).is_empty());
        assert_eq!(l.close_conn(2, now), [t(4, 4)]);
        // Holder 4's own timeout is 4 ms.
        assert_eq!(l.next_deadline(), Some(now + Duration::from_millis(4)));
        assert!(l.take_expired(now + Duration::from_millis(3)).is_empty());
        assert_eq!(l.take_expired(now + Duration::from_millis(4)), [t(5, 5)]);
        let later = now + Duration::from_millis(4);
        assert_eq!(l.next_deadline(), Some(later + Duration::from_millis(5)));
        assert_eq!(l.take_expired(later + Duration::from_millis(5)), []);
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
        assert_eq!(l.handoffs, 3);
    }

    #[test]
    fn a_closing_connection_never_gets_its_own_lease_and_lists_stay_consistent() {
        let mut l = Leases::default();
        let now = Instant::now();
        // Connection 1 holds a and waits on b; connection 2 holds b and waits on a twice.
        l.request(t(1, 1), hash(b"a"), b"a", T, now);
        l.request(t(2, 2), hash(b"b"), b"b", T, now);
        l.request(t(1, 3), hash(b"b"), b"b", T, now);
        l.request(t(2, 4), hash(b"a"), b"a", T, now);
        l.request(t(2, 5), hash(b"a"), b"a", T, now);
        assert_eq!(l.close_conn(1, now), [t(2, 4)]);
        assert_eq!(l.fulfil(hash(b"b"), b"b"), []);
        assert_eq!(l.fulfil(hash(b"a"), b"a"), [t(2, 5)]);
        assert!(l.is_empty());
        assert_eq!(l.waiting(), 0);
        assert!(l
            .conns
            .iter()
            .all(|c| c.held.is_empty() && c.waiting.is_empty()));
    }

    #[test]
    fn many_waiters_leave_from_the_middle() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (k, h) = (b"k", hash(b"k"));
        l.request(t(0, 0), h, k, T, now);
        for c in 1..=100 {
            l.request(t(c, 0), h, k, T, now);
        }
        for c in (1..=100).step_by(2) {
            assert!(l.close_conn(c, now).is_empty());
        }
        let got: Vec<usize> = l.fulfil(h, k).iter().map(|w| w.conn).collect();
        assert_eq!(got, (2..=100).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn per_connection_limit() {
        let mut l = Leases::default();
        let now = Instant::now();
        for i in 0..MAX_WAITS_PER_CONN {
            let k = (i as u32).to_le_bytes();
            assert_eq!(l.request(t(7, 0), hash(&k), &k, T, now), Outcome::Leased);
        }
        assert_eq!(l.request(t(7, 0), hash(b"x"), b"x", T, now), Outcome::Busy);
        assert_eq!(l.close_conn(7, now), []);
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
        assert!(l.deadlines.is_empty(), "stale deadlines are dropped");
    }

    #[test]
    fn deadlines_of_ended_leases_do_not_pile_up() {
        let mut l = Leases::default();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(
                l.request(t(1, 1), hash(b"k"), b"k", T, now),
                Outcome::Leased
            );
            assert_eq!(l.fulfil(hash(b"k"), b"k"), []);
        }
        assert!(l.deadlines.len() <= 65, "{}", l.deadlines.len());
    }
}
