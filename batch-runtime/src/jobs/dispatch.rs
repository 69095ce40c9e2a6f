//! [`Jobs`]: built once at startup, it dispatches jobs on a
//! [`Connection`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::attempt::{in_process, run_attempts, Run};
use super::background::{Background, BackgroundConfig, ChildStats, ShutdownReport};
#[cfg(feature = "durable")]
use super::durable::{DurableRegistry, DurableStore, DurableWorker, StoreError};
use super::fake::{FakeLog, JobsFake};
use super::job::{Job, JobError};
use super::stats::{Counters, Stats};
use crate::defer::{self, DeferRuntime, Deferred};

/// Where a dispatched job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Connection {
    /// Now, in the caller, which awaits the outcome. For tests and CLIs.
    Sync,
    /// After the response, in this process, on the request's
    /// [`Deferred`] (the defer rules apply: skipped on status ≥ 400 unless
    /// [`always`](Dispatch::always); drained by `DeferRuntime::shutdown`).
    Deferred,
    /// In a child process of this binary: a crash there fails only that
    /// job. Needs [`child_entry`](super::background::child_entry) in `main`.
    Background,
    /// Stored (SQLite, PostgreSQL or Redis, through apalis) before the dispatch
    /// returns, then run by a durable worker in this process or another:
    /// survives the process being killed. Needs a `durable-*`
    /// feature and `JobsBuilder::durable`.
    Durable,
    /// `durable`, and when the store cannot take the job, `deferred` with
    /// a logged warning; [`Dispatched::connection`] says which. Needs both
    /// configured.
    Failover,
}

impl Connection {
    /// The connection's name: `sync`, `deferred`, `background`, `durable`
    /// or `failover`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Connection::Sync => "sync",
            Connection::Deferred => "deferred",
            Connection::Background => "background",
            Connection::Durable => "durable",
            Connection::Failover => "failover",
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Connection {
    type Err = DispatchError;

    /// Parses `sync`, `deferred`, `background`, `durable` or `failover`
    /// (from configuration).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "sync" => Ok(Connection::Sync),
            "deferred" => Ok(Connection::Deferred),
            "background" => Ok(Connection::Background),
            "durable" => Ok(Connection::Durable),
            "failover" => Ok(Connection::Failover),
            other => Err(DispatchError::UnknownConnection {
                name: other.to_owned(),
            }),
        }
    }
}

/// A dispatched job's id, unique in this process: in its tracing spans
/// and the fake's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

impl JobId {
    pub(crate) fn next() -> JobId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        JobId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The number.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A dispatch was refused; the job did not run and will not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The connection exists but this [`Jobs`] was built without it.
    #[error("cannot dispatch job `{job}`: the `{connection}` connection is not configured; {}", how_to_configure(*.connection))]
    NotConfigured {
        /// The job's name.
        job: &'static str,
        /// The connection asked for.
        connection: Connection,
    },
    /// A connection name (from configuration) that does not exist.
    #[error("unknown job connection `{name}`: expected one of `sync`, `deferred`, `background`, `durable`, `failover`")]
    UnknownConnection {
        /// The name given.
        name: String,
    },
    /// [`Jobs::shutdown`] has begun: background jobs are refused.
    #[error("cannot dispatch job `{job}` on `background`: the jobs are shutting down")]
    ShuttingDown {
        /// The job's name.
        job: &'static str,
    },
    /// The job did not serialize to JSON (a background job crosses a
    /// process boundary as JSON).
    #[error("cannot dispatch job `{job}`: it does not serialize to JSON: {message}")]
    Serialize {
        /// The job's name.
        job: &'static str,
        /// serde_json's error.
        message: String,
    },
    /// A delay was asked for on a connection that runs jobs at once: only
    /// `durable` stores a job to run later.
    #[error("cannot dispatch job `{job}` on `{connection}` with a delay: only the `durable` connection can run a job later; dispatch it `.on(Connection::Durable)` or without `.delay(..)`")]
    DelayUnsupported {
        /// The job's name.
        job: &'static str,
        /// The connection asked for.
        connection: Connection,
    },
    /// The durable store could not take the job (the file is unwritable,
    /// the disk is full, the database is locked for too long). The job
    /// was not stored and will not run.
    #[cfg(feature = "durable")]
    #[error("cannot dispatch job `{job}` on `durable`: {error}")]
    Store {
        /// The job's name.
        job: &'static str,
        /// What the store said.
        error: StoreError,
    },
}

