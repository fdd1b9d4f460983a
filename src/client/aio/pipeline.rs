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

    crate::client::pipeline::queue_methods!();

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
