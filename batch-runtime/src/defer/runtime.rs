//! [`DeferRuntime`]: where deferred work runs, with bounded concurrency and
//! queue, isolated panics, counters and a graceful, reported shutdown.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::handover::Change;
use super::job::{display_name, wait_until, Job};
use super::report::{DeferStats, Rejected, ShutdownReport, REJECTED_NAMES_KEPT};
use super::state::{HeldWork, Intake, Shared, Source};
use super::worker;
use super::DeferSafe;

/// Deferred works running at once on a [`DeferRuntime`] unless
/// [`DeferRuntimeBuilder::concurrency`] says otherwise. Each deferred batch
/// is one work (its requests run with the batch's own concurrency), so the
/// default bounds sockets to about `256 × batch size` in the worst case.
pub const DEFAULT_DEFER_CONCURRENCY: usize = 256;

/// Worker threads of a [`DeferRuntime`] unless
/// [`DeferRuntimeBuilder::worker_threads`] says otherwise. Deferred work is
/// mostly waiting on the network: one thread drives thousands of works.
pub const DEFAULT_DEFER_WORKERS: usize = 1;

/// Works that may wait for a slot on a [`DeferRuntime`] unless
/// [`DeferRuntimeBuilder::queue_capacity`] says otherwise; more are
/// rejected. A pending deferred batch of three requests holds a few KiB,
/// so a full default queue is a few hundred MiB at most.
pub const DEFAULT_DEFER_QUEUE_CAPACITY: usize = 100_000;

static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

/// Runs deferred work: after responses ([`DeferLayer`](super::DeferLayer)),
/// at the end of a [`scope`](super::scope), or directly with
/// [`DeferRuntime::spawn`].
///
/// - **Bounded**: at most [`DEFAULT_DEFER_CONCURRENCY`] works run at once
///   and at most [`DEFAULT_DEFER_QUEUE_CAPACITY`] wait (both
///   configurable); work beyond the queue's capacity is rejected, logged
///   and counted.
/// - **Isolated**: work runs on the runtime's own worker thread(s), each a
///   single-threaded tokio runtime, so deferred work never competes with
///   request handlers for a tokio worker slot and a deferred batch's arms
///   need not be `Send` across `.await` (only what they capture must be).
///   A panic is caught, logged with the work's name and counted; the
///   process and the other works carry on.
/// - **Blocking hazard**: the works of one worker thread share it. A
///   blocking call (synchronous I/O, a heavy computation, `std::thread::sleep`)
///   stalls every other work of that thread: wrap it in
///   [`tokio::task::spawn_blocking`] and `.await` the handle. Extra
///   [`worker_threads`](DeferRuntimeBuilder::worker_threads) spread works
///   over more threads, but do not make blocking safe.
/// - **Nested**: work deferred from deferred work runs too, even while
///   shutting down; a [`scope`](super::scope) opened inside deferred work
///   runs its work at once, outside the concurrency limit, so it completes
///   however busy the runtime is.
/// - **Observable**: [`DeferRuntime::stats`] and [`DeferRuntime::wait_idle`]
///   (for tests: no sleeps).
/// - **Graceful**: [`DeferRuntime::shutdown`] stops intake, drains within a
///   grace period and reports what it abandoned, by name, and the request
///   handles still open.
///
/// Cheap to clone: clones share the workers. When the last clone is
/// dropped without `shutdown` (and no request handle or work holds one),
/// intake closes and the workers finish what is queued in the background,
/// then stop; nothing waits for them, so that work is lost if the process
/// exits first. The drop is logged when work was left.
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
        let state = self.shared.lock();
        let was_open = self.shared.admission.intake() != Intake::Closed;
        self.shared.admission.set_intake(Intake::Closed);
        let (queued, running) = (state.queued(), state.running.len());
        drop(state);
        self.shared.wake.notify_waiters();
        if was_open && queued + running > 0 {
            tracing::warn!(
                queued,
                running,
                "DeferRuntime dropped without shutdown: its workers finish this work in the background, but nothing waits for it; call `shutdown(grace)` before exiting so none is lost"
            );
        }
    }
}