fn how_to_configure(connection: Connection) -> &'static str {
    match connection {
        Connection::Sync => "`sync` needs nothing",
        Connection::Deferred => {
            "in a handler dispatch with `.after(&deferred)`, elsewhere add `.deferred(&defer_runtime)` to `Jobs::builder`"
        }
        Connection::Background => {
            "add `.background(BackgroundConfig::default())` to `Jobs::builder` and call `child_entry` first in `main`"
        }
        Connection::Durable => {
            "enable a batch-runtime `durable-sqlite`, `durable-postgres` or `durable-redis` feature, open a `DurableStore` and add `.durable(store)` to `Jobs::builder`"
        }
        Connection::Failover => {
            "it needs both `durable` and `deferred`: enable a batch-runtime `durable-*` feature and add `.durable(store)` and `.deferred(&defer_runtime)` to `Jobs::builder`"
        }
    }
}

/// Dispatches jobs: built once at startup from the application's context
/// and its connections; cheap to clone (keep it in the axum state).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct AppState { invoiced: AtomicU64 }
///
/// #[derive(Serialize, Deserialize)]
/// struct Invoice { order: u64 }
///
/// impl Job for Invoice {
///     const NAME: &'static str = "invoice";
///     type Context = AppState;
///     async fn handle(&self, ctx: &AppState) -> Result<(), JobError> {
///         ctx.invoiced.store(self.order, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let state = Arc::new(AppState::default());
/// let jobs = Jobs::builder(state.clone()).build();
/// let dispatched = jobs.dispatch(Invoice { order: 17 }).on(Connection::Sync).await?;
/// assert_eq!(dispatched.outcome(), Some(&Ok(())));
/// assert_eq!(state.invoiced.load(Ordering::SeqCst), 17);
/// assert_eq!(jobs.stats().of::<Invoice>().succeeded, 1);
/// # Ok::<(), batch_runtime::jobs::DispatchError>(()) }).unwrap();
/// ```
pub struct Jobs<C> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    backend: Backend<C>,
    default: Connection,
    counters: Counters,
}

enum Backend<C> {
    Real {
        ctx: Arc<C>,
        deferred: Option<DeferRuntime>,
        background: Option<Background>,
        #[cfg(feature = "durable")]
        durable: Option<DurableStore>,
    },
    Fake(Arc<FakeLog<C>>),
}

impl<C> Clone for Jobs<C> {
    fn clone(&self) -> Self {
        Jobs {
            inner: self.inner.clone(),
        }
    }
}

impl<C> fmt::Debug for Jobs<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (deferred, background, fake) = match &self.inner.backend {
            Backend::Real {
                deferred,
                background,
                ..
            } => (deferred.is_some(), background.is_some(), false),
            Backend::Fake(_) => (false, false, true),
        };
        f.debug_struct("Jobs")
            .field("default", &self.inner.default)
            .field("deferred", &deferred)
            .field("background", &background)
            .field("fake", &fake)
            .finish()
    }
}

/// Configures a [`Jobs`]; see [`Jobs::builder`].
#[must_use]
pub struct JobsBuilder<C> {
    ctx: Arc<C>,
    deferred: Option<DeferRuntime>,
    background: Option<BackgroundConfig>,
    #[cfg(feature = "durable")]
    durable: Option<DurableStore>,
    default: Connection,
}

