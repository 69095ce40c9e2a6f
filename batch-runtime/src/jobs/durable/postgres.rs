//! The PostgreSQL store: one database that several machines share,
//! through apalis-postgres.
//!
//! # What to install and configure
//!
//! A PostgreSQL server (13 or later) and a URL for it, e.g.
//! `postgres://app:secret@db.internal:5432/app`, given to
//! [`DurableStore::postgres`] or [`DurableStore::open`]. The role needs
//! the right to create a schema in the database the first time, and to
//! create the `hstore` and `pgcrypto` extensions if they are not there
//! yet (both are trusted extensions: the database's owner may create
//! them; apalis' migrations install them).
//!
//! # Schema
//!
//! Every open runs apalis-postgres' migrations (idempotent; concurrent
//! opens wait on one another through the migrator's advisory lock). They
//! keep everything in the `apalis` schema: `apalis.jobs` (one row per job:
//! `id` is the job's ULID, `job_type` the queue, `job` the stored JSON
//! envelope as bytes, `status`, `attempts`, `run_at`, `lock_by`,
//! `last_result`), `apalis.workers` (one row per run of a worker, with
//! its queue and `last_seen`), the migration history in
//! `apalis._sqlx_migrations`, and an insert trigger that notifies
//! listeners (unused here: workers poll, see
//! [`DurableStore::poll_interval`]).
//!
//! # How our semantics map onto it
//!
//! - **Committed before dispatch returns**: a dispatch is one
//!   `INSERT` in its own transaction, committed (with PostgreSQL's default
//!   `synchronous_commit = on`, flushed to the server's WAL) before the
//!   dispatch returns.
//! - **One stored execution**: jobs are stored with apalis
//!   `max_attempts = 1`; the job's own tries, backoff, timeout and
//!   `failed` hook run inside that one execution. A job whose execution
//!   failed stays as `Failed` with its error in `last_result`, listed by
//!   [`DurableStore::failed_jobs`] until [`DurableStore::retry`] makes it
//!   `Pending` again.
//! - **Heartbeat and orphans**: a worker fetches up to 10 jobs at a time
//!   (`SELECT .. FOR UPDATE SKIP LOCKED`, so workers never take the same
//!   job) and marks them as its own; it updates its `last_seen` every
//!   [`DurableStore::heartbeat`] interval. At each heartbeat (and when it
//!   starts) a worker puts back to `Pending` the jobs held by any worker of
//!   its queue whose `last_seen` is older than two intervals, so the jobs
//!   of a worker that died run again on another one within about three
//!   intervals. Delivery is therefore at-least-once: the jobs a worker was
//!   running when it died, and those it had finished but not yet recorded
//!   as done (their acknowledgements are written in batches), run again.
//!   [`stored_id`](super::stored_id) lets `handle` de-duplicate.
//! - **Worker names**: apalis keys `apalis.workers` by name, and a worker
//!   that registers a name whose previous holder died less than two
//!   heartbeats ago would take over (and never re-run) that holder's jobs.
//!   So each run of a worker registers as `<name>-<ULID>`: a worker
//!   restarted at once under the same name leaves its predecessor's jobs
//!   to be taken back like any dead worker's. `lock_by` shows that name.
//! - **An unreachable server**: a connection is waited for at most
//!   [`ACQUIRE_TIMEOUT`] (5 s), and a dispatch (or count, failed list,
//!   retry) for at most [`ANSWER_TIMEOUT`] (10 s) in all, so a dispatch to
//!   a server that went down, or stopped answering mid-query, fails within
//!   that long with a [`StoreError`] naming the server (its URL without
//!   the password) and the step; `failover` then runs the job on
//!   `deferred`. A dispatch that timed out mid-query may still have been
//!   committed (the error says so): the job may then run twice, once
//!   stored and once deferred, as at-least-once allows. When the server
//!   fails, a worker's run ends with an error and the worker starts a new
//!   one, with backoff, until the server answers again
//!   ([`DurableWorker::run_until`](super::DurableWorker::run_until)); the
//!   jobs of the failed run are taken back once its heartbeat is missed.
//!   apalis' own worker queries are not bounded by us: a worker whose
//!   connection goes silent mid-query waits for TCP to give up (its jobs
//!   are taken back by other workers meanwhile).
//! - **`close`** closes the handle's connection pool (waiting for the
//!   connections in use): later dispatches, counts and workers on it fail.
//!   Handles made from it with [`DurableStore::queue`] or
//!   [`DurableStore::heartbeat`] share the pool, and close with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_postgres::{Config, PgConnectOptions, PostgresStorage};
use sqlx::postgres::PgPoolOptions;

use super::worker::{handle_stored, Shared};
use super::{
    redacted_location, stored_task, Backend, DurableStore, Envelope, FailedJob, RunStarted,
    StoreBackend, StoreCounts, StoreError, DEFAULT_HEARTBEAT, DEFAULT_QUEUE,
};

/// The longest a dispatch (or any other operation) waits for a
/// connection to the PostgreSQL server, connecting included, before it
/// fails.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a dispatch, a count, the failed list or a retry waits for
/// the server, the connection's [`ACQUIRE_TIMEOUT`] included. A query sent
/// on a connection that then goes silent (a network partition, a frozen
/// host) would otherwise wait for TCP to give up, many minutes later.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one operation on the server, failing it after [`ANSWER_TIMEOUT`].
/// A dispatch that times out may still have been committed: the error
/// says so (delivery is at-least-once anyway).
async fn bounded<T>(
    operation: impl Future<Output = Result<T, BoxDynError>>,
) -> Result<T, BoxDynError> {
    tokio::time::timeout(ANSWER_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the server within {ANSWER_TIMEOUT:?} (if it was a write, it may \
                 or may not have been committed)"
            )
            .into())
        })
}