/// Configures a [`DeferRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DeferRuntimeBuilder {
    concurrency: usize,
    workers: usize,
    capacity: usize,
    thread_name: String,
    background_priority: bool,
}

impl DeferRuntimeBuilder {
    /// At most `limit` works run at once (at least 1; default
    /// [`DEFAULT_DEFER_CONCURRENCY`]).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// At most `capacity` works wait for a slot (at least 1; default
    /// [`DEFAULT_DEFER_QUEUE_CAPACITY`]). Work arriving at a full queue is
    /// rejected: logged, counted in [`DeferStats::rejected`], named in the
    /// shutdown report, and returned as [`Rejected`] by
    /// [`DeferRuntime::spawn`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many worker threads run deferred work (at least 1; default
    /// [`DEFAULT_DEFER_WORKERS`]). Works are spread over them: a work that
    /// keeps its thread busy leaves the queue to the others. Raise it for
    /// CPU-heavy deferred work; for blocking calls use
    /// [`tokio::task::spawn_blocking`] inside the work instead.
    pub fn worker_threads(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The name of the worker threads (default `batch-defer`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Whether the worker threads run at the lowest CPU priority (Linux:
    /// the `SCHED_IDLE` class, or nice 19 where a sandbox refuses that; no
    /// effect on other systems). On by default: deferred work then takes
    /// the CPU the responses leave instead of competing with them, and a
    /// response thread that wakes takes its core back at once. On a 2-core
    /// machine serving 16 clients, each response deferring three upstream
    /// calls, the responses' p99 with deferred work over without was 0.90
    /// at this priority (median of eight runs, 0.72 to 1.08), against 1.67
    /// at nice 19 (twelve runs, 1.08 to 2.59), where a waking response
    /// thread may wait behind the worker, and 2.58 at normal priority
    /// (three runs) (`cargo bench -p batch-runtime --bench defer`; Linux
    /// 6.18).
    ///
    /// While the CPU stays saturated, deferred work runs only in what is
    /// left (the class still gets a small share, so it is never starved):
    /// it may queue up, and drain more slowly at shutdown. Threads the
    /// work starts, such as `spawn_blocking`'s, inherit the class. `false`
    /// keeps the workers at the priority of the thread that builds the
    /// runtime.
    ///
    /// A low-priority worker preempted while it holds the runtime's lock
    /// would stall any thread waiting for that lock. A response never
    /// waits for it: handing work over, opening and closing a request's
    /// handle skip the lock while a worker holds it. Locks your deferred
    /// work shares with your handlers are yours to keep short.
    pub fn background_priority(mut self, background: bool) -> Self {
        self.background_priority = background;
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// When a worker thread or its tokio runtime cannot be created.
    pub fn build(self) -> std::io::Result<DeferRuntime> {
        let shared = Arc::new(Shared::new(
            NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed),
            self.concurrency,
            self.capacity,
        ));
        let runtime = DeferRuntime {
            owner: Arc::new(Owner {
                shared: shared.clone(),
            }),
        };
        for _ in 0..self.workers {
            // On an error, dropping `runtime` stops the threads started.
            worker::start(
                &shared,
                &self.thread_name,
                self.workers > 1,
                self.background_priority,
            )?;
        }
        Ok(runtime)
    }
}

impl DeferRuntime {
    /// A runtime with the defaults: [`DEFAULT_DEFER_CONCURRENCY`] works at
    /// once on [`DEFAULT_DEFER_WORKERS`] worker thread at background
    /// priority ([`DeferRuntimeBuilder::background_priority`]), at most
    /// [`DEFAULT_DEFER_QUEUE_CAPACITY`] waiting.
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
            capacity: DEFAULT_DEFER_QUEUE_CAPACITY,
            thread_name: "batch-defer".to_owned(),
            background_priority: true,
        }
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// The most works that run at once.
    pub fn concurrency(&self) -> usize {
        self.shared().limit
    }

    /// The most works that wait for a slot.
    pub fn queue_capacity(&self) -> usize {
        self.shared().admission.capacity()
    }

    /// Runs `work` as soon as a slot is free.
    ///
    /// # Errors
    ///
    /// [`Rejected`] once [`shutdown`](DeferRuntime::shutdown) has begun
    /// (unless called from deferred work), or when the queue is full.
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

    /// Queues jobs, or rejects them all (logged and counted).
    pub(crate) fn submit(&self, jobs: Vec<Job>) -> Result<(), Rejected> {
        if jobs.is_empty() {
            return Ok(());
        }
        let source = if self.on_worker() {
            Source::Worker
        } else {
            Source::Outside
        };
        self.shared()
            .change(Change::Queue(jobs), source)
            .map_err(|(jobs, reason)| reject(jobs, reason))
    }

    /// Whether the caller runs in deferred work of this runtime.
    pub(crate) fn on_worker(&self) -> bool {
        worker::on_worker(self.shared().id)
    }

    /// Removes the queued works named `name`, whichever handle or caller
    /// registered them, before they start; returns how many. Running work
    /// is not interrupted. To remove only a request's own work, use
    /// [`Deferred::forget`](super::Deferred::forget).
    pub fn forget(&self, name: &str) -> usize {
        self.remove_queued(|job| job.name.as_deref() == Some(name))
    }

    /// Removes the queued works with these ids (a handle's own).
    pub(crate) fn forget_ids(&self, ids: &[u64]) -> usize {
        if ids.is_empty() {
            return 0;
        }
        self.remove_queued(|job| ids.contains(&job.id))
    }

    fn remove_queued(&self, matches: impl FnMut(&Job) -> bool) -> usize {
        let shared = self.shared();
        let mut state = shared.lock();
        let removed = state.remove_queued(matches, &shared.admission);
        let drained = state.is_drained();
        drop(state);
        let count = removed.len();
        // Their `Drop` is user code: never under the lock.
        drop(removed);
        if drained && count > 0 {
            shared.idle.notify_waiters();
        }
        count
    }

    /// The counters now.
    pub fn stats(&self) -> DeferStats {
        let state = self.shared().lock();
        DeferStats {
            queued: state.queued(),
            running: state.running.len(),
            completed: state.completed,
            panicked: state.panicked,
            forgotten: state.forgotten,
            skipped: state.skipped,
            rejected: state.rejected_total,
            pending_handles: state.open_handles.len(),
        }
    }

    /// Waits until nothing is queued, nothing runs and no request holds
    /// work it has not handed over yet. Tests call it after reading a
    /// response to wait for that response's deferred work, without sleeping.
    ///
    /// Work deferred from deferred work is included: it is queued before
    /// the work that deferred it finishes. A handle's work is queued in the
    /// same step that stops counting the handle, so there is no moment in
    /// between where the runtime looks idle.
    ///
    /// # Panics
    ///
    /// When called from deferred work running on this runtime: that work
    /// is itself running, so the runtime could never be idle while it
    /// waits. Use a [`scope`](super::scope) there to wait for work you
    /// deferred.
    pub async fn wait_idle(&self) {
        let shared = self.shared();
        if self.on_worker() {
            panic!(
                "DeferRuntime::wait_idle was called from deferred work on the same runtime: \
                 the calling work keeps the runtime busy, so it would wait forever. \
                 To wait for work deferred from here, open a `defer::scope` instead"
            );
        }
        wait_until(&shared.idle, || shared.lock().is_idle()).await;
    }

    /// Stops intake, waits up to `grace` for queued and running work to
    /// finish, then cancels whatever is left and reports it by name.
    ///
    /// While draining, work deferred from deferred work and work handed
    /// over by request handles (responses finishing now) is still taken;
    /// anything else is rejected. Shutdown returns as soon as nothing is
    /// queued or running, even while request handles (long-polls, streams,
    /// scopes still in their body) are open: the report counts them in
    /// [`open_handles`](ShutdownReport::open_handles), and the work they
    /// release afterwards is rejected, logged and counted.
    ///
    /// It returns once the worker threads have stopped, so no cancelled
    /// work is still running (unless one blocks its thread past a further
    /// grace period: see
    /// [`workers_stopped`](ShutdownReport::workers_stopped)).
    ///
    /// Call it after the server has stopped taking requests, e.g. after
    /// `axum::serve(..).with_graceful_shutdown(..)` has returned. Needs a
    /// tokio runtime with the time driver enabled. Calling it again returns
    /// a fresh report at once.
    ///
    /// # Panics
    ///
    /// When called from deferred work running on this runtime: it would
    /// wait for itself.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        if self.on_worker() {
            panic!(
                "DeferRuntime::shutdown was called from deferred work on the same runtime: \
                 it would wait for itself. Call it after the server has stopped, outside deferred work"
            );
        }
        let started = Instant::now();
        let shared = self.shared();
        {
            let _state = shared.lock();
            if shared.admission.intake() == Intake::Open {
                shared.admission.set_intake(Intake::Draining);
            }
        }
        shared.wake.notify_waiters();
        let drain = wait_until(&shared.idle, || shared.lock().is_drained());
        // Whether it drained in time is read from the state below.
        let _ = tokio::time::timeout(grace, drain).await;

        let mut cancelled = Vec::new();
        let mut holders: Vec<Weak<dyn HeldWork>> = Vec::new();
        {
            let _state = shared.lock();
            shared.admission.set_intake(Intake::Closed);
        }
        // Work admitted before the close may still be on its way to the
        // inbox: wait for it, then drain it within what is left of the
        // grace period (or abandon it with the rest), rather than lose it.
        while !shared.admission.quiet() {
            tokio::task::yield_now().await;
        }
        let drain = wait_until(&shared.idle, || shared.lock().is_drained());
        let _ = tokio::time::timeout(grace.saturating_sub(started.elapsed()), drain).await;
        let mut report = {
            let mut state = shared.lock();
            let mut abandoned = Vec::new();
            if !state.is_drained() {
                state.abandon = true;
                for (id, running) in state.take_running() {
                    if let Some(abort) = &running.abort {
                        abort.abort();
                    }
                    abandoned.push(display_name(running.name.as_deref(), id));
                }
                cancelled.extend(state.take_queued(&shared.admission));
                abandoned.extend(cancelled.iter().map(Job::display_name));
            }
            holders.extend(state.open_handles.values().cloned());
            ShutdownReport {
                completed: state.completed,
                panicked: state.panicked,
                abandoned,
                rejected: state.rejected.clone(),
                rejected_total: state.rejected_total,
                open_handles: state.open_handles.len(),
                open_handle_work: Vec::new(),
                drained: !state.abandon,
                workers_stopped: true,
                elapsed: Duration::ZERO,
            }
        };
        // Their `Drop` is user code: never under the lock.
        drop(cancelled);
        // A handle is locked after the runtime, never inside it (a handle
        // takes the runtime's lock while holding its own).
        report.open_handle_work = holders
            .iter()
            .filter_map(Weak::upgrade)
            .flat_map(|handle| handle.held())
            .take(REJECTED_NAMES_KEPT)
            .collect();
        let open_handles = report.open_handles;
        shared.wake.notify_waiters();
        shared.idle.notify_waiters();

        // The workers stop once nothing is left (or at once when
        // abandoning), dropping cancelled work: wait for that.
        let stopped = wait_until(&shared.stopped, || shared.lock().live_workers == 0);
        report.workers_stopped = tokio::time::timeout(grace.max(Duration::from_secs(1)), stopped)
            .await
            .is_ok();
        report.elapsed = started.elapsed();
        if !report.abandoned.is_empty() {
            tracing::warn!(abandoned = ?report.abandoned, "defer runtime shut down before this work finished");
        }
        if open_handles > 0 {
            tracing::info!(
                open_handles,
                held = ?report.open_handle_work,
                "defer runtime shut down with request handles still open: work they release now is rejected"
            );
        }
        if !report.workers_stopped {
            tracing::error!("a defer worker thread is still blocked by cancelled work; move blocking calls into `tokio::task::spawn_blocking`");
        }
        report
    }