impl<C: Send + Sync + 'static> JobsBuilder<C> {
    /// Enables `deferred` outside requests (CLIs, other jobs): such a
    /// dispatch runs the job through [`defer::scope`] on `runtime` and
    /// waits for it. In a handler, [`Dispatch::after`] uses the request's
    /// handle and needs no configuration.
    pub fn deferred(mut self, runtime: &DeferRuntime) -> Self {
        self.deferred = Some(runtime.clone());
        self
    }

    /// Enables `background`: child processes of this binary, at most
    /// `config`'s cap at once.
    pub fn background(mut self, config: BackgroundConfig) -> Self {
        self.background = Some(config);
        self
    }

    /// Enables `durable`: jobs are stored in `store` before the dispatch
    /// returns; a [`DurableWorker`] (here or in another process) runs them.
    #[cfg(feature = "durable")]
    pub fn durable(mut self, store: DurableStore) -> Self {
        self.durable = Some(store);
        self
    }

    /// The connection [`Jobs::dispatch`] uses without `.on(..)` (default
    /// [`Connection::Sync`]).
    pub fn default_connection(mut self, connection: Connection) -> Self {
        self.default = connection;
        self
    }

    /// Builds the [`Jobs`].
    pub fn build(self) -> Jobs<C> {
        Jobs {
            inner: Arc::new(Inner {
                backend: Backend::Real {
                    ctx: self.ctx,
                    deferred: self.deferred,
                    background: self.background.map(Background::new),
                    #[cfg(feature = "durable")]
                    durable: self.durable,
                },
                default: self.default,
                counters: Counters::default(),
            }),
        }
    }
}

