//! [`DeferRuntime`]: where deferred work runs, with bounded concurrency,
//! isolated panics, counters and a graceful, reported shutdown.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::DeferSafe;
use crate::engine::panic_message;

/// Deferred works running at once on a [`DeferRuntime`] unless
/// [`DeferRuntimeBuilder::concurrency`] says otherwise. Each deferred batch
/// is one work (its requests run with the batch's own concurrency), so the
/// default bounds sockets to about `256 × batch size` in the worst case.
pub const DEFAULT_DEFER_CONCURRENCY: usize = 256;

/// Worker threads of a [`DeferRuntime`] unless
/// [`DeferRuntimeBuilder::worker_threads`] says otherwise. Deferred work is
/// mostly waiting on the network: one thread drives thousands of works.
pub const DEFAULT_DEFER_WORKERS: usize = 1;

/// A deferred work's future, created on the worker thread that runs it.
pub(crate) type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
/// What is sent to the worker: a thread-safe recipe for the future.
pub(crate) type MakeFuture = Box<dyn FnOnce() -> LocalFuture + Send>;

static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the runtime whose worker this thread is (0: none).
    static WORKER_OF: Cell<u64> = const { Cell::new(0) };
}

/// One unit of deferred work.
pub(crate) struct Job {
    pub(crate) name: Option<String>,
    pub(crate) make: MakeFuture,
    /// Keeps a [`scope`](super::scope) waiting until the job is gone.
    pub(crate) ticket: Option<GroupTicket>,
}

impl Job {
    pub(crate) fn new<F>(work: F) -> Job
    where
        F: Future<Output = ()> + DeferSafe,
    {
        Job {
            name: None,
            make: Box::new(move || Box::pin(work)),
            ticket: None,
        }
    }

    pub(crate) fn display_name(&self, id: u64) -> String {
        display_name(self.name.as_deref(), id)
    }
}

fn display_name(name: Option<&str>, id: u64) -> String {
    match name {
        Some(name) => name.to_owned(),
        None => format!("<unnamed #{id}>"),
    }
}

/// Counts the jobs of one scope; [`Group::wait`] returns when all are gone.
#[derive(Default)]
pub(crate) struct Group {
    pending: AtomicUsize,
    done: Notify,
}

impl Group {
    pub(crate) fn ticket(self: &Arc<Self>) -> GroupTicket {
        self.pending.fetch_add(1, Ordering::SeqCst);
        GroupTicket(self.clone())
    }

    pub(crate) async fn wait(&self) {
        wait_until(&self.done, || self.pending.load(Ordering::SeqCst) == 0).await;
    }
}

/// Returns once `ready()` holds, re-checking each time `notify` wakes its
/// waiters. The waiter is registered before the check, so a wake-up
/// between the check and the wait is not lost.
async fn wait_until(notify: &Notify, mut ready: impl FnMut() -> bool) {
    loop {
        let notified = notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if ready() {
            return;
        }
        notified.await;
    }
}

/// Held by a job of a group; dropping it (the job ran, was forgotten,
/// skipped or abandoned) releases the group.
pub(crate) struct GroupTicket(Arc<Group>);

impl Drop for GroupTicket {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intake {
    /// Accepting work.
    Open,
    /// Shutting down: only work deferred from deferred work is accepted.
    Draining,
    /// Shut down: nothing is accepted.
    Closed,
}

struct Running {
    name: Option<String>,
    abort: Option<tokio::task::AbortHandle>,
}

struct State {
    queue: VecDeque<(u64, Job)>,
    running: HashMap<u64, Running>,
    intake: Intake,
    /// Set when the grace period ran out: workers stop at once.
    abandon: bool,
    /// Request handles holding work that is not submitted yet.
    pending_handles: usize,
    completed: u64,
    panicked: u64,
    forgotten: u64,
    skipped: u64,
    rejected: Vec<String>,
    rejected_total: u64,
}

impl State {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty() && self.pending_handles == 0
    }

    fn is_drained(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty()
    }
}