    // ---- used by request handles ----

    /// A request handle took its first work; returns its id for
    /// [`handle_closed`](Self::handle_closed).
    pub(crate) fn handle_opened(&self, handle: Weak<dyn HeldWork>) -> u64 {
        let shared = self.shared();
        let id = shared.next_handle();
        // Nothing to admit: never refused.
        let _ = shared.change(Change::Opened(id, handle), Source::Handle);
        id
    }

    /// A request handle hands its work over (or skips it). The handle
    /// stops counting as pending in the same step that queues its work,
    /// so `wait_idle` never sees the gap.
    pub(crate) fn handle_closed(&self, handle: u64, skipped: usize, jobs: Vec<Job>) {
        let change = Change::Closed {
            handle,
            skipped,
            jobs,
        };
        if let Err((jobs, reason)) = self.shared().change(change, Source::Handle) {
            // Logged and counted: the handle has no caller to return it to.
            let _ = reject(jobs, reason);
        }
    }

    pub(crate) fn count_skipped(&self, skipped: usize) {
        let _ = self
            .shared()
            .change(Change::Skipped(skipped), Source::Handle);
    }

    pub(crate) fn count_forgotten(&self, forgotten: usize) {
        let _ = self
            .shared()
            .change(Change::Forgotten(forgotten), Source::Handle);
    }
}

