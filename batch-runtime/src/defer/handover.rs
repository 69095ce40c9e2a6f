//! What a response thread hands to the runtime without waiting for its lock.
//!
//! The worker threads run at the lowest CPU priority. A worker preempted
//! while it holds the runtime's lock would keep every response thread that
//! needs the lock waiting until the worker gets a core back: on a saturated
//! CPU, for as long as the saturation lasts (1.4 s seen on 2 cores with
//! three busy threads). So the per-response calls try the lock, and when it
//! is held they decide admission on the atomics below and leave their
//! change in an inbox, which whoever takes the lock next applies first.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Weak;

use super::job::Job;
use super::report::RejectReason;
use super::state::{HeldWork, Intake, Source};

/// A change to the runtime's bookkeeping.
pub(crate) enum Change {
    /// Works to queue.
    Queue(Vec<Job>),
    /// A request handle took its first work, under this id.
    Opened(u64, Weak<dyn HeldWork>),
    /// A request handle hands its work over: it stops counting as pending
    /// in the same step that queues its work.
    Closed {
        handle: u64,
        skipped: usize,
        jobs: Vec<Job>,
    },
    /// Works skipped (their response failed).
    Skipped(usize),
    /// Works a handle removed before handing them over.
    Forgotten(usize),
}

impl Change {
    /// The works it queues.
    pub(crate) fn jobs(&self) -> &[Job] {
        match self {
            Change::Queue(jobs) | Change::Closed { jobs, .. } => jobs,
            _ => &[],
        }
    }

    /// The works it queues, taken out (to be refused).
    pub(crate) fn take_jobs(&mut self) -> Vec<Job> {
        match self {
            Change::Queue(jobs) | Change::Closed { jobs, .. } => std::mem::take(jobs),
            _ => Vec::new(),
        }
    }
}

/// Whether work is admitted, readable without the lock: the intake, and the
/// count of queued works against the capacity.
pub(crate) struct Admission {
    intake: AtomicU8,
    /// Queued works that count against `capacity` (not the exempt ones),
    /// those still in the inbox included.
    queued: AtomicUsize,
    capacity: usize,
    /// Submitters between reading the intake and leaving their change in
    /// the inbox: a worker does not stop, nor shutdown abandon the queue,
    /// before they are done.
    in_flight: AtomicUsize,
}

impl Admission {
    pub(crate) fn new(capacity: usize) -> Admission {
        Admission {
            intake: AtomicU8::new(Intake::Open as u8),
            queued: AtomicUsize::new(0),
            capacity,
            in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn intake(&self) -> Intake {
        match self.intake.load(SeqCst) {
            x if x == Intake::Open as u8 => Intake::Open,
            x if x == Intake::Draining as u8 => Intake::Draining,
            _ => Intake::Closed,
        }
    }

    /// Set under the runtime's lock, so that what the lock's holders read
    /// stays consistent with the rest of the state.
    pub(crate) fn set_intake(&self, intake: Intake) {
        self.intake.store(intake as u8, SeqCst);
    }

    /// Admits `jobs` from `source`: counts them as queued, or says why not.
    /// No works is always admitted (a handle closing without work).
    pub(crate) fn admit(&self, jobs: &[Job], source: Source) -> Result<(), RejectReason> {
        if jobs.is_empty() {
            return Ok(());
        }
        let accept = match self.intake() {
            Intake::Open => true,
            Intake::Draining => source != Source::Outside,
            Intake::Closed => false,
        };
        if !accept {
            return Err(RejectReason::ShuttingDown);
        }
        let limited = jobs.iter().filter(|job| !job.exempt).count();
        let capacity = self.capacity;
        self.queued
            .fetch_update(SeqCst, SeqCst, |queued| {
                (queued + limited <= capacity).then_some(queued + limited)
            })
            .map(drop)
            .map_err(|_| RejectReason::QueueFull { capacity })
    }

    /// `count` queued works left the queue (started, forgotten, abandoned).
    pub(crate) fn dequeued(&self, count: usize) {
        self.queued.fetch_sub(count, SeqCst);
    }

    /// Marks the caller as between reading the intake and leaving its
    /// change in the inbox, until the guard drops.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, SeqCst);
        InFlight(self)
    }

    /// Whether no submitter is between admission and the inbox. Read after
    /// the intake was seen closed, then the inbox read again: nothing
    /// admitted before the close is missed.
    pub(crate) fn quiet(&self) -> bool {
        self.in_flight.load(SeqCst) == 0
    }
}

pub(crate) struct InFlight<'a>(&'a Admission);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
thread_local! {
    /// Runs on the calling thread between admitting a change and leaving
    /// it in the inbox: a test stops a submitter there.
    pub(crate) static BETWEEN_ADMISSION_AND_INBOX: std::cell::RefCell<Option<Box<dyn Fn()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Calls the test's hook, if the calling thread set one.
pub(crate) fn between_admission_and_inbox() {
    #[cfg(test)]
    BETWEEN_ADMISSION_AND_INBOX.with(|hook| {
        if let Some(hook) = &*hook.borrow() {
            hook();
        }
    });
}
