//! Pipelines: many requests sent in one go, replies returned in order.

use super::conn::Answer;
use super::UpCache;
use crate::error::{Error, Result};
use crate::protocol::Request;

/// The reply to one operation of a [`Pipeline`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// `set` and `clear` succeeded.
    Done,
    /// `get`: the value, or `None` if the key is missing.
    Value(Option<Vec<u8>>),
    /// `exists`, and `remove` (whether the key existed).
    Bool(bool),
    /// `incr`, `decr`, `incr_by`: the new value.
    Int(i64),
    /// `count`.
    Count(u64),
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
#[derive(Debug)]
pub struct Pipeline<'c> {
    cache: &'c UpCache,
    frames: Vec<u8>,
    starts: Vec<usize>,
    error: Option<Error>,
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(cache: &'c UpCache) -> Self {
        Pipeline {
            cache,
            frames: Vec::new(),
            starts: Vec::new(),
            error: None,
        }
    }

    fn push(&mut self, req: Request<'_>) -> &mut Self {
        if self.error.is_none() {
            let (key, value): (&[u8], &[u8]) = match req {
                Request::Set { key, value } => (key, value),
                Request::Get { key }
                | Request::Exists { key }
                | Request::Remove { key }
                | Request::Incr { key, .. } => (key, &[]),
                _ => (&[], &[]),
            };
            match self.cache.inner.peer.check(key, value) {
                Ok(()) => {
                    self.starts.push(self.frames.len());
                    // The id is written at execute time.
                    req.encode(0, &mut self.frames);
                }
                Err(e) => self.error = Some(e),
            }
        }
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
        self.starts.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Sends every queued operation and returns their replies, in order. The pipeline is empty
    /// afterwards and can be reused. A key or value over the limit fails the whole pipeline
    /// before anything is sent.
    pub fn execute(&mut self) -> Result<Vec<Reply>> {
        let frames = std::mem::take(&mut self.frames);
        let starts = std::mem::take(&mut self.starts);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let mut frames = frames;
        let session = self.cache.session()?;
        let answers = session.conn.pipeline(&mut frames, &starts)?;
        let peer = session.conn.peer();
        Ok(answers
            .into_iter()
            .map(|a| match a {
                Answer::Done => Reply::Done,
                Answer::Nil => Reply::Value(None),
                Answer::Value(v) => Reply::Value(Some(v)),
                Answer::Bool(b) => Reply::Bool(b),
                Answer::Int(i) => Reply::Int(i),
                Answer::Uint(u) => Reply::Count(u),
                Answer::Failed(code, arg, msg) => Reply::Failed(peer.failed(code, arg, msg)),
                other => Reply::Failed(super::unexpected(peer, other)),
            })
            .collect())
    }
}
