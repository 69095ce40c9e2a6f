//! How a [`DurableWorker`](super::DurableWorker) rides out an outage of
//! its store: when a run counts as started, how long to wait before the
//! next run, and when to give up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The wait before a new run doubles from `FIRST_WAIT` after each failed
// run, up to `MAX_WAIT`. Short at first: a store that blinked (a server
// restarted, a failover, a dropped connection) is usually back within a
// second. Doubling: the workers of a store that stays down do not hammer
// it. Capped: a worker runs jobs again at most 5 s after its store is back.

/// The wait before the first new run of an outage.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(100);

/// The longest wait between two runs.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);

/// Set once a run of the worker has registered in the store (apalis
/// reports a heartbeat once its registration is written, then at every
/// beat). Only then does the run fetch jobs, so a run without it holds
/// none; its failure starts a new outage.
#[derive(Clone, Default)]
pub(crate) struct RunStarted(Arc<AtomicBool>);

impl RunStarted {
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What to do after a run failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Start a new run after this wait.
    RetryIn(Duration),
    /// The store has been failing for this long, at least the worker's
    /// `give_up_after`.
    GiveUp(Duration),
}

/// The failures of the store since the last run that started.
pub(crate) struct Outages {
    give_up_after: Option<Duration>,
    current: Option<Outage>,
}

struct Outage {
    /// The first failure.
    since: Instant,
    next_wait: Duration,
}

impl Outages {
    /// No bound: retry until shut down.
    pub(crate) fn new(give_up_after: Option<Duration>) -> Outages {
        Outages {
            give_up_after,
            current: None,
        }
    }

    /// A run failed at `now`; `started` says whether it had registered in
    /// the store (then this failure is the first of a new outage).
    pub(crate) fn run_failed(&mut self, started: bool, now: Instant) -> Next {
        if started {
            self.current = None;
        }
        let outage = self.current.get_or_insert(Outage {
            since: now,
            next_wait: FIRST_WAIT,
        });
        let failing_for = now.saturating_duration_since(outage.since);
        let wait = outage.next_wait;
        outage.next_wait = wait.saturating_mul(2).min(MAX_WAIT);
        match self.give_up_after {
            Some(limit) if failing_for >= limit => Next::GiveUp(failing_for),
            // The last run is tried at the bound, not up to `MAX_WAIT`
            // after it.
            Some(limit) => Next::RetryIn(wait.min(limit - failing_for)),
            None => Next::RetryIn(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_wait_doubles_from_100_ms_up_to_5_s() {
        let mut outages = Outages::new(None);
        let start = Instant::now();
        let waits: Vec<_> = (0..9)
            .map(|i| outages.run_failed(false, start + ms(i * 1000)))
            .collect();
        let expected: Vec<_> = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
            .into_iter()
            .map(|n| Next::RetryIn(ms(n)))
            .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn a_run_that_started_ends_the_outage() {
        let mut outages = Outages::new(Some(ms(10_000)));
        let start = Instant::now();
        for i in 0..5 {
            outages.run_failed(false, start + ms(i * 1000));
        }
        // Started, then failed 20 s after the first failure: a new
        // outage, from its first wait and within the bound again.
        assert_eq!(
            outages.run_failed(true, start + ms(20_000)),
            Next::RetryIn(FIRST_WAIT)
        );
        assert_eq!(
            outages.run_failed(false, start + ms(21_000)),
            Next::RetryIn(ms(200))
        );
    }

    #[test]
    fn the_worker_gives_up_once_the_store_failed_for_the_bound() {
        let mut outages = Outages::new(Some(ms(1000)));
        let start = Instant::now();
        assert_eq!(outages.run_failed(true, start), Next::RetryIn(ms(100)));
        assert_eq!(
            outages.run_failed(false, start + ms(400)),
            Next::RetryIn(ms(200))
        );
        // 400 ms wait due, 300 ms left: the last run is at the bound.
        assert_eq!(
            outages.run_failed(false, start + ms(700)),
            Next::RetryIn(ms(300))
        );
        assert_eq!(
            outages.run_failed(false, start + ms(1000)),
            Next::GiveUp(ms(1000))
        );
    }

    #[test]
    fn a_zero_bound_gives_up_at_the_first_failure() {
        let mut outages = Outages::new(Some(Duration::ZERO));
        assert_eq!(
            outages.run_failed(true, Instant::now()),
            Next::GiveUp(Duration::ZERO)
        );
    }
}
