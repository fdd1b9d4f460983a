//! The async client, for tokio (cargo feature `tokio`): [`UpCache`], [`Pipeline`],
//! [`Subscription`], [`Keys`] and [`Items`].
//!
//! ```no_run
//! # async fn demo() -> upcache::Result<()> {
//! let cache = upcache::UpCache::builder("TVHosts").open_async().await?;
//! cache.set(b"Light Entertainment Awards", b"Dickie Attenborough").await?;
//! let v = cache.get(b"Light Entertainment Awards").await?;
//! assert_eq!(v.as_deref(), Some(&b"Dickie Attenborough"[..]));
//! # Ok(()) }
//! ```
//!
//! # One connection, many tasks
//!
//! A handle is `Send + Sync + Clone`. Every clone and every task shares one connection for
//! requests (and, from the first wait or subscription on, a second one for those): requests
//! carry ids, a writer task sends whatever is queued in one write, and a reader task routes
//! each reply to the task that asked. A thousand tasks need no thousand sockets, and a busy
//! handle sends many requests per system call.
//!
//! # Cancellation
//!
//! Every future of this module is cancellation safe in this sense: dropping it at any await
//! point never puts the connection out of step and never loses or misroutes another task's
//! reply. A request is either not sent at all (dropped before it was queued) or sent whole,
//! and its reply is then discarded when it comes. What a cancelled request did on the server
//! is unknown: a cancelled `set` may or may not have been applied. Two cases leave something
//! behind on the server:
//!
//! - A cancelled [`UpCache::wait_for`] stays registered there until its timeout passes or the
//!   key changes (the protocol has no way to withdraw a wait). Give waits that may be cancelled
//!   a timeout.
//! - A cancelled [`UpCache::subscribe`] is unsubscribed as soon as its reply arrives.
//!
//! # The runtime
//!
//! The handle's tasks run on the tokio runtime that opened it, which needs its I/O and time
//! drivers (`enable_all`, or `#[tokio::main]`); calls from other runtimes work too. Opening
//! runs the election and the server start on tokio's blocking pool, never on an executor
//! thread. When that runtime shuts down, every pending and later call fails with
//! [`Error::ServerGone`]. A handle is not usable in a process forked after it was opened.
//!
//! # Errors
//!
//! As the blocking client's [every call](crate::UpCache#errors): [`Error::ServerGone`] as soon
//! as the connection closes, [`Error::Timeout`] when requests are outstanding and no reply
//! comes within [`Builder::request_timeout`] (checked every eighth of it; the connection is
//! then closed), [`Error::Protocol`] for a reply that does not decode.

mod conn;
mod lease;
mod pipeline;
mod stream;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use pipeline::Pipeline;
pub use stream::{Items, Keys, Subscription};

use super::conn::{connect, Answer, ConnectError, Peer, WAIT_GRACE};
use super::{unexpected, Builder};
use crate::error::{Error, Result};
use crate::protocol::{self, Request};
use crate::stats::ServerStats;
use conn::{Conn, Pending};
use stream::SubQueue;

// Handles are shared between tasks; subscriptions and streams move to the task that reads
// them.
const _: () = {
    const fn shared<T: Send + Sync + Clone + 'static>() {}
    const fn sent<T: Send + 'static>() {}
    shared::<UpCache>();
    sent::<Subscription>();
    sent::<Keys>();
    sent::<Items>();
};

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Io {
            context: "opening on tokio's blocking pool",
            source: std::io::Error::other(e),
        }),
    }
}

