//! A connection's I/O: reading, decoding windows, backpressure, writing, closing.
//!
//! Per connection, in order: read once, decode every whole frame in the buffer, apply each,
//! queue its reply; then write. Frames are decoded in windows of up to [`PREFETCH_FRAMES`],
//! each frame once, its key hashed once (the hash travels with the frame to the command):
//! when a window holds a pipelined batch, the store is asked to start loading the records its
//! frames name before any is applied ([`Store::prefetch`](crate::store::Store::prefetch)), so the batch's cache misses
//! overlap instead of each lookup waiting for its own. A run of `GET`s in a window is served in
//! one pass ([`Engine::get_run`]: lookups, replies appended to the output buffer at once,
//! counters added once), and so is a run of `SET`s while nobody listens for events
//! ([`Engine::set_run`]); any other frame goes through [`Engine::apply`], one at a time. Both
//! answer exactly as `apply` would, frame for frame (replies, their order, the store, the
//! counters; two engine tests compare them on mixed windows).
//!
//! ## Backpressure, with edge-triggered readiness
//!
//! A connection whose queued output passes [`EngineConfig::high_water`](super::engine::EngineConfig::high_water) stops taking requests:
//! frames already buffered stay there, and the socket is not read, until its output drains
//! below [`EngineConfig::low_water`](super::engine::EngineConfig::low_water). Readiness is edge-triggered, so every way out of the pause
//! must be taken without waiting for a new event, wherever the output drains: in a write after
//! a writable event, in the write that follows a read, and in the end-of-turn flush of
//! connections that others' requests queued events for. All of them go through
//! [`Engine::drive`], which after any write that leaves a paused connection below the low mark
//! applies the buffered frames and then reads the socket until it says `WouldBlock` (the
//! events that arrived during the pause were consumed unanswered). A pause that persists
//! means a write stopped at `WouldBlock` with output still queued, so a writable event will
//! come.
//!
//! Errors: a semantic error (not an integer) is an error reply and the connection goes on; an
//! unknown opcode is an error reply and the frame is skipped; any other framing error queues an
//! error reply and closes that connection once the reply is sent (or after
//! [`CLOSE_TIMEOUT`](super::engine::CLOSE_TIMEOUT)).

use std::io::{self, Read, Write};
use std::time::Instant;

use smallvec::SmallVec;

use super::connection::Phase;
use super::engine::{Engine, PREFETCH_FRAMES};

/// Most reads of one connection in one turn of the loop (16 × 64 KiB): a client that keeps
/// its socket full cannot keep the loop from every other client.
pub const READS_PER_TURN: usize = 16;
use crate::protocol::{self, DecodeError, Decoded, ErrorCode, Request, RequestId};
use crate::store::NO_HINT;

/// The frames of a decode window from one of them on, each with its key's hash (0 for a request
/// without a key) and its prefetch hint ([`NO_HINT`]: look it up): what [`Engine::get_run`] and
/// [`Engine::set_run`] serve from.
#[derive(Clone, Copy)]
pub(in crate::server) struct Frames<'w, 'a> {
    frames: &'w [(RequestId, Request<'a>, usize)],
    hashes: &'w [u64],
    hints: &'w [u32],
}

impl<'w, 'a> Frames<'w, 'a> {
    /// Frame `i`: its id, the request, its length in the read buffer, its hash and its hint.
    #[inline]
    pub(in crate::server) fn get(
        &self,
        i: usize,
    ) -> Option<(RequestId, &'w Request<'a>, usize, u64, u32)> {
        let (id, req, n) = self.frames.get(i)?;
        Some((*id, req, *n, *self.hashes.get(i)?, *self.hints.get(i)?))
    }

    /// The ids of the first `n` frames.
    pub(in crate::server) fn ids(&self, n: usize) -> impl Iterator<Item = RequestId> + 'w {
        self.frames[..n].iter().map(|(id, ..)| *id)
    }

    /// The frames from frame `i` on.
    #[inline]
    fn from(self, i: usize) -> Self {
        Frames {
            frames: &self.frames[i..],
            hashes: &self.hashes[i..],
            hints: &self.hints[i..],
        }
    }
}

