//! Pipelines: many requests sent in one go, replies returned in order.

use super::conn::{Answer, Peer};
use super::UpCache;
use crate::error::{Error, Result};
use crate::protocol::Request;

/// The reply to one operation of a [`Pipeline`]. (Not to be confused with
/// [`protocol::Reply`](crate::protocol::Reply), a frame on the wire.)
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineReply {
    /// `set`, `set_with_ttl` and `clear` succeeded.
    Done,
    /// `get`: the value, or `None` if the key is missing.
    Value(Option<Vec<u8>>),
    /// `exists`, `remove` (whether the key existed), `expire` and `persist`.
    Bool(bool),
    /// `incr`, `decr`, `incr_by`: the new value.
    Int(i64),
    /// `count`.
    Count(u64),
    /// `ttl`.
    Ttl(super::Ttl),
    /// `get_many`: one value or `None` per key, in order.
    Values(Vec<Option<Vec<u8>>>),
    /// This operation failed (`NotAnInteger`, `Overflow`); the others still ran.
    Failed(Error),
}

/// A batch of operations sent together: `cache.pipeline().set(a, x).get(b).execute()?`.
///
/// Operations are encoded as they are queued (so the pipeline's memory is its requests'
/// size). [`Pipeline::execute`] sends them while reading replies as they come, so a pipeline of
/// any length neither deadlocks on full socket buffers nor makes the server buffer it: memory
/// beyond the queued requests is bounded by the replies. Replies come back in the order the
/// operations were queued. Other threads' calls on the same handle wait while a pipeline
/// executes. Operations are applied one by one, in order; a pipeline is not a transaction.
///
/// Nothing is sent until [`Pipeline::execute`]: a pipeline dropped before that does nothing,
/// and discarding one is a `must_use` warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn forgot(cache: &upcache::UpCache) {
///     cache.pipeline(); // sends nothing
/// }
/// ```
#[derive(Debug)]
#[must_use = "a pipeline sends nothing until `execute()` is called"]
pub struct Pipeline<'c> {
    cache: &'c UpCache,
    batch: Batch,
}

/// The queued operations of a pipeline (this one and the async one): frames encoded with id
/// 0, each id written at execute time, and the first size error.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) frames: Vec<u8>,
    pub(crate) starts: Vec<usize>,
    /// Which operations are `ttl` queries (their replies read as a [`super::Ttl`]).
    pub(crate) ttl_queries: Vec<bool>,
    pub(crate) error: Option<Error>,
}

