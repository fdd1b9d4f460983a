//! One multiplexed connection of the async client, shared by every task of a handle.
//!
//! Three parts, and no lock held across an await:
//!
//! - **Callers** register their request under a fresh id (a `oneshot` sender in `pending`) and
//!   append its frame to the write queue, both under one short lock and with no await in
//!   between, then await their receiver. A caller that is dropped at any point either did
//!   nothing (before the lock) or left a whole frame and its registration behind (after it):
//!   the connection never sees half a frame.
//! - **The writer task** takes the whole queue at once (so one write carries every request
//!   queued since the last one) and writes it.
//! - **The reader task** decodes every whole frame a read brings, routes each reply by id to
//!   its sender under one lock per read, and sends outside the lock. A reply whose receiver was
//!   dropped (a cancelled caller) is discarded; no other caller's reply is affected.
//!
//! The event connection (waits and subscriptions) is the same type: its pushes are told from
//! replies by their frame kind, and routed to subscriptions by subscription id and to waits by
//! request id. A subscription's reply registers its queue before the next frame is routed, so
//! no event after the reply is missed.
//!
//! When the connection fails (the server went away, a frame that does not decode, a stuck
//! server past the request timeout, or the runtime shut down), it is marked broken once, every
//! registration is dropped (each caller then gets the reason), the socket is shut down and
//! the tasks are aborted.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;
use upcache_transports::Stream;

use super::stream::{SubGuard, SubQueue};
use crate::client::conn::{Answer, Peer};
use crate::client::lease::LeaseAnswer;
use crate::client::{fork_generation, unexpected, Event, EventKind};
use crate::error::{Error, Result};
use crate::protocol::{
    self, DecodeError, Decoded, Incoming, PushKind, Request, RequestId, SubId, WakeReason,
};
use crate::readbuf::ReadBuf;

/// Bytes queued for the writer past which callers wait for the writer to take them. One
/// request is always accepted into an empty queue, however long.
const TX_HIGH: usize = 4 << 20;
/// Requests queued past which the caller that queued the last one writes the queue itself,
/// when no write is under way: the server then works on them while later tasks are still
/// queuing theirs, instead of every task's request waiting for the last one.
const FLUSH_FRAMES: u32 = 16;
/// ... unless this many requests are already with the server, unanswered: it has work, and
/// larger writes cost the client less.
const FLUSH_IN_FLIGHT: usize = 64;
/// A write buffer bigger than this is given back once written.
const TX_KEEP: usize = 1 << 20;

/// The socket, shared by the reader task, the writer task and callers that write the queue.
#[derive(Debug)]
enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Socket {
    /// Hands a connected, handshaken blocking stream to tokio.
    fn from_std(s: Stream) -> io::Result<Self> {
        s.set_timeout(None)?;
        s.set_nonblocking(true)?;
        Ok(match s {
            Stream::Tcp(t) => Socket::Tcp(tokio::net::TcpStream::from_std(t)?),
            Stream::Unix(u) => Socket::Unix(tokio::net::UnixStream::from_std(u)?),
        })
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.readable().await,
            Socket::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.writable().await,
            Socket::Unix(s) => s.writable().await,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_read(buf),
            Socket::Unix(s) => s.try_read(buf),
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write(buf),
            Socket::Unix(s) => s.try_write(buf),
        }
    }

    /// Shuts both directions down: the server sees the connection close now, whoever still
    /// holds the socket.
    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Both),
            Socket::Unix(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Both),
        };
    }
}

/// `std::io::Read` over tokio's non-blocking reads, for [`ReadBuf::read_from`]: `WouldBlock`
/// means wait for readiness.
struct TryRead<'a>(&'a Socket);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Who gets the reply to a request.
pub(crate) enum Pending {
    /// A caller awaiting the reply.
    Call(oneshot::Sender<Answer>),
    /// A wait, and whether it waits for a value: its outcome once the server ends it.
    Wait(oneshot::Sender<Result<bool>>, bool),
    /// A subscription: the caller gets a guard that unsubscribes when dropped; its events go
    /// to the queue from the reply on.
    Subscribe(oneshot::Sender<Result<SubGuard>>, Arc<SubQueue>),
    /// A `GET_OR_LEASE` of this key: the value, or the lease, once the server says.
    Lease(oneshot::Sender<Result<LeaseAnswer>>, Box<[u8]>),
    /// Nobody (unsubscribe).
    Ignore,
}

