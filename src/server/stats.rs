//! The server's counters and the `stats` reply built from them.
//!
//! Counters are plain integers bumped on the hot path; nothing logs there.

use std::io::{Read, Write};
use std::time::Instant;

use super::engine::Engine;
use crate::ServerStats;

/// Counters, reported by the `stats` request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests applied.
    pub requests: u64,
    /// `get` requests.
    pub gets: u64,
    /// `get` requests that found the key.
    pub hits: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Events pushed to subscribers.
    pub events: u64,
    /// Events dropped for slow subscribers.
    pub events_dropped: u64,
    /// Connections closed for a protocol error.
    pub protocol_errors: u64,
    /// Keys removed because their TTL ran out.
    pub expired: u64,
}

impl<S: Read + Write> Engine<S> {
    /// The `stats` reply: the counters and sizes as a [`ServerStats`], in JSON (the struct
    /// clients parse it into, so the two cannot drift apart).
    pub(super) fn stats_json(&self, now: Instant) -> String {
        let s = &self.stats;
        let report = ServerStats {
            pid: std::process::id(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            keys: self.store.len() as u64,
            store_bytes: self.store.allocated_bytes() as u64,
            record_bytes: self.store.live_bytes() as u64,
            connections: self.conns.len() as u64,
            waits: self.hub.wait_count() as u64,
            subscriptions: self.hub.sub_count() as u64,
            accepted: s.accepted,
            requests: s.requests,
            gets: s.gets,
            hits: s.hits,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            events: s.events,
            events_dropped: s.events_dropped,
            protocol_errors: s.protocol_errors,
            max_value_len: self.config.limits.max_value.into(),
            expired: s.expired,
            ttl_keys: self.store.ttl_keys() as u64,
        };
        // Serializing a struct of integers into a String cannot fail.
        serde_json::to_string(&report).unwrap_or_default()
    }
}
