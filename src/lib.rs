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
//! | [`ComputeError`] | [`UpCache::get_or_compute`]: a missing value computed once among every process (server leases) |
//! | [`ServerStats`] | the server's counters ([`UpCache::stats`]) |
//! | [`Version`] | which write a value came from ([`UpCache::get_versioned`], [`UpCache::set_if_version`]) |
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
//! | async client | `aio` (cargo feature `tokio`): `aio::UpCache`, opened with `Builder::open_async` | the same operations as `async fn`s for tokio; many tasks share one connection, every future cancellation safe |
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
//! that tells it to become the cache's server; that process serves until the server stops, and
//! then exits without running the rest of the program. So any program that links `upcache`
//! can start a server, with nothing else to install. (A program loaded by another executable,
//! such as a shared library inside Python, cannot: there `/proc/self/exe` is that other
//! executable.) Two ways for the new process to notice that it is a server:
//!
//! - With the cargo feature `auto-server` (on by default), a constructor placed in
//!   `.init_array` checks the variable before `main` runs: zero setup.
//! - Without it (`default-features = false`), the program calls [`serve_if_requested`] first
//!   in `main`. A program that does neither cannot start a server: when it wins an election,
//!   `open` fails at once with [`Error::ServerStart`] (it can still join a server that another
//!   program started).
//!
//! A program that cannot do either (or a library loaded by another executable) names another
//! server program instead: [`Builder::server_exe`] or the environment variable
//! `UPCACHE_SERVER`, such as this crate's `upcache` command, which is also how programs in
//! other languages start servers (`upcache serve NAME --detach`, PROTOCOL.md §8.1).
//!
//! Either way the variable is removed from the environment once read, a setuid or setgid
//! process refuses to serve, and a request that is not exactly what upcache's launcher writes
//! (its descriptors, name and paths are checked) makes the process exit with status 2 and a
//! message on standard error, without serving.
//!
//! The connection file is part of the protocol: [`ServerInfo`] reads it. A file of the Python
//! upcache (same file name, `{"port": N}`) whose port still accepts connections is left alone,
//! and `open` fails with [`Error::ForeignServer`].
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
mod version;
// Internals, not part of the API: public only for benches/ and fuzz/.
#[doc(hidden)]
pub mod store;

#[cfg(feature = "tokio")]
pub use client::aio;
pub use client::{
    Builder, ComputeError, Event, EventKind, Items, Keys, Pipeline, PipelineReply, Subscription,
    Ttl, UpCache, DEFAULT_LEASE_TIMEOUT, SUBSCRIPTION_QUEUE,
};
pub use election::{ServerInfo, ServerInfoError};
pub use error::{validate_name, Error, NameError, Result};
pub use launch::serve_if_requested;
pub use stats::ServerStats;
pub use upcache_transports as transports;
/// The transport a server listens on: TCP on 127.0.0.1, or a Unix socket beside the
/// connection file. (The [`transports::Transport`] trait is what implements one.)
pub use upcache_transports::Kind as TransportKind;
pub use version::Version;
