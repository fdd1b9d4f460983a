//! Versions and conditional writes: `GET_VERSIONED`, `SET_IF_VERSION`, `ADD`, `REPLACE`.
//!
//! Each write is a `SET` for listeners (subscriptions get `SET`, waits wake as for `SET`) when
//! it is carried out, and nothing at all when its condition fails. A key whose TTL ran out is
//! expired first (its listeners get `EXPIRED`), so to these requests it is missing.
//!
//! TTLs: `SET_IF_VERSION` keeps the key's TTL (as `SET`); `ADD` gives the new key the TTL in
//! `arg`, or none for 0; `REPLACE` gives the key the TTL in `arg`, or keeps its TTL for 0.

use std::io::{Read, Write};
use std::time::Instant;

use super::ttl::deadline;
use crate::protocol::{self, ErrorCode, Reply, RequestId};
use crate::server::engine::Engine;
use crate::server::fanout::Change;
use crate::store::{Entry, NO_HINT};

impl<S: Read + Write> Engine<S> {
    /// `GET_VERSIONED`: as `GET` (a value up to `copy_max` copied, a longer one sent from its
    /// segment), with the version in `arg`.
    pub(super) fn get_versioned(&mut self, slot: usize, id: RequestId, hash: u64, key: &[u8]) {
        self.stats.gets += 1;
        let copy_max = self.config.copy_max;
        let c = &mut self.conns[slot];
        match self.store.get(hash, key) {
            Some(e) => {
                self.stats.hits += 1;
                let (value, version) = (e.value(), e.version());
                if value.len() <= copy_max {
                    c.out.with_buf(|b| {
                        protocol::encode_versioned_head(b, id, value.len(), version);
                        b.extend_from_slice(value);
                    });
                } else {
                    c.out
                        .with_buf(|b| protocol::encode_versioned_head(b, id, value.len(), version));
                    c.out.push_shared(e.to_entry(), e.key_len(), e.len());
                }
            }
            None => c.queue_reply(id, &Reply::Nil),
        }
    }

    /// `SET_IF_VERSION`.
    pub(super) fn set_if_version(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        value: &[u8],
        version: u64,
    ) {
        if !self.fits_budget(slot, id, key, value) {
            return;
        }
        self.expire_if_due(hash, key, NO_HINT);
        let written = self
            .store
            .set_if_version(hash, key, value, version)
            .map(|r| r.to_entry());
        self.conditional_reply(slot, id, hash, written);
    }

    /// `ADD` (`present` false: only if the key is absent; `ttl_ms` 0: no TTL) and `REPLACE`
    /// (`present` true: only if it is there; `ttl_ms` 0: the key keeps its TTL).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_or_replace(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        present: bool,
        now: Instant,
    ) {
        let Ok(at) = self.optional_deadline(ttl_ms, now) else {
            return self.conns[slot].queue_error(id, ErrorCode::BadTtl, 0);
        };
        if !self.fits_budget(slot, id, key, value) {
            return;
        }
        self.expire_if_due(hash, key, NO_HINT);
        let written = if present {
            self.store.replace(hash, key, value, at)
        } else {
            self.store.add(hash, key, value, at)
        };
        let written = written.map(|r| r.to_entry());
        self.conditional_reply(slot, id, hash, written);
    }

    /// The deadline of an optional TTL (`ttl_ms` 0: none); `Err` for a TTL out of range.
    pub(super) fn optional_deadline(&self, ttl_ms: u64, now: Instant) -> Result<Option<u64>, ()> {
        match ttl_ms {
            0 => Ok(None),
            t => deadline(self.clock_ceil(now), t).map(Some).ok_or(()),
        }
    }

    /// The reply of a conditional write (the new version, or nil when nothing was written),
    /// then its event.
    fn conditional_reply(&mut self, slot: usize, id: RequestId, hash: u64, written: Option<Entry>) {
        let Some(e) = written else {
            return self.conns[slot].queue_reply(id, &Reply::Nil);
        };
        self.conns[slot].queue_reply(id, &Reply::Version(e.version()));
        if !self.hub.is_idle() {
            self.publish(hash, Change::Set(&e));
        }
    }
}
