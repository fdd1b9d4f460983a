//! The TTL family: `SET_TTL`, `EXPIRE`, `PERSIST`, `TTL`.
//!
//! A TTL is counted in ms from when the server applies the request, on the server's
//! monotonic clock, and must be 1 ..= [`MAX_TTL_MS`]; anything else is `BAD_TTL` and changes
//! nothing. The rule for other writes: `SET` and `INCR` keep the key's TTL; `SET_TTL` and
//! `EXPIRE` replace it; `PERSIST` removes it; a key that expired and is stored again is a new
//! key, with no TTL unless the write gives one.

use std::io::{Read, Write};
use std::time::Instant;

use crate::protocol::{ErrorCode, Reply, RequestId, MAX_TTL_MS, NO_TTL};
use crate::server::engine::Engine;
use crate::server::fanout::Change;
use crate::store::NO_HINT;

/// The deadline `ttl_ms` from `now`, if the TTL is in range.
pub(super) fn deadline(now: u64, ttl_ms: u64) -> Option<u64> {
    (1..=MAX_TTL_MS).contains(&ttl_ms).then(|| now + ttl_ms)
}

impl<S: Read + Write> Engine<S> {
    /// `SET_TTL`: as `SET`, and the key expires `ttl_ms` from now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_ttl(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        hint: u32,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        now: Instant,
    ) {
        let Some(at) = deadline(self.clock_ceil(now), ttl_ms) else {
            return self.conns[slot].queue_error(id, ErrorCode::BadTtl, 0);
        };
        if !self.fits_budget(slot, id, key, value) {
            return;
        }
        self.conns[slot].queue_reply(id, &Reply::Done);
        self.expire_if_due(hash, key, hint);
        let e = self
            .store
            .set_with_deadline_hinted(hash, key, value, at, hint);
        if !self.hub.is_idle() {
            let e = e.to_entry();
            self.publish(hash, Change::Set(&e));
        }
    }

    /// `EXPIRE`: gives an existing key a TTL; no event (the value did not change).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn expire(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        ttl_ms: u64,
        now: Instant,
    ) {
        let Some(at) = deadline(self.clock_ceil(now), ttl_ms) else {
            return self.conns[slot].queue_error(id, ErrorCode::BadTtl, 0);
        };
        self.expire_if_due(hash, key, NO_HINT);
        let done = self.store.set_deadline(hash, key, Some(at));
        self.conns[slot].queue_reply(id, &Reply::Bool(done));
    }

    /// `PERSIST`: takes a key's TTL away; no event.
    pub(super) fn persist(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8]) {
        self.expire_if_due(hash, key, NO_HINT);
        let done = self.store.set_deadline(hash, key, None);
        self.conns[slot].queue_reply(id, &Reply::Bool(done));
    }

    /// `TTL`: nil for a missing key, `NO_TTL` for a key without one, else the ms left (at
    /// least 1: a key with no time left is already gone).
    pub(super) fn ttl(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8], now: Instant) {
        let now = self.clock_ceil(now);
        let reply = match self.store.deadline(hash, key) {
            None => Reply::Nil,
            Some(None) => Reply::Uint(NO_TTL),
            Some(Some(d)) => Reply::Uint(d.saturating_sub(now).max(1)),
        };
        self.conns[slot].queue_reply(id, &reply);
    }
}
