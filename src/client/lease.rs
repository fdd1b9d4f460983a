//! `get_or_compute`: one computation of a missing value among every process of a cache, with
//! server-side leases (PROTOCOL.md, "Leases").
//!
//! The call sends `GET_OR_LEASE` on the handle's event connection (the one that carries
//! pushes): a present key answers its value at once (one round trip). For a missing key the
//! server gives the key's *lease* to exactly one caller, which runs `f` and stores the value;
//! every other caller's request stays pending until the server pushes the stored value, or
//! passes the lease to it (its holder failed, died or ran out of time), without polling.

use std::fmt;
use std::time::Duration;

use super::{ttl_ms, UpCache};
use crate::error::{Error, Result};
use crate::protocol;

/// The default of [`Builder::lease_timeout`](super::Builder::lease_timeout): 30 s.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A lease timeout in whole ms, rounded up (1 ..= 2⁴⁰ − 1).
pub(crate) fn lease_ms(d: Duration) -> Result<u64> {
    let ms = d.as_nanos().div_ceil(1_000_000);
    match u64::try_from(ms) {
        Ok(ms @ 1..=protocol::MAX_TTL_MS) => Ok(ms),
        _ => Err(Error::InvalidOption {
            option: "lease_timeout",
            detail: format!("{d:?}: a lease lasts 1 ms to 2^40 - 1 ms"),
        }),
    }
}

/// Why [`UpCache::get_or_compute`] returned no value: the cache failed, or the computation did.
#[derive(Debug)]
pub enum ComputeError<E> {
    /// The cache failed ([`Error::ServerGone`], [`Error::KeyTooLarge`]...). If this caller
    /// held the lease, the server passes it on (its connection closed, or it was released).
    Cache(Error),
    /// This caller held the lease and its computation failed with this error. The lease has
    /// been released: one waiting caller now computes in its place.
    Compute(E),
}

impl<E> From<Error> for ComputeError<E> {
    fn from(e: Error) -> Self {
        ComputeError::Cache(e)
    }
}

impl<E: fmt::Display> fmt::Display for ComputeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeError::Cache(e) => write!(f, "cache: {e}"),
            ComputeError::Compute(e) => write!(f, "computing the value failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ComputeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ComputeError::Cache(e) => Some(e),
            ComputeError::Compute(e) => Some(e),
        }
    }
}

/// What a `GET_OR_LEASE` ends with, for this caller.
#[derive(Debug)]
pub(crate) enum LeaseAnswer {
    /// The key's value (present, or stored by the leaseholder).
    Value(Vec<u8>),
    /// This caller holds the lease that request got: compute, then store or release.
    Leased(protocol::RequestId),
}

/// Releases a lease unless disarmed: the computation failed, panicked, or its value could not
/// be stored.
struct Holding<'a> {
    release: Option<Box<dyn FnOnce() + 'a>>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            r();
        }
    }
}

impl UpCache {
    /// The value of `key`; if it is missing, computes it with `f` in exactly one caller among
    /// every process of the cache, stores it (with `ttl`, if any) and returns it to every caller.
    ///
    /// - Present key: one round trip, `f` is not called.
    /// - Missing key: the server gives the key's lease to one caller, which runs `f` and stores
    ///   its value; every other caller waits (a push from the server, no polling) and returns
    ///   the stored value. Any write of the key (a `set` from elsewhere) serves the waiters too.
    /// - `f` fails: this call returns [`ComputeError::Compute`], and the lease passes at once to
    ///   one waiting caller, whose own `f` runs. A panic in `f` releases the lease as well.
    /// - The leaseholder's process dies or its handle closes: the lease passes on at once.
    /// - The leaseholder takes longer than [`Builder::lease_timeout`] (default 30 s): the lease
    ///   passes on (the late value, when stored, still serves whoever waits).
    ///
    /// Waiters are served in the order they asked. A waiter waits as long as it takes (each
    /// lease in the chain has its timeout), without [`Builder::request_timeout`].
    /// `remove` and `clear` do not end a lease: a value computed before a `clear` is stored
    /// after it.
    ///
    /// Not on [`Pipeline`](crate::Pipeline): what a caller does after asking depends on the
    /// answer (compute and store, or wait for a push that may come much later), and a pipeline
    /// sends every request before it reads any reply; a waiting pipeline would also hold every
    /// other request queued behind it.
    ///
    /// ```no_run
    /// # fn demo(cache: &upcache::UpCache) -> Result<(), upcache::ComputeError<std::io::Error>> {
    /// let page = cache.get_or_compute(b"/index.html", None, || {
    ///     std::fs::read("index.html") // runs in one process only, however many ask at once
    /// })?;
    /// # let _ = page; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ComputeError::Compute`] with `f`'s error; [`ComputeError::Cache`] with
    /// [`Error::KeyTooLarge`], [`Error::InvalidTtl`] (before anything is sent),
    /// [`Error::ValueTooLarge`] or [`Error::OverBudget`] (`f`'s value cannot be stored: the
    /// lease is released, so the next waiting caller computes again and, with a value just as
    /// large, fails the same way: the cache cannot hold that value), [`Error::Server`] with
    /// code `Busy` (65,536 leases and lease waits on one handle), and those of [every call](UpCache#errors).
    ///
    /// [`Builder::lease_timeout`]: super::Builder::lease_timeout
    /// [`Builder::request_timeout`]: super::Builder::request_timeout
    pub fn get_or_compute<E, F>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        f: F,
    ) -> std::result::Result<Vec<u8>, ComputeError<E>>
    where
        F: FnOnce() -> std::result::Result<Vec<u8>, E>,
    {
        let key = key.as_ref();
        self.check(key, &[])?;
        let ttl = ttl.map(ttl_ms).transpose()?;
        let events = self.events()?;
        let req = match events.get_or_lease(key, self.inner.peer.lease_timeout_ms)? {
            LeaseAnswer::Value(v) => return Ok(v),
            LeaseAnswer::Leased(req) => req,
        };
        let holding = Holding {
            release: Some(Box::new(|| events.release(key, req))),
        };
        let value = f().map_err(ComputeError::Compute)?;
        self.check(key, &value)?;
        match ttl {
            Some(ttl_ms) => self.expect_done(protocol::Request::SetTtl {
                key,
                value: &value,
                ttl_ms,
            })?,
            None => self.expect_done(protocol::Request::Set { key, value: &value })?,
        }
        // Stored: the store itself ended the lease.
        let mut holding = holding;
        holding.release = None;
        Ok(value)
    }
}