impl<C: Send + Sync + 'static> Jobs<C> {
    /// Starts configuring jobs that receive `ctx` (the application's
    /// state) in [`Job::handle`].
    pub fn builder(ctx: Arc<C>) -> JobsBuilder<C> {
        JobsBuilder {
            ctx,
            deferred: None,
            background: None,
            #[cfg(feature = "durable")]
            durable: None,
            default: Connection::Sync,
        }
    }

    /// A fake that records dispatches instead of running them, like
    /// Laravel's `Queue::fake()`; hand [`JobsFake::jobs`] to the code
    /// under test.
    pub fn fake() -> JobsFake<C> {
        JobsFake::new()
    }

    pub(crate) fn from_fake(log: Arc<FakeLog<C>>, default: Connection) -> Jobs<C> {
        Jobs {
            inner: Arc::new(Inner {
                backend: Backend::Fake(log),
                default,
                counters: Counters::default(),
            }),
        }
    }

    /// Starts dispatching `job`: on the default connection when awaited,
    /// on the request's deferred work with [`after`](Dispatch::after), or
    /// elsewhere with [`on`](Dispatch::on).
    pub fn dispatch<J: Job<Context = C>>(&self, job: J) -> Dispatch<'_, C, J> {
        Dispatch {
            jobs: self,
            job,
            always: false,
            delay: None,
        }
    }

    /// A worker for the jobs stored on the `durable` connection, running
    /// them with this `Jobs`' context; `register` lists the job types it
    /// runs. Start it with [`DurableWorker::run_until`], in the server's
    /// process or in a process of its own.
    #[cfg(feature = "durable")]
    pub fn durable_worker(
        &self,
        name: &str,
        register: impl FnOnce(&mut DurableRegistry<C>) -> &mut DurableRegistry<C>,
    ) -> Result<DurableWorker<C>, DispatchError> {
        let not_configured = DispatchError::NotConfigured {
            job: "(durable worker)",
            connection: Connection::Durable,
        };
        match &self.inner.backend {
            Backend::Real {
                ctx,
                durable: Some(store),
                ..
            } => Ok(DurableWorker::new(
                name,
                store.clone(),
                ctx.clone(),
                self.inner.counters.clone(),
                register,
            )),
            _ => Err(not_configured),
        }
    }

    /// The `durable` connection's store, if configured: its counts, its
    /// failed jobs, retry by id.
    #[cfg(feature = "durable")]
    pub fn durable_store(&self) -> Option<&DurableStore> {
        match &self.inner.backend {
            Backend::Real { durable, .. } => durable.as_ref(),
            Backend::Fake(_) => None,
        }
    }

    /// The counters per job name, counted in this process (a snapshot;
    /// no I/O). With the `durable-sqlite` feature, `Stats::store` is
    /// `None` here: `Jobs::stats_with_store` reads the store's counts.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// [`stats`](Jobs::stats), plus the `durable` store's jobs by state
    /// in [`Stats::store`]: pending, running, failed and done, read from
    /// the store, so they include jobs dispatched and run by other
    /// processes. `Stats::store` is `None` when no durable store is
    /// configured; an error when the store cannot be read.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use batch_runtime::jobs::durable::DurableStore;
    /// use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Invoice { order: u64 }
    ///
    /// impl Job for Invoice {
    ///     const NAME: &'static str = "invoice";
    ///     type Context = ();
    ///     async fn handle(&self, _: &()) -> Result<(), JobError> { Ok(()) }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let path = std::env::temp_dir().join(format!("batch-stats-doc-{}.db", std::process::id()));
    /// let jobs = Jobs::builder(Arc::new(())).durable(DurableStore::sqlite(&path).await?).build();
    /// jobs.dispatch(Invoice { order: 17 }).on(Connection::Durable).await?;
    ///
    /// let stats = jobs.stats_with_store().await?;
    /// assert_eq!(stats.of::<Invoice>().dispatched, 1);  // this process' counters
    /// let store = stats.store().expect("a durable store is configured");
    /// assert_eq!((store.pending, store.done), (1, 0));   // no worker has run it yet
    /// assert_eq!(jobs.stats().store(), None);            // `stats()` reads no store
    /// # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[cfg(feature = "durable")]
    pub async fn stats_with_store(&self) -> Result<Stats, StoreError> {
        let stats = self.stats();
        match self.durable_store() {
            Some(store) => Ok(stats.with_store(store.counts().await?)),
            None => Ok(stats),
        }
    }

    /// Background children running now and at their peak.
    pub fn children(&self) -> ChildStats {
        match &self.inner.backend {
            Backend::Real {
                background: Some(background),
                ..
            } => background.children(),
            _ => ChildStats::default(),
        }
    }

    /// Waits until no background job is waiting, running or between
    /// attempts (deferred jobs: [`DeferRuntime::wait_idle`]).
    pub async fn wait_idle(&self) {
        if let Backend::Real {
            background: Some(background),
            ..
        } = &self.inner.backend
        {
            background.wait_idle().await;
        }
    }

    /// Stops taking background jobs, waits up to `grace` for the running
    /// ones (and their retries), then kills the children left and reports
    /// them. Deferred jobs are drained by `DeferRuntime::shutdown`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        match &self.inner.backend {
            Backend::Real {
                background: Some(background),
                ..
            } => background.shutdown(grace).await,
            _ => ShutdownReport::empty(),
        }
    }

    fn run_for(&self, connection: Connection) -> Run {
        Run {
            id: JobId::next(),
            connection,
            counters: self.inner.counters.clone(),
        }
    }

    async fn send<J: Job<Context = C>>(
        &self,
        job: J,
        connection: Connection,
        always: bool,
        delay: Option<Duration>,
    ) -> Result<Dispatched, DispatchError> {
        if delay.is_some() && !matches!(connection, Connection::Durable | Connection::Failover) {
            return Err(DispatchError::DelayUnsupported {
                job: J::NAME,
                connection,
            });
        }
        #[cfg(feature = "durable")]
        let durable = match &self.inner.backend {
            Backend::Real { durable, .. } => durable,
            Backend::Fake(_) => &None,
        };
        let (ctx, deferred, background) = match &self.inner.backend {
            Backend::Fake(log) => {
                let id = log.record(job, connection, always);
                return Ok(Dispatched::queued(id, connection));
            }
            Backend::Real {
                ctx,
                deferred,
                background,
                ..
            } => (ctx, deferred, background),
        };
        let not_configured = DispatchError::NotConfigured {
            job: J::NAME,
            connection,
        };
        match connection {
            Connection::Sync => {
                let run = self.run_for(connection);
                self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                let outcome =
                    run_attempts(&job, ctx, &run, |_| in_process(&job, ctx.as_ref())).await;
                Ok(Dispatched {
                    id: run.id,
                    connection,
                    outcome: Some(outcome),
                    stored_id: None,
                })
            }
            Connection::Deferred => {
                let runtime = deferred.as_ref().ok_or(not_configured)?;
                let ctx = ctx.clone();
                let run = self.run_for(connection);
                let id = run.id;
                self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                defer::scope(runtime, |deferred| async move {
                    register_deferred(&deferred, job, ctx, run, always);
                })
                .await;
                Ok(Dispatched::queued(id, connection))
            }
            Connection::Background => {
                let background = background.as_ref().ok_or(not_configured)?;
                let run = self.run_for(connection);
                let id = run.id;
                background.dispatch(job, ctx.clone(), run)?;
                self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                Ok(Dispatched::queued(id, connection))
            }
            #[cfg(feature = "durable")]
            Connection::Durable => {
                let store = durable.as_ref().ok_or(not_configured)?;
                let stored = store.push(&job, delay).await?;
                self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                Ok(Dispatched {
                    stored_id: Some(stored),
                    ..Dispatched::queued(JobId::next(), connection)
                })
            }
            #[cfg(feature = "durable")]
            Connection::Failover => {
                let (Some(store), Some(runtime)) = (durable.as_ref(), deferred.as_ref()) else {
                    return Err(not_configured);
                };
                let error = match store.push(&job, delay).await {
                    Ok(stored) => {
                        self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                        return Ok(Dispatched {
                            stored_id: Some(stored),
                            ..Dispatched::queued(JobId::next(), Connection::Durable)
                        });
                    }
                    // A delayed job cannot run later on `deferred`.
                    Err(error @ DispatchError::Store { .. }) if delay.is_none() => error,
                    Err(error) => return Err(error),
                };
                tracing::warn!(
                    job = J::NAME,
                    %error,
                    "failover: the durable store could not take the job; running it on `deferred` (it will not survive a crash)"
                );
                let run = self.run_for(Connection::Deferred);
                let id = run.id;
                let ctx = ctx.clone();
                self.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                defer::scope(runtime, |deferred| async move {
                    register_deferred(&deferred, job, ctx, run, always);
                })
                .await;
                Ok(Dispatched::queued(id, Connection::Deferred))
            }
            #[cfg(not(feature = "durable"))]
            Connection::Durable | Connection::Failover => Err(not_configured),
        }
    }
}

