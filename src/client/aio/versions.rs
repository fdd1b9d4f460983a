//! Versions, conditional writes and multi-key requests on the async [`UpCache`]: the same
//! requests and replies as the blocking client's (`client/versions.rs`), as `async fn`s.

use std::time::Duration;

use super::UpCache;
use crate::client::conn::Answer;
use crate::client::unexpected;
use crate::client::versions::{optional_ttl, pack, unzip, values, versioned, written};
use crate::error::Result;
use crate::protocol::Request;
use crate::Version;

impl UpCache {
    /// The value of `key` and its [`Version`]. See [`crate::UpCache::get_versioned`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::get_versioned`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(Vec<u8>, Version)>> {
        let key = key.as_ref();
        self.inner.peer.check(key, &[])?;
        let a = self.call(Request::GetVersioned { key }).await?;
        versioned(&self.inner.peer, a)
    }

    /// Stores `value` only if `key` holds `version`. See [`crate::UpCache::set_if_version`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::set_if_version`].
    pub async fn set_if_version(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        version: Version,
    ) -> Result<Option<Version>> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.inner.peer.check(key, value)?;
        let req = Request::SetIfVersion {
            key,
            value,
            version: version.get(),
        };
        let a = self.call(req).await?;
        written(&self.inner.peer, a)
    }

    /// Stores `value` only if `key` is missing. See [`crate::UpCache::add`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::add`].
    pub async fn add(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.conditional(key.as_ref(), value.as_ref(), None, true)
            .await
    }

    /// As [`UpCache::add`], with a TTL. See [`crate::UpCache::add_with_ttl`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::add_with_ttl`].
    pub async fn add_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.conditional(key.as_ref(), value.as_ref(), Some(ttl), true)
            .await
    }

    /// Stores `value` only if `key` is present. See [`crate::UpCache::replace`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::replace`].
    pub async fn replace(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.conditional(key.as_ref(), value.as_ref(), None, false)
            .await
    }

    /// As [`UpCache::replace`], with a TTL. See [`crate::UpCache::replace_with_ttl`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::replace_with_ttl`].
    pub async fn replace_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.conditional(key.as_ref(), value.as_ref(), Some(ttl), false)
            .await
    }

    async fn conditional(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        add: bool,
    ) -> Result<bool> {
        self.inner.peer.check(key, value)?;
        let ttl_ms = optional_ttl(ttl)?;
        let req = if add {
            Request::Add { key, value, ttl_ms }
        } else {
            Request::Replace { key, value, ttl_ms }
        };
        let a = self.call(req).await?;
        Ok(written(&self.inner.peer, a)?.is_some())
    }

    /// The values of `keys`, in one request. See [`crate::UpCache::get_many`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::get_many`].
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut buf = Vec::new();
        let batch = pack::<K, K>(&self.inner.peer, &mut buf, &keys, None)?;
        let a = self.call(Request::GetMany { keys: batch }).await?;
        values(&self.inner.peer, a, keys.len())
    }

    /// Stores every pair, in one request. See [`crate::UpCache::set_many`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::set_many`].
    pub async fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let (keys, vals) = unzip(pairs);
        self.set_many_ttl(&keys, &vals, None).await
    }

    /// As [`UpCache::set_many`], with a TTL for every key. See
    /// [`crate::UpCache::set_many_with_ttl`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::set_many_with_ttl`].
    pub async fn set_many_with_ttl<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
        ttl: Duration,
    ) -> Result<()> {
        let (keys, vals) = unzip(pairs);
        self.set_many_ttl(&keys, &vals, Some(ttl)).await
    }

    async fn set_many_ttl<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        keys: &[K],
        vals: &[V],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let ttl_ms = optional_ttl(ttl)?;
        let mut buf = Vec::new();
        let pairs = pack(&self.inner.peer, &mut buf, keys, Some(vals))?;
        self.expect_done(Request::SetMany { pairs, ttl_ms }).await
    }

    /// Removes `keys`, in one request; how many were there. See
    /// [`crate::UpCache::remove_many`].
    ///
    /// # Errors
    ///
    /// As [`crate::UpCache::remove_many`].
    pub async fn remove_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64> {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut buf = Vec::new();
        let batch = pack::<K, K>(&self.inner.peer, &mut buf, &keys, None)?;
        match self.call(Request::RemoveMany { keys: batch }).await? {
            Answer::Uint(n) => Ok(n),
            a => Err(unexpected(&self.inner.peer, a)),
        }
    }
}
