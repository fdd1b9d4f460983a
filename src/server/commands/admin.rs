//! The admin family: `HELLO` (the handshake), `STATS`, `SHUTDOWN`, `PING`.

use std::io::{Read, Write};
use std::time::Instant;

use crate::protocol::{self, ErrorCode, Reply, Request, RequestId};
use crate::server::connection::Phase;
use crate::server::engine::Engine;

/// Compares in time independent of where the first difference is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S: Read + Write> Engine<S> {
    /// The first request of a connection. A `HELLO` with the right token and version makes it
    /// ready (`UINT` version); anything else is answered with an error carrying the request's
    /// id, and the connection closes: a wrong token (or any other first request) is
    /// `UNAUTHORIZED` whatever the version; the right token with another version is
    /// `VERSION_MISMATCH` with the server's version as arg.
    pub(super) fn handshake(&mut self, slot: usize, id: RequestId, req: Request<'_>, now: Instant) {
        let c = &mut self.conns[slot];
        let (code, arg) = match req {
            Request::Hello { version, token } if ct_eq(token, &self.config.token) => {
                if version == protocol::VERSION {
                    c.phase = Phase::Ready;
                    return c.queue_reply(id, &Reply::Uint(protocol::VERSION));
                }
                (ErrorCode::VersionMismatch, protocol::VERSION)
            }
            _ => (ErrorCode::Unauthorized, 0),
        };
        c.queue_error(id, code, arg);
        self.begin_close(slot, now);
    }

    /// A `HELLO` after the handshake: answered with the version, nothing changes (the token is
    /// not checked again).
    pub(super) fn hello_again(&mut self, slot: usize, id: RequestId) {
        self.conns[slot].queue_reply(id, &Reply::Uint(protocol::VERSION));
    }

    /// `STATS`: the counters as JSON text.
    pub(super) fn stats_request(&mut self, slot: usize, id: RequestId, now: Instant) {
        let text = self.stats_json(now);
        self.conns[slot].queue_reply(id, &Reply::Text(text.as_bytes()));
    }

    /// `PING`: answered `DONE`.
    pub(super) fn ping(&mut self, slot: usize, id: RequestId) {
        self.conns[slot].queue_reply(id, &Reply::Done);
    }

    /// `SHUTDOWN`: answered `DONE`; the loop then ends every wait and subscription and exits.
    pub(super) fn shutdown_request(&mut self, slot: usize, id: RequestId) {
        self.conns[slot].queue_reply(id, &Reply::Done);
        self.shutdown_requested = true;
    }
}