/// Registers `job` (all its attempts and `failed`) as deferred work.
fn register_deferred<J: Job>(
    deferred: &Deferred,
    job: J,
    ctx: Arc<J::Context>,
    run: Run,
    always: bool,
) {
    let registered = deferred
        .spawn(async move {
            // The outcome is logged, counted and given to `failed`.
            let _ = run_attempts(&job, &ctx, &run, |_| in_process(&job, ctx.as_ref())).await;
        })
        .name(J::NAME);
    if always {
        registered.always();
    }
}

/// A job being dispatched (see [`Jobs::dispatch`]). Finish it with
/// [`after`](Dispatch::after) in a handler, or await it (after
/// [`on`](Dispatch::on) to pick a connection other than the default).
#[must_use = "a dispatch does nothing until it is awaited or given to `.after(&deferred)`"]
pub struct Dispatch<'j, C, J> {
    jobs: &'j Jobs<C>,
    job: J,
    always: bool,
    delay: Option<Duration>,
}

impl<'j, C: Send + Sync + 'static, J: Job<Context = C>> Dispatch<'j, C, J> {
    /// Picks the connection; await the result to dispatch.
    pub fn on(self, connection: Connection) -> DispatchOn<'j, C, J> {
        DispatchOn {
            dispatch: self,
            connection,
        }
    }

    /// On `deferred`: runs the job even when the response fails (status
    /// ≥ 400) or is never produced. No effect on other connections.
    pub fn always(mut self) -> Self {
        self.always = true;
        self
    }

    /// Runs the job on the `deferred` connection, after this request's
    /// response (the defer rules apply). One line in a handler:
    /// `jobs.dispatch(RecordDelivery { order }).after(&deferred);`.
    ///
    /// Returns the job's id only: the response cannot depend on a
    /// deferred job's outcome.
    pub fn after(self, deferred: &Deferred) -> JobId {
        let jobs = self.jobs;
        match &jobs.inner.backend {
            Backend::Fake(log) => log.record(self.job, Connection::Deferred, self.always),
            Backend::Real { ctx, .. } => {
                let run = jobs.run_for(Connection::Deferred);
                let id = run.id;
                jobs.inner.counters.update(J::NAME, |s| s.dispatched += 1);
                register_deferred(deferred, self.job, ctx.clone(), run, self.always);
                id
            }
        }
    }
}

