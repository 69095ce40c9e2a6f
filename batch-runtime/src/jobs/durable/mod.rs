//! The `durable` connection: jobs stored through apalis before the
//! dispatch returns, and run by a [`DurableWorker`] in this process or
//! another, after a crash too.
//!
//! The store is chosen at startup, each behind a cargo feature of
//! batch-runtime:
//!
//! | store | feature | opened with | for |
//! |---|---|---|---|
//! | a SQLite file | `durable-sqlite` | [`DurableStore::sqlite`] | one machine, nothing to install |
//! | PostgreSQL | `durable-postgres` | [`DurableStore::postgres`] | several machines |
//! | Redis | `durable-redis` | [`DurableStore::redis`] | several machines |
//!
//! [`DurableStore::open`] takes any of the three from one setting (a file
//! path, a `postgres://` or a `redis://` URL). Each store's schema is set
//! up through apalis at every start (idempotent).
//!
//! Delivery is at-least-once: a job that was running on a worker that
//! died (no heartbeat for [`DurableStore::heartbeat`] times two) is run
//! again by the next worker, so `handle` must tolerate running twice;
//! [`stored_id`] gives it the job's id in the store to de-duplicate on.
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
//!     // Returns once the refund is committed to the store.
//!     jobs.dispatch(Refund { order: 17 }).on(Connection::Durable).await.map_err(|e| e.to_string())?;
//!     Ok("refund on its way")
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // `jobs.db`, or a postgres:// or redis:// URL with their features.
//!     let store = DurableStore::open("jobs.db").await?;
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
//!     // The worker takes no new job and returns once those in flight are
//!     // done (or its grace, if set, runs out).
//!     let _ = stop.send(());
//!     worker.await??;
//!     Ok(())
//! }
//! ```
//!
//! A worker as a process of its own (run several against one store) is
//! the same `Jobs` and `durable_worker(..).run_until(..)` in a `main` with
//! no server; `cargo run --example worker` is one.

#[cfg(not(any(
    feature = "durable-sqlite",
    feature = "durable-postgres",
    feature = "durable-redis"
)))]
compile_error!(
    "batch-runtime's `durable` feature needs a store: enable `durable-sqlite`, `durable-postgres` or `durable-redis`"
);

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use serde::{Deserialize, Serialize};

use super::dispatch::DispatchError;
use super::job::Job;

/// Runs an apalis worker named `$name` on `$storage`, polling every
/// `$poll` when idle, each job through `$handler` with `$shared` as its
/// data, until `$signal`; then returns once the jobs in flight are done.
/// Marks `$started` once the run has registered in the store. (A macro:
/// the worker builder's bounds differ per store.)
macro_rules! run_apalis_worker {
    ($storage:expr, $name:expr, $poll:expr, $shared:expr, $started:expr, $signal:expr, $handler:expr) => {{
        let signal = $signal;
        let started: $crate::jobs::durable::reconnect::RunStarted = $started;
        let builder = apalis_core::worker::builder::WorkerBuilder::new($name)
            .backend(apalis_core::backend::ext::BackendExt::poll_with_strategy(
                $storage.clone(),
                $crate::jobs::durable::poll::EveryInterval::new($poll),
            ))
            .data($shared);
        apalis_core::worker::ext::event_listener::EventListenerExt::on_event(
            builder,
            move |_, event| {
                // apalis reports a heartbeat once the run's registration
                // is written, then at every beat; never before.
                if matches!(event, apalis_core::worker::event::Event::HeartBeat) {
                    started.mark();
                }
            },
        )
        .build($handler)
        .run_until(async move {
            signal.await;
            Ok::<(), std::io::Error>(())
        })
        .await
    }};
}

mod poll;
#[cfg(feature = "durable-postgres")]
mod postgres;
mod reconnect;
#[cfg(feature = "durable-redis")]
mod redis;
#[cfg(feature = "durable-sqlite")]
mod sqlite;
#[cfg(test)]
mod tests;
mod worker;

pub(crate) use reconnect::RunStarted;
pub(crate) use worker::Shared;
pub use worker::{DurableRegistry, DurableWorker, WorkerError};