/// Why a connection is unusable.
#[derive(Clone, Debug)]
enum Broken {
    Gone,
    TimedOut,
    Protocol(DecodeError),
}

/// What callers and the reader share, under one lock.
#[derive(Default)]
struct State {
    /// Encoded requests not yet taken by a writer, and how many.
    tx: Vec<u8>,
    queued: u32,
    /// A write is under way (by the writer task or a caller): only one at a time, so the
    /// frames go out in the order they were queued.
    writing: bool,
    /// An empty buffer with capacity, for a caller that takes the queue to write it.
    spare: Vec<u8>,
    next_id: RequestId,
    pending: HashMap<RequestId, Pending, ahash::RandomState>,
    /// Waits the server registered (it answered `DONE`), by request id, until their wake-up.
    waits: HashMap<RequestId, (oneshot::Sender<Result<bool>>, bool), ahash::RandomState>,
    subs: HashMap<SubId, Arc<SubQueue>, ahash::RandomState>,
    /// `GET_OR_LEASE` requests the server answered `WAITING`, by request id, until their push.
    #[allow(clippy::type_complexity)]
    leases:
        HashMap<RequestId, (oneshot::Sender<Result<LeaseAnswer>>, Box<[u8]>), ahash::RandomState>,
    broken: Option<Broken>,
}

/// The state of one connection, shared by its handle, its tasks and its subscriptions.
pub(crate) struct Shared {
    pub(crate) peer: Peer,
    sock: Socket,
    state: Mutex<State>,
    /// Bytes were queued into an empty `State::tx`.
    wake_writer: Notify,
    /// The writer took a queue of at least [`TX_HIGH`] bytes.
    drained: Notify,
    /// Reads that brought at least one frame, for the request-timeout watchdog.
    progress: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    fork_gen: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.peer.name)
            .field("endpoint", &self.peer.endpoint)
            .finish_non_exhaustive()
    }
}

/// One reply or push, owned, routed after the read that brought it.
enum Item {
    Reply(RequestId, Answer),
    Push {
        kind: PushKind,
        id: u32,
        key: Vec<u8>,
        value: Vec<u8>,
        arg: u64,
    },
}

impl Item {
    fn own(i: Incoming<'_>) -> Self {
        match i {
            Incoming::Reply(id, r) => Item::Reply(id, Answer::from_reply(&r)),
            Incoming::Push(p) => Item::Push {
                kind: p.kind,
                id: p.id,
                key: p.key.to_vec(),
                value: p.value.to_vec(),
                arg: p.arg,
            },
        }
    }
}

/// An outcome handed over once the routing lock is released.
enum Delivery {
    Call(oneshot::Sender<Answer>, Answer),
    Wait(oneshot::Sender<Result<bool>>, Result<bool>),
    Subscribe(oneshot::Sender<Result<SubGuard>>, Result<SubGuard>),
    Lease(
        oneshot::Sender<Result<LeaseAnswer>>,
        Result<LeaseAnswer>,
        Box<[u8]>,
    ),
}

