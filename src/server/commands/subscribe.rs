//! The subscription family: `SUBSCRIBE`, `SUBSCRIBE_ALL`, `UNSUBSCRIBE`.

use std::io::{Read, Write};

use crate::protocol::{ErrorCode, Reply, RequestId, SubId};
use crate::server::engine::Engine;

impl<S: Read + Write> Engine<S> {
    /// Registers a subscription to `key` (every key when `None`) and answers its id, a `UINT`
    /// that fits a u32 (pushes carry it in their 32-bit id field).
    pub(super) fn subscribe(&mut self, slot: usize, id: RequestId, hash: u64, key: Option<&[u8]>) {
        let c = &mut self.conns[slot];
        match self.hub.subscribe(slot, hash, key) {
            Ok(sub) => c.queue_reply(id, &Reply::Uint(sub.into())),
            Err(_) => c.queue_error(id, ErrorCode::Busy, 0),
        }
    }

    /// Ends subscription `sub` of this connection; nothing more is sent for it (no push).
    pub(super) fn unsubscribe(&mut self, slot: usize, id: RequestId, sub: SubId) {
        let c = &mut self.conns[slot];
        if self.hub.unsubscribe(slot, sub) {
            c.queue_reply(id, &Reply::Done);
        } else {
            c.queue_error(id, ErrorCode::NoSuchSubscription, 0);
        }
    }
}
