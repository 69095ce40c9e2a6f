//! Counters per job name ([`Jobs::stats`](super::Jobs::stats)), and the
//! durable store's counts (`Jobs::stats_with_store`, feature `durable-sqlite`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "durable")]
use super::durable::StoreCounts;

/// The counters of one job name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JobStats {
    /// Dispatches accepted (on any connection).
    pub dispatched: u64,
    /// Attempts running now.
    pub running: u64,
    /// Jobs whose last attempt succeeded.
    pub succeeded: u64,
    /// Jobs whose last attempt failed (`failed` was called for each).
    pub failed: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
}

/// The counters of every job name seen so far, by name, counted in this
/// process; with `Jobs::stats_with_store` (feature `durable-sqlite`), also
/// the durable store's counts, which include other processes' jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    by_name: BTreeMap<&'static str, JobStats>,
    #[cfg(feature = "durable")]
    store: Option<StoreCounts>,
}

impl Stats {
    /// The counters of the job named `name` (all zero if never seen).
    pub fn get(&self, name: &str) -> JobStats {
        self.by_name.get(name).copied().unwrap_or_default()
    }

    /// The counters of the job type `J`.
    pub fn of<J: super::Job>(&self) -> JobStats {
        self.get(J::NAME)
    }

    /// Every job name with its counters, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, JobStats)> + '_ {
        self.by_name.iter().map(|(name, stats)| (*name, *stats))
    }

    /// The durable store's jobs by state (pending, running, failed, done),
    /// read from the store when these stats were taken with
    /// [`Jobs::stats_with_store`](super::Jobs::stats_with_store). `None`
    /// from [`Jobs::stats`](super::Jobs::stats), which reads no store, and
    /// when no durable store is configured.
    #[cfg(feature = "durable")]
    pub fn store(&self) -> Option<StoreCounts> {
        self.store
    }

    #[cfg(feature = "durable")]
    pub(crate) fn with_store(mut self, counts: StoreCounts) -> Self {
        self.store = Some(counts);
        self
    }
}

/// The live counters, shared by a [`Jobs`](super::Jobs) and its clones.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    inner: Arc<Mutex<Stats>>,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        crate::sync::lock(&self.inner)
    }

    pub(crate) fn update(&self, name: &'static str, change: impl FnOnce(&mut JobStats)) {
        change(self.lock().by_name.entry(name).or_default());
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().clone()
    }
}
