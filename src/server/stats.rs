//! The server's counters and the `stats` reply built from them.
//!
//! Counters are plain integers bumped on the hot path; nothing logs there.

use std::io::{Read, Write};
use std::time::Instant;

use super::engine::Engine;

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
}

impl<S: Read + Write> Engine<S> {
    /// The `stats` reply's JSON text.
    pub(super) fn stats_json(&self, now: Instant) -> String {
        let s = &self.stats;
        serde_json::json!({
            "pid": std::process::id(),
            "uptime_ms": now.saturating_duration_since(self.started).as_millis() as u64,
            "keys": self.store.len(),
            "store_bytes": self.store.allocated_bytes(),
            "record_bytes": self.store.live_bytes(),
            "connections": self.conns.len(),
            "waits": self.hub.wait_count(),
            "subscriptions": self.hub.sub_count(),
            "accepted": s.accepted,
            "requests": s.requests,
            "gets": s.gets,
            "hits": s.hits,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "events": s.events,
            "events_dropped": s.events_dropped,
            "protocol_errors": s.protocol_errors,
            "max_value_len": self.config.limits.max_value,
        })
        .to_string()
    }
}