struct Shared {
    id: u64,
    limit: usize,
    state: Mutex<State>,
    next_job: AtomicU64,
    /// Wakes the workers: new work, a finished work, shutdown.
    wake: Notify,
    /// Wakes [`DeferRuntime::wait_idle`] and shutdown.
    idle: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs deferred work: after responses ([`DeferLayer`](super::DeferLayer)),
/// at the end of a [`scope`](super::scope), or directly with
/// [`DeferRuntime::spawn`].
///
/// - **Bounded**: at most [`DEFAULT_DEFER_CONCURRENCY`] works run at once
///   (configurable); the rest wait in order.
/// - **Isolated**: work runs on the runtime's own worker thread(s), each a
///   single-threaded tokio runtime, so deferred work never competes with
///   request handlers for a tokio worker slot and a deferred batch's arms
///   need not be `Send` across `.await` (only what they capture must be).
///   A panic is caught, logged with the work's name and counted; the
///   process and the other works carry on.
/// - **Nested**: work deferred from deferred work runs too, even while
///   shutting down.
/// - **Observable**: [`DeferRuntime::stats`] and [`DeferRuntime::wait_idle`]
///   (for tests: no sleeps).
/// - **Graceful**: [`DeferRuntime::shutdown`] stops intake, drains within a
///   grace period and reports what it abandoned, by name.
///
/// Cheap to clone: clones share the workers. When the last clone is dropped
/// without `shutdown`, intake stops and the workers finish what is queued
/// in the background.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use batch_runtime::defer::DeferRuntime;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runtime = DeferRuntime::builder().concurrency(8).build()?;
/// let done = Arc::new(AtomicUsize::new(0));
/// for _ in 0..3 {
///     let done = done.clone();
///     runtime.spawn(async move { done.fetch_add(1, Ordering::SeqCst); })?;
/// }
/// runtime.wait_idle().await;
/// assert_eq!(done.load(Ordering::SeqCst), 3);
///
/// let report = runtime.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.completed, 3);
/// assert!(report.abandoned.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct DeferRuntime {
    owner: Arc<Owner>,
}

/// Dropped with the last [`DeferRuntime`] clone: closes intake.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if state.intake == Intake::Open {
            state.intake = Intake::Draining;
        }
        drop(state);
        self.shared.wake.notify_waiters();
    }
}

/// Configures a [`DeferRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DeferRuntimeBuilder {
    concurrency: usize,
    workers: usize,
    thread_name: String,
}

impl DeferRuntimeBuilder {
    /// At most `limit` works run at once (at least 1; default
    /// [`DEFAULT_DEFER_CONCURRENCY`]).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// How many worker threads run deferred work (at least 1; default
    /// [`DEFAULT_DEFER_WORKERS`]). Raise it for CPU-heavy deferred work.
    pub fn worker_threads(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The name of the worker threads (default `batch-defer`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// When a worker thread or its tokio runtime cannot be created.
    pub fn build(self) -> std::io::Result<DeferRuntime> {
        let shared = Arc::new(Shared {
            id: NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed),
            limit: self.concurrency,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: HashMap::new(),
                intake: Intake::Open,
                abandon: false,
                pending_handles: 0,
                completed: 0,
                panicked: 0,
                forgotten: 0,
                skipped: 0,
                rejected: Vec::new(),
                rejected_total: 0,
            }),
            next_job: AtomicU64::new(1),
            wake: Notify::new(),
            idle: Notify::new(),
        });
        for _ in 0..self.workers {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let worker = shared.clone();
            std::thread::Builder::new()
                .name(self.thread_name.clone())
                .spawn(move || work(&runtime, worker))?;
        }
        Ok(DeferRuntime {
            owner: Arc::new(Owner { shared }),
        })
    }
}

/// A worker thread: dispatches queued work onto its local task set until
/// the runtime is shut down (or dropped) and nothing is left.
fn work(runtime: &tokio::runtime::Runtime, shared: Arc<Shared>) {
    WORKER_OF.with(|w| w.set(shared.id));
    let local = tokio::task::LocalSet::new();
    local.block_on(runtime, dispatch(shared));
    // Dropping `local` drops the tasks still in it (abandoned work).
}

