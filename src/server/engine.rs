//! The server's state and its request handling, independent of mio and of the transport.
//!
//! The engine owns the store, the hub of subscriptions and waits, and the connections (any
//! non-blocking `Read + Write` stream). The event loop in [`super`] tells it when a connection
//! is readable or writable and when time passes; the engine reads, decodes, applies, queues
//! replies and pushes, and writes. Everything produced from one read goes out in one vectored
//! write.
//!
//! Per connection, in order: read once, decode every whole frame in the buffer, apply each,
//! queue its reply; then write. Frames are decoded in windows of up to [`PREFETCH_FRAMES`]:
//! when a window holds a pipelined batch, the store is asked to start loading the records its
//! frames name before any is applied ([`Store::prefetch`]), so the batch's cache misses
//! overlap instead of each lookup waiting for its own. A connection whose queued output
//! passes [`HIGH_WATER`] stops being read until it drains below [`LOW_WATER`] (a client that
//! never reads its replies cannot make the server buffer without bound).
//!
//! Errors: a semantic error (not an integer) is an error reply and the connection goes on; an
//! unknown opcode is an error reply and the frame is skipped; any other framing error queues an
//! error reply and closes that connection once the reply is sent (or after
//! [`CLOSE_TIMEOUT`]).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use slab::Slab;
use smallvec::SmallVec;

use super::connection::{Connection, Phase, SubState};
use super::hub::{Hub, Subscriber, Waiter};
use super::lifecycle::Lifecycle;
use crate::protocol::{
    self, encode_header, DecodeError, Decoded, ErrorCode, Limits, Push, PushKind, Reply, Request,
    RequestId, WakeReason, NO_TIMEOUT,
};
use crate::store::{Entry, IncrError, Store};

/// Queued output above which a connection is no longer read.
pub const HIGH_WATER: usize = 4 << 20;
/// Queued output below which reading resumes.
pub const LOW_WATER: usize = 1 << 20;
/// Queued output above which subscription events for a connection are dropped (and counted,
/// then reported as `Lagged`).
pub const SUB_OUT_LIMIT: usize = 8 << 20;
/// Time a new connection has to present its token.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection in error has to take its error reply before it is closed.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most subscriptions on one connection.
pub const MAX_SUBS_PER_CONN: usize = 4096;
/// Most pending waits on one connection.
pub const MAX_WAITS_PER_CONN: usize = 65536;
/// Most entries in one keys/items chunk.
pub const CHUNK_ENTRIES: usize = 4096;
/// Bytes after which a keys/items chunk is cut.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Most frames decoded at once: the window whose records the engine asks the store for
/// together ([`Store::prefetch`]) before applying them.
pub const PREFETCH_FRAMES: usize = 128;

/// Counters, reported by the `stats` request. Plain integers: nothing logs on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests applied.
    pub requests: u64,
    /// `get` requests.
    pub gets: u64,
    /// `get` requests that found the key.
    pub hits: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Events pushed to subscribers.
    pub events: u64,
    /// Events dropped for slow subscribers.
    pub events_dropped: u64,
    /// Connections closed for a protocol error.
    pub protocol_errors: u64,
}

/// What the engine needs to know at start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Exit when idle for `linger`.
    pub auto_kill: bool,
    /// How long an idle server waits for a new client.
    pub linger: Duration,
    /// Frame limits.
    pub limits: Limits,
    /// The token clients must present.
    pub token: Vec<u8>,
}

/// A connection to close at a deadline unless it is `Ready` by then (its handshake, or the time
/// an erring connection has to take its error reply). `serial` tells it from a later connection
/// in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    slot: usize,
    serial: u64,
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

/// The key a request looks up in the store, if it does.
fn stored_key<'a>(req: &Request<'a>) -> Option<&'a [u8]> {
    match *req {
        Request::Get { key }
        | Request::Set { key, .. }
        | Request::Exists { key }
        | Request::Remove { key }
        | Request::Incr { key, .. } => Some(key),
        _ => None,
    }
}

