//! The `stats` report: the engine's counters (plain integers bumped on the hot path; nothing
//! logs there) with the sizes of the moment, as one [`ServerStats`], the struct the clients
//! parse the `STATS` reply into, so the two cannot drift apart.

use std::io::{Read, Write};
use std::time::Instant;

use super::engine::Engine;
use crate::ServerStats;

impl<S: Read + Write> Engine<S> {
    /// The report at `now`: the counters kept in `self.stats` (accepted, requests, gets,
    /// hits, bytes, events, protocol errors, expired) and the sizes of the moment.
    pub fn stats(&self, now: Instant) -> ServerStats {
        ServerStats {
            pid: std::process::id(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            keys: self.store.len() as u64,
            store_bytes: self.store.allocated_bytes() as u64,
            record_bytes: self.store.live_bytes() as u64,
            connections: self.conns.len() as u64,
            waits: self.hub.wait_count() as u64,
            subscriptions: self.hub.sub_count() as u64,
            max_value_len: self.config.limits.max_value.into(),
            ttl_keys: self.store.ttl_keys() as u64,
            leases: self.hub.leases.held() as u64,
            lease_waiters: self.hub.leases.waiting() as u64,
            lease_handoffs: self.hub.leases.handoffs,
            ..self.stats.clone()
        }
    }

    /// The `STATS` reply's JSON text.
    pub(super) fn stats_json(&self, now: Instant) -> String {
        // Serializing a struct of integers into a String cannot fail.
        serde_json::to_string(&self.stats(now)).unwrap_or_default()
    }
}