async fn dispatch(shared: Arc<Shared>) {
    loop {
        let notified = shared.wake.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let mut starting = Vec::new();
        {
            let mut state = shared.lock();
            if state.abandon {
                return;
            }
            while state.running.len() < shared.limit {
                let Some((id, job)) = state.queue.pop_front() else {
                    break;
                };
                state.running.insert(
                    id,
                    Running {
                        name: job.name.clone(),
                        abort: None,
                    },
                );
                starting.push((id, job));
            }
            if starting.is_empty() && state.intake != Intake::Open && state.is_drained() {
                return;
            }
        }
        for (id, job) in starting {
            let name = job.display_name(id);
            let span = tracing::info_span!("defer", work = %name);
            // The future is made here, on the worker: it need not be `Send`.
            let future = (job.make)();
            let task = run(shared.clone(), id, name, future, job.ticket).instrument(span);
            let abort = tokio::task::spawn_local(task).abort_handle();
            let mut state = shared.lock();
            match state.running.get_mut(&id) {
                Some(running) => running.abort = Some(abort),
                // Abandoned between being taken and being spawned.
                None => abort.abort(),
            }
        }
        notified.await;
    }
}

/// Runs one work, catching a panic, then records how it ended.
async fn run(
    shared: Arc<Shared>,
    id: u64,
    name: String,
    future: LocalFuture,
    ticket: Option<GroupTicket>,
) {
    let outcome = AssertUnwindSafe(future).catch_unwind().await;
    let mut state = shared.lock();
    if state.running.remove(&id).is_none() {
        // Abandoned by shutdown while finishing: already reported.
        return;
    }
    match outcome {
        Ok(()) => state.completed += 1,
        Err(payload) => {
            state.panicked += 1;
            tracing::error!(work = %name, panic = %panic_message(&payload), "deferred work panicked; the other work carries on");
        }
    }
    let idle = state.is_idle();
    drop(state);
    drop(ticket);
    shared.wake.notify_one();
    if idle {
        shared.idle.notify_waiters();
    }
}

/// The work was not accepted: the runtime is shut down (or shutting down
/// and the work does not come from deferred work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The names of the rejected works (`<unnamed #n>` when unnamed).
    pub names: Vec<String>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deferred work rejected because the defer runtime is shutting down: {}",
            self.names.join(", ")
        )
    }
}

impl std::error::Error for Rejected {}

/// Live counters of a [`DeferRuntime`] (see [`DeferRuntime::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeferStats {
    /// Works waiting for a free slot.
    pub queued: usize,
    /// Works running now.
    pub running: usize,
    /// Works that ran to the end.
    pub completed: u64,
    /// Works that panicked (caught, logged and counted).
    pub panicked: u64,
    /// Works removed by `forget` before they started.
    pub forgotten: u64,
    /// Works never started because their response failed (status ≥ 400 or
    /// no response) and they were not `always`.
    pub skipped: u64,
    /// Works refused because the runtime was shutting down.
    pub rejected: u64,
    /// Requests (or scopes) holding work that has not been handed over yet.
    pub pending_handles: usize,
}

/// What [`DeferRuntime::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Works that ran to the end, over the runtime's life.
    pub completed: u64,
    /// Works that panicked, over the runtime's life.
    pub panicked: u64,
    /// Works still queued or running when the grace period ran out, by
    /// name: they were cancelled.
    pub abandoned: Vec<String>,
    /// Works refused because they arrived after intake stopped, by name.
    pub rejected: Vec<String>,
    /// Whether everything finished within the grace period.
    pub drained: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ms: {} completed, {} panicked, {} abandoned",
            if self.drained {
                "drained"
            } else {
                "grace period ran out"
            },
            self.elapsed.as_millis(),
            self.completed,
            self.panicked,
            self.abandoned.len(),
        )?;
        if !self.abandoned.is_empty() {
            write!(f, " ({})", self.abandoned.join(", "))?;
        }
        if !self.rejected.is_empty() {
            write!(
                f,
                ", {} rejected ({})",
                self.rejected.len(),
                self.rejected.join(", ")
            )?;
        }
        Ok(())
    }
}

