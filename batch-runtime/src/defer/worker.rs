//! The worker threads: each a current-thread tokio runtime with a local
//! task set, taking jobs from the shared queue one at a time.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tracing::Instrument;

use super::job::{GroupTicket, LocalFuture};
use super::state::{Intake, Shared};
use crate::engine::panic_message;

thread_local! {
    /// The id of the runtime whose worker this thread is (0: none).
    static WORKER_OF: Cell<u64> = const { Cell::new(0) };
}

/// Whether the caller runs on a worker thread of runtime `id` (that is, in
/// its deferred work).
pub(crate) fn on_worker(id: u64) -> bool {
    WORKER_OF.with(|w| w.get() == id)
}

/// Starts one worker thread.
/// `spread`: other worker threads exist to take work this one leaves.
/// `background`: at the lowest CPU priority (see
/// [`DeferRuntimeBuilder::background_priority`](super::DeferRuntimeBuilder::background_priority)).
pub(crate) fn start(
    shared: &Arc<Shared>,
    thread_name: &str,
    spread: bool,
    background: bool,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    shared.lock().live_workers += 1;
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            if background {
                lowest_priority();
            }
            work(runtime, &worker, spread)
        });
    if let Err(e) = spawned {
        shared.lock().live_workers -= 1;
        return Err(e);
    }
    Ok(())
}

/// Puts the calling thread (and the threads it starts later, such as a
/// `spawn_blocking` pool's) in Linux's `SCHED_IDLE` class. The scheduler
/// counts a core that runs only such threads as idle when it places a
/// waking thread, and a waking normal thread preempts them at once; a
/// thread at nice 19 only weighs less, and a response thread that wakes
/// may wait behind it, which showed in the responses' p99 (see
/// [`DeferRuntimeBuilder::background_priority`](super::DeferRuntimeBuilder::background_priority)).
/// Where the class cannot be changed (some sandboxes refuse the call), the
/// thread falls back to nice 19. On Linux both calls with pid 0 apply to
/// the calling thread, not the process.
#[cfg(target_os = "linux")]
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let idle_refused = std::io::Error::last_os_error();
    // SAFETY: as above; no pointers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the defer worker's priority; it runs at normal priority"
        );
    } else {
        tracing::debug!(
            error = %idle_refused,
            "SCHED_IDLE refused; the defer worker runs at nice 19 instead"
        );
    }
}

/// Elsewhere `setpriority(PRIO_PROCESS, 0)` would renice the whole process.
#[cfg(not(target_os = "linux"))]
fn lowest_priority() {}

/// A worker thread: dispatches queued work onto its local task set until
/// intake is closed and nothing is left, or shutdown abandons the rest.
fn work(runtime: tokio::runtime::Runtime, shared: &Arc<Shared>, spread: bool) {
    WORKER_OF.with(|w| w.set(shared.id));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, dispatch(shared.clone(), spread));
    // Drops the tasks still in the set (abandoned work): after this, none
    // of this thread's work is running or alive.
    drop(local);
    let mut state = shared.lock();
    state.live_workers -= 1;
    drop(state);
    shared.stopped.notify_waiters();
    // `spawn_blocking` closures cannot be cancelled: do not wait for them.
    runtime.shutdown_background();
}

/// While work keeps arriving, a worker looks at the queue this often
/// instead of being woken for each work: a wake-up is a syscall and a
/// context switch on the thread that finished the response, which showed
/// in the responses' latency on small machines. Deferred work may start
/// this much later; nothing waits on that.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How long after the last work started a worker keeps polling.
const POLL_FOR: Duration = Duration::from_millis(50);

async fn dispatch(shared: Arc<Shared>, spread: bool) {
    let mut last_start: Option<Instant> = None;
    loop {
        let notified = shared.wake.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let mut state = shared.lock();
            if state.abandon {
                return;
            }
            match state.start_next(shared.limit, &shared.admission) {
                Some(job) => Ok((job, state.can_start(shared.limit))),
                None if shared.admission.intake() == Intake::Closed
                    && shared.admission.quiet()
                    && shared.settled(&mut state) =>
                {
                    return
                }
                None => {
                    // Decided under the lock submitters read it under, so
                    // a work is never left unwoken (a submitter that hands
                    // its work over without the lock always wakes us).
                    state.polling = last_start.is_some_and(|at| at.elapsed() < POLL_FOR);
                    Err(state.polling)
                }
            }
        };
        let (job, more) = match next {
            Ok(next) => next,
            Err(true) => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                continue;
            }
            Err(false) => {
                notified.await;
                continue;
            }
        };
        last_start = Some(Instant::now());
        if more && spread {
            // Another worker thread may take the next one.
            shared.wake.notify_one();
        }
        let id = job.id;
        let name = job.display_name();
        let span = tracing::info_span!("defer", work = %name);
        // The future is made here, on the worker: it need not be `Send`.
        let future = (job.make)();
        let task = run(shared.clone(), id, name, future, job.ticket).instrument(span);
        let abort = tokio::task::spawn_local(task).abort_handle();
        match shared.lock().running.get_mut(&id) {
            Some(running) => running.abort = Some(abort),
            // Abandoned between being taken and being spawned.
            None => abort.abort(),
        }
        if spread {
            // Let the new work run before taking another: a work that
            // blocks this thread then leaves the queue to the other threads.
            tokio::task::yield_now().await;
        }
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
    let panic = AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .err()
        .map(|payload| panic_message(&payload));
    let mut state = shared.lock();
    if state.finish(id).is_none() {
        // Abandoned by shutdown while finishing: already reported.
        return;
    }
    match &panic {
        None => state.completed += 1,
        Some(_) => state.panicked += 1,
    }
    let drained = state.is_drained();
    drop(state);
    if let Some(panic) = panic {
        tracing::error!(work = %name, %panic, "deferred work panicked; the other work carries on");
    }
    drop(ticket);
    shared.wake.notify_one();
    if drained {
        shared.idle.notify_waiters();
    }
}
