//! The "last client left" rule, as a small state machine.
//!
//! With `auto_kill`, the server exits once no client has been connected for `linger`. A new
//! server starts in the idle state, with a grace period of at least [`STARTUP_GRACE`] so the
//! process that started it has time to connect. Without `auto_kill` it never exits on its own.

use std::time::{Duration, Instant};

/// Least time a new server waits for its first client.
pub const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// Connection counting and the idle deadline.
#[derive(Debug)]
pub struct Lifecycle {
    auto_kill: bool,
    linger: Duration,
    clients: usize,
    /// When the server became idle (no clients) and how long it may stay so.
    idle: Option<(Instant, Duration)>,
}

impl Lifecycle {
    /// A server that started at `now` with no clients.
    pub fn new(auto_kill: bool, linger: Duration, now: Instant) -> Self {
        Lifecycle {
            auto_kill,
            linger,
            clients: 0,
            idle: Some((now, linger.max(STARTUP_GRACE))),
        }
    }

    /// A client connected.
    pub fn connected(&mut self) {
        self.clients += 1;
        self.idle = None;
    }

    /// A client disconnected at `now`.
    pub fn disconnected(&mut self, now: Instant) {
        self.clients = self.clients.saturating_sub(1);
        if self.clients == 0 {
            self.idle = Some((now, self.linger));
        }
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// When the server should exit if nothing changes, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.idle {
            Some((since, wait)) if self.auto_kill => Some(since + wait),
            _ => None,
        }
    }

    /// Whether the server should exit now.
    pub fn should_exit(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn exits_after_linger_once_the_last_client_leaves() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(true, S, t0);
        assert!(!l.should_exit(t0 + S)); // startup grace is longer than linger
        assert!(l.should_exit(t0 + STARTUP_GRACE));
        l.connected();
        l.connected();
        assert_eq!(l.deadline(), None);
        l.disconnected(t0 + S);
        assert_eq!(l.deadline(), None, "one client is still connected");
        l.disconnected(t0 + 2 * S);
        assert_eq!(l.deadline(), Some(t0 + 3 * S));
        assert!(!l.should_exit(t0 + 2 * S));
        assert!(l.should_exit(t0 + 3 * S));
    }

    #[test]
    fn a_new_client_during_linger_cancels_the_exit() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(true, S, t0);
        l.connected();
        l.disconnected(t0);
        l.connected();
        assert!(!l.should_exit(t0 + 10 * S));
        assert_eq!(l.clients(), 1);
    }

    #[test]
    fn without_auto_kill_it_never_exits() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(false, S, t0);
        assert!(!l.should_exit(t0 + 100 * S));
        l.connected();
        l.disconnected(t0);
        assert_eq!(l.deadline(), None);
    }
}
