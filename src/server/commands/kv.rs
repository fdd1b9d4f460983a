//! The key/value family: `GET`, `SET`, `EXISTS`, `REMOVE`, `INCR`, `CLEAR`, `COUNT`.

use std::io::{Read, Write};

use crate::protocol::{self, ErrorCode, Reply, Request, RequestId};
use crate::server::conn_io::Frames;
use crate::server::connection::{OutQueue, Phase};
use crate::server::engine::Engine;
use crate::server::fanout::Change;
use crate::store::{Entry, IncrError, NO_HINT};

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
                if e.value().len() <= copy_max {
                    c.out.with_buf(|b| copy_value(b, id, e.value()));
                } else {
                    queue_in_place(&mut c.out, id, e.to_entry());
                }
            }
            None => c.queue_reply(id, &Reply::Nil),
        }
    }

    /// The `GET`s at the front of `frames` (the rest of a decode window), in
    /// one pass, as [`Engine::get`] would serve them one by one: one lookup each, the replies
    /// of copied values appended to the output buffer together (one
    /// [`OutQueue::with_buf`](crate::server::connection::OutQueue::with_buf) up to the next
    /// value longer than `copy_max`, which goes in place as [`Engine::get`] sends it), the
    /// counters added once. Stops before the first frame that is not a `GET`, and before any
    /// frame once the output passed the high-water mark (where [`Engine::apply_window`] checks
    /// for a pause between frames; it checked before the first). Returns how many frames it
    /// served and how many bytes of the read buffer they took; 0 when the connection is not
    /// past its handshake (whose first frame must be `HELLO`).
    #[inline]
    pub(in crate::server) fn get_run(&mut self, slot: usize, frames: Frames) -> (usize, usize) {
        let copy_max = self.config.copy_max;
        let high = self.config.high_water;
        let store = &self.store;
        let c = &mut self.conns[slot];
        if c.phase != Phase::Ready {
            return (0, 0);
        }
        let (mut served, mut consumed, mut hits) = (0, 0, 0);
        loop {
            let pending = c.out.pending();
            if served > 0 && pending > high {
                break;
            }
            // From here to the mark (pending <= high: checked above, or by the caller).
            let room = high - pending;
            let mut in_place = None;
            c.out.with_buf(|b| {
                let start = b.len();
                while let Some((id, req, n, hash, hint)) = frames.get(served) {
                    let Request::Get { key } = *req else { return };
                    if b.len() - start > room {
                        return;
                    }
                    served += 1;
                    consumed += n;
                    let Some(e) = store.get_hinted(hash, key, hint) else {
                        Reply::Nil.encode(id, b);
                        continue;
                    };
                    hits += 1;
                    if e.value().len() > copy_max {
                        in_place = Some((id, e.to_entry()));
                        return;
                    }
                    copy_value(b, id, e.value());
                }
            });
            let Some((id, e)) = in_place else { break };
            queue_in_place(&mut c.out, id, e);
        }
        self.stats.requests += served as u64;
        self.stats.gets += served as u64;
        self.stats.hits += hits;
        (served, consumed)
    }

    /// The `SET`s at the front of `frames` (the rest of a decode window), in
    /// one pass, as [`Engine::set`] would apply them one by one, when nobody listens for events
    /// (then a `SET` queues nothing but its `DONE`, and the `DONE`s go out together after the
    /// run). Stops before the first frame that is not a `SET`, before a value the budget cannot
    /// hold (whose error [`Engine::set`] sends), and before any frame once the output passed
    /// the high-water mark. Returns how many frames it served and how many bytes of the read
    /// buffer they took; 0 when the connection is not past its handshake or someone listens.
    #[inline]
    pub(in crate::server) fn set_run(&mut self, slot: usize, frames: Frames) -> (usize, usize) {
        let c = &self.conns[slot];
        if c.phase != Phase::Ready || !self.hub.is_idle() {
            return (0, 0);
        }
        // The caller checked the mark before the first frame: pending <= high_water.
        let room = self.config.high_water.saturating_sub(c.out.pending());
        self.store.tell_evictions(false);
        let (mut served, mut consumed) = (0, 0);
        while let Some((_, req, n, hash, hint)) = frames.get(served) {
            let Request::Set { key, value } = *req else {
                break;
            };
            // Each `DONE` (queued after the run) is one header: before this frame the output
            // would be `served` of them over what was pending.
            if served * protocol::HEADER_LEN > room || !self.store.fits(key.len(), value.len()) {
                break;
            }
            self.expire_if_due(hash, key, hint);
            self.store.set_hinted(hash, key, value, hint);
            if self.store.has_gone() {
                self.publish_gone();
            }
            served += 1;
            consumed += n;
        }
        self.conns[slot].out.with_buf(|b| {
            for id in frames.ids(served) {
                Reply::Done.encode(id, b);
            }
        });
        self.stats.requests += served as u64;
        (served, consumed)
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

/// Appends the reply to a `GET` whose value is copied: its header, then the value.
#[inline]
fn copy_value(b: &mut Vec<u8>, id: RequestId, value: &[u8]) {
    protocol::encode_value_head(b, id, value.len());
    b.extend_from_slice(value);
}

/// Queues the reply to a `GET` whose value goes from its segment to the socket, not copied.
fn queue_in_place(out: &mut OutQueue, id: RequestId, e: Entry) {
    let (key_len, len) = (e.key_len(), e.len());
    out.with_buf(|b| protocol::encode_value_head(b, id, len - key_len));
    out.push_shared(e, key_len, len);
}
