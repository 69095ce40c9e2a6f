//! The `durable` connection: jobs stored in a SQLite file through apalis
//! before the dispatch returns, and run by a [`DurableWorker`] in this
//! process or another one, after a crash too.
//!
//! Delivery is at-least-once: a job that was running on a worker that
//! died (no heartbeat for [`DurableStore::heartbeat`] times two) is run
//! again by the next worker, so `handle` must tolerate running twice.
//!
//! The store keeps the queue only; the job's attempts, backoff, timeout
//! and `failed` hook run inside one stored execution, exactly as on the
//! other connections. A job whose last attempt failed stays in the store
//! as failed; one interrupted by a crash goes back to pending.
//!
//! A worker in the server's own process, stopped with the server:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::extract::State;
//! use axum::routing::post;
//! use axum::Router;
//! use batch_runtime::jobs::durable::DurableStore;
//! use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
//! use serde::{Deserialize, Serialize};
//!
//! struct AppState;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Refund { order: u64 }
//!
//! impl Job for Refund {
//!     const NAME: &'static str = "refund";
//!     type Context = AppState;
//!     async fn handle(&self, _: &AppState) -> Result<(), JobError> { Ok(()) }
//! }
//!
//! async fn cancel(State(jobs): State<Jobs<AppState>>) -> Result<&'static str, String> {
//!     // Returns once the refund is committed to `jobs.db`.
//!     jobs.dispatch(Refund { order: 17 }).on(Connection::Durable).await.map_err(|e| e.to_string())?;
//!     Ok("refund on its way")
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = DurableStore::sqlite("jobs.db").await?;
//!     let jobs = Jobs::builder(Arc::new(AppState)).durable(store).build();
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let worker = jobs.durable_worker("web-1", |r| r.register::<Refund>())?;
//!     let worker = tokio::spawn(worker.run_until(async { let _ = stopped.await; }));
//!
//!     let app = Router::new().route("/cancel", post(cancel)).with_state(jobs);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!         .await?;
//!     // The worker takes no new job and returns once those in flight are done.
//!     let _ = stop.send(());
//!     worker.await??;
//!     Ok(())
//! }
//! ```
//!
//! A worker as a process of its own (run several against one file) is the
//! same `Jobs` and `durable_worker(..).run_until(..)` in a `main` with no
//! server.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_sqlite::{Config, SqliteConnectOptions, SqlitePoolOptions, SqliteStorage};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};

use super::attempt::{in_process, run_attempts, Run};
use super::dispatch::{Connection, DispatchError, JobId};
use super::job::{Job, JobError};
use super::stats::Counters;

/// The apalis queue every batch job goes to; the job's own name is in
/// the stored envelope, so one worker serves every registered job type.
const QUEUE: &str = "batch-jobs";

/// How long a worker may go without a heartbeat before its running jobs
/// are taken back (two missed heartbeats of this interval).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// How often an idle worker looks for jobs stored by other processes, for
/// delayed jobs that came due and for retried ones.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

tokio::task_local! {
    /// The id in the store of the durable job this task runs.
    static STORED_ID: String;
}

/// Inside [`Job::handle`] (and `failed`) of a job run by a
/// [`DurableWorker`]: the job's id in the store, the same on every run of
/// it. Delivery is at-least-once, so a job that has effects outside
/// this process can record this id with them and skip an id it has
/// already seen. `None` outside a durable run.
///
/// ```
/// use batch_runtime::jobs::durable;
/// assert_eq!(durable::stored_id(), None);
/// ```
pub fn stored_id() -> Option<String> {
    STORED_ID.try_with(|id| id.clone()).ok()
}

/// What is stored: the job's name and its JSON.
#[derive(Serialize, Deserialize)]
struct Envelope {
    job: String,
    payload: serde_json::Value,
}

/// The store is unusable: opening, migrating or writing it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durable job store `{location}`: {action} failed: {message}")]
pub struct StoreError {
    location: String,
    action: &'static str,
    message: String,
}

impl StoreError {
    fn new(location: &str, action: &'static str, error: impl fmt::Display) -> Self {
        StoreError {
            location: location.to_owned(),
            action,
            message: error.to_string(),
        }
    }

    /// The store's location (the SQLite file).
    pub fn location(&self) -> &str {
        &self.location
    }
}