impl Delivery {
    fn deliver(self, shared: &Shared) {
        // A closed receiver is a cancelled caller: the outcome is dropped here (a
        // subscription's guard then unsubscribes).
        match self {
            Delivery::Call(tx, a) => {
                let _ = tx.send(a);
            }
            Delivery::Wait(tx, r) => {
                let _ = tx.send(r);
            }
            Delivery::Subscribe(tx, r) => {
                let _ = tx.send(r);
            }
            Delivery::Lease(tx, r, key) => {
                // A lease for a caller that is gone passes on at once, not at its timeout.
                if let Err(Ok(LeaseAnswer::Leased(req))) = tx.send(r) {
                    shared.release(&key, req);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one holds plain data anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn error_for(&self, b: Option<&Broken>) -> Error {
        match b {
            Some(Broken::TimedOut) => Error::Timeout {
                name: self.peer.name.clone(),
                after: self.peer.request_timeout.unwrap_or_default(),
            },
            Some(Broken::Protocol(e)) => Error::Protocol(e.clone()),
            _ => self.peer.gone(),
        }
    }

    /// The error of a broken connection (every call's, once it broke).
    pub(crate) fn error(&self) -> Error {
        self.error_for(self.lock().broken.as_ref())
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn check_usable(&self, st: &State) -> Result<()> {
        if st.broken.is_some() {
            return Err(self.error_for(st.broken.as_ref()));
        }
        if self.fork_gen != fork_generation() {
            return Err(Error::Io {
                context: "using an async handle in a process forked after it was opened",
                source: io::Error::other("open the cache again in this process"),
            });
        }
        Ok(())
    }

    /// The state, once the write queue has room (callers wait here, registering nothing, while
    /// the writer is more than [`TX_HIGH`] bytes behind).
    async fn room(&self) -> Result<MutexGuard<'_, State>> {
        loop {
            {
                let st = self.lock();
                self.check_usable(&st)?;
                if st.tx.len() < TX_HIGH {
                    return Ok(st);
                }
            }
            // A `Notified` created before the check receives every later `notify_waiters`.
            let room = self.drained.notified();
            if self.lock().tx.len() < TX_HIGH {
                continue;
            }
            room.await;
        }
    }

    /// Registers `pending` under a fresh id and queues the frame of `req`. No await: a caller
    /// is never cancelled half-way through.
    fn enqueue(&self, st: &mut State, req: &Request<'_>, pending: Pending) {
        let id = st.next_id;
        st.next_id = id.wrapping_add(1);
        st.pending.insert(id, pending);
        let was_empty = st.tx.is_empty();
        let value = req.encode_head(id, &mut st.tx);
        st.tx.extend_from_slice(value);
        st.queued += 1;
        if was_empty {
            self.wake_writer.notify_one();
        }
    }

    /// Once [`FLUSH_FRAMES`] requests are queued, no write is under way and fewer than
    /// [`FLUSH_IN_FLIGHT`] are with the server, writes the queue
    /// from here, as far as the socket takes it without waiting; the writer task sends the
    /// rest. No await: cancelling the caller cannot interrupt it.
    fn flush_if_due(&self, mut st: MutexGuard<'_, State>) {
        let in_flight = st.pending.len().saturating_sub(st.queued as usize);
        if st.writing || st.queued < FLUSH_FRAMES || in_flight >= FLUSH_IN_FLIGHT {
            return;
        }
        st.writing = true;
        st.queued = 0;
        let spare = std::mem::take(&mut st.spare);
        let mut buf = std::mem::replace(&mut st.tx, spare);
        drop(st);
        let mut written = 0;
        let failed = loop {
            match self.sock.try_write(&buf[written..]) {
                Ok(0) => break true,
                Ok(n) => {
                    written += n;
                    if written == buf.len() {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if failed {
            self.break_with(Broken::Gone);
            return;
        }
        let mut st = self.lock();
        st.writing = false;
        if st.broken.is_some() {
            return;
        }
        if written < buf.len() {
            // What the socket did not take goes first: frames leave in queue order.
            buf.drain(..written);
            buf.extend_from_slice(&st.tx);
            st.tx.clear();
            std::mem::swap(&mut st.tx, &mut buf);
        }
        buf.clear();
        if buf.capacity() <= TX_KEEP {
            st.spare = buf;
        }
        // The writer task may have found a write under way and left: hand it what is queued.
        if !st.tx.is_empty() {
            self.wake_writer.notify_one();
        }
    }

    /// Queues `req` without waiting for room (small requests: unsubscribe, one chunk of keys).
    pub(crate) fn submit(&self, req: &Request<'_>, pending: Pending) -> Result<()> {
        let mut st = self.lock();
        self.check_usable(&st)?;
        self.enqueue(&mut st, req, pending);
        Ok(())
    }

    /// Queues `req` once the write queue has room.
    pub(crate) async fn start(&self, req: &Request<'_>, pending: Pending) -> Result<()> {
        let mut st = self.room().await?;
        self.enqueue(&mut st, req, pending);
        self.flush_if_due(st);
        Ok(())
    }

    /// Sends `req` and returns its reply.
    pub(crate) async fn call(&self, req: &Request<'_>) -> Result<Answer> {
        let (tx, rx) = oneshot::channel();
        self.start(req, Pending::Call(tx)).await?;
        rx.await.map_err(|_| self.error())
    }

    /// Queues the frames of a pipeline (each starting at an offset in `starts`, ids written
    /// here) and returns the receivers of their replies, in order.
    pub(crate) async fn start_batch(
        &self,
        frames: &mut [u8],
        starts: &[usize],
    ) -> Result<Vec<oneshot::Receiver<Answer>>> {
        let mut rxs = Vec::with_capacity(starts.len());
        let mut st = self.room().await?;
        for &at in starts {
            let id = st.next_id;
            st.next_id = id.wrapping_add(1);
            protocol::set_frame_id(&mut frames[at..], id);
            let (tx, rx) = oneshot::channel();
            st.pending.insert(id, Pending::Call(tx));
            rxs.push(rx);
        }
        let was_empty = st.tx.is_empty();
        st.tx.extend_from_slice(frames);
        st.queued = st.queued.saturating_add(starts.len() as u32);
        if was_empty {
            self.wake_writer.notify_one();
        }
        self.flush_if_due(st);
        Ok(rxs)
    }

    /// Gives up the lease request `req` got (the reply is ignored; the server applies it
    /// before any later request of this connection).
    pub(crate) fn release(&self, key: &[u8], req: RequestId) {
        let _ = self.submit(&Request::Release { key, req }, Pending::Ignore);
    }

    /// Forgets subscription `sub` and tells the server (the reply is ignored).
    pub(crate) fn unsubscribe(&self, sub: SubId) {
        let mut st = self.lock();
        st.subs.remove(&sub);
        if self.check_usable(&st).is_ok() {
            self.enqueue(&mut st, &Request::Unsubscribe { sub }, Pending::Ignore);
        }
    }

    /// Marks the connection broken (once), fails every registration, ends every subscription,
    /// shuts the socket down and aborts the tasks.
    fn break_with(&self, why: Broken) {
        let (pending, waits, subs, leases) = {
            let mut st = self.lock();
            if st.broken.is_some() {
                return;
            }
            st.broken = Some(why);
            st.tx = Vec::new();
            st.spare = Vec::new();
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.waits),
                std::mem::take(&mut st.subs),
                std::mem::take(&mut st.leases),
            )
        };
        // Outside the lock: dropped senders wake their callers, who read `broken`.
        drop(pending);
        drop(waits);
        drop(leases);
        for q in subs.into_values() {
            q.end();
        }
        self.sock.shutdown();
        self.wake_writer.notify_one();
        self.drained.notify_waiters();
        for t in std::mem::take(&mut *lock(&self.tasks)) {
            t.abort();
        }
    }

    /// Routes the items of one read, in order, under one lock; outcomes go to `out`.
    fn route(self: &Arc<Self>, items: &mut Vec<Item>, out: &mut Vec<Delivery>) {
        let mut guard = self.lock();
        let st = &mut *guard;
        for item in items.drain(..) {
            match item {
                Item::Reply(id, answer) => match st.pending.remove(&id) {
                    Some(Pending::Call(tx)) => out.push(Delivery::Call(tx, answer)),
                    Some(Pending::Wait(tx, for_value)) => match answer {
                        Answer::Bool(b) => out.push(Delivery::Wait(tx, Ok(b))),
                        Answer::Done => {
                            st.waits.insert(id, (tx, for_value));
                        }
                        Answer::Failed(code, arg, msg) => {
                            out.push(Delivery::Wait(tx, Err(self.peer.failed(code, arg, msg))))
                        }
                        other => out.push(Delivery::Wait(tx, Err(unexpected(&self.peer, other)))),
                    },
                    Some(Pending::Subscribe(tx, queue)) => {
                        let r = match answer {
                            Answer::Uint(sub) if sub <= u64::from(SubId::MAX) => {
                                let sub = sub as SubId;
                                st.subs.insert(sub, queue);
                                Ok(SubGuard {
                                    sub,
                                    shared: Arc::clone(self),
                                })
                            }
                            Answer::Failed(code, arg, msg) => Err(self.peer.failed(code, arg, msg)),
                            other => Err(unexpected(&self.peer, other)),
                        };
                        out.push(Delivery::Subscribe(tx, r));
                    }
                    Some(Pending::Lease(tx, key)) => {
                        let r = match answer {
                            Answer::Value(v) => Ok(LeaseAnswer::Value(v)),
                            Answer::Leased => Ok(LeaseAnswer::Leased(id)),
                            Answer::Waiting => {
                                st.leases.insert(id, (tx, key));
                                continue;
                            }
                            Answer::Failed(code, arg, msg) => Err(self.peer.failed(code, arg, msg)),
                            other => Err(unexpected(&self.peer, other)),
                        };
                        out.push(Delivery::Lease(tx, r, key));
                    }
                    Some(Pending::Ignore) | None => {}
                },
                Item::Push {
                    kind,
                    id,
                    key,
                    value,
                    arg,
                } => match kind {
                    PushKind::Woken => {
                        if let Some((tx, for_value)) = st.waits.remove(&id) {
                            // A clear ends a wait for a change with true, a wait for a value
                            // with false (the key no longer holds it).
                            let cleared = arg == WakeReason::Cleared as u64;
                            let woke = arg == WakeReason::Event as u64 || (cleared && !for_value);
                            out.push(Delivery::Wait(tx, Ok(woke)));
                        }
                    }
                    PushKind::Closed => {
                        if let Some(q) = st.subs.remove(&id) {
                            q.end();
                        }
                    }
                    PushKind::LeaseValue | PushKind::LeaseGranted => {
                        if let Some((tx, key)) = st.leases.remove(&id) {
                            let r = match kind {
                                PushKind::LeaseValue => LeaseAnswer::Value(value),
                                _ => LeaseAnswer::Leased(id),
                            };
                            out.push(Delivery::Lease(tx, Ok(r), key));
                        }
                    }
                    kind => {
                        if let (Some(q), Some(event)) =
                            (st.subs.get(&id), EventKind::of_push(kind, arg))
                        {
                            let set = kind == PushKind::Set;
                            q.push(Event {
                                key,
                                kind: event,
                                value: set.then_some(value),
                            });
                        }
                    }
                },
            }
        }
    }
}

/// Breaks the connection when a task ends, however it ends (returned, aborted, or dropped by a
/// runtime that shut down): callers then get an error instead of waiting for ever.
struct BreakOnExit(Arc<Shared>);

impl Drop for BreakOnExit {
    fn drop(&mut self) {
        self.0.break_with(Broken::Gone);
    }
}

async fn read_loop(shared: Arc<Shared>, mut rbuf: ReadBuf) {
    let _end = BreakOnExit(Arc::clone(&shared));
    let sock = &shared.sock;
    let limits = shared.peer.read_limits();
    let mut items = Vec::new();
    let mut out = Vec::new();
    loop {
        let need = loop {
            match protocol::decode_incoming(rbuf.bytes(), &limits) {
                Ok(Decoded::Frame(item, n)) => {
                    let item = Item::own(item);
                    rbuf.consume(n);
                    items.push(item);
                }
                Ok(Decoded::Incomplete { need }) => break need,
                Err(e) => {
                    shared.break_with(Broken::Protocol(e));
                    return;
                }
            }
        };
        if !items.is_empty() {
            shared.route(&mut items, &mut out);
            shared.progress.fetch_add(1, Ordering::Relaxed);
            for d in out.drain(..) {
                d.deliver(&shared);
            }
        }
        loop {
            match rbuf.read_from(&mut TryRead(sock), need) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.readable().await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

async fn write_all(sock: &Socket, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sock.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_loop(shared: Arc<Shared>) {
    let _end = BreakOnExit(Arc::clone(&shared));
    let mut out = Vec::new();
    loop {
        shared.wake_writer.notified().await;
        // Let every task that is ready to run queue its request first: a woken task tends to
        // run next, so without this each request would go out in a write of its own.
        tokio::task::yield_now().await;
        loop {
            let was_full = {
                let mut st = shared.lock();
                if st.broken.is_some() {
                    return;
                }
                if st.writing || st.tx.is_empty() {
                    // A caller is writing (it wakes this task if more is queued), or nothing is.
                    break;
                }
                // The emptied buffer goes back as the queue: no allocation in the steady state.
                std::mem::swap(&mut st.tx, &mut out);
                st.queued = 0;
                st.writing = true;
                out.len() >= TX_HIGH
            };
            if was_full {
                shared.drained.notify_waiters();
            }
            if write_all(&shared.sock, &out).await.is_err() {
                return;
            }
            shared.lock().writing = false;
            out.clear();
            if out.capacity() > TX_KEEP {
                out = Vec::new();
            }
        }
    }
}

/// Breaks the connection with [`Error::Timeout`] when requests are outstanding and no reply
/// has come for `timeout` (checked every eighth of it).
async fn watchdog(shared: Arc<Shared>, timeout: Duration) {
    let period = (timeout / 8).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = shared.progress.load(Ordering::Relaxed);
    let mut stalled_since = None;
    loop {
        let now = tick.tick().await;
        let outstanding = {
            let st = shared.lock();
            if st.broken.is_some() {
                return;
            }
            !st.pending.is_empty()
        };
        let progress = shared.progress.load(Ordering::Relaxed);
        if !outstanding || progress != seen {
            seen = progress;
            stalled_since = None;
            continue;
        }
        let since = *stalled_since.get_or_insert(now);
        if now.duration_since(since) >= timeout {
            shared.break_with(Broken::TimedOut);
            return;
        }
    }
}

/// A connection: the handle that owns its tasks. Dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
}

impl Conn {
    /// Starts the reader and writer tasks (and, with `watch`, the request-timeout watchdog)
    /// on the current runtime, for a stream that is connected and has shaken hands.
    pub(crate) fn start(stream: Stream, rbuf: ReadBuf, peer: Peer, watch: bool) -> Result<Self> {
        let sock = Socket::from_std(stream).map_err(Error::io("connecting"))?;
        let timeout = peer.request_timeout;
        let shared = Arc::new(Shared {
            peer,
            sock,
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            progress: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            fork_gen: fork_generation(),
        });
        let mut tasks = vec![
            tokio::spawn(read_loop(Arc::clone(&shared), rbuf)).abort_handle(),
            tokio::spawn(write_loop(Arc::clone(&shared))).abort_handle(),
        ];
        if let (true, Some(t)) = (watch, timeout) {
            tasks.push(tokio::spawn(watchdog(Arc::clone(&shared), t)).abort_handle());
        }
        *lock(&shared.tasks) = tasks;
        // A task that failed before its handle was stored found none to abort: abort here.
        if shared.is_broken() {
            for t in std::mem::take(&mut *lock(&shared.tasks)) {
                t.abort();
            }
        }
        Ok(Conn { shared })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // In a forked child the tasks belong to the parent's runtime: leave them alone.
        if self.shared.fork_gen == fork_generation() {
            self.shared.break_with(Broken::Gone);
        }
    }
}
