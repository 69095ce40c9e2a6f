//! The bookkeeping a runtime's workers and handles share: the queue, the
//! running works and the counters, behind one lock (the intake and the
//! admission count are atomics: see [`handover`](super::handover)).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::handover::{Admission, Change};
use super::job::Job;
use super::report::{RejectReason, REJECTED_NAMES_KEPT};
use crate::sync::{lock, try_lock};

/// A request handle's work that is not submitted yet.
pub(crate) trait HeldWork: Send + Sync {
    /// The names of the works it holds.
    fn held(&self) -> Vec<String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Intake {
    /// Accepting work.
    Open,
    /// Shutting down: only work from deferred work and from request
    /// handles is accepted.
    Draining,
    /// Shut down (or every `DeferRuntime` clone dropped): nothing is
    /// accepted; the workers finish what is queued, then stop.
    Closed,
}

/// Where submitted work comes from: decides what a draining runtime takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `DeferRuntime::spawn`, or a handle used after its response.
    Outside,
    /// Deferred work running on this runtime.
    Worker,
    /// A request (or scope) handing over the work it held: it was accepted
    /// before intake stopped, so it is taken while draining.
    Handle,
}

pub(crate) struct Running {
    pub(crate) name: Option<String>,
    pub(crate) abort: Option<tokio::task::AbortHandle>,
    exempt: bool,
}

pub(crate) struct State {
    pub(crate) queue: VecDeque<Job>,
    /// Works of scopes opened inside deferred work: started at once.
    pub(crate) exempt: VecDeque<Job>,
    pub(crate) running: HashMap<u64, Running>,
    /// Running works that count against the concurrency limit.
    limited_running: usize,
    /// Set when the grace period ran out: workers stop at once.
    pub(crate) abandon: bool,
    /// Request handles holding work that is not submitted yet, by the id
    /// each got when it took its first work: a shutdown names their work.
    pub(crate) open_handles: BTreeMap<u64, Weak<dyn HeldWork>>,
    /// Changes handed over while the lock was held, applied by whoever
    /// takes it next ([`Shared::lock`]).
    inbox: mpsc::Receiver<Change>,
    /// Worker threads that have not stopped yet.
    pub(crate) live_workers: usize,
    /// A worker looks at the queue every millisecond (work arrived
    /// recently): submitters need not wake it.
    pub(crate) polling: bool,
    pub(crate) completed: u64,
    pub(crate) panicked: u64,
    pub(crate) forgotten: u64,
    pub(crate) skipped: u64,
    pub(crate) rejected: Vec<String>,
    pub(crate) rejected_total: u64,
}

impl State {
    fn new(inbox: mpsc::Receiver<Change>) -> State {
        State {
            queue: VecDeque::new(),
            exempt: VecDeque::new(),
            running: HashMap::new(),
            limited_running: 0,
            abandon: false,
            open_handles: BTreeMap::new(),
            inbox,
            live_workers: 0,
            polling: false,
            completed: 0,
            panicked: 0,
            forgotten: 0,
            skipped: 0,
            rejected: Vec::new(),
            rejected_total: 0,
        }
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.queue.is_empty() && self.exempt.is_empty() && self.running.is_empty()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.is_drained() && self.open_handles.is_empty()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len() + self.exempt.len()
    }

    /// Makes `change`, admitting its works first; refused works are given
    /// back (to be dropped outside the lock) with the reason, the rest of
    /// the change being made all the same.
    fn admit(
        &mut self,
        mut change: Change,
        source: Source,
        admission: &Admission,
    ) -> Result<(), (Vec<Job>, RejectReason)> {
        let refused = match admission.admit(change.jobs(), source) {
            Ok(()) => None,
            Err(reason) => Some(self.refuse(change.take_jobs(), reason)),
        };
        self.apply(change);
        refused.map_or(Ok(()), Err)
    }

    /// Makes a change whose works were admitted.
    fn apply(&mut self, change: Change) {
        match change {
            Change::Queue(jobs) => self.enqueue(jobs),
            Change::Opened(handle, held) => {
                self.open_handles.insert(handle, held);
            }
            Change::Closed {
                handle,
                skipped,
                jobs,
            } => {
                self.open_handles.remove(&handle);
                self.skipped += skipped as u64;
                self.enqueue(jobs);
            }
            Change::Skipped(skipped) => self.skipped += skipped as u64,
            Change::Forgotten(forgotten) => self.forgotten += forgotten as u64,
        }
    }