impl Builder {
    /// Opens the cache from async code: [`Builder::open`], with the election, the server start
    /// and the handshake on tokio's blocking pool (they may block briefly), and the connection
    /// then driven by tasks of the current runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> upcache::Result<()> {
    /// let cache = upcache::UpCache::builder("TVHosts")
    ///     .transport(upcache::TransportKind::Unix)
    ///     .open_async()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Cancelling it (dropping the future) while the election runs lets the election finish
    /// on the blocking pool (a server it started keeps running, as after any open); the
    /// connection it made is then closed.
    ///
    /// # Errors
    ///
    /// As [`Builder::open`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O and time enabled.
    pub async fn open_async(self) -> Result<UpCache> {
        let (dir, path, deadline) = self.prepare()?;
        let file = path.clone();
        let (peer, (stream, rbuf)) =
            blocking(move || self.elect_and_connect(&dir, &file, deadline, connect)).await?;
        let conn = Conn::start(stream, rbuf, peer.clone(), true)?;
        Ok(UpCache {
            inner: Arc::new(Inner {
                peer,
                path,
                conn,
                events: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

struct Inner {
    peer: Peer,
    path: PathBuf,
    conn: Conn,
    /// The event connection, opened by the first wait or subscription.
    events: tokio::sync::OnceCell<Arc<Conn>>,
}

/// An async handle to a shared cache: every operation of the blocking [`crate::UpCache`], as
/// an `async fn`, with the same semantics (see each method there).
///
/// Open one with [`UpCache::open`] or [`Builder::open_async`]. See [the module](self) for
/// sharing, cancellation and the runtime.
#[derive(Clone)]
pub struct UpCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpCache")
            .field("name", &self.inner.peer.name)
            .field("endpoint", &self.inner.peer.endpoint)
            .finish()
    }
}

impl UpCache {
    /// Opens the cache `name` with default options: joins its server or starts one.
    ///
    /// # Errors
    ///
    /// As [`Builder::open`].
    pub async fn open(name: &str) -> Result<Self> {
        Self::builder(name).open_async().await
    }

    /// Options for opening `name`; finish with [`Builder::open_async`].
    pub fn builder(name: &str) -> Builder {
        crate::UpCache::builder(name)
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.peer.name
    }

    /// The connection file.
    pub fn connection_file(&self) -> &Path {
        &self.inner.path
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &upcache_transports::Endpoint {
        &self.inner.peer.endpoint
    }

    async fn call(&self, req: Request<'_>) -> Result<Answer> {
        match self.inner.conn.shared.call(&req).await? {
            Answer::Failed(code, arg, msg) => Err(self.inner.peer.failed(code, arg, msg)),
            a => Ok(a),
        }
    }

    /// The event connection, opened on first use.
    async fn events(&self) -> Result<&Arc<Conn>> {
        let peer = &self.inner.peer;
        let conn = self
            .inner
            .events
            .get_or_try_init(|| async {
                let p = peer.clone();
                let (stream, rbuf) = blocking(move || {
                    connect(&p).map_err(|e| match e {
                        ConnectError::Fatal(e) => e,
                        ConnectError::Retry(_) => p.gone(),
                    })
                })
                .await?;
                Conn::start(stream, rbuf, peer.clone(), false).map(Arc::new)
            })
            .await?;
        if conn.shared.is_broken() {
            return Err(conn.shared.error());
        }
        Ok(conn)
    }

    /// The value of `key`, or `None` if it is missing. See [`crate::UpCache::get`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::get`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        match self.call(Request::Get { key }).await? {
            Answer::Value(v) => Ok(Some(v)),
            Answer::Nil => Ok(None),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Stores `value` under `key`. See [`crate::UpCache::set`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::set`].
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.inner.peer.check(key, value)?;
        self.expect_done(Request::Set { key, value }).await
    }

    async fn expect_done(&self, req: Request<'_>) -> Result<()> {
        match self.call(req).await? {
            Answer::Done => Ok(()),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    async fn expect_bool(&self, req: Request<'_>) -> Result<bool> {
        match self.call(req).await? {
            Answer::Bool(b) => Ok(b),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Stores `value` under `key` with a TTL. See [`crate::UpCache::set_with_ttl`] (the TTL
    /// rule is the same).
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::set_with_ttl`].
    pub async fn set_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.inner.peer.check(key, value)?;
        let ttl_ms = crate::client::ttl_ms(ttl)?;
        self.expect_done(Request::SetTtl { key, value, ttl_ms })
            .await
    }

    /// Gives an existing key a TTL; false if there is no such key. See
    /// [`crate::UpCache::expire`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::expire`].
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: std::time::Duration) -> Result<bool> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        let ttl_ms = crate::client::ttl_ms(ttl)?;
        self.expect_bool(Request::Expire { key, ttl_ms }).await
    }

    /// Takes a key's TTL away; false if there is no such key or it had none.
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::persist`].
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        self.expect_bool(Request::Persist { key }).await
    }

    /// How long `key` has left. See [`crate::UpCache::ttl`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::ttl`].
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<crate::Ttl> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        let a = self.call(Request::Ttl { key }).await?;
        crate::Ttl::from_answer(a).map_err(|a| unexpected(&self.inner.peer, a))
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::exists`].
    pub async fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        self.expect_bool(Request::Exists { key }).await
    }

    /// Removes `key`; true only if it existed. See [`crate::UpCache::remove`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::remove`].
    pub async fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        self.expect_bool(Request::Remove { key }).await
    }

    /// Adds 1 to the value of `key`; see [`crate::UpCache::incr_by`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::incr_by`].
    pub async fn incr(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        self.incr_by(key, 1).await
    }

    /// Subtracts 1 from the value of `key`; see [`crate::UpCache::incr_by`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::incr_by`].
    pub async fn decr(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        self.incr_by(key, -1).await
    }

    /// Adds `delta` to the value of `key` and returns the new value, atomically across all
    /// clients. See [`crate::UpCache::incr_by`] for the semantics.
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::incr_by`].
    pub async fn incr_by(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        match self.call(Request::Incr { key, delta }).await? {
            Answer::Int(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Removes every key and ends every wait. See [`crate::UpCache::clear`].
    ///
    /// # Errors
    ///
    /// Those of [every call](crate::UpCache#errors).
    pub async fn clear(&self) -> Result<()> {
        self.expect_done(Request::Clear).await
    }

    /// The number of keys.
    ///
    /// # Errors
    ///
    /// Those of [every call](crate::UpCache#errors).
    pub async fn count(&self) -> Result<u64> {
        match self.call(Request::Count).await? {
            Answer::Uint(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Every key, in insertion order, with the consistency of [`crate::UpCache::keys`].
    /// Holds every key in memory at once; [`UpCache::keys_stream`] holds one chunk at a time.
    ///
    /// # Errors
    ///
    /// Those of [every call](crate::UpCache#errors), for any of the chunks.
    pub async fn keys(&self) -> Result<Vec<Vec<u8>>> {
        let mut s = self.keys_stream();
        let mut out = Vec::new();
        while let Some(k) = s.next_key().await {
            out.push(k?);
        }
        Ok(out)
    }

    /// Every key and value, with the consistency of [`crate::UpCache::items`]. Holds the whole
    /// cache in memory at once; [`UpCache::items_stream`] holds one chunk at a time.
    ///
    /// # Errors
    ///
    /// Those of [every call](crate::UpCache#errors), for any of the chunks.
    pub async fn items(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut s = self.items_stream();
        let mut out = Vec::new();
        while let Some(i) = s.next_item().await {
            out.push(i?);
        }
        Ok(out)
    }

    /// Every key, as a [`Stream`](futures_core::Stream) fetched chunk by chunk as it is read
    /// (as [`crate::UpCache::keys_iter`]: at most one chunk held at a time, the enumeration
    /// begins at the first read).
    ///
    /// ```no_run
    /// # async fn demo(cache: upcache::aio::UpCache) -> upcache::Result<()> {
    /// let mut keys = cache.keys_stream();
    /// while let Some(key) = keys.next_key().await {
    ///     println!("{}", String::from_utf8_lossy(&key?));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn keys_stream(&self) -> Keys {
        Keys::new(self)
    }

    /// Every key and value, as a [`Stream`](futures_core::Stream) fetched chunk by chunk as
    /// [`UpCache::keys_stream`] does.
    pub fn items_stream(&self) -> Items {
        Items::new(self)
    }

    /// Waits for a change of `key` (`value` None), or for `key` to hold `value`; false when
    /// `timeout` passes. See [`crate::UpCache::wait_for`] for when it returns.
    ///
    /// Cancelling it (dropping the future) leaves the wait registered on the server until its
    /// timeout or the key's next change: see [the module](self#cancellation).
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::wait_for`].
    pub async fn wait_for(
        &self,
        key: impl AsRef<[u8]>,
        value: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let key = key.as_ref();
        self.inner.peer.check(key, value.unwrap_or(&[]))?;
        let timeout_ms = match timeout {
            None => protocol::NO_TIMEOUT,
            // Round up, so a wait never ends before the time asked.
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(protocol::NO_TIMEOUT as u128 - 1) as u64
            }
        };
        let conn = self.events().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = Request::Wait {
            key,
            value,
            timeout_ms,
        };
        conn.shared
            .start(&req, Pending::Wait(tx, value.is_some()))
            .await?;
        // The server ends the wait at its deadline; the grace only guards against a server
        // that stopped answering altogether.
        let deadline = timeout
            .and_then(|t| t.checked_add(WAIT_GRACE))
            .and_then(|t| Instant::now().checked_add(t));
        let outcome = match deadline {
            None => rx.await,
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r,
                Err(_) => return Ok(false),
            },
        };
        outcome.map_err(|_| conn.shared.error())?
    }

    /// Subscribes to changes of `key`. Returns once the server has registered the
    /// subscription: every change applied after this returns is delivered.
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::subscribe`].
    pub async fn subscribe(&self, key: impl AsRef<[u8]>) -> Result<Subscription> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        self.subscribe_to(Some(key)).await
    }

    /// Subscribes to changes of every key (and clears).
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::subscribe`].
    pub async fn subscribe_all(&self) -> Result<Subscription> {
        self.subscribe_to(None).await
    }

    async fn subscribe_to(&self, key: Option<&[u8]>) -> Result<Subscription> {
        let conn = Arc::clone(self.events().await?);
        let queue = SubQueue::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        conn.shared
            .start(
                &Request::Subscribe { key },
                Pending::Subscribe(tx, Arc::clone(&queue)),
            )
            .await?;
        let peer = &self.inner.peer;
        let reply = match peer.request_timeout {
            None => rx.await,
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| Error::Timeout {
                    name: peer.name.clone(),
                    after: t,
                })?,
        };
        let guard = reply.map_err(|_| conn.shared.error())??;
        Ok(Subscription {
            queue,
            guard,
            _conn: conn,
        })
    }

    /// A new, empty pipeline on this handle.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// The server's counters. See [`crate::UpCache::stats`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::stats`].
    pub async fn stats(&self) -> Result<ServerStats> {
        match self.call(Request::Stats).await? {
            Answer::Text(t) => ServerStats::from_json(&t).map_err(|e| Error::UnexpectedReply {
                name: self.inner.peer.name.clone(),
                detail: format!("stats that are not a JSON object of counters: {e}"),
            }),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }

    /// Asks the server to exit now. See [`crate::UpCache::shutdown_server`].
    ///
    /// # Errors
    ///
    /// Those of [every call](crate::UpCache#errors).
    pub async fn shutdown_server(&self) -> Result<()> {
        self.expect_done(Request::Shutdown).await
    }

    /// Closes this handle. The connections close when the last clone is closed or dropped (the
    /// event connection once its last subscription is dropped, too).
    pub async fn close(self) {
        drop(self)
    }
}
