//! The lease family: `GET_OR_LEASE` and `RELEASE`, the server side of `get_or_compute`.
//!
//! `GET_OR_LEASE` of a present key answers its value, as `GET`. Of a missing key, the first
//! request gets the key's lease (`LEASED`: its client computes the value and stores it with any
//! write) and every later one waits (`WAITING`), in order. The waiters are served by pushes
//! carrying their request id: `LEASE_VALUE` with the value when anyone stores the key, or
//! `LEASE_GRANTED` when the lease passes to them because its holder released it, its
//! connection closed, or its timeout (the holder's `arg`) ran out. State and rules:
//! [`Leases`](crate::server::leases::Leases).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::protocol::{self, ErrorCode, PushKind, Reply, RequestId};
use crate::server::engine::Engine;
use crate::server::leases::{Outcome, Ticket};
use crate::store::Entry;

impl<S: Read + Write> Engine<S> {
    /// `GET_OR_LEASE`: the value (sent as `GET` sends it), `LEASED`, `WAITING`, or `BUSY` past
    /// the per-connection limit of waits.
    pub(super) fn get_or_lease(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        timeout_ms: u64,
        now: Instant,
    ) {
        if self.store.get(hash, key).is_some() {
            return self.get(slot, id, hash, crate::store::NO_HINT, key);
        }
        self.stats.gets += 1;
        let who = Ticket {
            conn: slot,
            req: id,
        };
        let timeout = Duration::from_millis(timeout_ms);
        let c = &mut self.conns[slot];
        match self.hub.leases.request(who, hash, key, timeout, now) {
            Outcome::Leased => c.queue_reply(id, &Reply::Leased),
            Outcome::Waiting => c.queue_reply(id, &Reply::Waiting),
            Outcome::Busy => c.queue_error(id, ErrorCode::Busy, 0),
        }
    }

    /// `RELEASE`: `BOOL(true)` and the lease passes on if this connection holds the lease
    /// request `req` got; `BOOL(false)` otherwise (nothing changes).
    pub(super) fn release(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        req: RequestId,
        now: Instant,
    ) {
        let who = Ticket { conn: slot, req };
        let r = self.hub.leases.release(who, hash, key, now);
        self.conns[slot].queue_reply(id, &Reply::Bool(r.is_ok()));
        if let Ok(Some(next)) = r {
            self.grant(next);
        }
    }
}

impl<S: Read + Write> Engine<S> {
    /// Tells the new holder of a lease that it holds it (`LEASE_GRANTED`).
    fn grant(&mut self, to: Ticket) {
        if let Some(c) = self.conns.get_mut(to.conn) {
            c.queue_signal(PushKind::LeaseGranted, to.req, 0);
            self.mark_dirty(to.conn);
        }
    }

    /// The key of `e` was stored: its lease ends and every waiter gets the value
    /// (`LEASE_VALUE`, sent from the stored entry, not copied).
    pub(in crate::server) fn fulfil_leases(&mut self, hash: u64, e: &Entry) {
        if self.hub.leases.is_empty() {
            return;
        }
        let (key_len, len) = (e.key_len(), e.len());
        for w in self.hub.leases.fulfil(hash, e.key()) {
            if let Some(c) = self.conns.get_mut(w.conn) {
                c.out
                    .with_buf(|b| protocol::encode_lease_value_head(b, w.req, len - key_len));
                c.out.push_shared(e.clone(), key_len, len);
                self.mark_dirty(w.conn);
            }
        }
    }

    /// Connection `slot` is closing or closed: its lease waits end and its leases pass on.
    pub(in crate::server) fn end_leases_of(&mut self, slot: usize, now: Instant) {
        for next in self.hub.leases.close_conn(slot, now) {
            self.grant(next);
        }
    }

    /// Leases past their deadline pass on.
    pub(in crate::server) fn expire_leases(&mut self, now: Instant) {
        for next in self.hub.leases.take_expired(now) {
            self.grant(next);
        }
    }
}