/// A durable job store: a SQLite file, its schema set up through apalis
/// (idempotent: every start may run it). Cheap to clone.
///
/// ```no_run
/// use batch_runtime::jobs::durable::DurableStore;
/// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
/// let store = DurableStore::sqlite("jobs.db").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DurableStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    storage: SqliteStorage<Envelope>,
    location: String,
    poll_interval: Duration,
}

impl fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStore")
            .field("location", &self.inner.location)
            .finish()
    }
}

impl DurableStore {
    /// Opens (creating it if missing) the SQLite file at `path` and runs
    /// apalis' migrations.
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
        let storage = SqliteStorage::new(&pool).with_config(
            Config::default()
                .queue(QUEUE)
                .heartbeat_interval(DEFAULT_HEARTBEAT),
        );
        Ok(DurableStore {
            inner: Arc::new(StoreInner {
                storage,
                location,
                poll_interval: DEFAULT_POLL_INTERVAL,
            }),
        })
    }

    /// How often workers on this store report that they are alive
    /// (default [`DEFAULT_HEARTBEAT`]). A worker silent for two intervals
    /// is taken for dead and its running jobs are run again.
    pub fn heartbeat(self, interval: Duration) -> Self {
        let config = Config::default().queue(QUEUE).heartbeat_interval(interval);
        DurableStore {
            inner: Arc::new(StoreInner {
                storage: self.inner.storage.clone().with_config(config),
                location: self.inner.location.clone(),
                poll_interval: self.inner.poll_interval,
            }),
        }
    }

    /// How often an idle worker on this store looks for new jobs (default
    /// [`DEFAULT_POLL_INTERVAL`]): the most a job stored by another
    /// process, a delayed job come due or a retried job waits for an idle
    /// worker. Each look is one small query.
    pub fn poll_interval(self, interval: Duration) -> Self {
        DurableStore {
            inner: Arc::new(StoreInner {
                storage: self.inner.storage.clone(),
                location: self.inner.location.clone(),
                poll_interval: interval,
            }),
        }
    }

    /// Where the store is (the SQLite file's path).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Closes the store's connections, waiting for the ones in use: later
    /// dispatches on `durable` fail (on `failover` they run deferred) and
    /// workers on this handle stop with an error.
    pub async fn close(&self) {
        self.inner.storage.pool().close().await;
    }

    /// Counts this store's batch jobs by state, from the store itself (so
    /// they include jobs dispatched or run by other processes).
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM Jobs WHERE job_type = ?1 GROUP BY status")
                .bind(QUEUE)
                .fetch_all(self.inner.storage.pool())
                .await
                .map_err(|e| StoreError::new(&self.inner.location, "counting the jobs", e))?;
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

    /// The jobs whose last attempt failed, oldest first, with their last
    /// error; [`retry`](DurableStore::retry) runs one again.
    pub async fn failed_jobs(&self) -> Result<Vec<FailedJob>, StoreError> {
        let rows: Vec<(String, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT id, job, last_result FROM Jobs \
             WHERE job_type = ?1 AND status IN ('Failed', 'Killed') ORDER BY id",
        )
        .bind(QUEUE)
        .fetch_all(self.inner.storage.pool())
        .await
        .map_err(|e| StoreError::new(&self.inner.location, "listing the failed jobs", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, job, last_result)| FailedJob {
                id,
                job: serde_json::from_slice::<Envelope>(&job)
                    .map(|envelope| envelope.job)
                    .unwrap_or_else(|e| format!("(unreadable: {e})")),
                last_error: last_result.unwrap_or_default(),
            })
            .collect())
    }

    /// Makes the failed job `id` pending again, to run now on the next
    /// free worker. `Ok(false)` when no failed job has this id.
    pub async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE Jobs SET status = 'Pending', attempts = 0, lock_by = NULL, lock_at = NULL, \
             done_at = NULL, run_at = strftime('%s', 'now') \
             WHERE id = ?1 AND job_type = ?2 AND status IN ('Failed', 'Killed')",
        )
        .bind(id)
        .bind(QUEUE)
        .execute(self.inner.storage.pool())
        .await
        .map_err(|e| StoreError::new(&self.inner.location, "retrying a failed job", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores `job` to run no earlier than `delay` from now (whole
    /// seconds); returns its id in the store once it is committed.
    pub(crate) async fn push<J: Job>(
        &self,
        job: &J,
        delay: Option<Duration>,
    ) -> Result<String, DispatchError> {
        let payload = serde_json::to_value(job).map_err(|e| DispatchError::Serialize {
            job: J::NAME,
            message: e.to_string(),
        })?;
        let envelope = Envelope {
            job: J::NAME.to_owned(),
            payload,
        };
        // Retries run inside one stored execution (see the module docs):
        // the store never re-runs a job whose execution failed.
        let id = ulid::Ulid::generate();
        let mut task = TaskBuilder::new(envelope)
            .task_id(TaskId::from_ulid(id))
            .max_attempts(1);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        let mut storage = self.inner.storage.clone();
        storage
            .push_task(task.build())
            .await
            .map(|()| id.to_string())
            .map_err(|e| DispatchError::Store {
                job: J::NAME,
                error: StoreError::new(&self.inner.location, "storing the job", e),
            })
    }
}

/// A durable store's jobs by state; see [`DurableStore::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCounts {
    /// Waiting for a worker (delayed ones included).
    pub pending: u64,
    /// Taken by a worker and not finished.
    pub running: u64,
    /// The last attempt failed; see [`DurableStore::failed_jobs`].
    pub failed: u64,
    /// Succeeded.
    pub done: u64,
}

/// A stored job whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedJob {
    /// Its id in the store (give it to [`DurableStore::retry`]).
    pub id: String,
    /// Its [`Job::NAME`].
    pub job: String,
    /// The error of its last attempt, as the store keeps it.
    pub last_error: String,
}