/// A worker silent for this many heartbeat intervals is taken for dead.
const MISSED_HEARTBEATS: usize = 2;

#[derive(Clone)]
pub(crate) struct PostgresBackend {
    storage: PostgresStorage<Envelope>,
    queue: String,
}

impl PostgresBackend {
    fn config(queue: &str, heartbeat: Duration) -> Config {
        // apalis-postgres' `Config::default()` allows 10 missed heartbeats
        // (its serde default is 2): set it, so the orphan timeout is the
        // documented two intervals.
        Config::default()
            .queue(queue)
            .heartbeat_interval(heartbeat)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.storage.pool()
    }
}

impl DurableStore {
    /// Connects to the PostgreSQL database at `url` (`postgres://` or
    /// `postgresql://`) and runs apalis' migrations. Needs the
    /// `durable-postgres` feature. The store's
    /// [`location`](DurableStore::location) is `url` without its password.
    ///
    /// The migrations (idempotent, run at every open) keep everything in
    /// the `apalis` schema (`apalis.jobs`, `apalis.workers`,
    /// `apalis._sqlx_migrations`); the first open needs the right to create
    /// that schema and the `hstore` and `pgcrypto` extensions (trusted
    /// extensions: the database's owner may).
    ///
    /// Any operation waits at most 5 s for a connection (connecting
    /// included), and a dispatch at most 10 s in all: a dispatch to a
    /// server that is down, or stopped answering, fails within that long,
    /// naming the server and the step (one that timed out mid-query may
    /// still have been committed: the error says so). Each run of a worker
    /// registers in `apalis.workers` as its name followed by a ULID, so a
    /// worker restarted under the same name right after a crash does not
    /// take over the jobs its predecessor died with.
    /// [`close`](DurableStore::close) closes the connection pool, shared
    /// with the handles made from this one.
    ///
    /// ```no_run
    /// use batch_runtime::jobs::durable::DurableStore;
    /// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
    /// let store = DurableStore::postgres("postgres://app@127.0.0.1:5432/app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn postgres(url: &str) -> Result<DurableStore, StoreError> {
        let location = redacted_location(url);
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::new(&location, "reading the URL", e))?;
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new(&location, "connecting to the server", e))?;
        PostgresStorage::setup(&pool)
            .await
            .map_err(|e| StoreError::new(&location, "setting up the schema", e))?;
        let storage = PostgresStorage::new(&pool)
            .with_config(PostgresBackend::config(DEFAULT_QUEUE, DEFAULT_HEARTBEAT));
        let backend = PostgresBackend {
            storage,
            queue: DEFAULT_QUEUE.to_owned(),
        };
        Ok(DurableStore::from_backend(
            Backend::Postgres(backend),
            location,
        ))
    }
}

impl StoreBackend for PostgresBackend {
    async fn push(
        &self,
        envelope: Envelope,
        id: ulid::Ulid,
        delay: Option<Duration>,
    ) -> Result<(), BoxDynError> {
        // Retries run inside one stored execution (see the module docs):
        let task = stored_task(envelope, id, delay);
        let mut storage = self.storage.clone();
        bounded(async move {
            storage.push_task(task).await?;
            Ok(())
        })
        .await
    }

    async fn counts(&self) -> Result<StoreCounts, BoxDynError> {
        let rows: Vec<(String, i64)> = bounded(async {
            Ok(sqlx::query_as(
                "SELECT status, COUNT(*) FROM apalis.jobs WHERE job_type = $1 GROUP BY status",
            )
            .bind(&self.queue)
            .fetch_all(self.pool())
            .await?)
        })
        .await?;
        let mut counts = StoreCounts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match status.as_str() {
                "Pending" => counts.pending += n,
                // `Queued`: fetched by a worker, not started yet.
                "Queued" | "Running" => counts.running += n,
                "Done" => counts.done += n,
                // `Killed` is apalis' state for a job it gave up on.
                _ => counts.failed += n,
            }
        }
        Ok(counts)
    }

    async fn failed_jobs(&self) -> Result<Vec<FailedJob>, BoxDynError> {
        // `last_result` is the JSON of a `Result`: `{"Err": "<message>"}`.
        let rows: Vec<(String, Vec<u8>, Option<String>)> = bounded(async {
            Ok(sqlx::query_as(
                "SELECT id, job, COALESCE(last_result ->> 'Err', last_result::text) \
                 FROM apalis.jobs WHERE job_type = $1 AND status IN ('Failed', 'Killed') \
                 ORDER BY id COLLATE \"C\"",
            )
            .bind(&self.queue)
            .fetch_all(self.pool())
            .await?)
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, job, last_result)| FailedJob::from_stored(id, &job, last_result))
            .collect())
    }

    async fn retry(&self, id: &str) -> Result<bool, BoxDynError> {
        let done = bounded(async {
            Ok(sqlx::query(
                "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, lock_by = NULL, \
                 lock_at = NULL, done_at = NULL, run_at = now() \
                 WHERE id = $1 AND job_type = $2 AND status IN ('Failed', 'Killed')",
            )
            .bind(id)
            .bind(&self.queue)
            .execute(self.pool())
            .await?)
        })
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn close(&self) {
        self.pool().close().await;
    }

    fn is_closed(&self) -> bool {
        self.pool().is_closed()
    }

    fn configured(&self, queue: &str, heartbeat: Duration) -> Self {
        PostgresBackend {
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
        // apalis-postgres keys workers by name and, when a worker starts,
        // takes back only the jobs of workers already silent for two
        // heartbeats: `name` is this run's own (`DurableWorker` adds a
        // ULID), so a restarted worker never adopts its dead
        // predecessor's jobs.
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