/// How far [`Engine::drive`] reads the socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadMode {
    /// Not at all (a writable event, an end-of-turn flush), unless a pause ends.
    None,
    /// Until a read returns less than it had room for: the socket was then empty, and the next
    /// arrival is a new edge.
    UntilShort,
    /// Until a read says `WouldBlock` (the peer closed, or a pause consumed edges).
    UntilWouldBlock,
}

/// Why [`Engine::apply_window`] stopped.
enum WindowEnd {
    /// It applied [`PREFETCH_FRAMES`] frames; more may follow.
    Full,
    /// The connection takes no more requests for now ([`Engine::stops_reading`]).
    Stopped,
    /// Every whole frame was applied; the next needs this many bytes in all.
    Incomplete(usize),
    /// Every frame before it was applied; then the bytes did not decode.
    Error(DecodeError),
}

impl<S: Read + Write> Engine<S> {
    /// The connection can be read: read, apply, reply, until a read says `WouldBlock` (or the
    /// peer closed) or the connection's output is over the high-water mark.
    pub fn readable(&mut self, slot: usize, now: Instant) {
        self.drive(slot, now, ReadMode::UntilWouldBlock);
    }

    /// A readiness event from an edge-triggered poller said the connection can be read, and
    /// whether it also said the peer closed its side (or the socket has an error). As
    /// [`Engine::readable`], except that a read that returns less than it had room for ends
    /// the turn when the peer has not closed: such a read emptied the socket (see
    /// `ReadBuf::drained`), and the next arrival is a new event, so the read that would only
    /// say `WouldBlock` is skipped. An end of stream or error already queued has no later
    /// event, so when the event reports one every read is made.
    ///
    /// Contract for hosts: the stream's reads, like a socket's, return less than asked only
    /// when nothing more is queued.
    pub fn read_event(&mut self, slot: usize, now: Instant, closed: bool) {
        let mode = if closed {
            ReadMode::UntilWouldBlock
        } else {
            ReadMode::UntilShort
        };
        self.drive(slot, now, mode);
    }

    /// The connection can be written: send what is queued; if that ends a pause, apply the
    /// buffered frames and read what arrived meanwhile.
    pub fn writable(&mut self, slot: usize, now: Instant) {
        self.drive(slot, now, ReadMode::None);
    }

    /// The one place a connection is served: write, end a pause when the output drained,
    /// apply buffered frames, read (as far as `mode` says), and again, until nothing more
    /// can be done without a new event. See the module docs for why every path ends here.
    fn drive(&mut self, slot: usize, now: Instant, mut mode: ReadMode) {
        let mut reads = 0;
        loop {
            let Some(c) = self.conns.get_mut(slot) else {
                return;
            };
            if c.phase == Phase::Closing {
                return self.flush(slot, now);
            }
            if c.read_paused {
                self.flush(slot, now);
                let low = self.config.low_water.max(1);
                let Some(c) = self.conns.get_mut(slot) else {
                    return;
                };
                if c.out.pending() >= low {
                    // The write stopped at WouldBlock: a writable event follows.
                    return;
                }
                c.read_paused = false;
                // Edges that arrived during the pause went unanswered.
                mode = ReadMode::UntilWouldBlock;
                self.process(slot, now);
                continue;
            }
            if mode == ReadMode::None {
                return self.flush(slot, now);
            }
            match c.rbuf.read_from(&mut c.stream, c.need) {
                Ok(0) => return self.finish(slot, now),
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    let drained = c.rbuf.drained();
                    self.process(slot, now);
                    self.flush(slot, now);
                    if self.conns.get(slot).is_none_or(|c| c.read_paused) {
                        // Closed, or paused: the loop decides.
                        continue;
                    }
                    if drained && mode == ReadMode::UntilShort {
                        return;
                    }
                    reads += 1;
                    if reads == READS_PER_TURN {
                        // Others' turn: this connection goes on at the end of the loop's turn.
                        return self.park(slot);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.flush(slot, now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot, now),
            }
        }
    }

    /// Lists a connection that has used its turn's reads with more possibly waiting; the
    /// loop's next [`Engine::tick`] goes on with it, after every event of the turn was served.
    fn park(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.parked {
                c.parked = true;
                self.parked.push(slot);
            }
        }
    }