type Runner<C> = fn(
    serde_json::Value,
    Arc<C>,
    Run,
) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// The job types a [`DurableWorker`] runs, by [`Job::NAME`].
pub struct DurableRegistry<C> {
    runners: HashMap<&'static str, Runner<C>>,
}

impl<C: Send + Sync + 'static> DurableRegistry<C> {
    /// Lets the worker run jobs of type `J`.
    pub fn register<J: Job<Context = C>>(&mut self) -> &mut Self {
        self.runners.insert(J::NAME, run_stored::<J>);
        self
    }
}

impl<C> fmt::Debug for DurableRegistry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.runners.keys().collect();
        names.sort();
        f.debug_struct("DurableRegistry")
            .field("jobs", &names)
            .finish()
    }
}

fn run_stored<J: Job>(
    payload: serde_json::Value,
    ctx: Arc<J::Context>,
    run: Run,
) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> {
    Box::pin(async move {
        let job: J = serde_json::from_value(payload).map_err(|e| {
            JobError::new(format!(
                "the stored job `{}` does not deserialize (did its fields change since it was dispatched?): {e}",
                J::NAME
            ))
        })?;
        run_attempts(&job, &ctx, &run, |_| in_process(&job, ctx.as_ref())).await
    })
}

struct Shared<C> {
    ctx: Arc<C>,
    registry: DurableRegistry<C>,
    counters: Counters,
}

/// Runs the jobs stored in a [`DurableStore`]; see
/// [`Jobs::durable_worker`](super::Jobs::durable_worker).
pub struct DurableWorker<C> {
    name: String,
    store: DurableStore,
    shared: Arc<Shared<C>>,
}

impl<C> fmt::Debug for DurableWorker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableWorker")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("jobs", &self.shared.registry)
            .finish()
    }
}

/// The worker stopped on an error of the store.
#[derive(Debug, thiserror::Error)]
#[error("durable worker `{worker}` on `{location}` stopped: {message}")]
pub struct WorkerError {
    worker: String,
    location: String,
    message: String,
}