/// The server's state.
pub struct Engine<S> {
    store: Store,
    hub: Hub,
    conns: Slab<Connection<S>>,
    lifecycle: Lifecycle,
    stats: Stats,
    config: EngineConfig,
    timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, Timer)>>,
    dirty: Vec<usize>,
    serial: u64,
    shutdown_requested: bool,
    scratch: Vec<u8>,
    started: Instant,
}

impl<S> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.store.len())
            .field("connections", &self.conns.len())
            .finish()
    }
}

fn error_reply(code: ErrorCode, arg: u64) -> Reply<'static> {
    // The message is for people reading a capture; programs match the code.
    Reply::Error {
        code,
        arg,
        message: code.message().as_bytes(),
    }
}

fn queue_reply<S>(c: &mut Connection<S>, id: RequestId, r: &Reply<'_>) {
    c.out.with_buf(|b| r.encode(id, b));
}

/// Queues a `Set` push of a stored entry (key and value go from its segment, not copied).
fn queue_set_push<S>(c: &mut Connection<S>, sub: u32, e: &Entry) {
    let (key_len, value_len) = (e.key_len(), e.value().len());
    let h = protocol::Header {
        kind: protocol::FrameKind::Push as u8,
        code: PushKind::Set as u8,
        id: sub,
        key_len: key_len as u32,
        value_len: value_len as u32,
        arg: 0,
    };
    c.out.with_buf(|b| encode_header(b, &h));
    c.out.push_shared(e.clone(), 0, key_len + value_len);
}

fn queue_push<S>(c: &mut Connection<S>, p: &Push<'_>) {
    c.out.with_buf(|b| p.encode(b));
}

/// What a change looks like to listeners.
enum Change<'a> {
    Set(&'a Entry),
    Removed(&'a [u8]),
    Cleared,
}

/// A push with no key or value (`Lagged`, `Cleared`, `Closed`, `Woken`).
fn signal(kind: PushKind, id: u32, arg: u64) -> Push<'static> {
    Push {
        kind,
        id,
        key: &[],
        value: &[],
        arg,
    }
}

/// Queues `change` for subscription `i` of `c`, after a `Lagged` count if events were dropped
/// before; or, when the connection's queued output is over [`SUB_OUT_LIMIT`], drops it and
/// counts it. Returns whether anything was queued.
fn deliver<S>(c: &mut Connection<S>, i: usize, change: &Change<'_>, stats: &mut Stats) -> bool {
    let id = c.subs[i].id;
    if c.out.pending() > SUB_OUT_LIMIT {
        c.subs[i].lagged += 1;
        stats.events_dropped += 1;
        return false;
    }
    let lagged = std::mem::take(&mut c.subs[i].lagged);
    if lagged > 0 {
        queue_push(c, &signal(PushKind::Lagged, id, lagged));
    }
    match change {
        Change::Set(e) => queue_set_push(c, id, e),
        Change::Removed(k) => queue_push(
            c,
            &Push {
                kind: PushKind::Removed,
                id,
                key: k,
                value: &[],
                arg: 0,
            },
        ),
        Change::Cleared => queue_push(c, &signal(PushKind::Cleared, id, 0)),
    }
    stats.events += 1;
    true
}

impl<S: Read + Write> Engine<S> {
    /// A fresh engine at `now`.
    pub fn new(config: EngineConfig, store: Store, now: Instant) -> Self {
        Engine {
            store,
            hub: Hub::default(),
            conns: Slab::new(),
            lifecycle: Lifecycle::new(config.auto_kill, config.linger, now),
            stats: Stats::default(),
            config,
            timers: Default::default(),
            dirty: Vec::new(),
            serial: 0,
            shutdown_requested: false,
            scratch: Vec::new(),
            started: now,
        }
    }

    /// Adds an accepted connection; returns its slot.
    pub fn accept(&mut self, stream: S, now: Instant) -> usize {
        self.serial += 1;
        let deadline = now + HANDSHAKE_TIMEOUT;
        let slot = self
            .conns
            .insert(Connection::new(stream, deadline, self.serial));
        self.timers.push(std::cmp::Reverse((
            deadline,
            Timer {
                slot,
                serial: self.serial,
            },
        )));
        self.lifecycle.connected();
        self.stats.accepted += 1;
        slot
    }

