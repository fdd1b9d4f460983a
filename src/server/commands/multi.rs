//! The multi-key family: `GET_MANY`, `SET_MANY`, `REMOVE_MANY`, one frame for many keys.
//!
//! The request's [`Batch`] was checked whole when it was decoded, so the commands walk it
//! without a check that can fail. Each key is handled as its single-key request would be, in
//! the batch's order (a key named twice is handled twice: `SET_MANY` stores the later value,
//! `REMOVE_MANY` counts the first removal only), with the same events and wakes, and a key
//! whose TTL ran out is expired first. The records of a batch's keys are prefetched
//! together ([`crate::store::Store::prefetch`]) before any is looked up. A batch of more than
//! [`MAX_BATCH_KEYS`] entries is refused whole (`BATCH_TOO_LARGE`): what one request makes
//! the server hold (hashes, entries, a reply's copied values) stays bounded.

use std::io::{Read, Write};
use std::time::Instant;

use smallvec::SmallVec;

use crate::protocol::{self, Batch, ErrorCode, Reply, RequestId, Values, MAX_BATCH_KEYS};
use crate::server::engine::Engine;
use crate::server::fanout::Change;
use crate::store::Entry;

/// Most bytes of values one `GET_MANY` reply copies into the output buffer (each value up to
/// [`EngineConfig::copy_max`](crate::server::engine::EngineConfig) is copied, as `GET` does,
/// until this much is); the rest go from their segments. So a batch of 65,536 keys of 16 KiB
/// values does not make the server copy 1 GiB at once: what one reply holds beyond this is
/// one output piece per value.
const COPY_BUDGET: usize = 1 << 20;

/// The hashes of a batch's keys (on the stack for up to 64 keys).
type Hashes = SmallVec<[u64; 64]>;
/// Where [`crate::store::Store::prefetch`] found each key's slot probably is.
type Hints = SmallVec<[u32; 64]>;

impl<S: Read + Write> Engine<S> {
    /// Answers `BATCH_TOO_LARGE` for a batch over [`MAX_BATCH_KEYS`]; true if it did.
    fn batch_too_large(&mut self, slot: usize, id: RequestId, batch: &Batch<'_>) -> bool {
        let over = batch.len() > MAX_BATCH_KEYS;
        if over {
            self.conns[slot].queue_error(id, ErrorCode::BatchTooLarge, 0);
        }
        over
    }

    /// The hashes of a batch's keys, and the hints of a prefetch of their records.
    fn hashes_of(&self, batch: &Batch<'_>) -> (Hashes, Hints) {
        let hashes: Hashes = batch.iter().map(|(k, _)| self.store.hash(k)).collect();
        let mut hints: Hints = SmallVec::from_elem(crate::store::NO_HINT, hashes.len());
        self.store.prefetch(&hashes, &mut hints);
        (hashes, hints)
    }

