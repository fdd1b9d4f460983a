//! Enumerations: [`Keys`] and [`Items`], which fetch the cache chunk by chunk as they are read.

use super::conn::Answer;
use super::{unexpected, UpCache};
use crate::error::{Error, Result};
use crate::protocol::{Chunk, Request};

/// One enumeration: the server's cursor and bound, and the entries of the chunk last read.
struct Scan<'c> {
    cache: &'c UpCache,
    with_values: bool,
    /// Where the next chunk starts, and the bound the first chunk set (0, 0 before it).
    cursor: u64,
    until: u64,
    /// Entries of the chunk last read, not yet returned (values empty for keys).
    chunk: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    /// No chunk is left to ask for: the last one was read, or a request failed.
    done: bool,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("cache", &self.cache.name())
            .field("cursor", &self.cursor)
            .field("pending", &self.chunk.len())
            .field("done", &self.done)
            .finish()
    }
}

impl<'c> Scan<'c> {
    fn new(cache: &'c UpCache, with_values: bool) -> Self {
        Scan {
            cache,
            with_values,
            cursor: 0,
            until: 0,
            chunk: Vec::new().into_iter(),
            done: false,
        }
    }

    fn next_entry(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        loop {
            if let Some(e) = self.chunk.next() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads the next chunk (an empty one is legal: an empty cache, or the end).
    fn fetch(&mut self) -> Result<()> {
        let (cursor, until) = (self.cursor, self.until);
        let req = if self.with_values {
            Request::Items { cursor, until }
        } else {
            Request::Keys { cursor, until }
        };
        let (next, bound, body) = match self.cache.call(req)? {
            Answer::Chunk { next, until, body } => (next, until, body),
            a => return Err(unexpected(&self.cache.inner.peer, a)),
        };
        let entries = Chunk::new(&body, self.with_values)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Protocol)?;
        // The body is dropped here: one chunk is held at a time.
        self.chunk = entries.into_iter();
        if next == 0 {
            self.done = true;
        } else {
            (self.cursor, self.until) = (next, bound);
        }
        Ok(())
    }
}

/// The keys of a cache, fetched chunk by chunk: see [`UpCache::keys_iter`].
///
/// Yields `Err` once if a chunk cannot be read, then ends.
#[derive(Debug)]
#[must_use = "iterators are lazy: nothing is fetched until the iterator is read"]
pub struct Keys<'c>(Scan<'c>);

impl<'c> Keys<'c> {
    pub(crate) fn new(cache: &'c UpCache) -> Self {
        Keys(Scan::new(cache, false))
    }
}

impl Iterator for Keys<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_entry().map(|e| e.map(|(k, _)| k))
    }
}

impl std::iter::FusedIterator for Keys<'_> {}

/// The keys and values of a cache, fetched chunk by chunk: see [`UpCache::items_iter`].
///
/// Yields `Err` once if a chunk cannot be read, then ends.
#[derive(Debug)]
#[must_use = "iterators are lazy: nothing is fetched until the iterator is read"]
pub struct Items<'c>(Scan<'c>);

impl<'c> Items<'c> {
    pub(crate) fn new(cache: &'c UpCache) -> Self {
        Items(Scan::new(cache, true))
    }
}

impl Iterator for Items<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_entry()
    }
}

impl std::iter::FusedIterator for Items<'_> {}
