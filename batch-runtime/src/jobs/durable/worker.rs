//! The worker side of the `durable` connection: which job types a worker
//! runs, and one stored execution of a job.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;

use super::{DurableStore, Envelope, STORED_ID};
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
}

impl<C> fmt::Debug for DurableWorker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableWorker")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("jobs", &self.shared.registry)
            .field("grace", &self.grace)
            .finish()
    }
}

/// The worker stopped on an error of the store, or its grace ran out with
/// jobs still running.
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

    /// Runs stored jobs until `shutdown` completes, then stops taking new
    /// ones and returns once the jobs in flight are done (or its
    /// [`grace`](DurableWorker::grace) runs out).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WorkerError> {
        let (told, told_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = Box::pin(async move {
            shutdown.await;
            let _ = told.send(());
        });
        // The store knows a worker by the name it registers: one per run,
        // so a worker restarted at once under its name is not taken for
        // its dead predecessor, whose jobs then run again (the stores take
        // back only the jobs of a name that stopped beating).
        let registered = format!("{}-{}", self.name, ulid::Ulid::generate());
        let run = self
            .store
            .run_worker(registered, self.shared.clone(), signal);
        let error = |message: String, abandoned: usize| WorkerError {
            worker: self.name.clone(),
            location: self.store.location().to_owned(),
            message,
            abandoned,
        };
        let Some(grace) = self.grace else {
            return run.await.map_err(|e| error(e.to_string(), 0));
        };
        let shared = self.shared.clone();
        // Counts the jobs still running before `select!` drops (and so
        // cancels) them.
        let grace_over = async move {
            match told_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                // The signal was dropped unfired: no grace to count.
                Err(_) => std::future::pending().await,
            }
            shared.running.load(Ordering::SeqCst)
        };
        tokio::select! {
            stopped = run => stopped.map_err(|e| error(e.to_string(), 0)),
            running = grace_over => {
                Err(error(
                    format!(
                        "its grace of {grace:?} ran out with {running} job(s) still running; \
                         the store runs them again on another worker once this worker's heartbeat is missed"
                    ),
                    running,
                ))
            }
        }
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
