//! The SQLite store: one file, nothing to install, through apalis-sqlite.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_sqlite::{Config, SqliteConnectOptions, SqlitePoolOptions, SqliteStorage};
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};

use super::worker::{handle_stored, Shared};
use super::{
    stored_task, Backend, DurableStore, Envelope, FailedJob, RunStarted, StoreBackend, StoreCounts,
    StoreError, DEFAULT_HEARTBEAT, DEFAULT_QUEUE,
};

#[derive(Clone)]
pub(crate) struct SqliteBackend {
    storage: SqliteStorage<Envelope>,
    queue: String,
}

impl SqliteBackend {
    fn config(queue: &str, heartbeat: Duration) -> Config {
        Config::default().queue(queue).heartbeat_interval(heartbeat)
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &sqlx::SqlitePool {
        self.storage.pool()
    }
}

impl DurableStore {
    /// Opens (creating it if missing) the SQLite file at `path` and runs
    /// apalis' migrations. Needs the `durable-sqlite` feature.
    pub async fn sqlite(path: impl AsRef<Path>) -> Result<DurableStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // A writer waits for another process' lock instead of failing.
            .busy_timeout(Duration::from_secs(10))
            // In WAL mode a commit is in the file before `push` returns, so
            // it survives the process being killed; an OS crash may lose
            // the last commits but never corrupts the file.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        // apalis' setup turns `synchronous` OFF on the connection it runs
        // on: run it on a pool of its own, closed before the store's.
        let setup = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::new(&location, "opening the file", e))?;
        SqliteStorage::setup(&setup)
            .await
            .map_err(|e| StoreError::new(&location, "setting up the schema", e))?;
        setup.close().await;
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new(&location, "opening the file", e))?;
        let storage = SqliteStorage::new(&pool)
            .with_config(SqliteBackend::config(DEFAULT_QUEUE, DEFAULT_HEARTBEAT));
        let backend = SqliteBackend {
            storage,
            queue: DEFAULT_QUEUE.to_owned(),
        };
        Ok(DurableStore::from_backend(
            Backend::Sqlite(backend),
            location,
        ))
    }
}

impl StoreBackend for SqliteBackend {
    async fn push(
        &self,
        envelope: Envelope,
        id: ulid::Ulid,
        delay: Option<Duration>,
    ) -> Result<(), BoxDynError> {
        // Retries run inside one stored execution (see the module docs):
        let task = stored_task(envelope, id, delay);
        let mut storage = self.storage.clone();
        storage.push_task(task).await?;
        Ok(())
    }

    async fn counts(&self) -> Result<StoreCounts, BoxDynError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM Jobs WHERE job_type = ?1 GROUP BY status")
                .bind(&self.queue)
                .fetch_all(self.storage.pool())
                .await?;
        let mut counts = StoreCounts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match status.as_str() {
                "Pending" => counts.pending += n,
                "Queued" | "Running" => counts.running += n,
                "Done" => counts.done += n,
                // `Killed` is apalis' state for a job it gave up on.
                _ => counts.failed += n,
            }
        }
        Ok(counts)
    }

    async fn failed_jobs(&self) -> Result<Vec<FailedJob>, BoxDynError> {
        let rows: Vec<(String, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT id, job, last_result FROM Jobs \
             WHERE job_type = ?1 AND status IN ('Failed', 'Killed') ORDER BY id",
        )
        .bind(&self.queue)
        .fetch_all(self.storage.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, job, last_result)| FailedJob::from_stored(id, &job, last_result))
            .collect())
    }

    async fn retry(&self, id: &str) -> Result<bool, BoxDynError> {
        let done = sqlx::query(
            "UPDATE Jobs SET status = 'Pending', attempts = 0, lock_by = NULL, lock_at = NULL, \
             done_at = NULL, run_at = strftime('%s', 'now') \
             WHERE id = ?1 AND job_type = ?2 AND status IN ('Failed', 'Killed')",
        )
        .bind(id)
        .bind(&self.queue)
        .execute(self.storage.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn close(&self) {
        self.storage.pool().close().await;
    }

    fn is_closed(&self) -> bool {
        self.storage.pool().is_closed()
    }

    fn configured(&self, queue: &str, heartbeat: Duration) -> Self {
        SqliteBackend {
            storage: self
                .storage
                .clone()
                .with_config(Self::config(queue, heartbeat)),
            queue: queue.to_owned(),
        }
    }

    async fn run_worker<C: Send + Sync + 'static>(
        &self,
        name: String,
        poll_interval: Duration,
        shared: Arc<Shared<C>>,
        started: RunStarted,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Result<(), BoxDynError> {
        run_apalis_worker!(
            self.storage,
            name,
            poll_interval,
            shared,
            started,
            signal,
            handle_stored::<C>
        )?;
        Ok(())
    }
}
