//! The worker side of the `durable` connection: which job types a worker
//! runs, and one stored execution of a job.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;

use tokio::sync::watch;

use super::reconnect::{Next, Outages, RunStarted};
use super::{DurableStore, Envelope, StoreError, STORED_ID};
use crate::jobs::attempt::{in_process, run_attempts, Run};
use crate::jobs::dispatch::{Connection, JobId};
use crate::jobs::job::{Job, JobError};
use crate::jobs::stats::Counters;

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

/// What every execution on one worker shares: given to apalis as the
/// worker's data.
pub(crate) struct Shared<C> {
    ctx: Arc<C>,
    registry: DurableRegistry<C>,
    counters: Counters,
    /// Stored executions running now.
    running: AtomicUsize,
}

/// Runs the jobs stored in a [`DurableStore`]; see
/// [`Jobs::durable_worker`](crate::jobs::Jobs::durable_worker).
pub struct DurableWorker<C> {
    name: String,
    store: DurableStore,
    shared: Arc<Shared<C>>,
    grace: Option<Duration>,
    give_up_after: Option<Duration>,
    /// Counts the store failures ridden out, for the tests to wait on.
    #[cfg(test)]
    store_failures: watch::Sender<u32>,
}

impl<C> fmt::Debug for DurableWorker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableWorker")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("jobs", &self.shared.registry)
            .field("grace", &self.grace)
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

/// The worker stopped: its store was closed, failed while it was stopping
/// or for longer than its [`give_up_after`](DurableWorker::give_up_after),
/// or its grace ran out with jobs still running.
#[derive(Debug, thiserror::Error)]
#[error("durable worker `{worker}` on `{location}` stopped: {message}")]
pub struct WorkerError {
    worker: String,
    location: String,
    message: String,
    abandoned: usize,
}