impl<C: Send + Sync + 'static> DurableWorker<C> {
    pub(crate) fn new(
        name: &str,
        store: DurableStore,
        ctx: Arc<C>,
        counters: Counters,
        register: impl FnOnce(&mut DurableRegistry<C>) -> &mut DurableRegistry<C>,
    ) -> Self {
        let mut registry = DurableRegistry {
            runners: HashMap::new(),
        };
        register(&mut registry);
        DurableWorker {
            name: name.to_owned(),
            store,
            shared: Arc::new(Shared {
                ctx,
                registry,
                counters,
            }),
        }
    }

    /// Runs stored jobs until `shutdown` completes, then stops taking new
    /// ones and returns once the jobs in flight are done.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WorkerError> {
        let worker = WorkerBuilder::new(self.name.clone())
            .backend(
                self.store
                    .inner
                    .storage
                    .clone()
                    .poll_with_interval(self.store.inner.poll_interval),
            )
            .data(self.shared.clone())
            .build(handle_stored::<C>);
        let signal = async move {
            shutdown.await;
            Ok::<(), std::io::Error>(())
        };
        worker.run_until(signal).await.map_err(|e| WorkerError {
            worker: self.name.clone(),
            location: self.store.inner.location.clone(),
            message: e.to_string(),
        })
    }
}