impl<'j, C: Send + Sync + 'static, J: Job<Context = C>> IntoFuture for Dispatch<'j, C, J> {
    type Output = Result<Dispatched, DispatchError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'j>>;

    fn into_future(self) -> Self::IntoFuture {
        let connection = self.jobs.inner.default;
        self.on(connection).into_future()
    }
}

/// A job being dispatched on a chosen connection; await it.
#[must_use = "a dispatch does nothing until it is awaited"]
pub struct DispatchOn<'j, C, J> {
    dispatch: Dispatch<'j, C, J>,
    connection: Connection,
}

impl<'j, C: Send + Sync + 'static, J: Job<Context = C>> DispatchOn<'j, C, J> {
    /// See [`Dispatch::always`].
    pub fn always(mut self) -> Self {
        self.dispatch.always = true;
        self
    }

    /// On `durable`: the job runs no earlier than `delay` from now (whole
    /// seconds: the store keeps the time in seconds). Other connections
    /// refuse a delay with [`DispatchError::DelayUnsupported`].
    pub fn delay(mut self, delay: Duration) -> Self {
        self.dispatch.delay = Some(delay);
        self
    }
}

impl<'j, C: Send + Sync + 'static, J: Job<Context = C>> IntoFuture for DispatchOn<'j, C, J> {
    type Output = Result<Dispatched, DispatchError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'j>>;

    /// `sync` runs the job now and returns with its outcome; `deferred`
    /// (outside a request) runs it through [`defer::scope`] and returns
    /// when it is done; `background` returns once the job is queued for a
    /// child.
    fn into_future(self) -> Self::IntoFuture {
        let Dispatch {
            jobs,
            job,
            always,
            delay,
        } = self.dispatch;
        Box::pin(jobs.send(job, self.connection, always, delay))
    }
}

/// An accepted dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    id: JobId,
    connection: Connection,
    outcome: Option<Result<(), JobError>>,
    stored_id: Option<String>,
}

impl Dispatched {
    fn queued(id: JobId, connection: Connection) -> Self {
        Dispatched {
            id,
            connection,
            outcome: None,
            stored_id: None,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The connection it went to.
    pub fn connection(&self) -> Connection {
        self.connection
    }

    /// On `durable`, the job's id in the store (a ULID): for
    /// `DurableStore::retry` and to match log lines. `None` elsewhere.
    pub fn stored_id(&self) -> Option<&str> {
        self.stored_id.as_deref()
    }

    /// On `sync` only, the outcome of the last attempt (`failed` has run
    /// if it is an error). `None` on the other connections: the
    /// dispatcher never sees their outcome.
    pub fn outcome(&self) -> Option<&Result<(), JobError>> {
        self.outcome.as_ref()
    }
}