    /// The stream of a connection, to register it with a poller.
    pub fn stream_mut(&mut self, slot: usize) -> Option<&mut S> {
        self.conns.get_mut(slot).map(|c| &mut c.stream)
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The store (read-only), for tests and fuzzing.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bytes queued for a connection, if it is open.
    pub fn pending_output(&self, slot: usize) -> Option<usize> {
        self.conns.get(slot).map(|c| c.out.pending())
    }

    /// Asks the engine to shut down at the next [`Engine::should_exit`].
    pub fn request_shutdown(&mut self) {
        self.shutdown_requested = true;
    }

    /// Whether the loop should stop: shutdown requested, or idle past `linger`.
    pub fn should_exit(&self, now: Instant) -> bool {
        self.shutdown_requested || self.lifecycle.should_exit(now)
    }

    /// The next time [`Engine::tick`] has work, if any.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let timers = self.timers.peek().map(|r| r.0 .0);
        [timers, self.hub.next_deadline(), self.lifecycle.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The connection can be read: read, apply, reply, until a read says `WouldBlock` (or the
    /// peer closed) or the connection's output is over the high-water mark.
    pub fn readable(&mut self, slot: usize, now: Instant) {
        self.read_until(slot, now, false);
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
        self.read_until(slot, now, !closed);
    }

    fn read_until(&mut self, slot: usize, now: Instant, stop_when_drained: bool) {
        loop {
            let Some(c) = self.conns.get_mut(slot) else {
                return;
            };
            if c.phase == Phase::Closing || c.read_paused {
                return;
            }
            match c.rbuf.read_from(&mut c.stream, c.need) {
                Ok(0) => return self.close(slot, now),
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    let drained = c.rbuf.drained();
                    self.process(slot, now);
                    self.flush(slot, now);
                    if drained && stop_when_drained {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot, now),
            }
        }
    }

    /// The connection can be written: send what is queued, and resume reading if it was
    /// paused and the queue drained.
    pub fn writable(&mut self, slot: usize, now: Instant) {
        self.flush(slot, now);
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.read_paused && c.out.pending() < LOW_WATER {
            c.read_paused = false;
            // Frames may already be buffered, and the socket may hold more: edge-triggered
            // readiness will not say so again.
            self.process(slot, now);
            self.flush(slot, now);
            self.readable(slot, now);
        }
    }

    /// Fires due timers and sends what events queued on other connections.
    pub fn tick(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Timer { slot, serial } = timer;
            if let Some(c) = self.conns.get(slot) {
                if c.serial == serial && c.phase != Phase::Ready {
                    self.close(slot, now);
                }
            }
        }
        for (slot, w) in self.hub.take_expired(now) {
            self.wake(slot, w, WakeReason::TimedOut);
        }
        self.flush_dirty(now);
    }

    /// Ends every wait (`Woken` with reason shutdown) and subscription (`Closed`) and sends
    /// what it can without blocking.
    pub fn shutdown(&mut self, now: Instant) {
        for (slot, w) in self.hub.take_all_waits() {
            self.wake(slot, w, WakeReason::Shutdown);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            let c = &mut self.conns[slot];
            for i in 0..c.subs.len() {
                let id = c.subs[i].id;
                queue_push(c, &signal(PushKind::Closed, id, 0));
            }
            self.flush(slot, now);
        }
    }

    fn mark_dirty(dirty: &mut Vec<usize>, slot: usize) {
        if !dirty.contains(&slot) {
            dirty.push(slot);
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        while let Some(slot) = self.dirty.pop() {
            self.flush(slot, now);
        }
    }

    fn flush(&mut self, slot: usize, now: Instant) {
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

    /// After a drain: tell subscribers of this connection how many events they missed.
    fn report_lag(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let mut any = false;
        for i in 0..c.subs.len() {
            let (id, lagged) = (c.subs[i].id, c.subs[i].lagged);
            if lagged > 0 {
                c.subs[i].lagged = 0;
                queue_push(c, &signal(PushKind::Lagged, id, lagged));
                any = true;
            }
        }
        if any {
            Self::mark_dirty(&mut self.dirty, slot);
        }
    }

    /// Closes a connection: its subscriptions and waits end with it.
    pub fn close(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns.try_remove(slot) else {
            return;
        };
        for s in &c.subs {
            let hash = s.key.as_deref().map_or(0, |k| self.store.hash(k));
            self.hub.unsubscribe(
                Subscriber {
                    conn: slot,
                    sub: s.id,
                },
                hash,
                s.key.as_deref(),
            );
        }
        for &w in &c.waits {
            self.hub.remove_wait(w);
        }
        self.dirty.retain(|&d| d != slot);
        self.lifecycle.disconnected(now);
    }

    fn begin_close(&mut self, slot: usize, now: Instant) {
        let c = &mut self.conns[slot];
        c.phase = Phase::Closing;
        let serial = c.serial;
        self.stats.protocol_errors += 1;
        self.timers.push(std::cmp::Reverse((
            now + CLOSE_TIMEOUT,
            Timer { slot, serial },
        )));
    }

    /// Decodes and applies every whole frame in the connection's buffer, a window of up to
    /// [`PREFETCH_FRAMES`] frames at a time ([`Engine::apply_window`]).
    fn process(&mut self, slot: usize, now: Instant) {
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
                    queue_reply(c, id, &error_reply(ErrorCode::UnknownOp, 0));
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
                        _ => rbuf
                            .bytes()
                            .get(4..8)
                            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes"))),
                    };
                    queue_reply(c, id, &error_reply(code, arg as u64));
                    self.begin_close(slot, now);
                    break;
                }
            }
        }
        if let Some(c) = self.conns.get_mut(slot) {
            c.rbuf = rbuf;
        }
    }

