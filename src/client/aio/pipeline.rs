//! The async pipeline: many requests queued at once, replies returned in order.

use super::UpCache;
use crate::client::pipeline::Batch;
use crate::client::PipelineReply;
use crate::error::Result;
use crate::protocol::Request;

/// A batch of operations sent together:
/// `cache.pipeline().set(a, x).get(b).execute().await?`.
///
/// As the blocking [`crate::Pipeline`]: operations are encoded as they are queued, nothing is
/// sent until [`Pipeline::execute`], replies come back in the order the operations were
/// queued, and operations are applied one by one (not a transaction). Other tasks' calls on
/// the same handle go on while a pipeline executes: its requests join the same write queue.
///
/// Cancelling `execute` (dropping its future) after its first await may leave some or all of
/// the operations applied; the connection stays in step either way.
#[derive(Debug)]
#[must_use = "a pipeline sends nothing until `execute().await` is called"]
pub struct Pipeline<'c> {
    cache: &'c UpCache,
    batch: Batch,
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(cache: &'c UpCache) -> Self {
        Pipeline {
            cache,
            batch: Batch::default(),
        }
    }

    fn push(&mut self, req: Request<'_>) -> &mut Self {
        self.batch.push(&self.cache.inner.peer, req);
        self
    }

    /// Queues `set(key, value)`.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Set {
            key: key.as_ref(),
            value: value.as_ref(),
        })
    }
    /// Queues `get(key)`.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Get { key: key.as_ref() })
    }
    /// Queues `exists(key)`.
    pub fn exists(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Exists { key: key.as_ref() })
    }
    /// Queues `remove(key)`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Remove { key: key.as_ref() })
    }
    /// Queues `incr(key)`.
    pub fn incr(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.incr_by(key, 1)
    }
    /// Queues `decr(key)`.
    pub fn decr(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.incr_by(key, -1)
    }
    /// Queues `incr_by(key, delta)`.
    pub fn incr_by(&mut self, key: impl AsRef<[u8]>, delta: i64) -> &mut Self {
        self.push(Request::Incr {
            key: key.as_ref(),
            delta,
        })
    }
    /// Queues `set_with_ttl(key, value, ttl)`.
    pub fn set_with_ttl(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: std::time::Duration,
    ) -> &mut Self {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.batch
            .push_ttl(&self.cache.inner.peer, ttl, |ttl_ms| Request::SetTtl {
                key,
                value,
                ttl_ms,
            });
        self
    }
    /// Queues `expire(key, ttl)`.
    pub fn expire(&mut self, key: impl AsRef<[u8]>, ttl: std::time::Duration) -> &mut Self {
        let key = key.as_ref();
        self.batch
            .push_ttl(&self.cache.inner.peer, ttl, |ttl_ms| Request::Expire {
                key,
                ttl_ms,
            });
        self
    }
    /// Queues `persist(key)`.
    pub fn persist(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Persist { key: key.as_ref() })
    }
    /// Queues `ttl(key)`.
    pub fn ttl(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Request::Ttl { key: key.as_ref() })
    }
    /// Queues `count()`.
    pub fn count(&mut self) -> &mut Self {
        self.push(Request::Count)
    }
    /// Queues `clear()`.
    pub fn clear(&mut self) -> &mut Self {
        self.push(Request::Clear)
    }

    /// Number of queued operations.
    pub fn len(&self) -> usize {
        self.batch.starts.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.batch.starts.is_empty()
    }

    /// Sends every queued operation and returns their replies, in order. The pipeline is empty
    /// afterwards and can be reused.
    ///
    /// # Errors
    ///
    /// As the blocking [`crate::Pipeline::execute`]: a size error fails the whole pipeline
    /// before anything is sent; an error of [every call](UpCache#errors) returns no reply.
    /// An operation that fails on its own is a [`PipelineReply::Failed`].
    pub async fn execute(&mut self) -> Result<Vec<PipelineReply>> {
        let (mut frames, starts, ttl_queries) = self.batch.take()?;
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let shared = &self.cache.inner.conn.shared;
        let rxs = shared.start_batch(&mut frames, &starts).await?;
        drop(frames);
        let mut replies = Vec::with_capacity(rxs.len());
        for (rx, ttl_query) in rxs.into_iter().zip(ttl_queries) {
            let a = rx.await.map_err(|_| shared.error())?;
            replies.push(PipelineReply::from_answer(&shared.peer, a, ttl_query));
        }
        Ok(replies)
    }
}