/// The apalis queue batch jobs go to unless [`DurableStore::queue`] names
/// another; the job's own name is in the stored envelope, so one worker
/// serves every registered job type.
pub const DEFAULT_QUEUE: &str = "batch-jobs";

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
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) job: String,
    pub(crate) payload: serde_json::Value,
}

/// The store is unusable: opening, migrating, reading or writing it
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durable job store `{location}`: {action} failed: {message}")]
pub struct StoreError {
    location: String,
    action: &'static str,
    message: String,
}

impl StoreError {
    pub(crate) fn new(location: &str, action: &'static str, error: impl fmt::Display) -> Self {
        StoreError {
            location: location.to_owned(),
            action,
            message: error.to_string(),
        }
    }

    /// The store's location: the SQLite file, or the server's URL with
    /// its password left out.
    pub fn location(&self) -> &str {
        &self.location
    }
}

/// What each store does, in its own module (`sqlite`, `postgres`,
/// `redis`). Errors are plain messages: [`DurableStore`] wraps them in a
/// [`StoreError`] that names the store and the step.
pub(crate) trait StoreBackend: Clone + Send + Sync + 'static {
    /// Commits one job to run no earlier than `delay` from now.
    fn push(
        &self,
        envelope: Envelope,
        id: ulid::Ulid,
        delay: Option<Duration>,
    ) -> impl Future<Output = Result<(), BoxDynError>> + Send;

    /// This queue's jobs by state.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, BoxDynError>> + Send;

    /// This queue's failed jobs, oldest first.
    fn failed_jobs(&self) -> impl Future<Output = Result<Vec<FailedJob>, BoxDynError>> + Send;

    /// Makes the failed job `id` pending again; `false` when no failed
    /// job has this id.
    fn retry(&self, id: &str) -> impl Future<Output = Result<bool, BoxDynError>> + Send;

    /// Closes the connections: later pushes fail.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether [`close`](StoreBackend::close) was called on this store or
    /// on a handle sharing its connections.
    fn is_closed(&self) -> bool;

    /// The same store (its connections shared) on `queue`, with workers
    /// beating every `heartbeat`.
    fn configured(&self, queue: &str, heartbeat: Duration) -> Self;

    /// Runs an apalis worker named `name` on this queue, each stored job
    /// through [`worker::handle_stored`], until `signal`; then returns
    /// once the jobs in flight are done. Marks `started` once the run has
    /// registered in the store.
    fn run_worker<C: Send + Sync + 'static>(
        &self,
        name: String,
        poll_interval: Duration,
        shared: Arc<Shared<C>>,
        started: RunStarted,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> impl Future<Output = Result<(), BoxDynError>> + Send;
}

/// What every store pushes for one dispatch: the envelope under our id,
/// to run no earlier than `delay` from now. apalis never re-runs it: the
/// job's retries run inside one stored execution (see the module docs).
pub(crate) fn stored_task(
    envelope: Envelope,
    id: ulid::Ulid,
    delay: Option<Duration>,
) -> apalis_core::task::Task<Envelope> {
    let task = apalis_core::task::builder::TaskBuilder::new(envelope)
        .task_id(apalis_core::task::task_id::TaskId::from_ulid(id))
        .max_attempts(1);
    match delay {
        Some(delay) => task.run_after(delay),
        None => task,
    }
    .build()
}

/// One store of each enabled kind.
#[derive(Clone)]
enum Backend {
    #[cfg(feature = "durable-sqlite")]
    Sqlite(sqlite::SqliteBackend),
    #[cfg(feature = "durable-postgres")]
    Postgres(postgres::PostgresBackend),
    #[cfg(feature = "durable-redis")]
    Redis(redis::RedisBackend),
}

/// Runs `$body` with `$b` bound to the store of whichever kind `$backend`
/// holds; `map_backend!` wraps the store `$body` returns in the same kind.
macro_rules! on_backend {
    ($backend:expr, $b:ident => $body:expr) => {
        match $backend {
            #[cfg(feature = "durable-sqlite")]
            Backend::Sqlite($b) => $body,
            #[cfg(feature = "durable-postgres")]
            Backend::Postgres($b) => $body,
            #[cfg(feature = "durable-redis")]
            Backend::Redis($b) => $body,
        }
    };
}

