//! Request handling, one file per command family; [`Engine::apply`] dispatches.
//!
//! | file | requests |
//! |---|---|
//! | `kv.rs` | `GET`, `SET`, `EXISTS`, `REMOVE`, `INCR`, `CLEAR`, `COUNT` |
//! | `scan.rs` | `KEYS`, `ITEMS` |
//! | `wait.rs` | `WAIT`, `WAIT_VALUE` |
//! | `subscribe.rs` | `SUBSCRIBE`, `SUBSCRIBE_ALL`, `UNSUBSCRIBE` |
//! | `ttl.rs` | `SET_TTL`, `EXPIRE`, `PERSIST`, `TTL` |
//! | `versions.rs` | `GET_VERSIONED`, `SET_IF_VERSION`, `ADD`, `REPLACE` |
//! | `multi.rs` | `GET_MANY`, `SET_MANY`, `REMOVE_MANY` |
//! | `lease.rs` | `GET_OR_LEASE`, `RELEASE` (the leases of `get_or_compute`) |
//! | `admin.rs` | `HELLO` (the handshake), `STATS`, `SHUTDOWN`, `PING` |
//!
//! A command queues its reply on its connection before it publishes what it changed, so on
//! one connection a reply always precedes the events and wakes its request caused.

mod admin;
mod kv;
mod lease;
mod multi;
mod scan;
mod subscribe;
mod ttl;
mod versions;
mod wait;

use std::io::{Read, Write};
use std::time::Instant;

use super::connection::Phase;
use super::engine::Engine;
use crate::protocol::{Request, RequestId};

impl<S: Read + Write> Engine<S> {
    /// Applies one request from connection `slot` and queues its reply. `hash` is the store's
    /// hash of the request's key (0 for a request without one), computed once when the frame
    /// was decoded.
    #[inline]
    pub(super) fn apply(
        &mut self,
        slot: usize,
        id: RequestId,
        req: &Request<'_>,
        hash: u64,
        hint: u32,
        now: Instant,
    ) {
        self.stats.requests += 1;
        // Evicted keys need listing only for someone to tell. Every store write goes through
        // here, and no request both adds a listener and writes to the store (listeners that
        // leave during a request only leave this conservatively on), so it holds for the
        // whole request.
        self.store.tell_evictions(!self.hub.is_idle());
        if let Phase::Handshake(_) = self.conns[slot].phase {
            return self.handshake(slot, id, *req, now);
        }
        // By reference, fields copied out: the request is not copied whole per frame.
        match *req {
            Request::Hello { .. } => self.hello_again(slot, id),
            Request::Get { key } => self.get(slot, id, hash, hint, key),
            Request::Set { key, value } => self.set(slot, id, hash, hint, key, value),
            Request::Exists { key } => self.exists(slot, id, hash, key),
            Request::Remove { key } => self.remove(slot, id, hash, key),
            Request::Incr { key, delta } => self.incr(slot, id, hash, key, delta),
            Request::Clear => self.clear(slot, id),
            Request::Count => self.count(slot, id),
            Request::Keys { cursor, until } => self.scan(slot, id, cursor, until, false),
            Request::Items { cursor, until } => self.scan(slot, id, cursor, until, true),
            Request::Wait {
                key,
                value,
                timeout_ms,
            } => self.wait(slot, id, hash, key, value, timeout_ms, now),
            Request::SetTtl { key, value, ttl_ms } => {
                self.set_ttl(slot, id, hash, hint, key, value, ttl_ms, now)
            }
            Request::Expire { key, ttl_ms } => self.expire(slot, id, hash, key, ttl_ms, now),
            Request::Persist { key } => self.persist(slot, id, hash, key),
            Request::Ttl { key } => self.ttl(slot, id, hash, key, now),
            Request::GetVersioned { key } => self.get_versioned(slot, id, hash, key),
            Request::SetIfVersion {
                key,
                value,
                version,
            } => self.set_if_version(slot, id, hash, key, value, version),
            Request::Add { key, value, ttl_ms } => {
                self.add_or_replace(slot, id, hash, key, value, ttl_ms, false, now)
            }
            Request::Replace { key, value, ttl_ms } => {
                self.add_or_replace(slot, id, hash, key, value, ttl_ms, true, now)
            }
            Request::GetMany { keys } => self.get_many(slot, id, keys),
            Request::SetMany { pairs, ttl_ms } => self.set_many(slot, id, pairs, ttl_ms, now),
            Request::RemoveMany { keys } => self.remove_many(slot, id, keys),
            Request::GetOrLease { key, timeout_ms } => {
                self.get_or_lease(slot, id, hash, key, timeout_ms, now)
            }
            Request::Release { key, req } => self.release(slot, id, hash, key, req, now),
            Request::Subscribe { key } => self.subscribe(slot, id, hash, key),
            Request::Unsubscribe { sub } => self.unsubscribe(slot, id, sub),
            Request::Stats => self.stats_request(slot, id, now),
            Request::Shutdown => self.shutdown_request(slot, id),
            Request::Ping => self.ping(slot, id),
        }
        if self.store.has_gone() {
            self.publish_gone();
        }
    }
}
