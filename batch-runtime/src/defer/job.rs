//! One unit of deferred work, and the group a [`scope`](super::scope)
//! waits on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::DeferSafe;

/// A deferred work's future, created on the worker thread that runs it.
pub(crate) type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
/// What is sent to the worker: a thread-safe recipe for the future.
pub(crate) type MakeFuture = Box<dyn FnOnce() -> LocalFuture + Send>;

/// Ids are process-wide so that a handle can name its own jobs on any
/// runtime without asking it.
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// One unit of deferred work.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) make: MakeFuture,
    /// Keeps a [`scope`](super::scope) waiting until the job is gone.
    pub(crate) ticket: Option<GroupTicket>,
    /// Started at once, outside the concurrency limit: the job belongs to a
    /// scope opened inside deferred work, which waits for it while holding
    /// a slot (queueing it behind that slot could deadlock).
    pub(crate) exempt: bool,
}

impl Job {
    pub(crate) fn new<F>(work: F) -> Job
    where
        F: Future<Output = ()> + DeferSafe,
    {
        Job::from_make(Box::new(move || Box::pin(work)))
    }

    pub(crate) fn from_make(make: MakeFuture) -> Job {
        Job {
            id: NEXT_JOB.fetch_add(1, Ordering::Relaxed),
            name: None,
            make,
            ticket: None,
            exempt: false,
        }
    }

    pub(crate) fn display_name(&self) -> String {
        display_name(self.name.as_deref(), self.id)
    }
}

pub(crate) fn display_name(name: Option<&str>, id: u64) -> String {
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

/// Held by a job of a group; dropping it (the job ran, was forgotten,
/// skipped, rejected or abandoned) releases the group.
pub(crate) struct GroupTicket(Arc<Group>);

impl Drop for GroupTicket {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// Returns once `ready()` holds, re-checking each time `notify` wakes its
/// waiters. The waiter is registered before the check, so a wake-up
/// between the check and the wait is not lost.
pub(crate) async fn wait_until(notify: &Notify, mut ready: impl FnMut() -> bool) {
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
