//! `get_or_compute` for async code: the blocking client's rules (see
//! [`crate::UpCache::get_or_compute`]), with an async computation, and safe to cancel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::conn::{Pending, Shared};
use super::UpCache;
use crate::client::lease::LeaseAnswer;
use crate::client::{ttl_ms, unexpected, Answer};
use crate::error::Result;
use crate::protocol::{Request, RequestId};
use crate::ComputeError;

/// A lease this task holds; released when dropped unless disarmed (the value was stored).
/// So a failed, panicking or cancelled computation passes the lease on at once.
struct Holding<'a> {
    shared: &'a Arc<Shared>,
    key: &'a [u8],
    req: Option<RequestId>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            self.shared.release(self.key, req);
        }
    }
}

/// The receiver of a `GET_OR_LEASE`'s outcome. Dropped before it delivered (the task was
/// cancelled), it closes, and releases a lease that had already arrived: a cancelled waiter
/// never keeps a lease until its timeout.
struct Outcome<'a> {
    shared: &'a Arc<Shared>,
    key: &'a [u8],
    rx: oneshot::Receiver<Result<LeaseAnswer>>,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(LeaseAnswer::Leased(req))) = self.rx.try_recv() {
            self.shared.release(self.key, req);
        }
    }
}

impl UpCache {
    /// The value of `key`; if it is missing, computes it with `f` in exactly one caller among
    /// every process and task of the cache, stores it (with `ttl`, if any) and returns it to
    /// every caller. See [`crate::UpCache::get_or_compute`] for the rules (leases, handoff,
    /// timeout).
    ///
    /// Cancelling it is safe: a cancelled waiter is forgotten (a lease that reaches it is
    /// released at once), and a cancelled computation releases its lease, which passes to
    /// the next waiter.
    ///
    /// ```no_run
    /// # async fn demo(cache: &upcache::aio::UpCache) -> Result<(), upcache::ComputeError<std::io::Error>> {
    /// # async fn render() -> std::io::Result<Vec<u8>> { Ok(b"<html>".to_vec()) }
    /// let page = cache
    ///     .get_or_compute(b"/index.html", None, || render()) // one computation, anywhere
    ///     .await?;
    /// # let _ = page; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::get_or_compute`].
    pub async fn get_or_compute<E, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        f: F,
    ) -> std::result::Result<Vec<u8>, ComputeError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, E>>,
    {
        let key = key.as_ref();
        let peer = &self.inner.peer;
        peer.check(key, &[])?;
        let ttl = ttl.map(ttl_ms).transpose()?;
        let shared = &self.events().await?.shared;
        let (tx, rx) = oneshot::channel();
        let req = Request::GetOrLease {
            key,
            timeout_ms: peer.lease_timeout_ms,
        };
        let mut outcome = Outcome { shared, key, rx };
        shared.start(&req, Pending::Lease(tx, key.into())).await?;
        let answer = (&mut outcome.rx).await.map_err(|_| shared.error())?;
        let req = match answer? {
            LeaseAnswer::Value(v) => return Ok(v),
            LeaseAnswer::Leased(req) => req,
        };
        let mut holding = Holding {
            shared,
            key,
            req: Some(req),
        };
        let value = f().await.map_err(ComputeError::Compute)?;
        peer.check(key, &value)?;
        let store = match ttl {
            Some(ttl_ms) => Request::SetTtl {
                key,
                value: &value,
                ttl_ms,
            },
            None => Request::Set { key, value: &value },
        };
        match self.call(store).await? {
            Answer::Done => {}
            a => return Err(unexpected(peer, a).into()),
        }
        // Stored: the store itself ended the lease.
        holding.req = None;
        Ok(value)
    }
}
