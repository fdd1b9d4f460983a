//! Fan-out: a change of a key reaches its subscriptions (events) and its waits (wakes).
//!
//! Each delivery costs O(1): subscriptions and waits are found through the [`Hub`]'s
//! per-key lists by slab index, a connection is queued for the end-of-turn flush through a
//! flag, not a search. Events for a connection whose queued output is over [`SUB_OUT_LIMIT`]
//! are dropped and counted per subscription; the count goes out as a `Lagged` push before the
//! subscription's next event, or as soon as the connection's output drains.
//!
//! Order on one connection: a request's reply is queued before the events and wakes it
//! causes, so a client that sets a key it waits on sees the `SET` reply, then the `WOKEN`.
//!
//! [`Hub`]: super::hub::Hub

use std::io::{Read, Write};

use super::connection::Connection;
use super::engine::{Engine, SUB_OUT_LIMIT};
use super::hub::Waiter;
use crate::protocol::{self, Push, PushKind, WakeReason};
use crate::store::Entry;

/// What a change looks like to listeners.
pub(super) enum Change<'a> {
    /// The key now holds this entry (set, incr).
    Set(&'a Entry),
    /// The key was removed.
    Removed(&'a [u8]),
    /// The key's TTL ran out and it was removed.
    Expired(&'a [u8]),
}

/// Queues `change` as a push for subscription `id`: a `Set` sends key and value from the
/// stored entry, not copied.
fn queue_change<S>(c: &mut Connection<S>, id: u32, change: &Change<'_>) {
    match change {
        Change::Set(e) => {
            let (key_len, value_len) = (e.key_len(), e.value().len());
            c.out
                .with_buf(|b| protocol::encode_set_push_head(b, id, key_len, value_len));
            c.out.push_shared((*e).clone(), 0, key_len + value_len);
        }
        Change::Removed(k) | Change::Expired(k) => {
            let kind = match change {
                Change::Expired(_) => PushKind::Expired,
                _ => PushKind::Removed,
            };
            let p = Push {
                kind,
                id,
                key: k,
                value: &[],
                arg: 0,
            };
            c.out.with_buf(|b| p.encode(b));
        }
    }
}

impl<S: Read + Write> Engine<S> {
    /// Queues an event for subscription `idx` (a [`Change`], or `Cleared` when `change` is
    /// `None`), after a `Lagged` count if events were dropped before; or, when its
    /// connection's queued output is over [`SUB_OUT_LIMIT`], drops it and counts it.
    fn deliver(&mut self, idx: usize, change: Option<&Change<'_>>) {
        let (conn, id) = {
            let s = self.hub.sub(idx);
            (s.conn, s.id)
        };
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.out.pending() > SUB_OUT_LIMIT {
            self.hub.add_lag(idx);
            self.stats.events_dropped += 1;
            return;
        }
        let lagged = self.hub.take_lag(idx);
        if lagged > 0 {
            c.queue_signal(PushKind::Lagged, id, lagged);
        }
        match change {
            Some(change) => queue_change(c, id, change),
            None => c.queue_signal(PushKind::Cleared, id, 0),
        }
        self.stats.events += 1;
        self.mark_dirty(conn);
    }

    /// Tells subscribers and waiters of `hash`/key about a change.
    pub(super) fn publish(&mut self, hash: u64, change: Change<'_>) {
        let key = match &change {
            Change::Set(e) => e.key(),
            Change::Removed(k) | Change::Expired(k) => k,
        };
        // Delivery changes no registration, so the indices stay valid while they are walked;
        // they are copied out only because delivering needs the hub mutably (lag counts).
        let subs: smallvec::SmallVec<[usize; 8]> = self.hub.subscribers(hash, key).collect();
        for idx in subs {
            self.deliver(idx, Some(&change));
        }
        let value = match &change {
            Change::Set(e) => Some(e.value()),
            Change::Removed(_) | Change::Expired(_) => None,
        };
        for w in self.hub.take_woken(hash, key, value) {
            self.wake(w, WakeReason::Event);
        }
        if let Change::Set(e) = change {
            self.fulfil_leases(hash, e);
        }
    }

    /// Tells every subscription that the cache was cleared, and ends every wait (reason
    /// `Cleared`).
    pub(super) fn publish_clear(&mut self) {
        let subs: Vec<usize> = self.hub.all_subs().collect();
        for idx in subs {
            self.deliver(idx, None);
        }
        for w in self.hub.take_all_waits() {
            self.wake(w, WakeReason::Cleared);
        }
    }

    /// Ends wait `w` (already taken from the hub) with `reason`.
    pub(super) fn wake(&mut self, w: Waiter, reason: WakeReason) {
        let Some(c) = self.conns.get_mut(w.conn) else {
            return;
        };
        c.queue_signal(PushKind::Woken, w.req, reason as u64);
        self.mark_dirty(w.conn);
    }

    /// After a drain: tell the lagging subscriptions of this connection how many events they
    /// missed. Costs nothing for a connection with none lagging.
    pub(super) fn report_lag(&mut self, slot: usize) {
        if !self.hub.is_lagging(slot) {
            return;
        }
        let subs = self.hub.subs_of(slot).to_vec();
        for idx in subs {
            let lagged = self.hub.take_lag(idx);
            if lagged > 0 {
                let id = self.hub.sub(idx).id;
                self.conns[slot].queue_signal(PushKind::Lagged, id, lagged);
            }
        }
        self.mark_dirty(slot);
    }
}
