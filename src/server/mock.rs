//! A socket stand-in with edge-triggered readiness, for the engine's unit tests and the
//! `engine_split` fuzz target.
//!
//! [`MockSocket`] is the server's end of a connection whose peer is driven by the test:
//! [`Peer::send`] queues bytes for the server, [`Peer::read`] takes up to n of the bytes the
//! server wrote. The server's writes go into a send buffer of fixed capacity (as the kernel's
//! socket buffer): a write that does not fit is cut short or says `WouldBlock`.
//!
//! Readiness is modelled as an edge-triggered poller reports it, and no more generously:
//! a readable edge when bytes arrive, a writable edge only when the peer reads from a send
//! buffer that a write found full. [`Peer::pump`] hands the pending edges to the engine as the
//! event loop does, until none is left. An engine that waits for an edge that never comes
//! leaves requests unanswered, which the tests see.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::time::Instant;

use super::Engine;

#[derive(Debug, Default)]
struct Pipe {
    to_server: VecDeque<u8>,
    to_peer: VecDeque<u8>,
    capacity: usize,
    /// A write found the send buffer full since the peer last read.
    blocked: bool,
    readable: bool,
    writable: bool,
    peer_closed: bool,
}

/// The server's end.
#[derive(Debug)]
pub struct MockSocket(Rc<RefCell<Pipe>>);

/// The test's end.
#[derive(Debug, Clone)]
pub struct Peer(Rc<RefCell<Pipe>>);

/// A connected pair whose server-side send buffer holds `capacity` bytes.
pub fn pair(capacity: usize) -> (MockSocket, Peer) {
    let pipe = Rc::new(RefCell::new(Pipe {
        capacity: capacity.max(1),
        ..Pipe::default()
    }));
    (MockSocket(Rc::clone(&pipe)), Peer(pipe))
}

impl Read for MockSocket {
    /// Like a socket: returns less than asked only when nothing more is queued.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.to_server.is_empty() {
            return if p.peer_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(p.to_server.len());
        let (a, b) = p.to_server.as_slices();
        let k = n.min(a.len());
        buf[..k].copy_from_slice(&a[..k]);
        buf[k..n].copy_from_slice(&b[..n - k]);
        p.to_server.drain(..n);
        Ok(n)
    }
}

impl Write for MockSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let room = p.capacity - p.to_peer.len();
        if total > 0 && room == 0 {
            p.blocked = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            p.to_peer.extend(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        if n < total {
            p.blocked = true;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Peer {
    /// Sends bytes to the server (a readable edge).
    pub fn send(&self, bytes: &[u8]) {
        let mut p = self.0.borrow_mut();
        p.to_server.extend(bytes);
        p.readable = true;
    }

    /// Closes the peer's sending side (a readable edge: the server reads end of stream).
    pub fn close(&self) {
        let mut p = self.0.borrow_mut();
        p.peer_closed = true;
        p.readable = true;
    }

    /// Takes up to `max` bytes the server wrote; a writable edge if a write had found the
    /// buffer full.
    pub fn read(&self, max: usize) -> Vec<u8> {
        let mut p = self.0.borrow_mut();
        let n = max.min(p.to_peer.len());
        let (a, b) = p.to_peer.as_slices();
        let k = n.min(a.len());
        let mut got = Vec::with_capacity(n);
        got.extend_from_slice(&a[..k]);
        got.extend_from_slice(&b[..n - k]);
        p.to_peer.drain(..n);
        if n > 0 && p.blocked {
            p.blocked = false;
            p.writable = true;
        }
        got
    }

    /// Bytes the server sent that the peer has not read.
    pub fn unread(&self) -> usize {
        self.0.borrow().to_peer.len()
    }

    /// Bytes the peer sent that the server has not read.
    pub fn unsent(&self) -> usize {
        self.0.borrow().to_server.len()
    }

    /// Hands pending edges to `engine` for connection `slot` as the event loop does (writable,
    /// then readable, then the end-of-turn tick at `now`), until no edge is pending.
    pub fn pump<S: Read + Write>(&self, engine: &mut Engine<S>, slot: usize, now: Instant) {
        loop {
            let (readable, writable, closed) = {
                let mut p = self.0.borrow_mut();
                let e = (p.readable, p.writable, p.peer_closed);
                p.readable = false;
                p.writable = false;
                e
            };
            if !readable && !writable && !engine.has_parked() {
                return;
            }
            if writable {
                engine.writable(slot, now);
            }
            if readable {
                engine.read_event(slot, now, closed);
            }
            engine.tick(now);
        }
    }
}
