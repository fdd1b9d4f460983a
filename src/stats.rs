//! The server's counters, as [`UpCache::stats`](crate::UpCache::stats) returns them.
//!
//! On the wire they travel as one JSON object (the `STATS` reply, PROTOCOL.md), so a client in
//! any language can read them; this is its Rust form. Every field defaults to 0 when the
//! object lacks it, and fields this version does not know are ignored: a client parses the
//! stats of an older server (fewer fields) and of a newer one (more fields) alike.

use serde::{Deserialize, Serialize};

/// A snapshot of a server's counters.
///
/// Counters that say "since start" only grow; the others (`keys`, `connections`, `waits`,
/// `subscriptions`, the byte sizes of the store) describe the moment the server answered.
/// New fields may be added in later versions, so the struct is `#[non_exhaustive]`: read its
/// fields, and build one with [`ServerStats::default`] where a test needs one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ServerStats {
    /// The server's process id.
    pub pid: u32,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// Keys stored now.
    pub keys: u64,
    /// Bytes the store has allocated for its records: segments (with their garbage and unused
    /// room), slots and hash indexes.
    pub store_bytes: u64,
    /// Bytes of the stored records: each key and value plus one to ten bytes of lengths.
    pub record_bytes: u64,
    /// Client connections open now (request and event connections alike).
    pub connections: u64,
    /// Waits (`wait_for`) registered and not yet ended.
    pub waits: u64,
    /// Subscriptions registered now (0 from a server that does not report them).
    pub subscriptions: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Requests served since start.
    pub requests: u64,
    /// `GET` requests since start.
    pub gets: u64,
    /// `GET` requests that found their key, since start.
    pub hits: u64,
    /// Bytes read from clients since start.
    pub bytes_in: u64,
    /// Bytes written to clients since start.
    pub bytes_out: u64,
    /// Events delivered to subscriptions since start.
    pub events: u64,
    /// Events dropped since start because a subscriber fell behind (each one is reported to
    /// its subscriber in a `Lagged` count).
    pub events_dropped: u64,
    /// Requests refused as malformed since start (each closes its connection).
    pub protocol_errors: u64,
    /// The longest value this server accepts, in bytes.
    pub max_value_len: u64,
    /// Keys removed because their TTL ran out, since the server started.
    pub expired: u64,
    /// Keys that have a TTL now.
    pub ttl_keys: u64,
    /// Leases of `get_or_compute` held now (one per missing key being computed).
    pub leases: u64,
    /// `get_or_compute` callers waiting now for a leased key's value.
    pub lease_waiters: u64,
    /// Leases passed on to a waiting caller since start (released after a failure, holder's
    /// connection closed, or timed out).
    pub lease_handoffs: u64,
}

impl ServerStats {
    /// Parses the JSON object of a `STATS` reply. Only an object: serde would also take an
    /// array as the fields in order, which no server sends.
    pub(crate) fn from_json(text: &str) -> serde_json::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        if !v.is_object() {
            return Err(serde::de::Error::custom("the stats are not a JSON object"));
        }
        serde_json::from_value(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_todays_object() {
        let s = ServerStats::from_json(
            r#"{"pid":7,"uptime_ms":12,"keys":3,"store_bytes":4096,"record_bytes":40,
               "connections":2,"waits":11,"accepted":5,"requests":100,"gets":60,"hits":50,
               "bytes_in":1000,"bytes_out":2000,"events":4,"events_dropped":1,
               "protocol_errors":0,"max_value_len":67108864}"#,
        )
        .unwrap();
        assert_eq!(s.pid, 7);
        assert_eq!(s.waits, 11);
        assert_eq!(s.subscriptions, 0, "absent: defaults to 0");
        assert_eq!(s.max_value_len, 64 << 20);
        assert_eq!((s.gets, s.hits, s.events_dropped), (60, 50, 1));
    }

    #[test]
    fn older_and_newer_servers_parse() {
        // An older server with fewer fields, a newer one with a field this version lacks.
        let old = ServerStats::from_json(r#"{"keys":1}"#).unwrap();
        assert_eq!(old.keys, 1);
        assert_eq!(old.requests, 0);
        let new = ServerStats::from_json(r#"{"keys":2,"evictions":9,"shards":{"n":64}}"#).unwrap();
        assert_eq!(new.keys, 2);
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let s = ServerStats {
            pid: 1,
            waits: 10,
            subscriptions: 4,
            ..ServerStats::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(ServerStats::from_json(&text).unwrap(), s);
        assert!(ServerStats::from_json("not json").is_err());
        assert!(ServerStats::from_json(r#"{"keys":-1}"#).is_err());
        assert!(ServerStats::from_json(r#"[1,2]"#).is_err());
    }
}
