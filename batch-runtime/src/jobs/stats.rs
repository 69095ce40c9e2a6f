//! Counters per job name ([`Jobs::stats`](super::Jobs::stats)), and the
//! durable store's counts (`Jobs::stats_with_store`, feature `durable-sqlite`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "durable-sqlite")]
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
    #[cfg(feature = "durable-sqlite")]
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
    #[cfg(feature = "durable-sqlite")]
    pub fn store(&self) -> Option<StoreCounts> {
        self.store
    }

    #[cfg(feature = "durable-sqlite")]
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

#[cfg(all(test, feature = "durable-sqlite"))]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use crate::jobs::durable::{DurableStore, StoreCounts};
    use crate::jobs::{Connection, Job, JobError, Jobs};

    /// A SQLite file in the temp dir, removed (with its WAL files) on drop.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(test: &str) -> TempDb {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("batch-stats-{test}-{}-{n}.db", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            TempDb(path)
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = self.0.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }

    impl Job for Ping {
        const NAME: &'static str = "ping";
        type Context = ();
        async fn handle(&self, _: &()) -> Result<(), JobError> {
            Ok(())
        }
    }

    fn counts(pending: u64, running: u64, failed: u64, done: u64) -> StoreCounts {
        StoreCounts {
            pending,
            running,
            failed,
            done,
        }
    }

    #[tokio::test]
    async fn stats_with_store_reads_the_store_including_jobs_other_processes_stored() {
        let db = TempDb::new("store");
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(Arc::new(())).durable(store).build();
        for n in 0..3 {
            jobs.dispatch(Ping { n })
                .on(Connection::Durable)
                .await
                .expect("the store takes the job");
        }
        // Another process' dispatcher: its own `Jobs` on the same file.
        let other = Jobs::builder(Arc::new(()))
            .durable(DurableStore::sqlite(&db.0).await.expect("store opens"))
            .build();
        other
            .dispatch(Ping { n: 3 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");

        let stats = jobs.stats_with_store().await.expect("the store counts");
        assert_eq!(stats.store(), Some(counts(4, 0, 0, 0)));
        // The in-process counters are this `Jobs`' own.
        assert_eq!(stats.of::<Ping>().dispatched, 3);
        assert_eq!(stats.iter().count(), 1);
        // `stats()` reads no store.
        assert_eq!(jobs.stats().store(), None);
        assert!(jobs.stats().iter().eq(stats.iter()));
    }

    #[tokio::test]
    async fn stats_with_store_is_none_without_a_durable_store_and_for_the_fake() {
        let jobs = Jobs::builder(Arc::new(())).build();
        jobs.dispatch(Ping { n: 1 })
            .on(Connection::Sync)
            .await
            .expect("sync runs the job");
        let stats = jobs.stats_with_store().await.expect("no store to fail");
        assert_eq!(stats.store(), None);
        assert_eq!(stats.of::<Ping>().succeeded, 1);

        let fake = Jobs::<()>::fake();
        let stats = fake.jobs().stats_with_store().await.expect("no store");
        assert_eq!(stats.store(), None);
    }

    #[tokio::test]
    async fn stats_with_store_fails_naming_the_store_when_it_cannot_be_read() {
        let db = TempDb::new("closed");
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(Arc::new(())).durable(store.clone()).build();
        store.close().await;
        let error = jobs
            .stats_with_store()
            .await
            .expect_err("a closed store counts nothing");
        assert_eq!(error.location(), db.0.display().to_string());
        assert!(
            error.to_string().contains("counting the jobs failed"),
            "{error}"
        );
        // The in-process counters stay readable.
        assert_eq!(jobs.stats().store(), None);
    }
}
