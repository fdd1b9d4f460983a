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
//! ## Map
//!
//! | layer | module | job |
//! |---|---|---|
//! | wire protocol | [`protocol`] | sans-IO, zero-copy frame decoding and encoding, limits |
//! | store | [`store`] | hashbrown shards selected by one ahash per key, records in segments, insertion order |
//! | server | [`server`] | the mio event loop, connections, subscriptions and waits, lifecycle |
//! | election | `election`, `launch` | the connection file and its lock, the detached server process |
//! | client | [`UpCache`], [`Pipeline`], [`Subscription`] | the blocking, thread-safe client |
//! | transports | [`transports`] (crate `upcache-transports`) | TCP and Unix sockets behind one trait |
//!
//! The wire format is specified in `PROTOCOL.md`.
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
pub mod server;
pub mod store;

pub use client::{
    Builder, Event, EventKind, Pipeline, Reply, Subscription, UpCache, SUBSCRIPTION_QUEUE,
};
pub use error::{validate_name, Error, NameError, Result};
pub use upcache_transports as transports;
pub use upcache_transports::Kind as Transport;