impl WorkerError {
    /// How many jobs were still running when the worker's grace ran out
    /// (0 for a store error). The store runs them again on another worker
    /// once this one's heartbeat is missed.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }
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
                running: AtomicUsize::new(0),
            }),
            grace: None,
            give_up_after: None,
            #[cfg(test)]
            store_failures: watch::channel(0).0,
        }
    }

    /// Bounds how long [`run_until`](DurableWorker::run_until) waits for
    /// the jobs in flight once told to stop (default: as long as they
    /// take). When `limit` runs out it returns a [`WorkerError`] counting
    /// the jobs left running; they stay taken in the store and run again
    /// on another worker after this one's heartbeat is missed twice
    /// ([`DurableStore::heartbeat`]), so nothing is lost.
    pub fn grace(mut self, limit: Duration) -> Self {
        self.grace = Some(limit);
        self
    }

    /// Makes [`run_until`](DurableWorker::run_until) return a
    /// [`WorkerError`] once its store has been failing for `limit`
    /// (default: no bound, it reconnects until shut down). The outage is
    /// timed from its first failed run; a run that started (registered in
    /// the store: its first heartbeat was written) ends it, so the next
    /// failure starts a new one. The last run is tried at `limit`; the
    /// worker gives up when that one fails too, with the message "the
    /// store has been failing for 10.2s (give_up_after is 10s); last
    /// error: ..." naming the store's last error. `Duration::ZERO` stops
    /// at the first failure.
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = Some(limit);
        self
    }

    /// How many runs ended on a store error the worker rode out: the
    /// store not closed, no shutdown signalled.
    #[cfg(test)]
    #[cfg_attr(
        not(any(feature = "durable-postgres", feature = "durable-redis")),
        allow(dead_code)
    )]
    pub(crate) fn store_failures(&self) -> watch::Receiver<u32> {
        self.store_failures.subscribe()
    }

    /// Runs stored jobs until `shutdown` completes, then stops taking new
    /// ones and returns once the jobs in flight are done (or its
    /// [`grace`](DurableWorker::grace) runs out).
    ///
    /// A store that fails (its server went down, the network was cut)
    /// ends the worker's run with an error; the worker logs it and starts
    /// a new run after a wait of 100 ms, doubling up to 5 s, back to
    /// 100 ms once a run has started (registered in the store). It keeps
    /// trying until `shutdown`, when a worker waiting between runs, or
    /// whose run has not reached the store yet, returns `Ok(())` at once;
    /// with [`give_up_after`](DurableWorker::give_up_after), until the
    /// store has been failing for that long. Each failed run logs at
    /// `WARN`, with the wait before the next:
    ///
    /// ```text
    /// WARN batch_runtime::jobs::durable::worker: durable worker's store failed; trying again after retry_in worker=web-1 store=postgres://app@db:5432/app error=durable job store `postgres://app@db:5432/app`: running a worker failed: ... retry_in=400ms
    /// ```
    ///
    /// The jobs the failed run held are not lost: they run again, on this
    /// worker or another, once its heartbeat is missed. A store that was
    /// [`close`](DurableStore::close)d stops the worker with a
    /// [`WorkerError`] instead, as does a store error while the worker
    /// stops.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WorkerError> {
        // `shutdown` is awaited here, once; every run and every wait
        // between runs watches `told`.
        let (told, told_rx) = watch::channel(false);
        let notify = async move {
            shutdown.await;
            told.send_replace(true);
            // Keeps `told` open while the runs go on.
            std::future::pending::<Infallible>().await
        };
        tokio::select! {
            stopped = self.runs(told_rx) => stopped,
            never = notify => match never {},
        }
    }

    /// One run after another while the store fails, until `told`.
    async fn runs(&self, told: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let mut outages = Outages::new(self.give_up_after);
        loop {
            let started = RunStarted::default();
            let failed = match self.run(&told, &started).await {
                RunEnd::Stopped(stopped) => return stopped,
                RunEnd::StoreFailed(error) => error,
            };
            if self.store.is_closed() {
                return Err(self.error(failed.to_string(), 0));
            }
            if *told.borrow() {
                // A run that never started held no job: nothing to report.
                return if started.get() {
                    Err(self.error(failed.to_string(), 0))
                } else {
                    Ok(())
                };
            }
            #[cfg(test)]
            self.store_failures.send_modify(|n| *n += 1);
            let wait = match outages.run_failed(started.get(), Instant::now()) {
                Next::RetryIn(wait) => wait,
                Next::GiveUp(failing_for) => {
                    let limit = self.give_up_after.unwrap_or_default();
                    return Err(self.error(
                        format!(
                            "the store has been failing for {failing_for:.1?} (give_up_after is \
                             {limit:?}); last error: {failed}"
                        ),
                        0,
                    ));
                }
            };
            tracing::warn!(
                worker = %self.name,
                store = %self.store.location(),
                error = %failed,
                retry_in = ?wait,
                "durable worker's store failed; trying again after retry_in"
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = signalled(told.clone()) => return Ok(()),
            }
        }
    }

    /// One apalis run of the worker, marking `started` once it registered
    /// in the store.
    async fn run(&self, told: &watch::Receiver<bool>, started: &RunStarted) -> RunEnd {
        // The store knows a worker by the name it registers: one per run,
        // so a worker restarted at once under its name is not taken for
        // its dead predecessor, whose jobs then run again (the stores take
        // back only the jobs of a name that stopped beating).
        let registered = format!("{}-{}", self.name, ulid::Ulid::generate());
        let run = self.store.run_worker(
            registered,
            self.shared.clone(),
            started.clone(),
            Box::pin(signalled(told.clone())),
        );
        // A run that has not registered has fetched no job: told to stop,
        // it is dropped at once rather than left waiting for a store that
        // may not answer.
        let unstarted_when_told = async {
            signalled(told.clone()).await;
            if started.get() {
                std::future::pending::<()>().await;
            }
        };
        let grace = self.grace;
        // Counts the jobs still running before `select!` drops (and so
        // cancels) them.
        let grace_over = async {
            let Some(grace) = grace else {
                return std::future::pending().await;
            };
            signalled(told.clone()).await;
            tokio::time::sleep(grace).await;
            (grace, self.shared.running.load(Ordering::SeqCst))
        };
        tokio::select! {
            ended = run => match ended {
                Ok(()) => RunEnd::Stopped(Ok(())),
                Err(error) => RunEnd::StoreFailed(error),
            },
            () = unstarted_when_told => RunEnd::Stopped(Ok(())),
            (grace, running) = grace_over => RunEnd::Stopped(Err(self.error(
                format!(
                    "its grace of {grace:?} ran out with {running} job(s) still running; \
                     the store runs them again on another worker once this worker's heartbeat is missed"
                ),
                running,
            ))),
        }
    }

    fn error(&self, message: String, abandoned: usize) -> WorkerError {
        WorkerError {
            worker: self.name.clone(),
            location: self.store.location().to_owned(),
            message,
            abandoned,
        }
    }
}

/// How one run ended.
enum RunEnd {
    /// Told to stop (or its grace ran out): what `run_until` returns.
    Stopped(Result<(), WorkerError>),
    /// On an error of the store.
    StoreFailed(StoreError),
}

/// Completes once shutdown was signalled on `told`.
async fn signalled(mut told: watch::Receiver<bool>) {
    if told.wait_for(|told| *told).await.is_err() {
        // Closed unfired: `run_until` is returning, never signalled.
        std::future::pending::<()>().await;
    }
}

/// Counts one stored execution as running while it lives.
struct RunningGuard<'a>(&'a AtomicUsize);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One stored execution: the registered job's attempts in this process.
/// Every store's worker builds its apalis worker on this function.
pub(crate) async fn handle_stored<C: Send + Sync + 'static>(
    envelope: Envelope,
    shared: Data<Arc<Shared<C>>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    shared.running.fetch_add(1, Ordering::SeqCst);
    let _running = RunningGuard(&shared.running);
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