/// Logs a refusal and drops the refused jobs (outside any lock).
fn reject(jobs: Vec<Job>, reason: super::report::RejectReason) -> Rejected {
    let names: Vec<String> = jobs.iter().map(Job::display_name).collect();
    drop(jobs);
    let rejected = Rejected { names, reason };
    tracing::warn!(works = ?rejected.names, "{rejected}");
    rejected
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
            .field("queue_capacity", &self.queue_capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A worker preempted while it holds the runtime's lock, played by the test
/// thread holding it: the calls a response makes must not wait for it.
#[cfg(test)]
mod held_lock {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::{mpsc, Arc, Weak};
    use std::time::Duration;

    use super::{DeferRuntime, HeldWork, Intake};
    use crate::defer::report::RejectReason;

    /// Long enough never to fire unless the call waits for the lock.
    const NEVER: Duration = Duration::from_secs(30);

    struct NoWork;
    impl HeldWork for NoWork {
        fn held(&self) -> Vec<String> {
            Vec::new()
        }
    }

    fn tokio() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio")
    }

    #[test]
    fn a_response_thread_never_waits_for_the_lock_and_nothing_it_hands_over_is_lost() {
        let runtime = DeferRuntime::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let held = runtime.shared().lock();
        let response = {
            let (runtime, ran) = (runtime.clone(), ran.clone());
            std::thread::spawn(move || {
                let (a, b) = (ran.clone(), ran.clone());
                runtime
                    .spawn(async move {
                        a.fetch_add(1, SeqCst);
                    })
                    .expect("admitted while the lock is held");
                let holder = Arc::new(NoWork);
                let weak: Weak<dyn HeldWork> = Arc::downgrade(&holder) as _;
                let handle = runtime.handle_opened(weak);
                runtime.count_skipped(2);
                runtime.count_forgotten(1);
                let job = crate::defer::job::Job::new(async move {
                    b.fetch_add(1, SeqCst);
                });
                runtime.handle_closed(handle, 1, vec![job]);
                done_tx.send(()).expect("test alive");
            })
        };
        done_rx
            .recv_timeout(NEVER)
            .expect("the response thread finished while the lock was held");
        drop(held);
        response.join().expect("response thread");
        tokio().block_on(async {
            runtime.wait_idle().await;
            let stats = runtime.stats();
            assert_eq!(ran.load(SeqCst), 2);
            assert_eq!(
                (stats.completed, stats.skipped, stats.forgotten),
                (2, 3, 1),
                "{stats:?}"
            );
            assert_eq!(stats.pending_handles, 0, "{stats:?}");
        });
    }

    #[test]
    fn the_queue_capacity_holds_for_work_handed_over() {
        let runtime = DeferRuntime::builder()
            .queue_capacity(2)
            .concurrency(1)
            .build()
            .expect("runtime");
        // A running work holds the one slot: queued works stay queued.
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        runtime
            .spawn(async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
            })
            .expect("queued");
        started_rx.recv_timeout(NEVER).expect("the blocker started");
        let held = runtime.shared().lock();
        let (admitted_tx, admitted_rx) = mpsc::channel();
        let response = {
            let runtime = runtime.clone();
            std::thread::spawn(move || {
                for _ in 0..2 {
                    runtime.spawn(async {}).expect("within capacity");
                }
                admitted_tx.send(()).expect("test alive");
                // Refused on the atomics, this one takes the lock to be
                // recorded: it waits for the test to let go.
                runtime.spawn(async {})
            })
        };
        admitted_rx
            .recv_timeout(NEVER)
            .expect("two admitted at once");
        drop(held);
        let third = response.join().expect("response thread");
        let refused = third.expect_err("a third queued work passes the capacity");
        assert!(
            matches!(refused.reason, RejectReason::QueueFull { capacity: 2 }),
            "{refused}"
        );
        let _ = release_tx.send(());
        tokio().block_on(async {
            runtime.wait_idle().await;
            let stats = runtime.stats();
            assert_eq!((stats.completed, stats.rejected), (3, 1), "{stats:?}");
        });
    }

    #[test]
    fn a_handle_closing_without_work_after_shutdown_is_no_rejection() {
        let runtime = DeferRuntime::new();
        let handle = runtime.handle_opened(Weak::<NoWork>::new() as Weak<dyn HeldWork>);
        let report = tokio().block_on(runtime.shutdown(NEVER));
        assert_eq!(report.open_handles, 1, "{report}");
        let held = runtime.shared().lock();
        let (closed_tx, closed_rx) = mpsc::channel();
        {
            let runtime = runtime.clone();
            std::thread::spawn(move || {
                runtime.handle_closed(handle, 1, Vec::new());
                let _ = closed_tx.send(());
            });
        }
        closed_rx
            .recv_timeout(NEVER)
            .expect("closed while the lock is held");
        drop(held);
        let stats = runtime.stats();
        assert_eq!(
            (stats.skipped, stats.rejected, stats.pending_handles),
            (1, 0, 0),
            "{stats:?}"
        );
    }

    /// Response threads race the workers and a thread that keeps taking
    /// the lock, and a shutdown lands in the middle: each response thread
    /// goes on until its work is refused, then a while longer. Every work
    /// admitted runs once, every other is counted as rejected, and every
    /// handle closes.
    #[test]
    fn response_threads_racing_a_shutdown_lose_nothing() {
        const THREADS: usize = 3;
        /// Works each thread still defers after its first refusal.
        const AFTER_REFUSAL: usize = 1_000;
        let runtime = DeferRuntime::builder()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let ran = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let locker = {
            let (runtime, stop) = (runtime.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let held = runtime.shared().lock();
                    std::hint::black_box(held.queued());
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                    drop(held);
                }
            })
        };
        let (started_tx, started_rx) = mpsc::channel();
        let responses: Vec<_> = (0..THREADS)
            .map(|_| {
                let (runtime, ran, started) = (runtime.clone(), ran.clone(), started_tx.clone());
                std::thread::spawn(move || {
                    let holder = Arc::new(NoWork);
                    let (mut admitted, mut refused, mut handled) = (0, 0, 0);
                    let mut first_refusal = None;
                    for i in 0.. {
                        if i == 1_000 {
                            let _ = started.send(());
                        }
                        if first_refusal.is_some_and(|at| i >= at + AFTER_REFUSAL) {
                            break;
                        }
                        assert!(i < 10_000_000, "the shutdown never refused a work");
                        let ran = ran.clone();
                        let work = crate::defer::job::Job::new(async move {
                            ran.fetch_add(1, SeqCst);
                        });
                        if i % 2 == 0 {
                            match runtime.submit(vec![work]) {
                                Ok(()) => admitted += 1,
                                Err(_) => {
                                    refused += 1;
                                    first_refusal.get_or_insert(i);
                                }
                            }
                        } else {
                            // A request's handle: opened, then closed with
                            // its work (taken while draining, refused once
                            // closed: counted either way).
                            let weak: Weak<dyn HeldWork> = Arc::downgrade(&holder) as _;
                            let handle = runtime.handle_opened(weak);
                            runtime.handle_closed(handle, 0, vec![work]);
                            handled += 1;
                        }
                    }
                    (admitted, refused, handled)
                })
            })
            .collect();
        for _ in 0..THREADS {
            started_rx
                .recv_timeout(NEVER)
                .expect("a response thread started");
        }
        let report = tokio().block_on(runtime.shutdown(NEVER));
        let mut attempted = 0;
        let mut refused_outside = 0;
        for response in responses {
            let (admitted, refused, handled) = response.join().expect("response thread");
            attempted += admitted + refused + handled;
            refused_outside += refused;
        }
        stop.store(true, SeqCst);
        locker.join().expect("locker");
        let stats = runtime.stats();
        assert!(report.abandoned.is_empty(), "{report}");
        assert_eq!(ran.load(SeqCst) as u64, stats.completed, "{stats:?}");
        assert_eq!(
            stats.completed + stats.rejected,
            attempted as u64,
            "every work ran or was counted as refused: {stats:?}"
        );
        assert!(stats.rejected >= refused_outside as u64, "{stats:?}");
        assert_eq!(stats.pending_handles, 0, "{stats:?}");
        assert!(
            runtime.shared().handed_over.load(SeqCst) > 0,
            "the race never handed a change over"
        );
    }

    /// A submitter admitted before intake closed, and stopped before its
    /// work reaches the inbox: the workers wait for it, and shutdown runs
    /// the work instead of losing it.
    #[test]
    fn shutdown_waits_for_a_submitter_between_admission_and_the_inbox() {
        let runtime = DeferRuntime::new();
        let held = runtime.shared().lock();
        let (admitted_tx, admitted_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
        let submitter = {
            let runtime = runtime.clone();
            std::thread::spawn(move || {
                crate::defer::handover::BETWEEN_ADMISSION_AND_INBOX.with(|hook| {
                    *hook.borrow_mut() = Some(Box::new(move || {
                        let _ = admitted_tx.send(());
                        let _ = go_rx.recv_timeout(NEVER);
                    }));
                });
                runtime.spawn(async move {
                    let _ = ran_tx.send(());
                })
            })
        };
        admitted_rx.recv_timeout(NEVER).expect("admitted");
        drop(held);
        let shutdown = {
            let runtime = runtime.clone();
            std::thread::spawn(move || tokio().block_on(runtime.shutdown(NEVER)))
        };
        // Shutdown has closed intake and found nothing queued; the worker
        // must not stop, nor shutdown return, before the submitter is done.
        while runtime.shared().admission.intake() != Intake::Closed {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !shutdown.is_finished(),
            "shutdown returned with a submitter on its way"
        );
        go_tx.send(()).expect("submitter waits");
        submitter.join().expect("submitter").expect("admitted");
        let report = shutdown.join().expect("shutdown");
        assert_eq!(report.completed, 1, "{report}");
        assert!(report.abandoned.is_empty(), "{report}");
        tokio().block_on(ran_rx).expect("the work ran");
    }

    #[test]
    fn shutdown_runs_work_handed_over_before_it_began() {
        let runtime = DeferRuntime::new();
        let held = runtime.shared().lock();
        let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
        let (admitted_tx, admitted_rx) = mpsc::channel();
        {
            let runtime = runtime.clone();
            std::thread::spawn(move || {
                let admitted = runtime.spawn(async move {
                    let _ = ran_tx.send(());
                });
                let _ = admitted_tx.send(admitted);
            });
        }
        admitted_rx
            .recv_timeout(NEVER)
            .expect("admitted while the lock is held")
            .expect("admitted");
        drop(held);
        tokio().block_on(async {
            let report = runtime.shutdown(NEVER).await;
            assert_eq!(report.completed, 1, "{report}");
            assert!(report.abandoned.is_empty(), "{report}");
            ran_rx.await.expect("the work ran");
        });
    }
}
