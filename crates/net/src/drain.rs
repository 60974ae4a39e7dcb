//! Graceful shutdown: one drain signal that every accept loop, connection and long-lived piece of work listens
//! to, and a count of the work still in flight.
//!
//! The life of a process, as [`Phase`]s:
//!
//! 1. **Serving**.
//! 2. **Draining** ([`Drain::start`], on SIGTERM or SIGINT): readiness reports it, data listeners stop
//!    accepting, connections finish what they are doing and close. Work in flight holds a [`Guard`];
//!    [`Drain::wait`] returns when the last guard is gone or the grace period is over.
//! 3. **Closed** ([`Drain::close`]): whatever is still open is dropped now, so that everything it owes (an audit
//!    record, say) is handed over before the process exits.
//!
//! This module depends on tokio only: it knows nothing of what the work is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// Finishing what is in flight; nothing new starts.
    Draining,
    /// The drain is over: what is still open is dropped.
    Closed,
}

#[derive(Debug)]
struct Shared {
    phase: watch::Sender<Phase>,
    /// Whether `phase` has reached [`Phase::Draining`], for the check every request makes: reading the channel
    /// takes its lock, a write to memory that both cores then pass back and forth on every request.
    draining: AtomicBool,
    in_flight: watch::Sender<usize>,
}

/// The controlling side of a drain, held by whoever handles the signals.
#[derive(Debug)]
pub struct Drain {
    shared: Arc<Shared>,
}

/// The listening side of a drain: cheap to clone, handed to every accept loop and connection.
#[derive(Debug, Clone)]
pub struct Watch {
    shared: Arc<Shared>,
}

/// A unit of work in flight (a connection, an open query). The drain waits until every guard is dropped.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard is held"]
pub struct Guard {
    shared: Arc<Shared>,
}

/// How a [`Drain::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing is in flight any more.
    Drained,
    /// The grace period ended with this much work still in flight.
    GraceExpired {
        /// Guards still held.
        in_flight: usize,
    },
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A drain in the serving phase with nothing in flight.
    pub fn new() -> Drain {
        let (phase, _) = watch::channel(Phase::Serving);
        let (in_flight, _) = watch::channel(0);
        Drain { shared: Arc::new(Shared { phase, draining: AtomicBool::new(false), in_flight }) }
    }

    /// A handle for listeners and work.
    pub fn watch(&self) -> Watch {
        Watch { shared: self.shared.clone() }
    }

    /// Starts draining. Returns false when the drain had already started (or is over).
    pub fn start(&self) -> bool {
        self.advance(Phase::Draining)
    }

    /// Ends the drain: listeners and connections still open drop what they hold.
    pub fn close(&self) {
        self.advance(Phase::Closed);
    }

    fn advance(&self, to: Phase) -> bool {
        // `send_if_modified` notifies only on a real change, and never moves the phase backwards.
        self.shared.phase.send_if_modified(|phase| {
            if *phase < to {
                *phase = to;
                // Set under the channel's lock, before anyone waiting on the phase is woken.
                self.shared.draining.store(to >= Phase::Draining, Ordering::Release);
                true
            } else {
                false
            }
        })
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.shared.phase.borrow()
    }

    /// Work in flight now.
    pub fn in_flight(&self) -> usize {
        *self.shared.in_flight.borrow()
    }

    /// Waits until nothing is in flight, or `grace` has passed.
    pub async fn wait(&self, grace: Duration) -> Outcome {
        let mut rx = self.shared.in_flight.subscribe();
        // The sender lives in `shared`, which `self` holds: the wait cannot end with a closed channel.
        match tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await {
            Ok(_) => Outcome::Drained,
            Err(_) => Outcome::GraceExpired { in_flight: self.in_flight() },
        }
    }
}

impl Watch {
    /// Whether the drain has started (or is over): nothing new should start.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Resolves once the drain has started.
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await;
    }

    /// Resolves once the drain is over and what is still open must be dropped.
    pub async fn closed(&self) {
        self.reached(Phase::Closed).await;
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.shared.phase.subscribe();
        // Cannot fail: the sender lives as long as `self`.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Counts a unit of work as in flight until the guard is dropped.
    pub fn guard(&self) -> Guard {
        self.shared.in_flight.send_modify(|n| *n = n.saturating_add(1));
        Guard { shared: self.shared.clone() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A shutdown signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: what Kubernetes sends to end a pod.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

impl Signal {
    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }

    /// The exit code of a process ended by this signal without a clean shutdown (128 + the signal number, as a
    /// shell reports it).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Terminate => 143,
            Signal::Interrupt => 130,
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment [`Signals::install`] returns (the default action, ending the
/// process at once, no longer applies).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Call it early: a signal that arrives before is not seen.
    pub fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next signal. Only `None` if signals can no longer be received.
    pub async fn recv(&mut self) -> Option<Signal> {
        #[cfg(unix)]
        {
            tokio::select! {
                s = self.terminate.recv() => s.map(|()| Signal::Terminate),
                s = self.interrupt.recv() => s.map(|()| Signal::Interrupt),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok().map(|()| Signal::Interrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_waits_for_every_guard() {
        let drain = Drain::new();
        let watch = drain.watch();
        let first = watch.guard();
        let second = watch.guard();
        assert!(!watch.is_draining());
        assert!(drain.start());
        assert!(!drain.start(), "a second start changes nothing");
        assert!(watch.is_draining());
        watch.draining().await;
        assert_eq!(drain.in_flight(), 2);
        drop(first);
        let waiting = tokio::spawn(async move {
            let outcome = drain.wait(Duration::from_secs(3600)).await;
            (outcome, drain)
        });
        drop(second);
        let (outcome, drain) = waiting.await.expect("wait task");
        assert_eq!(outcome, Outcome::Drained);
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_grace_period_ends_a_drain_that_work_holds_open() {
        let drain = Drain::new();
        let _stuck = drain.watch().guard();
        drain.start();
        assert_eq!(drain.wait(Duration::from_millis(10)).await, Outcome::GraceExpired { in_flight: 1 });
    }

    #[tokio::test]
    async fn closing_wakes_the_watchers_and_never_goes_back() {
        let drain = Drain::new();
        let watch = drain.watch();
        let closed = tokio::spawn(async move { watch.closed().await });
        drain.close();
        closed.await.expect("closed resolves");
        drain.start();
        assert_eq!(drain.phase(), Phase::Closed);
        assert!(drain.watch().is_draining(), "closed implies draining");
    }
}