impl Batch {
    /// Encodes `req`, or records why it cannot be sent (then nothing more is queued).
    pub(crate) fn push(&mut self, peer: &Peer, req: Request<'_>) {
        if self.error.is_none() {
            let (key, value): (&[u8], &[u8]) = match req {
                Request::Set { key, value } | Request::SetTtl { key, value, .. } => (key, value),
                // A batch's keys were checked when it was packed; its body counts as a value.
                Request::GetMany { keys: b } | Request::RemoveMany { keys: b } => (&[], b.body()),
                Request::SetMany { pairs: b, .. } => (&[], b.body()),
                _ => (req.key().unwrap_or(&[]), &[]),
            };
            match peer.check(key, value) {
                Ok(()) => {
                    self.starts.push(self.frames.len());
                    self.ttl_queries.push(matches!(req, Request::Ttl { .. }));
                    // The id is written at execute time.
                    req.encode(0, &mut self.frames);
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Takes the queued frames and their starts, leaving the batch empty; the size error if
    /// one operation was over a limit.
    /// Queues an operation with a TTL made by `make`, or records why the TTL is refused.
    pub(crate) fn push_ttl<'a>(
        &mut self,
        peer: &Peer,
        ttl: std::time::Duration,
        make: impl FnOnce(u64) -> Request<'a>,
    ) {
        match super::ttl_ms(ttl) {
            Ok(ms) => self.push(peer, make(ms)),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// The queued frames, their starts and which are `ttl` queries; empties the batch.
    pub(crate) fn take(&mut self) -> Result<(Vec<u8>, Vec<usize>, Vec<bool>)> {
        let frames = std::mem::take(&mut self.frames);
        let starts = std::mem::take(&mut self.starts);
        let ttl_queries = std::mem::take(&mut self.ttl_queries);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok((frames, starts, ttl_queries)),
        }
    }
}

impl PipelineReply {
    /// The reply to one operation, from the server's answer.
    pub(crate) fn from_answer(peer: &Peer, a: Answer, ttl_query: bool) -> Self {
        match a {
            a if ttl_query => match super::Ttl::from_answer(a) {
                Ok(t) => PipelineReply::Ttl(t),
                Err(a) => PipelineReply::from_answer(peer, a, false),
            },
            Answer::Done => PipelineReply::Done,
            Answer::Nil => PipelineReply::Value(None),
            Answer::Value(v) => PipelineReply::Value(Some(v)),
            Answer::Bool(b) => PipelineReply::Bool(b),
            Answer::Int(i) => PipelineReply::Int(i),
            Answer::Uint(u) => PipelineReply::Count(u),
            Answer::Values(v) => PipelineReply::Values(v),
            Answer::Failed(code, arg, msg) => PipelineReply::Failed(peer.failed(code, arg, msg)),
            other => PipelineReply::Failed(super::unexpected(peer, other)),
        }
    }
}

/// The operations a pipeline queues, the same for the blocking [`Pipeline`] and the async
/// one (`aio::Pipeline`): each encodes its request into the pipeline's [`Batch`].
macro_rules! queue_methods {
    () => {
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

        /// Queues `get_many(keys)`: one frame, one [`PipelineReply::Values`].
        ///
        /// (The conditional writes, `add`, `replace` and `set_if_version`, are not on
        /// pipelines: what a caller does next depends on their reply.)
        pub fn get_many<K: AsRef<[u8]>>(&mut self, keys: impl IntoIterator<Item = K>) -> &mut Self {
            self.queue_batch(keys, None::<Vec<K>>, |keys| Request::GetMany { keys })
        }
        /// Queues `set_many(pairs)`: one frame, replied [`PipelineReply::Done`].
        pub fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
            &mut self,
            pairs: impl IntoIterator<Item = (K, V)>,
        ) -> &mut Self {
            let (keys, values) = crate::client::versions::unzip(pairs);
            self.queue_batch(keys, Some(values), |pairs| Request::SetMany {
                pairs,
                ttl_ms: 0,
            })
        }
        /// Queues `remove_many(keys)`: one frame, replied [`PipelineReply::Count`].
        pub fn remove_many<K: AsRef<[u8]>>(
            &mut self,
            keys: impl IntoIterator<Item = K>,
        ) -> &mut Self {
            self.queue_batch(keys, None::<Vec<K>>, |keys| Request::RemoveMany { keys })
        }
        fn queue_batch<K: AsRef<[u8]>, V: AsRef<[u8]>>(
            &mut self,
            keys: impl IntoIterator<Item = K>,
            values: Option<Vec<V>>,
            make: impl FnOnce(crate::protocol::Batch<'_>) -> Request<'_>,
        ) -> &mut Self {
            let keys: Vec<K> = keys.into_iter().collect();
            let mut buf = Vec::new();
            let peer = &self.cache.inner.peer;
            match crate::client::versions::pack(peer, &mut buf, &keys, values.as_deref()) {
                Ok(batch) => self.batch.push(peer, make(batch)),
                Err(e) => {
                    self.batch.error.get_or_insert(e);
                }
            }
            self
        }

        /// Queues `count()`.
        pub fn count(&mut self) -> &mut Self {
            self.push(Request::Count)
        }
        /// Queues `clear()`.
        pub fn clear(&mut self) -> &mut Self {
            self.push(Request::Clear)
        }
    };
}
#[cfg(feature = "tokio")]
pub(crate) use queue_methods;

impl<'c> Pipeline<'c> {
    pub(crate) fn new(cache: &'c UpCache) -> Self {
        Pipeline {
            cache,
            batch: Batch::default(),
        }
    }

    queue_methods!();

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
    /// - [`Error::KeyTooLarge`] or [`Error::ValueTooLarge`] if any queued operation was over
    ///   the limit: the whole pipeline fails before anything is sent.
    /// - Those of [every call](UpCache#errors): then no reply is returned, and which of the
    ///   operations the server applied is unknown.
    ///
    /// An operation that fails on its own (`NotAnInteger`, `Overflow`) is not an error of the
    /// pipeline: its reply is [`PipelineReply::Failed`] and the others still run.
    pub fn execute(&mut self) -> Result<Vec<PipelineReply>> {
        let (mut frames, starts, ttl_queries) = self.batch.take()?;
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let session = self.cache.session()?;
        let answers = session.conn.pipeline(&mut frames, &starts)?;
        let peer = session.conn.peer();
        Ok(answers
            .into_iter()
            .zip(ttl_queries)
            .map(|(a, ttl_query)| PipelineReply::from_answer(peer, a, ttl_query))
            .collect())
    }
}