macro_rules! map_backend {
    ($backend:expr, $b:ident => $body:expr) => {
        match $backend {
            #[cfg(feature = "durable-sqlite")]
            Backend::Sqlite($b) => Backend::Sqlite($body),
            #[cfg(feature = "durable-postgres")]
            Backend::Postgres($b) => Backend::Postgres($body),
            #[cfg(feature = "durable-redis")]
            Backend::Redis($b) => Backend::Redis($body),
        }
    };
}

/// A durable job store: a SQLite file, a PostgreSQL database or a Redis
/// server, with one queue of batch jobs in it. Cheap to clone.
///
/// ```no_run
/// use batch_runtime::jobs::durable::DurableStore;
/// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
/// let store = DurableStore::open("jobs.db").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DurableStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    backend: Backend,
    location: String,
    queue: String,
    heartbeat: Duration,
    poll_interval: Duration,
}

impl fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStore")
            .field("location", &self.inner.location)
            .field("queue", &self.inner.queue)
            .finish()
    }
}

/// What a store setting names, by its form.
#[derive(Debug, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Postgres,
    Redis,
}

fn kind_of(spec: &str) -> StoreKind {
    let scheme = spec.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("postgres" | "postgresql") => StoreKind::Postgres,
        Some("redis" | "rediss" | "redis+unix") => StoreKind::Redis,
        _ => StoreKind::Sqlite,
    }
}

/// `url` with any password replaced, for messages and `location()`.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
pub(crate) fn redacted_location(url: &str) -> String {
    crate::redact::url_str(url)
}