    /// Goes on with the connections that used their reads in the last turn (readiness will
    /// not announce what they left unread).
    pub(super) fn serve_parked(&mut self, now: Instant) {
        for slot in std::mem::take(&mut self.parked) {
            if let Some(c) = self.conns.get_mut(slot) {
                c.parked = false;
                self.drive(slot, now, ReadMode::UntilWouldBlock);
            }
        }
    }

    /// Marks a connection as having output queued by another's request.
    pub(super) fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Sends what others' requests queued, ending pauses that this drains.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        while let Some(slot) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(slot) {
                c.dirty = false;
                self.drive(slot, now, ReadMode::None);
            }
        }
    }

    /// Writes what the socket takes; closes the connection when it is closing and drained, or
    /// when the write fails.
    pub(super) fn flush(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let before = c.out.pending();
        let result = c.out.write_to(&mut c.stream);
        self.stats.bytes_out += (before - c.out.pending()) as u64;
        match result {
            Ok(true) if c.phase == Phase::Closing => self.close(slot, now),
            Ok(true) => self.report_lag(slot),
            Ok(false) => {}
            Err(_) => self.close(slot, now),
        }
    }

    /// Closes a connection: its subscriptions and waits end with it.
    pub fn close(&mut self, slot: usize, now: Instant) {
        if self.conns.try_remove(slot).is_none() {
            return;
        }
        self.end_leases_of(slot, now);
        // A slot still listed as dirty is skipped by flush_dirty (and a new connection in the
        // same slot is flushed once more, which is harmless).
        self.hub.close_conn(slot);
        self.lifecycle.disconnected(now);
    }

    /// The peer closed its side: answer what it sent (its queued replies still go out),
    /// then close once they are written or the socket fails. Not a protocol error: no timer,
    /// as for any client that reads slowly.
    fn finish(&mut self, slot: usize, now: Instant) {
        if !self.conns.contains(slot) {
            return;
        }
        // It sends nothing more: its leases pass on now, not when its output drains.
        self.end_leases_of(slot, now);
        let c = &mut self.conns[slot];
        if c.out.pending() == 0 {
            return self.close(slot, now);
        }
        c.phase = Phase::Closing;
        self.flush(slot, now);
    }

    /// A protocol error: stop reading, send what is queued (the error reply), then close, or
    /// close at [`CLOSE_TIMEOUT`](super::engine::CLOSE_TIMEOUT) whatever happens.
    pub(super) fn begin_close(&mut self, slot: usize, now: Instant) {
        self.conns[slot].phase = Phase::Closing;
        self.stats.protocol_errors += 1;
        self.end_leases_of(slot, now);
        self.add_timer(now + super::engine::CLOSE_TIMEOUT, slot);
    }

    /// Decodes and applies every whole frame in the connection's buffer, a window of up to
    /// [`PREFETCH_FRAMES`] frames at a time ([`Engine::apply_window`]).
    fn process(&mut self, slot: usize, now: Instant) {
        self.set_time(now);
        let mut rbuf = std::mem::take(&mut self.conns[slot].rbuf);
        loop {
            let (applied, end) = self.apply_window(slot, rbuf.bytes(), now);
            rbuf.consume(applied);
            let c = &mut self.conns[slot];
            match end {
                WindowEnd::Full => {}
                WindowEnd::Stopped => break,
                WindowEnd::Incomplete(need) => {
                    c.need = need;
                    break;
                }
                WindowEnd::Error(DecodeError::UnknownCode { id, len, .. }) => {
                    c.queue_error(id, ErrorCode::UnknownOp, 0);
                    rbuf.consume(len);
                }
                WindowEnd::Error(e) => {
                    let (code, arg) = match e {
                        DecodeError::KeyTooLarge { len, .. } => (ErrorCode::KeyTooLarge, len),
                        DecodeError::ValueTooLarge { len, .. } => (ErrorCode::ValueTooLarge, len),
                        _ => (ErrorCode::BadFrame, 0),
                    };
                    // Bytes that are not a frame have no id (0); an error found from a whole
                    // header echoes that header's id, so a client can match it.
                    let id = match e {
                        DecodeError::BadMagic(_) | DecodeError::WrongKind { .. } => 0,
                        _ => protocol::peek_id(rbuf.bytes()),
                    };
                    c.queue_error(id, code, arg as u64);
                    self.begin_close(slot, now);
                    break;
                }
            }
        }
        if let Some(c) = self.conns.get_mut(slot) {
            c.rbuf = rbuf;
        }
    }

    /// Decodes up to [`PREFETCH_FRAMES`] whole frames from the start of `bytes`, each once,
    /// hashing each key once; when there are several (a pipelined batch) and the connection is
    /// past its handshake, asks the store to start loading the records their keys name
    /// ([`Store::prefetch`](crate::store::Store::prefetch)); then applies them in order while the connection takes requests
    /// ([`Engine::stops_reading`]). Returns the bytes of the frames applied and why the window
    /// ended.
    fn apply_window(&mut self, slot: usize, bytes: &[u8], now: Instant) -> (usize, WindowEnd) {
        let mut frames: SmallVec<[(RequestId, Request<'_>, usize); PREFETCH_FRAMES]> =
            SmallVec::new();
        // Each frame's key hash (0 for a request without a key), and where its key probably
        // is (NO_HINT: look it up), by frame; plain arrays, not collected vectors: this runs
        // once per window of up to PREFETCH_FRAMES requests.
        let mut hashes = [0u64; PREFETCH_FRAMES];
        let mut end = WindowEnd::Full;
        let mut at = 0;
        while frames.len() < PREFETCH_FRAMES {
            // `at` is a sum of lengths of frames decoded from `bytes`, so at most its length.
            match protocol::decode_request(&bytes[at..], &self.config.limits) {
                Ok(Decoded::Frame((id, req), n)) => {
                    hashes[frames.len()] = req.key().map_or(0, |k| self.store.hash(k));
                    frames.push((id, req, n));
                    at += n;
                }
                Ok(Decoded::Incomplete { need }) => {
                    end = WindowEnd::Incomplete(need);
                    break;
                }
                Err(e) => {
                    end = WindowEnd::Error(e);
                    break;
                }
            }
        }
        let count = frames.len();
        let mut hints = [NO_HINT; PREFETCH_FRAMES];
        if count > 1 && self.conns[slot].phase == Phase::Ready {
            // Every frame's hash, those of requests that do not look a key up too: a hint is
            // only ever used by a lookup that checks it, so theirs costs a probe and nothing
            // else, and pipelined batches are lookups.
            self.store.prefetch(&hashes[..count], &mut hints[..count]);
        }
        let mut applied = 0;
        let mut i = 0;
        // By reference: moving the vector out (`into_iter`) would copy its whole inline array.
        let window = Frames {
            frames: &frames,
            hashes: &hashes[..count],
            hints: &hints[..count],
        };
        while let Some((id, req, n, hash, hint)) = window.get(i) {
            if self.stops_reading(slot) {
                return (applied, WindowEnd::Stopped);
            }
            // A pipelined batch is nearly always a run of GETs or of SETs: served in one pass.
            let (served, consumed) = match req {
                Request::Get { .. } => self.get_run(slot, window.from(i)),
                Request::Set { .. } => self.set_run(slot, window.from(i)),
                _ => (0, 0),
            };
            if served > 0 {
                i += served;
                applied += consumed;
                continue;
            }
            self.apply(slot, id, req, hash, hint, now);
            applied += n;
            i += 1;
        }
        if self.stops_reading(slot) {
            return (applied, WindowEnd::Stopped);
        }
        (applied, end)
    }

    /// Whether the connection takes no more requests for now: it is closing, or its queued
    /// output passed the high-water mark (then it pauses until the output drains).
    fn stops_reading(&mut self, slot: usize) -> bool {
        let high = self.config.high_water;
        let c = &mut self.conns[slot];
        if c.phase == Phase::Closing {
            return true;
        }
        if c.out.pending() > high {
            c.read_paused = true;
            return true;
        }
        false
    }
}
