//! Expiry on time: keys whose TTL runs out are removed, and their listeners told, at the
//! millisecond the server's timers fire, not when a client happens to touch them.
//!
//! The store files every key with a TTL in a timing wheel (see `store::wheel`), so the next
//! deadline is known in O(1) and each key costs O(1) to expire, however many keys have TTLs.
//! The loop's poll wakes at the next deadline ([`Engine::next_deadline`]); each turn then
//! expires at most [`EXPIRE_PER_TURN`] keys, sending `EXPIRED` to the key's subscriptions
//! and every-key subscriptions and ending its `WAIT`s (reason `EVENT`), and leaves the rest
//! for the following turns, which come at once: a mass expiry never holds the loop for long,
//! and other clients' requests are served between its batches.
//!
//! Reads never see a key whose deadline has passed, even before it is removed: the store
//! compares deadlines with its clock, which the engine sets from `now` before every batch
//! of requests. A write to such a key expires it first (its listeners get `EXPIRED`, then
//! what the write does), and `COUNT` expires every due key before it counts.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::fanout::Change;
use crate::store::Gone;

/// Most keys expired in one turn of the loop.
pub const EXPIRE_PER_TURN: usize = 2048;

/// `d` in whole ms, rounded up.
fn ceil_ms(d: Duration) -> u64 {
    d.as_millis() as u64 + u64::from(d.subsec_nanos() % 1_000_000 != 0)
}

impl<S: Read + Write> Engine<S> {
    /// The store's clock at `now`, rounded up: deadlines count from it, so a key never
    /// expires before its TTL has run out (it may expire up to 1 ms after, plus the time the
    /// loop takes to wake).
    pub(super) fn clock_ceil(&self, now: Instant) -> u64 {
        if now == self.window.0 {
            return self.window.1; // the turn's `now`, worked out by `set_time`
        }
        ceil_ms(now.saturating_duration_since(self.started))
    }

    /// The instant of ms `ms` on the store's clock.
    pub(super) fn instant_at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// Moves the store's clock to `now`: ms since the engine started.
    #[inline]
    pub(super) fn set_time(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.started);
        self.store.set_time(since.as_millis() as u64);
        self.window = (now, ceil_ms(since));
    }

    /// Expires up to `limit` due keys; returns whether more are due.
    pub(super) fn expire_due(&mut self, limit: usize) -> bool {
        let mut expired = Vec::new();
        let more = self.store.expire_due(limit, |e| expired.push(e));
        self.stats.expired += expired.len() as u64;
        if !self.hub.is_idle() {
            for e in &expired {
                let hash = self.store.hash(e.key());
                self.publish(hash, Change::Expired(e.key()));
            }
        }
        more
    }

    /// Tells the listeners of the keys the store let go to keep within its budget (evicted,
    /// or expired first because they were due), and counts them. Called after every request.
    #[cold]
    pub(super) fn publish_gone(&mut self) {
        self.stats.evicted += self.store.take_untold();
        let mut gone = self.store.take_gone();
        for g in &gone {
            let (e, change) = match g {
                Gone::Evicted(e) => {
                    self.stats.evicted += 1;
                    (e, Change::Evicted(e.key()))
                }
                Gone::Expired(e) => {
                    self.stats.expired += 1;
                    (e, Change::Expired(e.key()))
                }
            };
            if !self.hub.is_idle() {
                let hash = self.store.hash(e.key());
                self.publish(hash, change);
            }
        }
        gone.clear();
        self.store.recycle_gone(gone);
    }

    /// Expires `key` now if its TTL ran out but the timers have not come to it yet, so a
    /// write to it is seen after its `EXPIRED`; `hint` is the window's hint for the key
    /// ([`NO_HINT`](crate::store::NO_HINT) where there is none). (Inlined down to one test
    /// when no key has a TTL: every write calls it; with TTLs the store answers without a
    /// lookup while no key can be due yet.)
    #[inline(always)]
    pub(super) fn expire_if_due(&mut self, hash: u64, key: &[u8], hint: u32) {
        if self.store.has_deadlines() {
            self.expire_now_if_due(hash, key, hint);
        }
    }

    fn expire_now_if_due(&mut self, hash: u64, key: &[u8], hint: u32) {
        if self.store.is_due_hinted(hash, key, hint) {
            self.store.remove(hash, key);
            self.stats.expired += 1;
            if !self.hub.is_idle() {
                self.publish(hash, Change::Expired(key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_ms_rounds_any_part_of_a_millisecond_up() {
        for (d, ms) in [
            (Duration::ZERO, 0),
            (Duration::from_nanos(1), 1),
            (Duration::from_millis(1), 1),
            (Duration::from_nanos(1_000_001), 2),
            (Duration::new(2, 500_000_000), 2_500),
            (Duration::new(2, 999_999_999), 3_000),
        ] {
            assert_eq!(ceil_ms(d), ms, "{d:?}");
            assert_eq!(u128::from(ceil_ms(d)), d.as_nanos().div_ceil(1_000_000));
        }
    }
}
