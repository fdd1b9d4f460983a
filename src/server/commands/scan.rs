//! The scan family: `KEYS` and `ITEMS`, one chunk per request, no state kept between chunks.

use std::io::{Read, Write};

use crate::protocol::{Reply, RequestId, CHUNK_MAX_ENTRIES, CHUNK_SOFT_BYTES};
use crate::server::engine::Engine;

impl<S: Read + Write> Engine<S> {
    /// One chunk of keys (or items) from `cursor`, of entries first stored before the bound
    /// `until` (0: this request starts an enumeration, and the bound is now). The chunk's size
    /// limits are the protocol's ([`CHUNK_SOFT_BYTES`]): the value cap relies on them.
    pub(super) fn scan(
        &mut self,
        slot: usize,
        id: RequestId,
        cursor: u64,
        until: u64,
        with_values: bool,
    ) {
        let until = if until == 0 {
            self.store.next_seq()
        } else {
            until
        };
        self.scratch.clear();
        let next = self.store.scan(
            cursor,
            until,
            with_values,
            CHUNK_MAX_ENTRIES,
            CHUNK_SOFT_BYTES,
            &mut self.scratch,
        );
        let reply = Reply::Chunk {
            next,
            until,
            body: &self.scratch,
        };
        self.conns[slot].queue_reply(id, &reply);
    }
}
