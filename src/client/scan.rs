//! Enumerations: [`Keys`] and [`Items`], which fetch the cache chunk by chunk as they are read.

use super::conn::Answer;
use super::{unexpected, UpCache};
use crate::error::{Error, Result};
use crate::protocol::{Chunk, Request};

/// A key and its value (empty for keys).
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// Where an enumeration stands, without I/O: the server's cursor and bound, and the entries of
/// the chunk last read. The blocking [`Keys`]/[`Items`] and the async streams drive it alike:
/// ask [`ScanState::request`], give the reply to [`ScanState::take`].
#[derive(Debug)]
pub(crate) struct ScanState {
    with_values: bool,
    /// Where the next chunk starts, and the bound the first chunk set (0, 0 before it).
    cursor: u64,
    until: u64,
    /// Entries of the chunk last read, not yet returned (values empty for keys).
    chunk: std::vec::IntoIter<Entry>,
    /// No chunk is left to ask for: the last one was read, or a request failed.
    pub(crate) done: bool,
}

impl ScanState {
    pub(crate) fn new(with_values: bool) -> Self {
        ScanState {
            with_values,
            cursor: 0,
            until: 0,
            chunk: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The next entry of the chunk last read, if one is left.
    pub(crate) fn buffered(&mut self) -> Option<Entry> {
        self.chunk.next()
    }

    /// The request for the next chunk.
    pub(crate) fn request(&self) -> Request<'static> {
        let (cursor, until) = (self.cursor, self.until);
        if self.with_values {
            Request::Items { cursor, until }
        } else {
            Request::Keys { cursor, until }
        }
    }

    /// Takes the reply to [`ScanState::request`] (an empty chunk is legal: an empty cache, or
    /// the end); anything but a chunk is `Err(answer)`, for the caller to turn into an error.
    pub(crate) fn take(&mut self, answer: Answer) -> std::result::Result<Result<()>, Answer> {
        let Answer::Chunk { next, until, body } = answer else {
            return Err(answer);
        };
        let entries = Chunk::new(&body, self.with_values)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::Protocol);
        // The body is dropped here: one chunk is held at a time.
        match entries {
            Ok(entries) => self.chunk = entries.into_iter(),
            Err(e) => return Ok(Err(e)),
        }
        if next == 0 {
            self.done = true;
        } else {
            (self.cursor, self.until) = (next, until);
        }
        Ok(Ok(()))
    }
}

/// One blocking enumeration.
struct Scan<'c> {
    cache: &'c UpCache,
    state: ScanState,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("cache", &self.cache.name())
            .field("state", &self.state)
            .finish()
    }
}

impl<'c> Scan<'c> {
    fn new(cache: &'c UpCache, with_values: bool) -> Self {
        Scan {
            cache,
            state: ScanState::new(with_values),
        }
    }

    fn next_entry(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(e) = self.state.buffered() {
                return Some(Ok(e));
            }
            if self.state.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.state.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads the next chunk.
    fn fetch(&mut self) -> Result<()> {
        let answer = self.cache.call(self.state.request())?;
        self.state
            .take(answer)
            .unwrap_or_else(|a| Err(unexpected(&self.cache.inner.peer, a)))
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
