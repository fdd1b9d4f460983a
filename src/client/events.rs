//! The event connection: waits and subscriptions, read by a background thread.
//!
//! A handle opens it on the first `wait_for` or `subscribe`, beside its request connection, so
//! a blocked wait never holds up other calls. One thread reads it: it hands replies to the
//! callers waiting for them, routes pushes to subscriptions by id and wake-ups to waits by
//! request id. A subscription's reply is handled by that thread too, which registers the
//! subscription before it reads the next frame: no event that follows the reply is missed.
//!
//! A subscription's queue holds at most [`SUBSCRIPTION_QUEUE`] events. When it is full, later
//! events are counted, not queued, and the subscriber gets `Lagged(n)` before the next event
//! once it catches up; the reader thread never blocks on a slow subscriber. (The server applies
//! the same rule to its socket: see `server::engine::SUB_OUT_LIMIT`.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use upcache_transports::Stream;

use super::conn::{connect, write_all, Answer, ConnectError, Peer};
use super::lease::LeaseAnswer;
use crate::error::{Error, Result};
use crate::protocol::{self, Decoded, Incoming, PushKind, Request, RequestId, SubId, WakeReason};
use crate::readbuf::ReadBuf;

/// Most events a subscription holds before it starts dropping (and counting) them.
pub const SUBSCRIPTION_QUEUE: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value delivered once, from the reader thread to a caller.
pub(crate) struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot {
            value: Mutex::new(None),
            ready: Condvar::new(),
        })
    }
    fn fill(&self, v: T) {
        let mut g = lock(&self.value);
        if g.is_none() {
            *g = Some(v);
            self.ready.notify_all();
        }
    }
    /// Waits for the value until `deadline` (`None`: for ever).
    pub(crate) fn take(&self, deadline: Option<Instant>) -> Option<T> {
        let mut g = lock(&self.value);
        loop {
            if let Some(v) = g.take() {
                return Some(v);
            }
            match deadline {
                None => g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .ready
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// What changed, as a subscriber sees it.
///
/// Later versions add kinds (eviction): match with a `_` arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The key was set, incremented or decremented; `value` holds the new value.
    Set,
    /// The key was removed.
    Removed,
    /// Every key was removed (`key` is empty).
    Cleared,
    /// The key's TTL ran out and it was removed (see [`crate::UpCache::set_with_ttl`]).
    Expired,
    /// This many events were dropped because the subscriber fell behind (`key` is empty).
    Lagged(u64),
}

impl EventKind {
    /// The event a push of `kind` (with its `arg`) is for a subscription; `None` for the pushes
    /// that are not events (`Woken`, `Closed`). The one mapping both clients use.
    pub(crate) fn of_push(kind: PushKind, arg: u64) -> Option<EventKind> {
        Some(match kind {
            PushKind::Set => EventKind::Set,
            PushKind::Removed => EventKind::Removed,
            PushKind::Expired => EventKind::Expired,
            PushKind::Cleared => EventKind::Cleared,
            PushKind::Lagged => EventKind::Lagged(arg),
            PushKind::Woken | PushKind::Closed | PushKind::LeaseValue | PushKind::LeaseGranted => {
                return None
            }
        })
    }
}

/// One event of a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The key that changed (empty for `Cleared` and `Lagged`).
    pub key: Vec<u8>,
    /// What happened.
    pub kind: EventKind,
    /// The new value, for `Set`.
    pub value: Option<Vec<u8>>,
}

/// The events of one subscription waiting to be read: at most [`SUBSCRIPTION_QUEUE`], then a
/// count reported as one `Lagged` before the next event (or when the queue is empty). The
/// rule of both clients; they differ only in how a reader is woken (a condvar, a waker).
#[derive(Default)]
pub(crate) struct EventBuffer {
    events: VecDeque<Event>,
    lagged: u64,
    /// The server closed the subscription (shutdown) or the connection failed.
    pub(crate) ended: bool,
}

impl EventBuffer {
    /// Queues `e` (a `Lagged` from the server adds to the count); false if the queue was full
    /// and the event only counted (no reader needs waking for it).
    pub(crate) fn push(&mut self, e: Event) -> bool {
        if let EventKind::Lagged(n) = e.kind {
            self.lagged += n;
        } else if self.events.len() >= SUBSCRIPTION_QUEUE {
            self.lagged += 1;
            return false;
        } else {
            if self.lagged > 0 {
                let n = std::mem::take(&mut self.lagged);
                self.events.push_back(lagged(n));
            }
            self.events.push_back(e);
        }
        true
    }

    /// The next event: the queued ones, then the count of those dropped since.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        (self.lagged > 0).then(|| lagged(std::mem::take(&mut self.lagged)))
    }
}

