//! Streams of the async client: [`Subscription`] (events) and [`Keys`] / [`Items`] (the
//! cache, chunk by chunk).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use tokio::sync::oneshot;

use super::conn::{Conn, Pending, Shared};
use super::UpCache;
use crate::client::conn::Answer;
use crate::client::events::EventBuffer;
use crate::client::scan::{Entry, ScanState};
use crate::client::{unexpected, Event};
use crate::error::Result;
use crate::protocol::SubId;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct QueueState {
    buf: EventBuffer,
    waker: Option<Waker>,
}

/// The events of one subscription, filled by the reader task, by the blocking client's rule
/// ([`EventBuffer`]).
pub(crate) struct SubQueue {
    state: Mutex<QueueState>,
}

impl SubQueue {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(SubQueue {
            state: Mutex::new(QueueState {
                buf: EventBuffer::default(),
                waker: None,
            }),
        })
    }

    pub(crate) fn push(&self, e: Event) {
        let waker = {
            let mut s = lock(&self.state);
            if !s.buf.push(e) {
                return;
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn end(&self) {
        let waker = {
            let mut s = lock(&self.state);
            s.buf.ended = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next event; `Ready(None)` once ended and empty; `Pending` (with `waker` kept, if
    /// given) otherwise.
    fn poll_next(&self, waker: Option<&Waker>) -> Poll<Option<Event>> {
        let mut s = lock(&self.state);
        if let Some(e) = s.buf.pop() {
            return Poll::Ready(Some(e));
        }
        if s.buf.ended {
            return Poll::Ready(None);
        }
        if let Some(w) = waker {
            match &s.waker {
                Some(old) if old.will_wake(w) => {}
                _ => s.waker = Some(w.clone()),
            }
        }
        Poll::Pending
    }
}

/// Unsubscribes when dropped. The reader task makes it from the subscribe reply, so a
/// subscription whose caller was cancelled before it got the reply is dropped, and so
/// unsubscribed, wherever that happens.
pub(crate) struct SubGuard {
    pub(crate) sub: SubId,
    pub(crate) shared: Arc<Shared>,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.sub);
    }
}

/// A subscription to key events: a [`Stream`] of [`Event`]s (or call
/// [`Subscription::recv`]). Dropping it unsubscribes.
///
/// Same contract as the blocking [`crate::Subscription`]: events in the order the server
/// applied the changes; a subscriber that falls behind never slows writers, and gets one
/// [`EventKind::Lagged`](crate::EventKind::Lagged) event with the count of those dropped past [`SUBSCRIPTION_QUEUE`](crate::SUBSCRIPTION_QUEUE);
/// when the server goes away, queued events are still delivered, then the stream ends (and
/// `recv` fails with [`Error::ServerGone`](crate::Error::ServerGone)).
///
/// The stream is cancellation safe: a `next()` dropped before it completes loses no event.
#[must_use = "dropping a Subscription unsubscribes at once; keep it and read its events"]
pub struct Subscription {
    pub(crate) queue: Arc<SubQueue>,
    pub(crate) guard: SubGuard,
    /// Keeps the event connection open while the subscription lives.
    pub(crate) _conn: Arc<Conn>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.guard.sub)
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::ServerGone`](crate::Error::ServerGone) once the server went away or shut down and every event queued
    /// before was taken.
    pub async fn recv(&mut self) -> Result<Event> {
        let queue = &self.queue;
        match std::future::poll_fn(|cx| queue.poll_next(Some(cx.waker()))).await {
            Some(e) => Ok(e),
            None => Err(self.guard.shared.peer.gone()),
        }
    }

    /// The next event if one is queued.
    ///
    /// # Errors
    ///
    /// As [`Subscription::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Event>> {
        match self.queue.poll_next(None) {
            Poll::Ready(Some(e)) => Ok(Some(e)),
            Poll::Ready(None) => Err(self.guard.shared.peer.gone()),
            Poll::Pending => Ok(None),
        }
    }
}

impl Stream for Subscription {
    type Item = Event;

    /// The next event; `None` once the server is gone and every queued event was taken.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.queue.poll_next(Some(cx.waker()))
    }
}

/// One async enumeration: its [`ScanState`] and the request for the next chunk while it is
/// in flight.
struct Scan {
    cache: UpCache,
    state: ScanState,
    in_flight: Option<oneshot::Receiver<Answer>>,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("cache", &self.cache.name())
            .field("state", &self.state)
            .finish()
    }
}

impl Scan {
    fn new(cache: &UpCache, with_values: bool) -> Self {
        Scan {
            cache: cache.clone(),
            state: ScanState::new(with_values),
            in_flight: None,
        }
    }

    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        loop {
            if let Some(e) = self.state.buffered() {
                return Poll::Ready(Some(Ok(e)));
            }
            if self.state.done {
                return Poll::Ready(None);
            }
            if let Err(e) = std::task::ready!(self.poll_fetch(cx)) {
                self.state.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    /// Asks for the next chunk if not yet asked, and takes it once it came.
    fn poll_fetch(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let shared = &self.cache.inner.conn.shared;
        let rx = match &mut self.in_flight {
            Some(rx) => rx,
            None => {
                let (tx, rx) = oneshot::channel();
                shared.submit(&self.state.request(), Pending::Call(tx))?;
                self.in_flight.insert(rx)
            }
        };
        let answer = std::task::ready!(Pin::new(rx).poll(cx));
        self.in_flight = None;
        Poll::Ready(match answer {
            Ok(Answer::Failed(code, arg, msg)) => Err(shared.peer.failed(code, arg, msg)),
            Ok(a) => self
                .state
                .take(a)
                .unwrap_or_else(|a| Err(unexpected(&shared.peer, a))),
            Err(_) => Err(shared.error()),
        })
    }
}

/// The keys of a cache, fetched chunk by chunk: see [`UpCache::keys_stream`]. A [`Stream`];
/// [`Keys::next_key`] without a stream extension trait.
///
/// Yields `Err` once if a chunk cannot be read, then ends.
#[derive(Debug)]
#[must_use = "streams are lazy: nothing is fetched until the stream is read"]
pub struct Keys(Scan);

impl Keys {
    pub(crate) fn new(cache: &UpCache) -> Self {
        Keys(Scan::new(cache, false))
    }

    /// The next key; `None` at the end.
    pub async fn next_key(&mut self) -> Option<Result<Vec<u8>>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Keys {
    type Item = Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_entry(cx).map(|e| e.map(|e| e.map(|(k, _)| k)))
    }
}

/// The keys and values of a cache, fetched chunk by chunk: see [`UpCache::items_stream`]. A
/// [`Stream`]; [`Items::next_item`] without a stream extension trait.
///
/// Yields `Err` once if a chunk cannot be read, then ends.
#[derive(Debug)]
#[must_use = "streams are lazy: nothing is fetched until the stream is read"]
pub struct Items(Scan);

impl Items {
    pub(crate) fn new(cache: &UpCache) -> Self {
        Items(Scan::new(cache, true))
    }

    /// The next key and value; `None` at the end.
    pub async fn next_item(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Items {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_entry(cx)
    }
}
