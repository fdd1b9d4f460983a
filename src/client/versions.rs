//! Versions, conditional writes and multi-key requests on [`UpCache`]; the packing and reply
//! reading they share with the async client and pipelines.

use std::time::Duration;

use super::conn::{Answer, Peer};
use super::{ttl_ms, unexpected, UpCache};
use crate::error::{Error, Result};
use crate::protocol::{Batch, ErrorCode, Request, MAX_BATCH_KEYS};
use crate::Version;

/// Packs `keys` into `buf` as a batch (keys only, or pairs when `values` is given), after
/// checking their number ([`MAX_BATCH_KEYS`]), each key, and the packed body against the
/// server's limits.
pub(crate) fn pack<'b, K: AsRef<[u8]>, V: AsRef<[u8]>>(
    peer: &Peer,
    buf: &'b mut Vec<u8>,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<Batch<'b>> {
    if keys.len() > MAX_BATCH_KEYS as usize {
        let code = ErrorCode::BatchTooLarge;
        return Err(Error::Server {
            code,
            message: code.message().into(),
        });
    }
    for k in keys {
        peer.check(k.as_ref(), &[])?;
    }
    let entries = keys.iter().enumerate().map(|(i, k)| {
        let v = values.map(|vs| vs[i].as_ref());
        (k.as_ref(), v)
    });
    let batch = Batch::pack(buf, values.is_some(), entries);
    peer.check(&[], batch.body())?;
    Ok(batch)
}

/// Splits pairs into keys and values.
pub(crate) fn unzip<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> (Vec<K>, Vec<V>) {
    pairs.into_iter().unzip()
}

/// The reply to `GET_VERSIONED`.
pub(crate) fn versioned(peer: &Peer, a: Answer) -> Result<Option<(Vec<u8>, Version)>> {
    match a {
        Answer::Versioned(v, version) => Ok(Some((v, Version::new(version)))),
        Answer::Nil => Ok(None),
        a => Err(unexpected(peer, a)),
    }
}

/// The reply to a conditional write: the new version, or `None` when nothing was written.
pub(crate) fn written(peer: &Peer, a: Answer) -> Result<Option<Version>> {
    match a {
        Answer::Version(v) => Ok(Some(Version::new(v))),
        Answer::Nil => Ok(None),
        a => Err(unexpected(peer, a)),
    }
}

/// The reply to `GET_MANY` for `n` keys.
pub(crate) fn values(peer: &Peer, a: Answer, n: usize) -> Result<Vec<Option<Vec<u8>>>> {
    match a {
        Answer::Values(v) if v.len() == n => Ok(v),
        a => Err(unexpected(peer, a)),
    }
}

/// The TTL of an `ADD`/`REPLACE`/`SET_MANY`: 0 for none.
pub(crate) fn optional_ttl(ttl: Option<Duration>) -> Result<u64> {
    ttl.map_or(Ok(0), ttl_ms)
}

impl UpCache {
    /// The value of `key` and its [`Version`], or `None` if it is missing. Pass the version
    /// to [`UpCache::set_if_version`] to write back only if nobody wrote in between.
    ///
    /// ```no_run
    /// # let cache = upcache::UpCache::open("TVHosts")?;
    /// // Append to a list without losing another process's append.
    /// loop {
    ///     let (mut list, version) = match cache.get_versioned("hosts")? {
    ///         Some((v, ver)) => (v, Some(ver)),
    ///         None => (Vec::new(), None),
    ///     };
    ///     list.extend_from_slice(b"Dickie;");
    ///     let done = match version {
    ///         Some(ver) => cache.set_if_version("hosts", &list, ver)?.is_some(),
    ///         None => cache.add("hosts", &list)?,
    ///     };
    ///     if done {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), upcache::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`](crate::Error::KeyTooLarge) before anything is sent, and those
    /// of [every call](UpCache#errors).
    pub fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(Vec<u8>, Version)>> {
        let key = key.as_ref();
        self.check(key, &[])?;
        versioned(&self.inner.peer, self.call(Request::GetVersioned { key })?)
    }

