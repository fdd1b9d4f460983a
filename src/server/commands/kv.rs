//! The key/value family: `GET`, `SET`, `EXISTS`, `REMOVE`, `INCR`, `CLEAR`, `COUNT`.

use std::io::{Read, Write};

use crate::protocol::{self, ErrorCode, Reply, RequestId};
use crate::server::engine::Engine;
use crate::server::fanout::Change;
use crate::store::{IncrError, NO_HINT};

impl<S: Read + Write> Engine<S> {
    /// `GET`: a value up to [`EngineConfig::copy_max`](crate::server::engine::EngineConfig)
    /// bytes is copied into the output buffer; a longer one goes from its segment to the
    /// socket, not copied.
    #[inline]
    pub(super) fn get(&mut self, slot: usize, id: RequestId, hash: u64, hint: u32, key: &[u8]) {
        self.stats.gets += 1;
        let copy_max = self.config.copy_max;
        let c = &mut self.conns[slot];
        match self.store.get_hinted(hash, key, hint) {
            Some(e) => {
                self.stats.hits += 1;
                let value = e.value();
                if value.len() <= copy_max {
                    c.out.with_buf(|b| {
                        protocol::encode_value_head(b, id, value.len());
                        b.extend_from_slice(value);
                    });
                } else {
                    c.out
                        .with_buf(|b| protocol::encode_value_head(b, id, value.len()));
                    c.out.push_shared(e.to_entry(), e.key_len(), e.len());
                }
            }
            None => c.queue_reply(id, &Reply::Nil),
        }
    }

    /// `SET`: always an event, even for the same value.
    #[inline]
    pub(super) fn set(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        hint: u32,
        key: &[u8],
        value: &[u8],
    ) {
        if !self.fits_budget(slot, id, key, value) {
            return;
        }
        self.conns[slot].queue_reply(id, &Reply::Done);
        self.expire_if_due(hash, key, hint);
        let e = self.store.set_hinted(hash, key, value, hint);
        if !self.hub.is_idle() {
            let e = e.to_entry();
            self.publish(hash, Change::Set(&e));
        }
    }

    /// Whether a value can be stored under the memory budget at all; if not, queues the
    /// `OVER_BUDGET` error (arg = the budget): nothing is stored, nothing evicted.
    #[inline]
    pub(super) fn fits_budget(
        &mut self,
        slot: usize,
        id: RequestId,
        key: &[u8],
        value: &[u8],
    ) -> bool {
        if self.store.fits(key.len(), value.len()) {
            return true;
        }
        let budget = self.store.max_memory();
        self.conns[slot].queue_error(id, ErrorCode::OverBudget, budget);
        false
    }

    /// `EXISTS`.
    #[inline]
    pub(super) fn exists(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8]) {
        let found = self.store.get(hash, key).is_some();
        self.conns[slot].queue_reply(id, &Reply::Bool(found));
    }

    /// `REMOVE`: an event only if the key existed.
    #[inline]
    pub(super) fn remove(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8]) {
        self.expire_if_due(hash, key, NO_HINT);
        let existed = self.store.remove(hash, key);
        self.conns[slot].queue_reply(id, &Reply::Bool(existed));
        if existed && !self.hub.is_idle() {
            self.publish(hash, Change::Removed(key));
        }
    }

    /// `INCR`: an error leaves the value unchanged and sends no event.
    #[inline]
    pub(super) fn incr(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8], delta: i64) {
        // The new value is at most 20 digits; the key can be long.
        if !self.fits_budget(slot, id, key, &[0; 20]) {
            return;
        }
        self.expire_if_due(hash, key, NO_HINT);
        match self.store.incr(hash, key, delta) {
            Ok((n, e)) => {
                self.conns[slot].queue_reply(id, &Reply::Int(n));
                if !self.hub.is_idle() {
                    let e = e.to_entry();
                    self.publish(hash, Change::Set(&e));
                }
            }
            Err(IncrError::NotAnInteger) => {
                self.conns[slot].queue_error(id, ErrorCode::NotAnInteger, 0)
            }
            Err(IncrError::Overflow) => self.conns[slot].queue_error(id, ErrorCode::Overflow, 0),
        }
    }

    /// `CLEAR`: every subscription gets `Cleared`, every wait ends (reason `Cleared`), even
    /// when the cache was already empty.
    pub(super) fn clear(&mut self, slot: usize, id: RequestId) {
        self.conns[slot].queue_reply(id, &Reply::Done);
        self.store.clear();
        self.publish_clear();
    }

    /// `COUNT`: exact, so every key already due is expired first.
    pub(super) fn count(&mut self, slot: usize, id: RequestId) {
        self.expire_due(usize::MAX);
        let n = self.store.len() as u64;
        self.conns[slot].queue_reply(id, &Reply::Uint(n));
    }
}