impl DurableStore {
    /// Opens the store a setting names: a `postgres://` (or
    /// `postgresql://`) URL, a `redis://` (or `rediss://`) URL, or else a
    /// SQLite file path (an optional `sqlite://` prefix is dropped). The
    /// store's feature must be enabled; if it is not, the error says
    /// which one.
    ///
    /// ```no_run
    /// use batch_runtime::jobs::durable::DurableStore;
    /// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
    /// let spec = std::env::var("JOBS_STORE").unwrap_or_else(|_| "jobs.db".into());
    /// let store = DurableStore::open(&spec).await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(spec: &str) -> Result<DurableStore, StoreError> {
        match kind_of(spec) {
            #[cfg(feature = "durable-postgres")]
            StoreKind::Postgres => DurableStore::postgres(spec).await,
            #[cfg(feature = "durable-redis")]
            StoreKind::Redis => DurableStore::redis(spec).await,
            #[cfg(feature = "durable-sqlite")]
            StoreKind::Sqlite => {
                DurableStore::sqlite(spec.strip_prefix("sqlite://").unwrap_or(spec)).await
            }
            #[allow(unreachable_patterns)]
            kind => {
                let feature = match kind {
                    StoreKind::Sqlite => "durable-sqlite",
                    StoreKind::Postgres => "durable-postgres",
                    StoreKind::Redis => "durable-redis",
                };
                Err(StoreError::new(
                    &crate::redact::url_str(spec),
                    "opening the store",
                    format!("this store needs batch-runtime's `{feature}` feature"),
                ))
            }
        }
    }

    fn from_backend(backend: Backend, location: String) -> DurableStore {
        DurableStore {
            inner: Arc::new(StoreInner {
                backend,
                location,
                queue: DEFAULT_QUEUE.to_owned(),
                heartbeat: DEFAULT_HEARTBEAT,
                poll_interval: DEFAULT_POLL_INTERVAL,
            }),
        }
    }

    /// This store on `queue`, beating every `heartbeat`, polling every
    /// `poll_interval`; its connections shared.
    fn with(&self, queue: &str, heartbeat: Duration, poll_interval: Duration) -> DurableStore {
        DurableStore {
            inner: Arc::new(StoreInner {
                backend: map_backend!(&self.inner.backend, b => b.configured(queue, heartbeat)),
                location: self.inner.location.clone(),
                queue: queue.to_owned(),
                heartbeat,
                poll_interval,
            }),
        }
    }

    /// How often workers on this store report that they are alive
    /// (default [`DEFAULT_HEARTBEAT`]). A worker silent for two intervals
    /// is taken for dead and its running jobs are run again.
    pub fn heartbeat(self, interval: Duration) -> Self {
        self.with(&self.inner.queue, interval, self.inner.poll_interval)
    }

    /// Puts this handle's jobs on the queue `name` (default
    /// [`DEFAULT_QUEUE`]): several applications, or tests, can share one
    /// store without seeing each other's jobs. Workers run the queue of
    /// the store they were given.
    pub fn queue(self, name: &str) -> Self {
        self.with(name, self.inner.heartbeat, self.inner.poll_interval)
    }

    /// How often an idle worker on this store looks for new jobs (default
    /// [`DEFAULT_POLL_INTERVAL`]): the most a job stored by another
    /// process, a delayed job come due or a retried job waits for an idle
    /// worker. Each look is one small query.
    pub fn poll_interval(self, interval: Duration) -> Self {
        self.with(&self.inner.queue, self.inner.heartbeat, interval)
    }

    /// Where the store is: the SQLite file's path, or the server's URL
    /// without its password.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The queue this handle dispatches to and its workers run.
    pub fn queue_name(&self) -> &str {
        &self.inner.queue
    }

    fn error(&self, action: &'static str, error: impl fmt::Display) -> StoreError {
        StoreError::new(&self.inner.location, action, error)
    }

    /// Closes this store's connections, waiting for the ones in use: later
    /// dispatches on `durable` fail (on `failover` they run deferred) and
    /// workers on this handle stop with an error.
    pub async fn close(&self) {
        on_backend!(&self.inner.backend, b => b.close().await)
    }

    /// Whether [`close`](DurableStore::close) was called on this handle or
    /// one sharing its connections: its workers then stop instead of
    /// reconnecting.
    pub(crate) fn is_closed(&self) -> bool {
        on_backend!(&self.inner.backend, b => b.is_closed())
    }

    /// Counts this queue's jobs by state, from the store itself (so they
    /// include jobs dispatched or run by other processes).
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        on_backend!(&self.inner.backend, b => b.counts().await)
            .map_err(|e| self.error("counting the jobs", e))
    }

    /// The jobs whose last attempt failed, oldest first, with their last
    /// error; [`retry`](DurableStore::retry) runs one again.
    pub async fn failed_jobs(&self) -> Result<Vec<FailedJob>, StoreError> {
        on_backend!(&self.inner.backend, b => b.failed_jobs().await)
            .map_err(|e| self.error("listing the failed jobs", e))
    }

    /// Makes the failed job `id` pending again, to run now on the next
    /// free worker. `Ok(false)` when no failed job has this id.
    pub async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        on_backend!(&self.inner.backend, b => b.retry(id).await)
            .map_err(|e| self.error("retrying a failed job", e))
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
        let id = ulid::Ulid::generate();
        on_backend!(&self.inner.backend, b => b.push(envelope, id, delay).await)
            .map(|()| id.to_string())
            .map_err(|e| DispatchError::Store {
                job: J::NAME,
                error: self.error("storing the job", e),
            })
    }

    /// Runs a worker on this store's queue until `signal`, marking
    /// `started` once it has registered in the store.
    pub(crate) async fn run_worker<C: Send + Sync + 'static>(
        &self,
        name: String,
        shared: Arc<Shared<C>>,
        started: RunStarted,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Result<(), StoreError> {
        let poll = self.inner.poll_interval;
        on_backend!(&self.inner.backend, b => b.run_worker(name, poll, shared, started, signal).await)
            .map_err(|e| self.error("running a worker", e))
    }
}

/// A store's jobs by state; see [`DurableStore::counts`].
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

impl FailedJob {
    /// A failed job from its id, its stored envelope's bytes and the last
    /// result the store kept.
    #[cfg_attr(not(feature = "durable-sqlite"), allow(dead_code))]
    pub(crate) fn from_stored(id: String, envelope: &[u8], last_error: Option<String>) -> Self {
        FailedJob {
            id,
            job: serde_json::from_slice::<Envelope>(envelope)
                .map(|envelope| envelope.job)
                .unwrap_or_else(|e| format!("(unreadable: {e})")),
            last_error: last_error.unwrap_or_default(),
        }
    }
}