impl DeferRuntime {
    /// A runtime with the defaults: [`DEFAULT_DEFER_CONCURRENCY`] works at
    /// once on [`DEFAULT_DEFER_WORKERS`] worker thread.
    ///
    /// # Panics
    ///
    /// If the worker thread cannot be started (use
    /// [`DeferRuntimeBuilder::build`] to handle that).
    pub fn new() -> Self {
        match DeferRuntime::builder().build() {
            Ok(runtime) => runtime,
            Err(e) => panic!("could not start the defer runtime's worker thread: {e}"),
        }
    }

    /// Starts configuring a runtime.
    pub fn builder() -> DeferRuntimeBuilder {
        DeferRuntimeBuilder {
            concurrency: DEFAULT_DEFER_CONCURRENCY,
            workers: DEFAULT_DEFER_WORKERS,
            thread_name: "batch-defer".to_owned(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// The most works that run at once.
    pub fn concurrency(&self) -> usize {
        self.shared().limit
    }

    /// Runs `work` as soon as a slot is free.
    ///
    /// # Errors
    ///
    /// [`Rejected`] once [`shutdown`](DeferRuntime::shutdown) has begun,
    /// unless called from deferred work.
    pub fn spawn<F>(&self, work: F) -> Result<(), Rejected>
    where
        F: Future<Output = ()> + DeferSafe,
    {
        self.submit(vec![Job::new(work)])
    }

    /// Runs `work` under `name`: shown in logs and in the shutdown report,
    /// and removable with [`forget`](DeferRuntime::forget) until it starts.
    ///
    /// # Errors
    ///
    /// As [`spawn`](DeferRuntime::spawn).
    pub fn spawn_named<F>(&self, name: impl Into<String>, work: F) -> Result<(), Rejected>
    where
        F: Future<Output = ()> + DeferSafe,
    {
        let mut job = Job::new(work);
        job.name = Some(name.into());
        self.submit(vec![job])
    }

    /// Queues jobs, or rejects them all if intake is closed.
    pub(crate) fn submit(&self, jobs: Vec<Job>) -> Result<(), Rejected> {
        if jobs.is_empty() {
            return Ok(());
        }
        let shared = self.shared();
        let mut state = shared.lock();
        let accept = match state.intake {
            Intake::Open => true,
            Intake::Draining => self.on_worker(),
            Intake::Closed => false,
        };
        if !accept {
            let names: Vec<String> = jobs
                .iter()
                .map(|job| job.display_name(shared.next_job.fetch_add(1, Ordering::Relaxed)))
                .collect();
            state.rejected_total += names.len() as u64;
            state.rejected.extend(names.iter().cloned());
            let idle = state.is_idle();
            drop(state);
            if idle {
                shared.idle.notify_waiters();
            }
            tracing::warn!(works = ?names, "deferred work rejected: the defer runtime is shutting down");
            return Err(Rejected { names });
        }
        for job in jobs {
            let id = shared.next_job.fetch_add(1, Ordering::Relaxed);
            state.queue.push_back((id, job));
        }
        drop(state);
        shared.wake.notify_one();
        Ok(())
    }

    /// Whether the caller runs on one of this runtime's worker threads
    /// (that is, in deferred work).
    fn on_worker(&self) -> bool {
        WORKER_OF.with(|w| w.get() == self.shared().id)
    }

    /// Removes queued works named `name` that have not started; returns
    /// how many. Running work is not interrupted.
    pub fn forget(&self, name: &str) -> usize {
        let mut state = self.shared().lock();
        let before = state.queue.len();
        state
            .queue
            .retain(|(_, job)| job.name.as_deref() != Some(name));
        let forgotten = before - state.queue.len();
        state.forgotten += forgotten as u64;
        let idle = state.is_idle();
        drop(state);
        if idle && forgotten > 0 {
            self.shared().idle.notify_waiters();
        }
        forgotten
    }

    /// The counters now.
    pub fn stats(&self) -> DeferStats {
        let state = self.shared().lock();
        DeferStats {
            queued: state.queue.len(),
            running: state.running.len(),
            completed: state.completed,
            panicked: state.panicked,
            forgotten: state.forgotten,
            skipped: state.skipped,
            rejected: state.rejected_total,
            pending_handles: state.pending_handles,
        }
    }

    /// Waits until nothing is queued, nothing runs and no request holds
    /// work it has not handed over yet. Tests call it after reading a
    /// response to wait for that response's deferred work, without sleeping.
    ///
    /// Work deferred from deferred work is included: it is queued before
    /// the work that deferred it finishes.
    pub async fn wait_idle(&self) {
        let shared = self.shared();
        wait_until(&shared.idle, || shared.lock().is_idle()).await;
    }

    /// Stops intake (only work deferred from deferred work is still
    /// accepted), waits up to `grace` for queued and running work to
    /// finish, then cancels whatever is left and reports it by name.
    ///
    /// Call it after the server has stopped taking requests, e.g. after
    /// `axum::serve(..).with_graceful_shutdown(..)` has returned. Needs a
    /// tokio runtime with the time driver enabled. Calling it again returns
    /// a fresh report at once.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let started = Instant::now();
        let shared = self.shared();
        {
            let mut state = shared.lock();
            if state.intake == Intake::Open {
                state.intake = Intake::Draining;
            }
        }
        shared.wake.notify_waiters();
        let drain = wait_until(&shared.idle, || shared.lock().is_drained());
        // Whether it drained in time is read from the state below.
        let _ = tokio::time::timeout(grace, drain).await;
        let mut abandoned = Vec::new();
        let mut state = shared.lock();
        state.intake = Intake::Closed;
        if !state.is_drained() {
            state.abandon = true;
            let mut running: Vec<(u64, Running)> = state.running.drain().collect();
            running.sort_by_key(|(id, _)| *id);
            for (id, running) in running {
                if let Some(abort) = &running.abort {
                    abort.abort();
                }
                abandoned.push(display_name(running.name.as_deref(), id));
            }
            for (id, job) in state.queue.drain(..) {
                abandoned.push(job.display_name(id));
            }
        }
        let report = ShutdownReport {
            completed: state.completed,
            panicked: state.panicked,
            abandoned,
            rejected: state.rejected.clone(),
            drained: !state.abandon,
            elapsed: started.elapsed(),
        };
        drop(state);
        shared.wake.notify_waiters();
        shared.idle.notify_waiters();
        if !report.abandoned.is_empty() {
            tracing::warn!(abandoned = ?report.abandoned, "defer runtime shut down before this work finished");
        }
        report
    }

    // ---- used by request handles ----

    pub(crate) fn handle_opened(&self) {
        self.shared().lock().pending_handles += 1;
    }

    /// A request handle handed its work over (or skipped it).
    pub(crate) fn handle_closed(&self, skipped: usize, jobs: Vec<Job>) {
        let shared = self.shared();
        {
            let mut state = shared.lock();
            state.pending_handles = state.pending_handles.saturating_sub(1);
            state.skipped += skipped as u64;
        }
        // Rejections are logged and reported by `submit`.
        let _ = self.submit(jobs);
        if shared.lock().is_idle() {
            shared.idle.notify_waiters();
        }
    }

    pub(crate) fn count_skipped(&self, skipped: usize) {
        self.shared().lock().skipped += skipped as u64;
    }
}

impl Default for DeferRuntime {
    fn default() -> Self {
        DeferRuntime::new()
    }
}

impl fmt::Debug for DeferRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferRuntime")
            .field("concurrency", &self.shared().limit)
            .field("stats", &self.stats())
            .finish()
    }
}
