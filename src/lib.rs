//! # upcache
//!
//! A shared in-memory key-value cache for the processes of one machine, with zero setup.
//! The first process to open a named cache wins an election (it creates the connection file),
//! starts a detached server and writes its address into the file; every opener connects to
//! that server; when the last client has left (and `linger` has passed) the server removes the
//! file and exits.
//!
//! ```no_run
//! let cache = upcache::UpCache::open("TVHosts")?; // elects or joins the server for "TVHosts"
//! cache.set(b"Light Entertainment Awards", b"Dickie Attenborough")?;
//! let v = cache.get(b"Light Entertainment Awards")?; // Some(..) in every process
//! # Ok::<(), upcache::Error>(())
//! ```
//!
//! ## What a program uses
//!
//! | item | what |
//! |---|---|
//! | [`UpCache`], [`Builder`] | a handle to a named cache: open, get/set/…, waits, subscriptions |
//! | [`Pipeline`], [`PipelineReply`] | many operations sent in one go, their replies in order |
//! | [`Subscription`], [`Event`], [`EventKind`] | the changes of one key, or of every key |
//! | [`Keys`], [`Items`] | the whole cache, fetched chunk by chunk ([`UpCache::keys_iter`]) |
//! | [`ServerStats`] | the server's counters ([`UpCache::stats`]) |
//! | [`Error`], [`NameError`], [`Result`] | what went wrong, and what to do about it |
//! | [`TransportKind`] | TCP on 127.0.0.1, or a Unix socket ([`Builder::transport`]) |
//!
//! ## Map of the source
//!
//! | layer | module | job |
//! |---|---|---|
//! | wire protocol | [`protocol`] | sans-IO, zero-copy frame decoding and encoding, limits |
//! | store | `store` | hashbrown shards selected by one ahash per key, records in segments, insertion order |
//! | server | `server` | the mio event loop, connections, subscriptions and waits, lifecycle |
//! | election | `election`, `launch` | the connection file and its lock, the detached server process |
//! | client | `client`: [`UpCache`], [`Pipeline`], [`Subscription`], [`Keys`] | the blocking, thread-safe client |
//! | stats | `stats`: [`ServerStats`] | the server's counters, as both sides read them |
//! | transports | [`transports`] (crate `upcache-transports`) | TCP and Unix sockets behind one trait |
//!
//! The wire format is specified in `PROTOCOL.md`. `store` and `server` are internals: they are
//! reachable (hidden from the documentation) only for this repository's benchmarks, load
//! generator and fuzz targets, and may change in any release.
//!
//! ## How the server process starts
//!
//! The winner runs its own executable again (`/proc/self/exe`) with an environment variable
//! that this crate checks before `main` runs; that process becomes the server. So any program
//! that links `upcache` can start a server, with nothing else to install. (A program loaded
//! by another executable, such as a shared library inside Python, cannot: there
//! `/proc/self/exe` is that other executable.)
#![deny(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod client;
mod election;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod launch;
pub mod protocol;
mod readbuf;
// Internals, not part of the API: public only for benches/, benches/loadgen and fuzz/.
#[doc(hidden)]
pub mod server;
mod stats;
// Internals, not part of the API: public only for benches/ and fuzz/.
#[doc(hidden)]
pub mod store;

pub use client::{
    Builder, Event, EventKind, Items, Keys, Pipeline, PipelineReply, Subscription, UpCache,
    SUBSCRIPTION_QUEUE,
};
pub use error::{validate_name, Error, NameError, Result};
pub use stats::ServerStats;
pub use upcache_transports as transports;
/// The transport a server listens on: TCP on 127.0.0.1, or a Unix socket beside the
/// connection file. (The [`transports::Transport`] trait is what implements one.)
pub use upcache_transports::Kind as TransportKind;
