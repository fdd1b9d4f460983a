//! The server's state, independent of mio and of the transport; time is a parameter.
//!
//! The engine owns the store, the [`Hub`] of subscriptions and waits, and the connections
//! (any non-blocking `Read + Write` stream). The event loop in [`super`] tells it when a
//! connection is readable or writable and when time passes. Its work is split by job:
//!
//! | file | job |
//! |---|---|
//! | `engine.rs` | the state, timers (handshake and close deadlines), shutdown |
//! | `conn_io.rs` | reading, decoding windows, backpressure, writing, closing |
//! | `commands/` | one file per command family: `kv`, `scan`, `wait`, `subscribe`, `ttl`, `versions`, `multi`, `lease`, `admin` |
//! | `fanout.rs` | delivering events to subscriptions, waking waits, serving lease waiters, lag reports |
//! | `leases.rs` | who holds the lease of a missing key and who waits for it (`get_or_compute`) |
//! | `stats.rs` | the counters and the `stats` reply |
//!
//! A new command family is one new file in `commands/` plus its protocol entries.
//!
//! ## Toward several cores
//!
//! Nothing here is shared between threads: the engine owns its shards. Several event loops
//! would each own an engine with a disjoint set of shards (the shard is chosen from the key's
//! hash, [`Store::shard_of`]) and its own connections; a request for a key of another loop's
//! shard would travel as a message through that loop's queue and `Waker`, its reply coming
//! back the same way, so single-key requests need no locks and order per connection is kept by
//! sequencing replies per request id. Subscriptions and waits would live with the shard of
//! their key, every-key subscriptions and `CLEAR` would be broadcast to all loops.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use slab::Slab;

use super::connection::{Connection, Phase};
use super::hub::Hub;
use super::lifecycle::Lifecycle;
use crate::protocol::{Limits, PushKind, WakeReason};
use crate::store::Store;
use crate::ServerStats;

/// Queued output above which a connection is no longer read (the default of
/// [`EngineConfig::high_water`]).
pub const HIGH_WATER: usize = 4 << 20;
/// Queued output below which reading resumes (the default of [`EngineConfig::low_water`]).
pub const LOW_WATER: usize = 1 << 20;
/// Queued output above which subscription events for a connection are dropped (and counted,
/// then reported as `Lagged`).
pub const SUB_OUT_LIMIT: usize = 8 << 20;
/// Time a new connection has to present its token.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection in error has to take its error reply before it is closed.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
pub use super::hub::{MAX_SUBS_PER_CONN, MAX_WAITS_PER_CONN};
/// Values up to this size are copied into the output buffer to be sent; longer ones are sent
/// from where they are stored (the default of [`EngineConfig::copy_max`]). Copying a small value
/// costs less than the kernel's read of a scattered page plus an output piece of its own (the
/// A/B per value size is in BENCHMARKS.md, "Copy or send in place").
pub const COPY_MAX: usize = 1024;
/// Most frames decoded at once: the window whose records the engine asks the store for
/// together ([`Store::prefetch`]) before applying them.
pub const PREFETCH_FRAMES: usize = 128;

/// What the engine needs to know at start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Exit when idle for `linger`.
    pub auto_kill: bool,
    /// How long an idle server waits for a new client.
    pub linger: Duration,
    /// Frame limits.
    pub limits: Limits,
    /// The token clients must present.
    pub token: Vec<u8>,
    /// Queued output above which a connection is no longer read ([`HIGH_WATER`]).
    pub high_water: usize,
    /// Queued output below which a paused connection is read again ([`LOW_WATER`]); at least
    /// 1 (a connection resumes at the latest when its output is empty) and at most
    /// `high_water`.
    pub low_water: usize,
    /// Values up to this many bytes are copied into a reply's output buffer; longer ones go to
    /// the socket from their segment by vectored write ([`COPY_MAX`]).
    pub copy_max: usize,
}

impl EngineConfig {
    /// A configuration with the default output marks.
    pub fn new(auto_kill: bool, linger: Duration, limits: Limits, token: Vec<u8>) -> Self {
        EngineConfig {
            auto_kill,
            linger,
            limits,
            token,
            high_water: HIGH_WATER,
            low_water: LOW_WATER,
            copy_max: COPY_MAX,
        }
    }
}

/// A connection to close at a deadline unless it is `Ready` by then (its handshake, or the time
/// an erring connection has to take its error reply). `serial` tells it from a later connection
/// in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub slot: usize,
    pub serial: u64,
}

