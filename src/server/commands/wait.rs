//! The wait family: `WAIT` (the next change of a key) and `WAIT_VALUE` (until it holds a value).
//!
//! A wait that is not already satisfied is registered with the [`Hub`](crate::server::hub::Hub)
//! and answered `DONE`; it ends later with a `WOKEN` push carrying the request's id and a
//! reason: `EVENT`, `TIMED_OUT`, `CLEARED` or `SHUTDOWN`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::protocol::{ErrorCode, Reply, RequestId, NO_TIMEOUT};
use crate::server::engine::Engine;
use crate::server::hub::Waiter;

impl<S: Read + Write> Engine<S> {
    /// `WAIT` / `WAIT_VALUE`: `BOOL(true)` if the key already holds `value`, `BOOL(false)` for
    /// a zero timeout, `BUSY` past the per-connection limit, else `DONE` and a later `WOKEN`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wait(
        &mut self,
        slot: usize,
        id: RequestId,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        timeout_ms: u64,
        now: Instant,
    ) {
        let satisfied =
            value.is_some_and(|v| self.store.get(hash, key).is_some_and(|e| e.value() == v));
        let c = &mut self.conns[slot];
        if satisfied {
            return c.queue_reply(id, &Reply::Bool(true));
        }
        if timeout_ms == 0 {
            return c.queue_reply(id, &Reply::Bool(false));
        }
        let deadline = (timeout_ms != NO_TIMEOUT)
            .then(|| now.checked_add(Duration::from_millis(timeout_ms)))
            .flatten();
        let w = Waiter {
            conn: slot,
            req: id,
            hash,
            key: key.into(),
            expected: value.map(Into::into),
        };
        match self.hub.add_wait(w, deadline) {
            Ok(()) => c.queue_reply(id, &Reply::Done),
            Err(_) => c.queue_error(id, ErrorCode::Busy, 0),
        }
    }
}