/// One stored execution: the registered job's attempts in this process.
async fn handle_stored<C: Send + Sync + 'static>(
    envelope: Envelope,
    shared: Data<Arc<Shared<C>>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let Some(runner) = shared.registry.runners.get(envelope.job.as_str()) else {
        tracing::error!(
            job = %envelope.job,
            "a stored job's type is not registered with this durable worker; register it with `registry.register::<J>()`"
        );
        return Err(format!(
            "job `{}` is not registered with this worker; add `registry.register::<{}>()`",
            envelope.job, envelope.job
        )
        .into());
    };
    let run = Run {
        id: JobId::next(),
        connection: Connection::Durable,
        counters: shared.counters.clone(),
    };
    STORED_ID
        .scope(
            task_id.to_string(),
            runner(envelope.payload, shared.ctx.clone(), run),
        )
        .await
        // `JobError` is not a `std::error::Error` (it converts from every
        // one); the store keeps its message as the last result.
        .map_err(|e| BoxDynError::from(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use tokio::sync::{oneshot, watch};
    use tokio::time::timeout;

    use super::*;
    use crate::jobs::{Jobs, JobsFake};

    const LIMIT: Duration = Duration::from_secs(30);

    /// A SQLite file in the temp dir, removed (with its WAL files) on drop.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(test: &str) -> TempDb {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("batch-durable-{test}-{}-{n}.db", std::process::id());
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

    /// Records which orders ran, and publishes how many runs there were.
    struct Ledger {
        runs: Mutex<Vec<u64>>,
        stored_ids: Mutex<Vec<Option<String>>>,
        count: watch::Sender<usize>,
        failed_hook: watch::Sender<u32>,
        gate: tokio::sync::Semaphore,
    }

    impl Ledger {
        fn new() -> Arc<Ledger> {
            Arc::new(Ledger {
                runs: Mutex::new(Vec::new()),
                stored_ids: Mutex::new(Vec::new()),
                count: watch::channel(0).0,
                failed_hook: watch::channel(0).0,
                gate: tokio::sync::Semaphore::new(0),
            })
        }

        fn record(&self, order: u64) {
            self.stored_ids
                .lock()
                .expect("ledger lock")
                .push(stored_id());
            let mut runs = self.runs.lock().expect("ledger lock");
            runs.push(order);
            let n = runs.len();
            drop(runs);
            self.count.send_replace(n);
        }

        async fn wait_runs(&self, n: usize) {
            let mut rx = self.count.subscribe();
            timeout(LIMIT, rx.wait_for(|c| *c >= n))
                .await
                .unwrap_or_else(|_| panic!("{n} runs did not happen within {LIMIT:?}"))
                .expect("ledger sender alive");
        }

        fn sorted_runs(&self) -> Vec<u64> {
            let mut runs = self.runs.lock().expect("ledger lock").clone();
            runs.sort_unstable();
            runs
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Deliver {
        order: u64,
    }

    impl Job for Deliver {
        const NAME: &'static str = "deliver";
        type Context = Ledger;
        async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
            ledger.record(self.order);
            Ok(())
        }
    }

    /// Fails every attempt.
    #[derive(Serialize, Deserialize)]
    struct Refund {
        order: u64,
    }

    impl Job for Refund {
        const NAME: &'static str = "refund";
        type Context = Ledger;
        async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
            ledger.record(self.order);
            Err(JobError::new("the payment provider said no"))
        }
        fn tries(&self) -> u32 {
            2
        }
        fn backoff(&self) -> crate::jobs::Backoff {
            crate::jobs::Backoff::fixed(Duration::from_millis(1))
        }
        async fn failed(&self, _: &JobError, ledger: &Ledger) {
            ledger.failed_hook.send_modify(|n| *n += 1);
        }
    }

    /// Hangs on its first run (the worker is killed meanwhile), succeeds
    /// after.
    #[derive(Serialize, Deserialize)]
    struct Invoice {
        order: u64,
    }

    impl Job for Invoice {
        const NAME: &'static str = "invoice";
        type Context = Ledger;
        async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
            let first = ledger.runs.lock().expect("ledger lock").is_empty();
            ledger.record(self.order);
            if first {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    /// Waits for the ledger's gate to open.
    #[derive(Serialize, Deserialize)]
    struct Gated {
        order: u64,
    }

    impl Job for Gated {
        const NAME: &'static str = "gated";
        type Context = Ledger;
        async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
            ledger.record(self.order);
            let _permit = ledger.gate.acquire().await?;
            Ok(())
        }
    }

    fn spawn_worker(
        jobs: &Jobs<Ledger>,
        name: &str,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), WorkerError>>,
    ) {
        let worker = jobs
            .durable_worker(name, |r| {
                r.register::<Deliver>()
                    .register::<Refund>()
                    .register::<Invoice>()
                    .register::<Gated>()
            })
            .expect("durable is configured");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    async fn stop_worker(
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), WorkerError>>,
    ) {
        let _ = stop.send(());
        timeout(LIMIT, task)
            .await
            .expect("the worker stops after its shutdown signal")
            .expect("the worker task did not panic")
            .expect("the worker stopped without a store error");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_job_is_stored_before_dispatch_returns_and_a_later_worker_runs_it() {
        let db = TempDb::new("stored");
        {
            // The dispatching "process": no worker, dropped before one starts.
            let store = DurableStore::sqlite(&db.0).await.expect("store opens");
            let jobs = Jobs::builder(Ledger::new()).durable(store).build();
            for order in 1..=3 {
                let dispatched = jobs
                    .dispatch(Deliver { order })
                    .on(Connection::Durable)
                    .await
                    .expect("the store takes the job");
                assert_eq!(dispatched.connection(), Connection::Durable);
                assert_eq!(dispatched.outcome(), None);
            }
            assert_eq!(jobs.stats().of::<Deliver>().dispatched, 3);
        }
        // A fresh store handle and context: only the file carries the jobs.
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store reopens");
        let jobs = Jobs::builder(ledger.clone()).durable(store).build();
        let (stop, task) = spawn_worker(&jobs, "later-worker");
        ledger.wait_runs(3).await;
        stop_worker(stop, task).await;
        assert_eq!(ledger.sorted_runs(), vec![1, 2, 3]);
        assert_eq!(jobs.stats().of::<Deliver>().succeeded, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stored_job_runs_exactly_once_when_no_worker_dies() {
        const N: u64 = 200;
        let db = TempDb::new("once");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store).build();
        for order in 0..N {
            jobs.dispatch(Deliver { order })
                .on(Connection::Durable)
                .await
                .expect("the store takes the job");
        }
        let (stop, task) = spawn_worker(&jobs, "once-worker");
        ledger.wait_runs(N as usize).await;
        stop_worker(stop, task).await;
        assert_eq!(ledger.sorted_runs(), (0..N).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_and_the_failed_hook_run_inside_one_stored_execution_that_is_not_rerun() {
        let db = TempDb::new("retries");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store).build();
        jobs.dispatch(Refund { order: 9 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        // A job after it shows the worker moved on.
        jobs.dispatch(Deliver { order: 10 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let (stop, task) = spawn_worker(&jobs, "retry-worker");
        ledger.wait_runs(3).await;
        let mut failed = ledger.failed_hook.subscribe();
        timeout(LIMIT, failed.wait_for(|n| *n >= 1))
            .await
            .expect("the refund's `failed` hook runs after its two tries")
            .expect("ledger sender alive");
        stop_worker(stop, task).await;
        assert_eq!(ledger.sorted_runs(), vec![9, 9, 10]);
        assert_eq!(*ledger.failed_hook.borrow(), 1);
        let refund = jobs.stats().of::<Refund>();
        assert_eq!((refund.retried, refund.failed), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_running_on_a_worker_that_died_runs_again_after_two_missed_heartbeats() {
        let db = TempDb::new("orphan");
        let ledger = Ledger::new();
        let heartbeat = Duration::from_secs(1);
        let store = DurableStore::sqlite(&db.0)
            .await
            .expect("store opens")
            .heartbeat(heartbeat);
        let jobs = Jobs::builder(ledger.clone()).durable(store).build();
        let dispatched = jobs
            .dispatch(Invoice { order: 5 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let (_never_stopped, dying) = spawn_worker(&jobs, "dying-worker");
        ledger.wait_runs(1).await;
        // The worker dies mid-job: no ack, no more heartbeats.
        dying.abort();
        let killed_at = std::time::Instant::now();
        let (stop, task) = spawn_worker(&jobs, "rescuing-worker");
        ledger.wait_runs(2).await;
        let recovered_after = killed_at.elapsed();
        stop_worker(stop, task).await;
        assert_eq!(ledger.sorted_runs(), vec![5, 5]);
        // Both runs see the same stored id: `handle` can de-duplicate on it.
        let ids = ledger.stored_ids.lock().expect("ledger lock").clone();
        assert_eq!(ids.len(), 2);
        assert!(ids[0].is_some() && ids[0] == ids[1], "{ids:?}");
        assert_eq!(ids[0].as_deref(), dispatched.stored_id());
        assert_eq!(jobs.stats().of::<Invoice>().succeeded, 1);
        // Two heartbeats, at whole-second resolution, plus one to notice.
        assert!(
            recovered_after >= heartbeat && recovered_after < heartbeat * 6,
            "recovered after {recovered_after:?}"
        );
    }

    /// Polls the store's counts (it has no change signal) until `done`.
    async fn wait_counts(store: &DurableStore, done: impl Fn(&StoreCounts) -> bool) -> StoreCounts {
        timeout(LIMIT, async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let counts = store.counts().await.expect("the store counts");
                if done(&counts) {
                    return counts;
                }
            }
        })
        .await
        .expect("the store reached the expected counts")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delayed_job_waits_in_the_store_until_its_time() {
        let db = TempDb::new("delay");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
        let dispatched_at = std::time::Instant::now();
        jobs.dispatch(Deliver { order: 1 })
            .on(Connection::Durable)
            .delay(Duration::from_secs(2))
            .await
            .expect("the store takes the delayed job");
        jobs.dispatch(Deliver { order: 2 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let counts = store.counts().await.expect("the store counts");
        assert_eq!((counts.pending, counts.done), (2, 0));
        let (stop, task) = spawn_worker(&jobs, "delay-worker");
        ledger.wait_runs(2).await;
        let delayed_ran_after = dispatched_at.elapsed();
        stop_worker(stop, task).await;
        assert_eq!(*ledger.runs.lock().expect("ledger lock"), vec![2, 1]);
        // Whole seconds: 2 s from a time truncated to the second.
        assert!(
            delayed_ran_after >= Duration::from_secs(1),
            "ran after {delayed_ran_after:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_told_to_stop_finishes_its_job_in_flight_before_returning() {
        let db = TempDb::new("graceful");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
        jobs.dispatch(Gated { order: 8 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let (stop, mut task) = spawn_worker(&jobs, "graceful-worker");
        ledger.wait_runs(1).await;
        let _ = stop.send(());
        assert!(
            timeout(Duration::from_millis(300), &mut task)
                .await
                .is_err(),
            "the worker returned while its job was still running"
        );
        ledger.gate.add_permits(1);
        timeout(LIMIT, task)
            .await
            .expect("the worker returns once its job is done")
            .expect("the worker task did not panic")
            .expect("the worker stopped without a store error");
        let counts = store.counts().await.expect("the store counts");
        assert_eq!((counts.done, counts.running, counts.pending), (1, 0, 0));
    }

    #[tokio::test]
    async fn a_delay_on_a_connection_that_runs_at_once_is_refused() {
        let jobs = Jobs::builder(Ledger::new()).build();
        let error = jobs
            .dispatch(Deliver { order: 1 })
            .on(Connection::Sync)
            .delay(Duration::from_secs(1))
            .await
            .expect_err("sync cannot delay");
        assert_eq!(
            error,
            DispatchError::DelayUnsupported {
                job: "deliver",
                connection: Connection::Sync
            }
        );
        assert!(error
            .to_string()
            .contains("only the `durable` connection can run a job later"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_jobs_are_listed_with_their_last_error_and_retried_by_id() {
        let db = TempDb::new("failed");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
        let dispatched = jobs
            .dispatch(Refund { order: 7 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let id = dispatched
            .stored_id()
            .expect("a durable job has a stored id")
            .to_owned();
        let (stop, task) = spawn_worker(&jobs, "failing-worker");
        let counts = wait_counts(&store, |c| c.failed == 1).await;
        assert_eq!((counts.pending, counts.running, counts.done), (0, 0, 0));
        let failed = store.failed_jobs().await.expect("the store lists");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(
            (failed[0].id.as_str(), failed[0].job.as_str()),
            (id.as_str(), "refund")
        );
        assert!(
            failed[0]
                .last_error
                .contains("the payment provider said no"),
            "{failed:?}"
        );

        assert!(!store.retry("no-such-job").await.expect("the store answers"));
        assert!(store.retry(&id).await.expect("the store answers"));
        ledger.wait_runs(4).await;
        wait_counts(&store, |c| {
            c.failed == 1 && c.pending == 0 && c.running == 0
        })
        .await;
        stop_worker(stop, task).await;
        assert_eq!(ledger.sorted_runs(), vec![7, 7, 7, 7]);
        assert_eq!(*ledger.failed_hook.borrow(), 2);
    }

    #[tokio::test]
    async fn a_durable_dispatch_the_store_cannot_take_fails_naming_the_store() {
        let db = TempDb::new("closed");
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
        store.close().await;
        let error = jobs
            .dispatch(Deliver { order: 1 })
            .on(Connection::Durable)
            .await
            .expect_err("a closed store takes nothing");
        let message = error.to_string();
        assert!(
            message.starts_with("cannot dispatch job `deliver` on `durable`: durable job store `")
                && message.contains(&db.0.display().to_string())
                && message.contains("storing the job failed"),
            "{message}"
        );
        assert_eq!(jobs.stats().of::<Deliver>().dispatched, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failover_stores_the_job_and_runs_it_deferred_when_the_store_cannot_take_it() {
        let db = TempDb::new("failover");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let runtime = crate::defer::DeferRuntime::new();
        let jobs = Jobs::builder(ledger.clone())
            .durable(store.clone())
            .deferred(&runtime)
            .build();

        let stored = jobs
            .dispatch(Deliver { order: 1 })
            .on(Connection::Failover)
            .await
            .expect("the store takes the job");
        assert_eq!(stored.connection(), Connection::Durable);
        assert!(stored.stored_id().is_some());
        assert_eq!(store.counts().await.expect("counts").pending, 1);
        assert!(
            ledger.sorted_runs().is_empty(),
            "a stored job waits for a worker"
        );

        store.close().await;
        let fell_back = jobs
            .dispatch(Deliver { order: 2 })
            .on(Connection::Failover)
            .await
            .expect("failover runs the job deferred");
        assert_eq!(fell_back.connection(), Connection::Deferred);
        assert_eq!(fell_back.stored_id(), None);
        // Outside a request, `deferred` waits for the job.
        assert_eq!(ledger.sorted_runs(), vec![2]);

        let error = jobs
            .dispatch(Deliver { order: 3 })
            .on(Connection::Failover)
            .delay(Duration::from_secs(1))
            .await
            .expect_err("a delayed job cannot fall back to `deferred`");
        assert!(matches!(error, DispatchError::Store { .. }), "{error}");
        assert_eq!(jobs.stats().of::<Deliver>().dispatched, 2);
    }

    #[tokio::test]
    async fn every_connection_of_the_store_commits_with_wal_and_synchronous_normal() {
        let db = TempDb::new("pragmas");
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let pool = store.inner.storage.pool();
        // Hold several connections at once, so the one that ran the schema
        // setup is among them.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.acquire().await.expect("a connection"));
        }
        for conn in &mut held {
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .expect("journal_mode");
            let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .expect("synchronous");
            // 1 = NORMAL: in WAL mode a commit survives the process being
            // killed; 0 (OFF) would not survive an OS crash consistently.
            assert_eq!((mode.as_str(), sync), ("wal", 1));
        }
    }

    /// Not registered with the test workers.
    #[derive(Serialize, Deserialize)]
    struct Unknown {
        order: u64,
    }

    impl Job for Unknown {
        const NAME: &'static str = "unknown";
        type Context = Ledger;
        async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
            ledger.record(self.order);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_the_worker_does_not_know_is_kept_as_failed_saying_how_to_register_it() {
        let db = TempDb::new("unknown");
        let ledger = Ledger::new();
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
        jobs.dispatch(Unknown { order: 1 })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        let (stop, task) = spawn_worker(&jobs, "unknowing-worker");
        wait_counts(&store, |c| c.failed == 1).await;
        stop_worker(stop, task).await;
        let failed = store.failed_jobs().await.expect("the store lists");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].job, "unknown");
        assert!(
            failed[0]
                .last_error
                .contains("job `unknown` is not registered with this worker; add `registry.register::<unknown>()`"),
            "{failed:?}"
        );
        assert!(ledger.sorted_runs().is_empty());
    }

    /// A map with non-string keys: not JSON.
    #[derive(Serialize, Deserialize)]
    struct NotJson {
        by_pair: HashMap<(u8, u8), u8>,
    }

    impl Job for NotJson {
        const NAME: &'static str = "not-json";
        type Context = Ledger;
        async fn handle(&self, _: &Ledger) -> Result<(), JobError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_job_that_does_not_serialize_is_refused_and_nothing_is_stored() {
        let db = TempDb::new("notjson");
        let store = DurableStore::sqlite(&db.0).await.expect("store opens");
        let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
        let error = jobs
            .dispatch(NotJson {
                by_pair: HashMap::from([((1, 2), 3)]),
            })
            .on(Connection::Durable)
            .await
            .expect_err("a tuple-keyed map is not JSON");
        assert!(
            matches!(
                error,
                DispatchError::Serialize {
                    job: "not-json",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("does not serialize to JSON"),
            "{error}"
        );
        assert_eq!(
            store.counts().await.expect("counts"),
            StoreCounts::default()
        );
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_opened_names_the_file_and_the_step() {
        let path = std::env::temp_dir()
            .join("batch-durable-no-such-dir")
            .join("nested")
            .join("jobs.db");
        let error = DurableStore::sqlite(&path)
            .await
            .expect_err("a file in a missing directory cannot be created");
        assert_eq!(error.location(), path.display().to_string());
        let message = error.to_string();
        assert!(message.contains("opening the file"), "{message}");
        assert!(message.contains("jobs.db"), "{message}");
    }

    #[tokio::test]
    async fn durable_without_a_store_is_refused_with_how_to_configure_it() {
        let jobs = Jobs::builder(Ledger::new()).build();
        let error = jobs
            .dispatch(Deliver { order: 1 })
            .on(Connection::Durable)
            .await
            .expect_err("no store configured");
        let message = error.to_string();
        assert!(
            message.contains("`durable` connection is not configured"),
            "{message}"
        );
        assert!(message.contains(".durable(store)"), "{message}");
        assert!(jobs.durable_worker("w", |r| r).is_err());
    }

    #[tokio::test]
    async fn the_jobs_fake_records_durable_dispatches() {
        let fake: JobsFake<Ledger> = Jobs::fake();
        let jobs = fake.jobs();
        jobs.dispatch(Deliver { order: 4 })
            .on(Connection::Durable)
            .await
            .expect("the fake takes every job");
        fake.assert_pushed_on::<Deliver>(Connection::Durable, |j| j.order == 4);
        fake.assert_pushed_count::<Deliver>(1);
    }

    #[test]
    fn durable_parses_from_configuration() {
        assert_eq!("durable".parse::<Connection>(), Ok(Connection::Durable));
        assert_eq!(Connection::Durable.to_string(), "durable");
        assert_eq!("failover".parse::<Connection>(), Ok(Connection::Failover));
        assert_eq!(Connection::Failover.to_string(), "failover");
    }
}