fn lagged(n: u64) -> Event {
    Event {
        key: Vec::new(),
        kind: EventKind::Lagged(n),
        value: None,
    }
}

pub(crate) struct SubQueue {
    state: Mutex<EventBuffer>,
    ready: Condvar,
}

impl SubQueue {
    fn new() -> Arc<Self> {
        Arc::new(SubQueue {
            state: Mutex::new(EventBuffer::default()),
            ready: Condvar::new(),
        })
    }

    fn push(&self, e: Event) {
        if lock(&self.state).push(e) {
            self.ready.notify_all();
        }
    }

    fn end(&self) {
        let mut s = lock(&self.state);
        s.ended = true;
        self.ready.notify_all();
    }

    /// Next event; `Ok(None)` at the deadline; the error once the subscription ended and every
    /// queued event was taken.
    fn recv(&self, deadline: Option<Instant>, gone: &dyn Fn() -> Error) -> Result<Option<Event>> {
        let mut s = lock(&self.state);
        loop {
            if let Some(e) = s.pop() {
                return Ok(Some(e));
            }
            if s.ended {
                return Err(gone());
            }
            match deadline {
                None => s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    s = self
                        .ready
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// Where a wait's outcome goes, and whether it waits for a value.
type WaitSlot = (Arc<Slot<Result<bool>>>, bool);

enum Pending {
    /// A wait, and whether it waits for a value.
    Wait(Arc<Slot<Result<bool>>>, bool),
    Subscribe(Arc<Slot<Result<Answer>>>, Arc<SubQueue>),
    /// A `GET_OR_LEASE`: its value, or the lease, once the server says.
    Lease(LeaseSlot),
    Ignore,
}

/// Where a `GET_OR_LEASE`'s outcome goes.
type LeaseSlot = Arc<Slot<Result<LeaseAnswer>>>;

#[derive(Default)]
struct Routes {
    pending: HashMap<RequestId, Pending>,
    waits: HashMap<RequestId, WaitSlot>,
    /// `GET_OR_LEASE` requests the server answered `WAITING`, until their push.
    leases: HashMap<RequestId, LeaseSlot>,
    subs: HashMap<SubId, Arc<SubQueue>>,
    ended: bool,
}

struct Shared {
    routes: Mutex<Routes>,
    peer: Peer,
}

/// The event connection of a handle.
pub(crate) struct Events {
    stream: Arc<Stream>,
    tx: Mutex<(Vec<u8>, RequestId)>,
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
    fork_gen: u64,
    closed: AtomicBool,
}

impl Events {
    pub(crate) fn open(peer: &Peer, fork_gen: u64) -> std::result::Result<Arc<Self>, ConnectError> {
        let (stream, rbuf) = connect(peer)?;
        // The reader waits for pushes as long as it takes: no request timeout here.
        stream
            .set_timeout(None)
            .map_err(|e| ConnectError::Retry(format!("connecting: {e}")))?;
        let stream = Arc::new(stream);
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            peer: peer.clone(),
        });
        let (s2, sh2) = (Arc::clone(&stream), Arc::clone(&shared));
        let reader = std::thread::Builder::new()
            .name("upcache-events".into())
            .spawn(move || read_loop(&s2, &sh2, rbuf))
            .map_err(|e| {
                ConnectError::Fatal(Error::Io {
                    context: "starting the event thread",
                    source: e,
                })
            })?;
        Ok(Arc::new(Events {
            stream,
            tx: Mutex::new((Vec::new(), 1)),
            shared,
            reader: Mutex::new(Some(reader)),
            fork_gen,
            closed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn is_ended(&self) -> bool {
        lock(&self.shared.routes).ended
    }

    fn send(&self, req: &Request<'_>, pending: Pending) -> Result<RequestId> {
        let mut tx = lock(&self.tx);
        let id = tx.1;
        tx.1 = id.wrapping_add(1);
        {
            let mut r = lock(&self.shared.routes);
            if r.ended {
                return Err(self.shared.peer.gone());
            }
            r.pending.insert(id, pending);
        }
        tx.0.clear();
        let value = req.encode_head(id, &mut tx.0);
        if write_all(&self.stream, &[&tx.0, value]).is_err() {
            lock(&self.shared.routes).pending.remove(&id);
            let _ = self.stream.shutdown();
            return Err(self.shared.peer.gone());
        }
        Ok(id)
    }

    /// Waits (see `UpCache::wait_for`).
    pub(crate) fn wait(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let timeout_ms = match timeout {
            None => protocol::NO_TIMEOUT,
            // Round up, so a wait never ends before the time asked.
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(protocol::NO_TIMEOUT as u128 - 1) as u64
            }
        };
        let slot = Slot::new();
        self.send(
            &Request::Wait {
                key,
                value,
                timeout_ms,
            },
            Pending::Wait(Arc::clone(&slot), value.is_some()),
        )?;
        // The server ends the wait at its deadline; the grace only guards against a server that
        // stopped answering altogether.
        let deadline =
            timeout.and_then(|t| Instant::now().checked_add(t + super::conn::WAIT_GRACE));
        slot.take(deadline).unwrap_or(Ok(false))
    }

    /// Subscribes to `key` (`None`: all keys).
    pub(crate) fn subscribe(self: &Arc<Self>, key: Option<&[u8]>) -> Result<Subscription> {
        let slot = Slot::new();
        let queue = SubQueue::new();
        self.send(
            &Request::Subscribe { key },
            Pending::Subscribe(Arc::clone(&slot), Arc::clone(&queue)),
        )?;
        let peer = &self.shared.peer;
        let deadline = peer
            .request_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let timed_out = || Error::Timeout {
            name: peer.name.clone(),
            after: peer.request_timeout.unwrap_or_default(),
        };
        match slot.take(deadline).unwrap_or_else(|| Err(timed_out()))? {
            Answer::Uint(sub) => Ok(Subscription {
                queue,
                sub: sub as SubId,
                events: Arc::clone(self),
            }),
            Answer::Failed(code, arg, msg) => Err(self.shared.peer.failed(code, arg, msg)),
            other => Err(Error::UnexpectedReply {
                name: self.shared.peer.name.clone(),
                detail: format!("unexpected reply to subscribe: {other:?}"),
            }),
        }
    }

    /// `GET_OR_LEASE` (see `UpCache::get_or_compute`): the value, or the lease, once the
    /// server gives either; as long as it takes (every lease before this one times out).
    pub(crate) fn get_or_lease(&self, key: &[u8], timeout_ms: u64) -> Result<LeaseAnswer> {
        let slot = Slot::new();
        self.send(
            &Request::GetOrLease { key, timeout_ms },
            Pending::Lease(Arc::clone(&slot)),
        )?;
        slot.take(None)
            .unwrap_or_else(|| Err(self.shared.peer.gone()))
    }

    /// Gives up the lease request `req` got (its reply is not awaited: the server applies it
    /// before any later request of this connection).
    pub(crate) fn release(&self, key: &[u8], req: RequestId) {
        let _ = self.send(&Request::Release { key, req }, Pending::Ignore);
    }

    fn unsubscribe(&self, sub: SubId) {
        lock(&self.shared.routes).subs.remove(&sub);
        let _ = self.send(&Request::Unsubscribe { sub }, Pending::Ignore);
    }

    /// Closes the connection and joins the reader. Not in a forked child: the socket and the
    /// thread belong to the parent there.
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) || self.fork_gen != super::fork_generation() {
            return;
        }
        let _ = self.stream.shutdown();
        if let Some(h) = lock(&self.reader).take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_loop(stream: &Stream, shared: &Shared, mut rbuf: ReadBuf) {
    let limits = shared.peer.read_limits();
    loop {
        match protocol::decode_incoming(rbuf.bytes(), &limits) {
            Ok(Decoded::Frame(item, n)) => {
                route(shared, item);
                rbuf.consume(n);
            }
            Ok(Decoded::Incomplete { need }) => match rbuf.read_from(&mut &*stream, need) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            },
            Err(_) => break,
        }
    }
    let _ = stream.shutdown();
    let mut r = lock(&shared.routes);
    r.ended = true;
    for (_, p) in r.pending.drain() {
        match p {
            Pending::Subscribe(s, _) => s.fill(Err(shared.peer.gone())),
            Pending::Wait(s, _) => s.fill(Err(shared.peer.gone())),
            Pending::Lease(s) => s.fill(Err(shared.peer.gone())),
            Pending::Ignore => {}
        }
    }
    for (_, s) in r.leases.drain() {
        s.fill(Err(shared.peer.gone()));
    }
    for (_, (s, _)) in r.waits.drain() {
        s.fill(Err(shared.peer.gone()));
    }
    for (_, q) in r.subs.drain() {
        q.end();
    }
}

fn route(shared: &Shared, item: Incoming<'_>) {
    let mut r = lock(&shared.routes);
    match item {
        Incoming::Reply(id, reply) => {
            let answer = Answer::from_reply(&reply);
            match r.pending.remove(&id) {
                Some(Pending::Wait(s, for_value)) => match answer {
                    Answer::Bool(b) => s.fill(Ok(b)),
                    Answer::Done => {
                        r.waits.insert(id, (s, for_value));
                    }
                    Answer::Failed(code, arg, msg) => {
                        s.fill(Err(shared.peer.failed(code, arg, msg)))
                    }
                    _ => s.fill(Ok(false)),
                },
                Some(Pending::Subscribe(s, q)) => {
                    if let Answer::Uint(sub) = answer {
                        r.subs.insert(sub as SubId, q);
                    }
                    s.fill(Ok(answer));
                }
                Some(Pending::Lease(s)) => match answer {
                    Answer::Value(v) => s.fill(Ok(LeaseAnswer::Value(v))),
                    Answer::Leased => s.fill(Ok(LeaseAnswer::Leased(id))),
                    Answer::Waiting => {
                        r.leases.insert(id, s);
                    }
                    Answer::Failed(code, arg, msg) => {
                        s.fill(Err(shared.peer.failed(code, arg, msg)))
                    }
                    other => s.fill(Err(super::unexpected(&shared.peer, other))),
                },
                Some(Pending::Ignore) | None => {}
            }
        }
        Incoming::Push(p) => {
            let event = |kind| Event {
                key: p.key.to_vec(),
                kind,
                value: (p.kind == PushKind::Set).then(|| p.value.to_vec()),
            };
            match p.kind {
                PushKind::Woken => {
                    if let Some((s, for_value)) = r.waits.remove(&p.id) {
                        // A clear ends a wait for a change with true, a wait for a value with
                        // false (the key no longer holds it).
                        let cleared = p.arg == WakeReason::Cleared as u64;
                        s.fill(Ok(
                            p.arg == WakeReason::Event as u64 || (cleared && !for_value)
                        ));
                    }
                }
                PushKind::Closed => {
                    if let Some(q) = r.subs.remove(&p.id) {
                        q.end();
                    }
                }
                PushKind::LeaseValue | PushKind::LeaseGranted => {
                    if let Some(s) = r.leases.remove(&p.id) {
                        s.fill(Ok(match p.kind {
                            PushKind::LeaseValue => LeaseAnswer::Value(p.value.to_vec()),
                            _ => LeaseAnswer::Leased(p.id),
                        }));
                    }
                }
                kind => {
                    if let (Some(q), Some(kind)) =
                        (r.subs.get(&p.id), EventKind::of_push(kind, p.arg))
                    {
                        q.push(event(kind));
                    }
                }
            }
        }
    }
}

/// A subscription to key events. Iterate it, or call [`Subscription::recv`] or
/// [`Subscription::recv_timeout`]. Dropping it unsubscribes.
///
/// Events arrive in the order the server applied the changes. A subscriber that falls behind
/// never slows writers or other clients: at most [`SUBSCRIPTION_QUEUE`] events wait in this
/// process (and a few MiB in the server); events beyond that are dropped and reported as one
/// [`EventKind::Lagged`] event with their count, after which delivery goes on.
///
/// When the server goes away (or shuts down), queued events are still delivered, then
/// `recv` fails with [`Error::ServerGone`] and the iterator ends.
///
/// Keep the value bound to a name (`let sub = …`, or `let _sub = …`) for as long as you want
/// events: `let _ = cache.subscribe(k)?` drops it at once, and so unsubscribes (no lint can see
/// that one); a subscription discarded as a statement is a `must_use` warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn watch(cache: &upcache::UpCache) -> upcache::Result<()> {
///     cache.subscribe(b"config")?; // unsubscribes at once
///     Ok(())
/// }
/// ```
#[must_use = "dropping a Subscription unsubscribes at once; keep it and read its events"]
pub struct Subscription {
    queue: Arc<SubQueue>,
    sub: SubId,
    events: Arc<Events>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.sub)
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::ServerGone`] once the server went away or shut down and every event queued
    /// before was taken.
    pub fn recv(&self) -> Result<Event> {
        let gone = || self.events.shared.peer.gone();
        self.queue
            .recv(None, &gone)
            .map(|e| e.expect("no deadline"))
    }

    /// The next event, or `Ok(None)` if none arrives within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Subscription::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>> {
        let gone = || self.events.shared.peer.gone();
        self.queue.recv(Instant::now().checked_add(timeout), &gone)
    }

    /// The next event if one is queued.
    ///
    /// # Errors
    ///
    /// As [`Subscription::recv`].
    pub fn try_recv(&self) -> Result<Option<Event>> {
        self.recv_timeout(Duration::ZERO)
    }
}

impl Iterator for Subscription {
    type Item = Event;

    /// The next event; `None` once the server is gone.
    fn next(&mut self) -> Option<Event> {
        self.recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.events.fork_gen == super::fork_generation() {
            self.events.unsubscribe(self.sub);
        }
    }
}