    /// Decodes up to [`PREFETCH_FRAMES`] whole frames from the start of `bytes`, each once;
    /// when there are several (a pipelined batch) and the connection is past its handshake,
    /// asks the store to start loading the records their keys name ([`Store::prefetch`]), so
    /// that the batch's cache misses overlap; then applies them in order while the connection
    /// takes requests ([`Engine::stops_reading`]). Returns the bytes of the frames applied and
    /// why the window ended.
    fn apply_window(&mut self, slot: usize, bytes: &[u8], now: Instant) -> (usize, WindowEnd) {
        let mut frames: SmallVec<[(RequestId, Request<'_>, usize); PREFETCH_FRAMES]> =
            SmallVec::new();
        let mut end = WindowEnd::Full;
        let mut at = 0;
        while frames.len() < PREFETCH_FRAMES {
            match protocol::decode_request(&bytes[at..], &self.config.limits) {
                Ok(Decoded::Frame((id, req), n)) => {
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
        if frames.len() > 1 && self.conns[slot].phase == Phase::Ready {
            let hashes: SmallVec<[u64; PREFETCH_FRAMES]> = frames
                .iter()
                .filter_map(|(_, req, _)| stored_key(req))
                .map(|key| self.store.hash(key))
                .collect();
            self.store.prefetch(&hashes);
        }
        let mut applied = 0;
        for (id, req, n) in frames {
            if self.stops_reading(slot) {
                return (applied, WindowEnd::Stopped);
            }
            self.apply(slot, id, req, now);
            applied += n;
        }
        if self.stops_reading(slot) {
            return (applied, WindowEnd::Stopped);
        }
        (applied, end)
    }

    /// Whether the connection takes no more requests for now: it is closing, or its queued
    /// output passed [`HIGH_WATER`] (then its reading pauses until the output drains).
    fn stops_reading(&mut self, slot: usize) -> bool {
        let c = &mut self.conns[slot];
        if c.phase == Phase::Closing {
            return true;
        }
        if c.out.pending() > HIGH_WATER {
            c.read_paused = true;
            return true;
        }
        false
    }

    /// Applies one request from connection `slot` and queues its reply.
    fn apply(&mut self, slot: usize, id: RequestId, req: Request<'_>, now: Instant) {
        self.stats.requests += 1;
        let c = &mut self.conns[slot];
        if let Phase::Handshake(_) = c.phase {
            let reply = match req {
                Request::Hello { version, token } if ct_eq(token, &self.config.token) => {
                    if version == protocol::VERSION {
                        c.phase = Phase::Ready;
                        queue_reply(c, id, &Reply::Uint(protocol::VERSION));
                        return;
                    }
                    error_reply(ErrorCode::VersionMismatch, protocol::VERSION)
                }
                _ => error_reply(ErrorCode::Unauthorized, 0),
            };
            queue_reply(c, id, &reply);
            self.begin_close(slot, now);
            return;
        }
        match req {
            Request::Hello { .. } => queue_reply(c, id, &Reply::Uint(protocol::VERSION)),
            Request::Get { key } => {
                self.stats.gets += 1;
                let hash = self.store.hash(key);
                match self.store.get(hash, key) {
                    Some(e) => {
                        self.stats.hits += 1;
                        let h = protocol::Header {
                            value_len: e.value().len() as u32,
                            ..Reply::Value(&[]).header(id)
                        };
                        c.out.with_buf(|b| encode_header(b, &h));
                        c.out.push_shared(e.to_entry(), e.key_len(), e.len());
                    }
                    None => queue_reply(c, id, &Reply::Nil),
                }
            }
            Request::Set { key, value } => {
                let hash = self.store.hash(key);
                queue_reply(c, id, &Reply::Done);
                let e = self.store.set(hash, key, value);
                if !self.hub.is_idle() {
                    let e = e.to_entry();
                    self.publish(hash, Change::Set(&e));
                }
            }
            Request::Exists { key } => {
                let hash = self.store.hash(key);
                queue_reply(c, id, &Reply::Bool(self.store.get(hash, key).is_some()));
            }
            Request::Remove { key } => {
                let hash = self.store.hash(key);
                let existed = self.store.remove(hash, key);
                queue_reply(c, id, &Reply::Bool(existed));
                if existed && !self.hub.is_idle() {
                    self.publish(hash, Change::Removed(key));
                }
            }
            Request::Incr { key, delta } => {
                let hash = self.store.hash(key);
                match self.store.incr(hash, key, delta) {
                    Ok((n, e)) => {
                        queue_reply(c, id, &Reply::Int(n));
                        if !self.hub.is_idle() {
                            let e = e.to_entry();
                            self.publish(hash, Change::Set(&e));
                        }
                    }
                    Err(IncrError::NotAnInteger) => {
                        queue_reply(c, id, &error_reply(ErrorCode::NotAnInteger, 0))
                    }
                    Err(IncrError::Overflow) => {
                        queue_reply(c, id, &error_reply(ErrorCode::Overflow, 0))
                    }
                }
            }
            Request::Clear => {
                queue_reply(c, id, &Reply::Done);
                self.store.clear();
                self.publish_clear();
            }
            Request::Count => queue_reply(c, id, &Reply::Uint(self.store.len() as u64)),
            Request::Keys { cursor, until } | Request::Items { cursor, until } => {
                let with_values = matches!(req, Request::Items { .. });
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
                    CHUNK_ENTRIES,
                    CHUNK_BYTES,
                    &mut self.scratch,
                );
                queue_reply(
                    c,
                    id,
                    &Reply::Chunk {
                        next,
                        until,
                        body: &self.scratch,
                    },
                );
            }
            Request::Wait {
                key,
                value,
                timeout_ms,
            } => {
                let hash = self.store.hash(key);
                let satisfied = value
                    .is_some_and(|v| self.store.get(hash, key).is_some_and(|e| e.value() == v));
                if satisfied {
                    queue_reply(c, id, &Reply::Bool(true));
                } else if timeout_ms == 0 {
                    queue_reply(c, id, &Reply::Bool(false));
                } else if c.waits.len() >= MAX_WAITS_PER_CONN {
                    queue_reply(c, id, &error_reply(ErrorCode::Busy, 0));
                } else {
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
                    let w = self.hub.add_wait(w, deadline);
                    c.waits.push(w);
                    queue_reply(c, id, &Reply::Done);
                }
            }
            Request::Subscribe { key } => {
                if c.subs.len() >= MAX_SUBS_PER_CONN {
                    return queue_reply(c, id, &error_reply(ErrorCode::Busy, 0));
                }
                let sub = c.next_sub;
                c.next_sub = c.next_sub.wrapping_add(1).max(1);
                c.subs.push(SubState {
                    id: sub,
                    key: key.map(Into::into),
                    lagged: 0,
                });
                let hash = key.map_or(0, |k| self.store.hash(k));
                self.hub
                    .subscribe(Subscriber { conn: slot, sub }, hash, key);
                queue_reply(c, id, &Reply::Uint(sub as u64));
            }
            Request::Unsubscribe { sub } => match c.subs.iter().position(|s| s.id == sub) {
                Some(i) => {
                    let s = c.subs.remove(i);
                    queue_reply(c, id, &Reply::Done);
                    let hash = s.key.as_deref().map_or(0, |k| self.store.hash(k));
                    self.hub
                        .unsubscribe(Subscriber { conn: slot, sub }, hash, s.key.as_deref());
                }
                None => queue_reply(c, id, &error_reply(ErrorCode::NoSuchSubscription, 0)),
            },
            Request::Stats => {
                let text = self.stats_json(now);
                let c = &mut self.conns[slot];
                queue_reply(c, id, &Reply::Text(text.as_bytes()));
            }
            Request::Shutdown => {
                queue_reply(c, id, &Reply::Done);
                self.shutdown_requested = true;
            }
            Request::Ping => queue_reply(c, id, &Reply::Done),
        }
    }

    fn stats_json(&self, now: Instant) -> String {
        let s = &self.stats;
        serde_json::json!({
            "pid": std::process::id(),
            "uptime_ms": now.saturating_duration_since(self.started).as_millis() as u64,
            "keys": self.store.len(),
            "store_bytes": self.store.allocated_bytes(),
            "record_bytes": self.store.live_bytes(),
            "connections": self.conns.len(),
            "waits": self.hub.wait_count(),
            "accepted": s.accepted,
            "requests": s.requests,
            "gets": s.gets,
            "hits": s.hits,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "events": s.events,
            "events_dropped": s.events_dropped,
            "protocol_errors": s.protocol_errors,
            "max_value_len": self.config.limits.max_value,
        })
        .to_string()
    }

    /// Tells subscribers and waiters of `hash`/key about a change.
    fn publish(&mut self, hash: u64, change: Change<'_>) {
        let key = match &change {
            Change::Set(e) => e.key(),
            Change::Removed(k) => k,
            Change::Cleared => &[],
        };
        for s in self.hub.subscribers(hash, key) {
            let Some(c) = self.conns.get_mut(s.conn) else {
                continue;
            };
            let Some(i) = c.subs.iter().position(|x| x.id == s.sub) else {
                continue;
            };
            if deliver(c, i, &change, &mut self.stats) {
                Self::mark_dirty(&mut self.dirty, s.conn);
            }
        }
        let value = match &change {
            Change::Set(e) => Some(e.value()),
            _ => None,
        };
        for (slot, w) in self.hub.take_woken(hash, key, value) {
            self.wake(slot, w, WakeReason::Event);
        }
    }

    fn publish_clear(&mut self) {
        for (slot, c) in self.conns.iter_mut() {
            let mut any = false;
            for i in 0..c.subs.len() {
                any |= deliver(c, i, &Change::Cleared, &mut self.stats);
            }
            if any {
                Self::mark_dirty(&mut self.dirty, slot);
            }
        }
        for (slot, w) in self.hub.take_all_waits() {
            self.wake(slot, w, WakeReason::Event);
        }
    }

    /// Ends wait `slot` (already taken from the hub) with `reason`.
    fn wake(&mut self, slot: usize, w: Waiter, reason: WakeReason) {
        let Some(c) = self.conns.get_mut(w.conn) else {
            return;
        };
        c.waits.retain(|s| *s != slot);
        queue_push(c, &signal(PushKind::Woken, w.req, reason as u64));
        Self::mark_dirty(&mut self.dirty, w.conn);
    }
}

/// Compares in time independent of where the first difference is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