/// The server's state.
pub struct Engine<S> {
    pub(super) store: Store,
    pub(super) hub: Hub,
    pub(super) conns: Slab<Connection<S>>,
    pub(super) lifecycle: Lifecycle,
    /// The counters (the other fields of the report are filled when it is made).
    pub(super) stats: ServerStats,
    pub(super) config: EngineConfig,
    pub(super) timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Connections with output queued by another connection's request (events, wakes),
    /// flushed at the end of the turn. A connection is in it at most once
    /// ([`Connection::dirty`]).
    pub(super) dirty: Vec<usize>,
    /// Connections that used their turn's reads (`conn_io::READS_PER_TURN`), served again
    /// at the end of the turn ([`Connection::parked`]).
    pub(super) parked: Vec<usize>,
    pub(super) serial: u64,
    pub(super) shutdown_requested: bool,
    pub(super) scratch: Vec<u8>,
    pub(super) started: Instant,
    /// The `now` of the last [`Engine::set_time`] (once per turn of the loop: the `now` of the
    /// windows applied in it) and [`Engine::clock_ceil`] of it, which TTLs count from: worked
    /// out once per turn, from the duration the store's clock is, instead of per request.
    pub(super) window: (Instant, u64),
}

impl<S> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.store.len())
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl<S: Read + Write> Engine<S> {
    /// A fresh engine at `now`.
    pub fn new(config: EngineConfig, store: Store, now: Instant) -> Self {
        Engine {
            store,
            hub: Hub::default(),
            conns: Slab::new(),
            lifecycle: Lifecycle::new(config.auto_kill, config.linger, now),
            stats: ServerStats::default(),
            config,
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            parked: Vec::new(),
            serial: 0,
            shutdown_requested: false,
            scratch: Vec::new(),
            started: now,
            window: (now, 0),
        }
    }

    /// Adds an accepted connection, which must shake hands within [`HANDSHAKE_TIMEOUT`];
    /// returns its slot.
    pub fn accept(&mut self, stream: S, now: Instant) -> usize {
        self.serial += 1;
        let deadline = now + HANDSHAKE_TIMEOUT;
        let slot = self
            .conns
            .insert(Connection::new(stream, deadline, self.serial));
        self.add_timer(deadline, slot);
        self.lifecycle.connected();
        self.stats.accepted += 1;
        slot
    }

    pub(super) fn add_timer(&mut self, at: Instant, slot: usize) {
        let serial = self.conns[slot].serial;
        self.timers.push(Reverse((at, Timer { slot, serial })));
    }

    /// The stream of a connection, to register it with a poller.
    pub fn stream_mut(&mut self, slot: usize) -> Option<&mut S> {
        self.conns.get_mut(slot).map(|c| &mut c.stream)
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The store (read-only), for tests and fuzzing.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bytes queued for a connection, if it is open.
    pub fn pending_output(&self, slot: usize) -> Option<usize> {
        self.conns.get(slot).map(|c| c.out.pending())
    }

    /// Asks the engine to shut down at the next [`Engine::should_exit`].
    pub fn request_shutdown(&mut self) {
        self.shutdown_requested = true;
    }

    /// Whether the loop should stop: shutdown requested, or idle past `linger`.
    pub fn should_exit(&self, now: Instant) -> bool {
        self.shutdown_requested || self.lifecycle.should_exit(now)
    }

    /// The next time [`Engine::tick`] has work, if any; a time already past when a
    /// connection waits to go on reading ([`Engine::has_parked`]).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if self.has_parked() {
            return Some(self.started);
        }
        let timers = self.timers.peek().map(|r| r.0 .0);
        let expiry = self.store.next_expiry().map(|ms| self.instant_at(ms));
        [
            timers,
            self.hub.next_deadline(),
            self.hub.leases.next_deadline(),
            self.lifecycle.deadline(),
            expiry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a connection used its turn's reads and waits for the next [`Engine::tick`].
    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// One turn's timed work at `now`: expires due keys (a turn's share, see `expiry.rs`),
    /// fires due timers (a handshake or a close that did not finish in time closes its
    /// connection; a wait past its deadline ends with `TimedOut`; a lease past its deadline
    /// passes on), goes on with connections
    /// that used their turn's reads, and sends what other connections' requests queued.
    pub fn tick(&mut self, now: Instant) {
        self.set_time(now);
        self.expire_due(super::expiry::EXPIRE_PER_TURN);
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Timer { slot, serial } = timer;
            if let Some(c) = self.conns.get(slot) {
                if c.serial == serial && c.phase != Phase::Ready {
                    self.close(slot, now);
                }
            }
        }
        for w in self.hub.take_expired(now) {
            self.wake(w, WakeReason::TimedOut);
        }
        self.expire_leases(now);
        self.serve_parked(now);
        self.flush_dirty(now);
    }

    /// Ends every wait (`Woken` with reason shutdown) and subscription (`Closed`) and sends
    /// what it can without blocking.
    pub fn shutdown(&mut self, now: Instant) {
        for w in self.hub.take_all_waits() {
            self.wake(w, WakeReason::Shutdown);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            for &idx in self.hub.subs_of(slot) {
                let id = self.hub.sub(idx).id;
                self.conns[slot].queue_signal(PushKind::Closed, id, 0);
            }
            self.flush(slot, now);
        }
    }
}

#[cfg(test)]
mod tests;