    /// `GET_MANY`: one `VALUES` reply; long values go from their segments, not copied. Each
    /// key is looked up once: the entries found are held (a count of their segment each) until
    /// the reply's length is known and it is queued.
    pub(super) fn get_many(&mut self, slot: usize, id: RequestId, keys: Batch<'_>) {
        if self.batch_too_large(slot, id, &keys) {
            return;
        }
        let (hashes, hints) = self.hashes_of(&keys);
        let found: SmallVec<[Option<Entry>; 64]> = keys
            .iter()
            .zip(hashes.iter().zip(&hints))
            .map(|((key, _), (&h, &hint))| {
                self.store.get_hinted(h, key, hint).map(|r| r.to_entry())
            })
            .collect();
        let body_len: u64 = found
            .iter()
            .map(|e| Values::entry_len(e.as_ref().map(|e| e.value().len())))
            .sum();
        self.stats.gets += u64::from(keys.len());
        self.stats.hits += found.iter().filter(|e| e.is_some()).count() as u64;
        let copy_max = self.config.copy_max;
        // A client accepts a reply as long as the longest value it may ask for (the server's
        // `max_value`, in the connection file): a longer one would cost it its connection.
        let max_body = self.config.limits.max_value;
        let c = &mut self.conns[slot];
        let Some(body_len) = u32::try_from(body_len).ok().filter(|&n| n <= max_body) else {
            return c.queue_error(id, ErrorCode::ReplyTooLarge, 0);
        };
        c.out
            .with_buf(|b| protocol::encode_values_head(b, id, keys.len(), body_len));
        let mut copied = 0;
        for e in found {
            let len = e.as_ref().map_or(0, |e| e.value().len());
            let copy = len <= copy_max && copied + len <= COPY_BUDGET;
            copied += if copy { len } else { 0 };
            match e {
                Some(e) if !copy => {
                    c.out
                        .with_buf(|b| Values::entry_head(b, Some(e.value().len())));
                    let (start, end) = (e.key_len(), e.len());
                    c.out.push_shared(e, start, end);
                }
                found => c.out.with_buf(|b| {
                    let value = found.as_ref().map(|e| e.value());
                    Values::entry_head(b, value.map(<[u8]>::len));
                    b.extend_from_slice(value.unwrap_or_default());
                }),
            }
        }
    }

    /// `SET_MANY` (`ttl_ms` 0: each key keeps its TTL, as `SET`): every pair stored in order,
    /// each an event as a `SET`.
    pub(super) fn set_many(
        &mut self,
        slot: usize,
        id: RequestId,
        pairs: Batch<'_>,
        ttl_ms: u64,
        now: Instant,
    ) {
        if self.batch_too_large(slot, id, &pairs) {
            return;
        }
        let Ok(at) = self.optional_deadline(ttl_ms, now) else {
            return self.conns[slot].queue_error(id, ErrorCode::BadTtl, 0);
        };
        // All or nothing: one value too large for the budget refuses the whole request.
        if let Some((key, value)) = pairs
            .iter()
            .find(|(k, v)| !self.store.fits(k.len(), v.len()))
        {
            self.fits_budget(slot, id, key, value);
            return;
        }
        self.conns[slot].queue_reply(id, &Reply::Done);
        let (hashes, hints) = self.hashes_of(&pairs);
        for ((key, value), (&h, &hint)) in pairs.iter().zip(hashes.iter().zip(&hints)) {
            self.expire_if_due(h, key, hint);
            let e = match at {
                Some(d) => self.store.set_with_deadline_hinted(h, key, value, d, hint),
                None => self.store.set_hinted(h, key, value, hint),
            };
            if !self.hub.is_idle() {
                let e = e.to_entry();
                self.publish(h, Change::Set(&e));
            }
            // Keys this pair's write evicted (or expired to make room) are told now, before a
            // later pair of the batch can store one of them again.
            if self.store.has_gone() {
                self.publish_gone();
            }
        }
    }

    /// `REMOVE_MANY`: the number of keys removed; a `REMOVED` event for each, after the
    /// reply.
    pub(super) fn remove_many(&mut self, slot: usize, id: RequestId, keys: Batch<'_>) {
        if self.batch_too_large(slot, id, &keys) {
            return;
        }
        let (hashes, hints) = self.hashes_of(&keys);
        let mut removed: SmallVec<[bool; 64]> = SmallVec::new();
        for ((key, _), (&h, &hint)) in keys.iter().zip(hashes.iter().zip(&hints)) {
            self.expire_if_due(h, key, hint);
            removed.push(self.store.remove(h, key));
        }
        let n = removed.iter().filter(|&&r| r).count() as u64;
        self.conns[slot].queue_reply(id, &Reply::Uint(n));
        if n > 0 && !self.hub.is_idle() {
            for (((key, _), &h), _) in keys.iter().zip(&hashes).zip(&removed).filter(|(_, &r)| r) {
                self.publish(h, Change::Removed(key));
            }
        }
    }
}
