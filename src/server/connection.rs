//! One client connection on the server: its read buffer, its output queue, its state.
//!
//! Output is a queue of pieces: bytes the server encoded (headers, small replies, values up to
//! [`COPY_MAX`](super::engine::COPY_MAX) bytes) kept in one reusable buffer, and shared stored
//! entries ([`Entry`] ranges, the longer values) that go to the socket from where they are
//! stored, by vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::Instant;

use smallvec::SmallVec;

use crate::protocol::{ErrorCode, Push, PushKind, Reply, RequestId};
use crate::readbuf::ReadBuf;
use crate::store::Entry;

/// Most slices one `writev` call gets.
const MAX_IOV: usize = 512;

enum Piece {
    /// A range of [`OutQueue::buf`].
    Buf { start: usize, end: usize },
    /// A range of a stored entry.
    Shared {
        data: Entry,
        start: usize,
        end: usize,
    },
}

/// Bytes waiting to be written, in order.
#[derive(Default)]
pub struct OutQueue {
    buf: Vec<u8>,
    pieces: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    head: usize,
    pending: usize,
}

impl std::fmt::Debug for OutQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutQueue")
            .field("pending", &self.pending)
            .finish()
    }
}

impl OutQueue {
    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Appends bytes the caller writes into the returned buffer.
    #[inline]
    pub fn with_buf(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        let end = self.buf.len();
        if end == start {
            return;
        }
        self.pending += end - start;
        match self.pieces.back_mut() {
            Some(Piece::Buf { end: e, .. }) if *e == start => *e = end,
            _ => self.pieces.push_back(Piece::Buf { start, end }),
        }
    }

    /// Appends a range of a stored entry's bytes ([`Entry::bytes`]), without copying them.
    #[inline]
    pub fn push_shared(&mut self, data: Entry, start: usize, end: usize) {
        if end > start {
            self.pending += end - start;
            self.pieces.push_back(Piece::Shared { data, start, end });
        }
    }

    /// Writes as much as the socket takes. `Ok(true)` when the queue is empty.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while !self.pieces.is_empty() {
            let mut iov: SmallVec<[IoSlice<'_>; 64]> = SmallVec::new();
            for (i, p) in self.pieces.iter().enumerate().take(MAX_IOV) {
                let skip = if i == 0 { self.head } else { 0 };
                let s = match p {
                    Piece::Buf { start, end } => &self.buf[start + skip..*end],
                    Piece::Shared { data, start, end } => &data.bytes()[start + skip..*end],
                };
                iov.push(IoSlice::new(s));
            }
            // One piece (a batch of copied replies, the common case): a plain `write`, which
            // the kernel takes without gathering an I/O vector.
            let sent = match iov.as_slice() {
                [one] => w.write(one),
                _ => w.write_vectored(&iov),
            };
            let n = match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            drop(iov);
            self.advance(n);
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        self.pending -= n;
        while n > 0 {
            // Unreachable: `n` is what one write took of the slices of these pieces.
            let front = self.pieces.front().expect("advanced past the queue");
            let len = match front {
                Piece::Buf { start, end } | Piece::Shared { start, end, .. } => end - start,
            } - self.head;
            if n < len {
                self.head += n;
                return;
            }
            n -= len;
            self.head = 0;
            self.pieces.pop_front();
        }
        if self.pieces.is_empty() {
            self.buf.clear();
            if self.buf.capacity() > 1 << 20 {
                self.buf = Vec::new();
            }
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the `Hello` frame, until the deadline.
    Handshake(Instant),
    /// Serving requests.
    Ready,
    /// Sending what is queued (an error frame), then closing; not reading any more.
    Closing,
}

/// A client connection.
#[derive(Debug)]
pub struct Connection<S> {
    /// The socket.
    pub stream: S,
    /// Received bytes.
    pub rbuf: ReadBuf,
    /// Bytes the frame being assembled needs in all, as the decoder last said.
    pub need: usize,
    /// Bytes to send.
    pub out: OutQueue,
    /// Where it is in its life.
    pub phase: Phase,
    /// Reading stopped because too much output is queued.
    pub read_paused: bool,
    /// Listed in the engine's dirty list (output queued by another connection's request).
    pub dirty: bool,
    /// Listed in the engine's parked list (it used its turn's reads).
    pub parked: bool,
    /// Distinguishes this connection from earlier ones with the same token.
    pub serial: u64,
}

impl<S> Connection<S> {
    /// Queues a reply.
    #[inline]
    pub fn queue_reply(&mut self, id: RequestId, r: &Reply<'_>) {
        self.out.with_buf(|b| r.encode(id, b));
    }

    /// Queues an error reply; its message is for people reading a capture, programs match
    /// the code.
    #[inline]
    pub fn queue_error(&mut self, id: RequestId, code: ErrorCode, arg: u64) {
        let r = Reply::Error {
            code,
            arg,
            message: code.message().as_bytes(),
        };
        self.queue_reply(id, &r);
    }

    /// Queues a push with no key or value (`Lagged`, `Cleared`, `Closed`, `Woken`).
    #[inline]
    pub fn queue_signal(&mut self, kind: PushKind, id: u32, arg: u64) {
        let p = Push {
            kind,
            id,
            key: &[],
            value: &[],
            arg,
        };
        self.out.with_buf(|b| p.encode(b));
    }

    /// A new connection that must shake hands by `deadline`.
    pub fn new(stream: S, deadline: Instant, serial: u64) -> Self {
        Connection {
            stream,
            rbuf: ReadBuf::default(),
            need: crate::protocol::HEADER_LEN,
            out: OutQueue::default(),
            phase: Phase::Handshake(deadline),
            read_paused: false,
            dirty: false,
            parked: false,
            serial,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call and records what it got.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn out_queue_keeps_order_across_partial_writes() {
        let shared = Entry::new(b"KEY", b"VALUE");
        let mut q = OutQueue::default();
        q.with_buf(|b| b.extend_from_slice(b"h1"));
        q.with_buf(|b| b.extend_from_slice(b"h2"));
        q.push_shared(shared.clone(), 3, 8);
        q.with_buf(|b| b.extend_from_slice(b"h3"));
        q.push_shared(shared, 0, 3);
        assert_eq!(q.pending(), 2 + 2 + 5 + 2 + 3);
        let mut w = Trickle {
            got: Vec::new(),
            max: 3,
            calls: 0,
        };
        while !q.write_to(&mut w).unwrap() {}
        assert_eq!(w.got, b"h1h2VALUEh3KEY");
        assert_eq!(q.pending(), 0);
    }
}
