//! The bookkeeping a runtime's workers and handles share: the queue, the
//! running works, the intake and the counters, behind one lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::job::Job;
use super::report::{RejectReason, REJECTED_NAMES_KEPT};
use crate::sync::lock;

/// A request handle's work that is not submitted yet.
pub(crate) trait HeldWork: Send + Sync {
    /// The names of the works it holds.
    fn held(&self) -> Vec<String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub(crate) intake: Intake,
    /// Set when the grace period ran out: workers stop at once.
    pub(crate) abandon: bool,
    /// Request handles holding work that is not submitted yet, by the id
    /// each got when it took its first work: a shutdown names their work.
    pub(crate) open_handles: BTreeMap<u64, Weak<dyn HeldWork>>,
    pub(crate) next_handle: u64,
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
    pub(crate) fn new() -> State {
        State {
            queue: VecDeque::new(),
            exempt: VecDeque::new(),
            running: HashMap::new(),
            limited_running: 0,
            intake: Intake::Open,
            abandon: false,
            open_handles: BTreeMap::new(),
            next_handle: 0,
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

    /// Queues `jobs`, or gives them back (to be dropped outside the lock)
    /// with the reason they were refused. All or nothing.
    pub(crate) fn admit(
        &mut self,
        jobs: Vec<Job>,
        source: Source,
        capacity: usize,
    ) -> Result<(), (Vec<Job>, RejectReason)> {
        let accept = match self.intake {
            Intake::Open => true,
            Intake::Draining => source != Source::Outside,
            Intake::Closed => false,
        };
        if !accept {
            return Err(self.refuse(jobs, RejectReason::ShuttingDown));
        }
        let limited = jobs.iter().filter(|job| !job.exempt).count();
        if self.queue.len() + limited > capacity {
            return Err(self.refuse(jobs, RejectReason::QueueFull { capacity }));
        }
        for job in jobs {
            if job.exempt {
                self.exempt.push_back(job);
            } else {
                self.queue.push_back(job);
            }
        }
        Ok(())
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
    pub(crate) fn start_next(&mut self, limit: usize) -> Option<Job> {
        let job = match self.exempt.pop_front() {
            Some(job) => job,
            None if self.limited_running < limit => self.queue.pop_front()?,
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
    pub(crate) fn remove_queued(&mut self, mut matches: impl FnMut(&Job) -> bool) -> Vec<Job> {
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
        self.forgotten += removed.len() as u64;
        removed
    }
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) limit: usize,
    pub(crate) capacity: usize,
    state: Mutex<State>,
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
        Shared {
            id,
            limit,
            capacity,
            state: Mutex::new(State::new()),
            wake: Notify::new(),
            idle: Notify::new(),
            stopped: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}
