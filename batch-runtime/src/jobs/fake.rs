//! [`JobsFake`]: records dispatches instead of running them, with
//! assertions in the manner of Laravel's `Queue::fake()`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use super::attempt::{in_process, run_attempts, Run};
use super::dispatch::{Connection, JobId, Jobs};
use super::job::{Job, JobError};
use super::stats::Counters;

type RunPushed<C> = for<'a> fn(
    &'a (dyn Any + Send + Sync),
    &'a C,
    Run,
) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

/// One recorded dispatch.
struct Pushed<C> {
    id: JobId,
    name: &'static str,
    connection: Connection,
    always: bool,
    json: String,
    job: Arc<dyn Any + Send + Sync>,
    run: RunPushed<C>,
    ran: bool,
}

/// A recorded job taken out of the log to run.
struct ToRun<C> {
    id: JobId,
    name: &'static str,
    connection: Connection,
    job: Arc<dyn Any + Send + Sync>,
    run: RunPushed<C>,
}

pub(crate) struct FakeLog<C> {
    pushed: Mutex<Vec<Pushed<C>>>,
}

impl<C: Send + Sync + 'static> FakeLog<C> {
    fn lock(&self) -> MutexGuard<'_, Vec<Pushed<C>>> {
        crate::sync::lock(&self.pushed)
    }

    pub(crate) fn record<J: Job<Context = C>>(
        &self,
        job: J,
        connection: Connection,
        always: bool,
    ) -> JobId {
        let id = JobId::next();
        let json =
            serde_json::to_string(&job).unwrap_or_else(|e| format!("<does not serialize: {e}>"));
        self.lock().push(Pushed {
            id,
            name: J::NAME,
            connection,
            always,
            json,
            job: Arc::new(job),
            run: run_erased::<J>,
            ran: false,
        });
        id
    }
}

fn run_erased<'a, J: Job>(
    job: &'a (dyn Any + Send + Sync),
    ctx: &'a J::Context,
    run: Run,
) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
    Box::pin(async move {
        let Some(job) = job.downcast_ref::<J>() else {
            return Err(JobError::new(format!(
                "the fake recorded job `{}` under another type",
                J::NAME
            )));
        };
        run_attempts(job, ctx, &run, |_| in_process(job, ctx)).await
    })
}

/// A [`Jobs`] that records what is dispatched instead of running it.
///
/// Give [`jobs`](JobsFake::jobs) to the code under test, then assert.
/// Every failed assertion panics with the list of what was pushed.
/// [`run_pushed`](JobsFake::run_pushed) runs the recorded jobs on demand
/// (with their tries and `failed`), so their own HTTP calls reach an HTTP
/// [`Fake`](crate::fake::Fake).
///
/// ```
/// use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct RecordDelivery { order: u64 }
///
/// impl Job for RecordDelivery {
///     const NAME: &'static str = "record-delivery";
///     type Context = ();
///     async fn handle(&self, _: &()) -> Result<(), JobError> { Ok(()) }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let fake = Jobs::<()>::fake();
/// let jobs = fake.jobs();
/// jobs.dispatch(RecordDelivery { order: 7 }).on(Connection::Deferred).await?;
///
/// fake.assert_pushed::<RecordDelivery>(|job| job.order == 7);
/// fake.assert_pushed_on::<RecordDelivery>(Connection::Deferred, |_| true);
/// fake.assert_pushed_count::<RecordDelivery>(1);
/// # Ok::<(), batch_runtime::jobs::DispatchError>(()) }).unwrap();
/// ```
pub struct JobsFake<C> {
    log: Arc<FakeLog<C>>,
    jobs: Jobs<C>,
}

/// What [`JobsFake::run_pushed`] ran: one entry per job, in dispatch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RanJob {
    /// The job's name.
    pub name: &'static str,
    /// The job's id.
    pub id: JobId,
    /// The outcome of its last attempt.
    pub outcome: Result<(), JobError>,
}