    fn enqueue(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            if job.exempt {
                self.exempt.push_back(job);
            } else {
                self.queue.push_back(job);
            }
        }
    }

    fn refuse(&mut self, jobs: Vec<Job>, reason: RejectReason) -> (Vec<Job>, RejectReason) {
        self.rejected_total += jobs.len() as u64;
        let room = REJECTED_NAMES_KEPT.saturating_sub(self.rejected.len());
        self.rejected
            .extend(jobs.iter().take(room).map(Job::display_name));
        (jobs, reason)
    }

    /// Takes the next job that may start (exempt ones first, then queued
    /// ones while under `limit`) and marks it running.
    pub(crate) fn start_next(&mut self, limit: usize, admission: &Admission) -> Option<Job> {
        let job = match self.exempt.pop_front() {
            Some(job) => job,
            None if self.limited_running < limit => {
                let job = self.queue.pop_front()?;
                admission.dequeued(1);
                job
            }
            None => return None,
        };
        if !job.exempt {
            self.limited_running += 1;
        }
        self.running.insert(
            job.id,
            Running {
                name: job.name.clone(),
                abort: None,
                exempt: job.exempt,
            },
        );
        Some(job)
    }

    /// Whether another job could start now.
    pub(crate) fn can_start(&self, limit: usize) -> bool {
        !self.exempt.is_empty() || (self.limited_running < limit && !self.queue.is_empty())
    }

    /// The job is no longer running; `None` if shutdown already took it.
    pub(crate) fn finish(&mut self, id: u64) -> Option<Running> {
        let running = self.running.remove(&id)?;
        if !running.exempt {
            self.limited_running -= 1;
        }
        Some(running)
    }

    /// Removes every running entry (shutdown abandons them), in start order.
    pub(crate) fn take_running(&mut self) -> Vec<(u64, Running)> {
        self.limited_running = 0;
        let mut running: Vec<(u64, Running)> = self.running.drain().collect();
        running.sort_by_key(|(id, _)| *id);
        running
    }

    /// Removes the queued jobs `matches` picks; they are returned to be
    /// dropped outside the lock (their `Drop` is user code).
    pub(crate) fn remove_queued(
        &mut self,
        mut matches: impl FnMut(&Job) -> bool,
        admission: &Admission,
    ) -> Vec<Job> {
        let mut removed = Vec::new();
        for queue in [&mut self.queue, &mut self.exempt] {
            let mut kept = VecDeque::with_capacity(queue.len());
            for job in queue.drain(..) {
                if matches(&job) {
                    removed.push(job);
                } else {
                    kept.push_back(job);
                }
            }
            *queue = kept;
        }
        admission.dequeued(removed.iter().filter(|job| !job.exempt).count());
        self.forgotten += removed.len() as u64;
        removed
    }

    /// Empties the queues (shutdown abandons them), exempt works first.
    pub(crate) fn take_queued(&mut self, admission: &Admission) -> Vec<Job> {
        admission.dequeued(self.queue.len());
        self.exempt.drain(..).chain(self.queue.drain(..)).collect()
    }
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) limit: usize,
    pub(crate) admission: Admission,
    state: Mutex<State>,
    inbox: mpsc::Sender<Change>,
    next_handle: AtomicU64,
    /// Changes handed over through the inbox: the tests check that their
    /// races took that path.
    #[cfg(test)]
    pub(crate) handed_over: std::sync::atomic::AtomicUsize,
    /// Wakes the workers: new work, a finished work, shutdown.
    pub(crate) wake: Notify,
    /// Wakes [`DeferRuntime::wait_idle`](super::DeferRuntime::wait_idle)
    /// and shutdown: the queue drained, or a handle closed.
    pub(crate) idle: Notify,
    /// Wakes shutdown: a worker thread stopped.
    pub(crate) stopped: Notify,
}

impl Shared {
    pub(crate) fn new(id: u64, limit: usize, capacity: usize) -> Shared {
        let (inbox, received) = mpsc::channel();
        Shared {
            id,
            limit,
            admission: Admission::new(capacity),
            state: Mutex::new(State::new(received)),
            inbox,
            next_handle: AtomicU64::new(0),
            #[cfg(test)]
            handed_over: std::sync::atomic::AtomicUsize::new(0),
            wake: Notify::new(),
            idle: Notify::new(),
            stopped: Notify::new(),
        }
    }

    /// Locks the state, first making the changes handed over meanwhile.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = lock(&self.state);
        self.absorb(&mut state);
        state
    }

    fn absorb(&self, state: &mut State) {
        let mut absorbed = false;
        while let Ok(change) = state.inbox.try_recv() {
            state.apply(change);
            absorbed = true;
        }
        if absorbed && state.is_idle() {
            // A handle closed by hand-over: its waiters learn it here.
            self.idle.notify_waiters();
        }
    }

    /// Whether nothing is queued or running once the changes handed over
    /// so far are made (called when no submitter is still on its way, see
    /// [`Admission::quiet`]).
    pub(crate) fn settled(&self, state: &mut State) -> bool {
        self.absorb(state);
        state.is_drained()
    }

    /// A request handle's id for [`Change::Opened`] and [`Change::Closed`].
    pub(crate) fn next_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `change`, admitting its works from `source`, and wakes whoever
    /// it concerns. A response thread calls this: when the lock is held
    /// (by a worker that may be preempted at its low priority), a change
    /// that admission accepts is handed over instead of waiting. Refused
    /// works are given back with the reason, counted and named in the
    /// state like every refusal.
    pub(crate) fn change(
        &self,
        change: Change,
        source: Source,
    ) -> Result<(), (Vec<Job>, RejectReason)> {
        let mut state = match try_lock(&self.state) {
            Some(state) => state,
            None => {
                let in_flight = self.admission.enter();
                if self.admission.admit(change.jobs(), source).is_ok() {
                    super::handover::between_admission_and_inbox();
                    // The receiver lives in `self.state`: it outlives this.
                    let _ = self.inbox.send(change);
                    drop(in_flight);
                    #[cfg(test)]
                    self.handed_over.fetch_add(1, Ordering::Relaxed);
                    // The worker takes the lock to start the works, or to
                    // stop (see `Admission::quiet`), and absorbs the change.
                    self.wake.notify_one();
                    return Ok(());
                }
                drop(in_flight);
                // Refused: recorded under the lock, where the state may
                // also have moved on and admit it after all.
                lock(&self.state)
            }
        };
        self.absorb(&mut state);
        let queues = !change.jobs().is_empty();
        let made = state.admit(change, source, &self.admission);
        let wake = queues && made.is_ok() && !state.polling;
        let idle = state.is_idle();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        if idle {
            self.idle.notify_waiters();
        }
        made
    }
}