    /// Stores `value` under `key` only if the key still holds `version`: `Some(new version)`
    /// when it did, `None` (nothing written) when the key was written since, removed, expired
    /// or cleared. The key keeps its TTL. A write that happens is an event as a
    /// [`UpCache::set`] is; one that does not is nothing.
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`](crate::Error::KeyTooLarge) or
    /// [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) before anything is sent, and those
    /// of [every call](UpCache#errors).
    pub fn set_if_version(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        version: Version,
    ) -> Result<Option<Version>> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check(key, value)?;
        let req = Request::SetIfVersion {
            key,
            value,
            version: version.get(),
        };
        written(&self.inner.peer, self.call(req)?)
    }

    /// Stores `value` under `key` only if the key is missing (an expired key is missing);
    /// true if it stored it. Among processes that `add` the same missing key at once, exactly
    /// one gets true. The new key has no TTL.
    ///
    /// # Errors
    ///
    /// As [`UpCache::set_if_version`].
    pub fn add(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.add_ttl(key.as_ref(), value.as_ref(), None)
    }

    /// As [`UpCache::add`], and the new key expires after `ttl` (see
    /// [`UpCache::set_with_ttl`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) before anything is sent, and those of
    /// [`UpCache::add`].
    pub fn add_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.add_ttl(key.as_ref(), value.as_ref(), Some(ttl))
    }

    fn add_ttl(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check(key, value)?;
        let ttl_ms = optional_ttl(ttl)?;
        let a = self.call(Request::Add { key, value, ttl_ms })?;
        Ok(written(&self.inner.peer, a)?.is_some())
    }

    /// Stores `value` under `key` only if the key is present; true if it stored it. The key
    /// keeps its TTL.
    ///
    /// # Errors
    ///
    /// As [`UpCache::set_if_version`].
    pub fn replace(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.replace_ttl(key.as_ref(), value.as_ref(), None)
    }

    /// As [`UpCache::replace`], and the key's TTL becomes `ttl`.
    ///
    /// # Errors
    ///
    /// As [`UpCache::add_with_ttl`].
    pub fn replace_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.replace_ttl(key.as_ref(), value.as_ref(), Some(ttl))
    }

    fn replace_ttl(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check(key, value)?;
        let ttl_ms = optional_ttl(ttl)?;
        let a = self.call(Request::Replace { key, value, ttl_ms })?;
        Ok(written(&self.inner.peer, a)?.is_some())
    }

    /// The values of `keys`, in order, `None` for each missing one: one request frame and one
    /// reply for up to [`MAX_BATCH_KEYS`] (65,536) keys. A key named twice is answered twice.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] with [`ErrorCode::BatchTooLarge`] for more than 65,536 keys (as for
    /// `set_many` and `remove_many`), [`Error::KeyTooLarge`](crate::Error::KeyTooLarge) for a
    /// key, or
    /// [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) when the packed keys (4 bytes
    /// plus the key each) are over the server's longest value, before anything is sent;
    /// [`Error::Server`](crate::Error::Server) with
    /// [`ErrorCode::ReplyTooLarge`](crate::protocol::ErrorCode::ReplyTooLarge) when the values
    /// together (4 bytes plus the value each) are longer than the server's longest value
    /// ([`max_value_len`](crate::Builder::max_value_len)); and those of
    /// [every call](UpCache#errors).
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut buf = Vec::new();
        let batch = pack::<K, K>(&self.inner.peer, &mut buf, &keys, None)?;
        let a = self.call(Request::GetMany { keys: batch })?;
        values(&self.inner.peer, a, keys.len())
    }

    /// Stores every pair, in order (of a key named twice, the later value stays), each as
    /// [`UpCache::set`] would (an event each; keys keep their TTL): one request frame.
    /// Not a transaction: a reader may see some of the pairs stored and not yet the others.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] with [`ErrorCode::BatchTooLarge`] for more than 65,536 pairs,
    /// [`Error::KeyTooLarge`](crate::Error::KeyTooLarge) for a key, or
    /// [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) when the packed pairs (8 bytes
    /// plus key and value each) are over the server's longest value, before anything is
    /// sent; and those of [every call](UpCache#errors).
    pub fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.set_many_ttl(pairs, None)
    }

    /// As [`UpCache::set_many`], and every key expires after `ttl` (see
    /// [`UpCache::set_with_ttl`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) before anything is sent, and those of
    /// [`UpCache::set_many`].
    pub fn set_many_with_ttl<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
        ttl: Duration,
    ) -> Result<()> {
        self.set_many_ttl(pairs, Some(ttl))
    }

    fn set_many_ttl<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let ttl_ms = optional_ttl(ttl)?;
        let (keys, vals) = unzip(pairs);
        let mut buf = Vec::new();
        let pairs = pack(&self.inner.peer, &mut buf, &keys, Some(&vals))?;
        self.expect_done(Request::SetMany { pairs, ttl_ms })
    }

    /// Removes `keys`; returns how many were there (a key named twice counts once). Each key
    /// removed is an event, as for [`UpCache::remove`]: one request frame.
    ///
    /// # Errors
    ///
    /// As [`UpCache::get_many`] (without the reply limit).
    pub fn remove_many<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) -> Result<u64> {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut buf = Vec::new();
        let batch = pack::<K, K>(&self.inner.peer, &mut buf, &keys, None)?;
        match self.call(Request::RemoveMany { keys: batch })? {
            Answer::Uint(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }
}