impl<C: Send + Sync + 'static> JobsFake<C> {
    /// An empty fake whose `dispatch(..).await` without `.on` counts as
    /// [`Connection::Sync`].
    pub fn new() -> Self {
        JobsFake::with_default_connection(Connection::Sync)
    }

    /// An empty fake whose default connection is `connection`, as the
    /// real [`Jobs`] would be configured.
    pub fn with_default_connection(connection: Connection) -> Self {
        let log = Arc::new(FakeLog {
            pushed: Mutex::new(Vec::new()),
        });
        let jobs = Jobs::from_fake(log.clone(), connection);
        JobsFake { log, jobs }
    }

    /// The [`Jobs`] to give the code under test: its dispatches are
    /// recorded here.
    pub fn jobs(&self) -> Jobs<C> {
        self.jobs.clone()
    }

    /// `name #id on connection: {json}` for every recorded dispatch.
    pub fn pushed(&self) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .map(|p| {
                format!(
                    "{} {} on {}{}: {}",
                    p.name,
                    p.id,
                    p.connection,
                    if p.always { " (always)" } else { "" },
                    p.json
                )
            })
            .collect()
    }

    fn listing(&self) -> String {
        let pushed = self.pushed();
        if pushed.is_empty() {
            "nothing was pushed".to_owned()
        } else {
            format!("pushed:\n  {}", pushed.join("\n  "))
        }
    }

    /// The recorded jobs of type `J` (and their connections) matching
    /// `filter`.
    fn matching<J: Job<Context = C>>(
        &self,
        connection: Option<Connection>,
        filter: impl Fn(&J) -> bool,
    ) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|p| p.name == J::NAME && connection.is_none_or(|c| c == p.connection))
            .filter_map(|p| p.job.downcast_ref::<J>())
            .filter(|job| filter(job))
            .count()
    }

    /// Asserts that a job of type `J` for which `filter` is true was
    /// dispatched (on any connection).
    ///
    /// # Panics
    ///
    /// If none was, listing what was pushed.
    #[track_caller]
    pub fn assert_pushed<J: Job<Context = C>>(&self, filter: impl Fn(&J) -> bool) {
        if self.matching::<J>(None, filter) == 0 {
            panic!(
                "expected a `{}` job to be pushed matching the filter, but none was; {}",
                J::NAME,
                self.listing()
            );
        }
    }

    /// Asserts that a job of type `J` for which `filter` is true was
    /// dispatched on `connection`.
    ///
    /// # Panics
    ///
    /// If none was, listing what was pushed.
    #[track_caller]
    pub fn assert_pushed_on<J: Job<Context = C>>(
        &self,
        connection: Connection,
        filter: impl Fn(&J) -> bool,
    ) {
        if self.matching::<J>(Some(connection), filter) == 0 {
            panic!(
                "expected a `{}` job to be pushed on `{connection}` matching the filter, but none was; {}",
                J::NAME,
                self.listing()
            );
        }
    }

    /// Asserts that no job of type `J` was dispatched.
    ///
    /// # Panics
    ///
    /// If one was, listing what was pushed.
    #[track_caller]
    pub fn assert_not_pushed<J: Job<Context = C>>(&self) {
        let count = self.matching::<J>(None, |_| true);
        if count > 0 {
            panic!(
                "expected no `{}` job to be pushed, but {count} were; {}",
                J::NAME,
                self.listing()
            );
        }
    }

    /// Asserts that exactly `expected` jobs of type `J` were dispatched.
    ///
    /// # Panics
    ///
    /// Otherwise, listing what was pushed.
    #[track_caller]
    pub fn assert_pushed_count<J: Job<Context = C>>(&self, expected: usize) {
        let count = self.matching::<J>(None, |_| true);
        if count != expected {
            panic!(
                "expected {expected} `{}` jobs to be pushed, but {count} were; {}",
                J::NAME,
                self.listing()
            );
        }
    }

    /// Asserts that no job at all was dispatched.
    ///
    /// # Panics
    ///
    /// Otherwise, listing what was pushed.
    #[track_caller]
    pub fn assert_nothing_pushed(&self) {
        if !self.log.lock().is_empty() {
            panic!("expected no job to be pushed; {}", self.listing());
        }
    }

    /// Runs every recorded job that has not run yet, in dispatch order,
    /// with `ctx` (each with its tries, backoff, timeout and `failed`),
    /// and returns what happened. Their HTTP calls go wherever `ctx`'s
    /// client points: an HTTP fake in tests.
    pub async fn run_pushed(&self, ctx: &C) -> Vec<RanJob> {
        let todo: Vec<ToRun<C>> = {
            let mut pushed = self.log.lock();
            pushed
                .iter_mut()
                .filter(|p| !p.ran)
                .map(|p| {
                    p.ran = true;
                    ToRun {
                        id: p.id,
                        name: p.name,
                        connection: p.connection,
                        job: p.job.clone(),
                        run: p.run,
                    }
                })
                .collect()
        };
        let counters = Counters::default();
        let mut ran = Vec::with_capacity(todo.len());
        for todo in todo {
            let context = Run {
                id: todo.id,
                connection: todo.connection,
                counters: counters.clone(),
            };
            let outcome = (todo.run)(todo.job.as_ref(), ctx, context).await;
            ran.push(RanJob {
                name: todo.name,
                id: todo.id,
                outcome,
            });
        }
        ran
    }
}

impl<C: Send + Sync + 'static> Default for JobsFake<C> {
    fn default() -> Self {
        JobsFake::new()
    }
}

impl<C> fmt::Debug for JobsFake<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = crate::sync::lock(&self.log.pushed).len();
        f.debug_struct("JobsFake").field("pushed", &count).finish()
    }
}
