//! What a [`DeferRuntime`](super::DeferRuntime) tells its caller: refusals,
//! live counters and the shutdown report.

use std::fmt;
use std::time::Duration;

/// At most this many rejected works are kept by name (in
/// [`ShutdownReport::rejected`]); beyond it they are only counted, so a
/// runtime refusing work for hours does not grow without bound.
pub const REJECTED_NAMES_KEPT: usize = 1_000;

/// Why work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// [`shutdown`](super::DeferRuntime::shutdown) has begun (only work
    /// from deferred work and from requests already in flight is still
    /// taken) or has returned (nothing is taken).
    ShuttingDown,
    /// The queue already holds its
    /// [`queue_capacity`](super::DeferRuntimeBuilder::queue_capacity) of
    /// works waiting for a slot.
    QueueFull {
        /// The capacity that was reached.
        capacity: usize,
    },
}

/// The work was not accepted: the runtime is shutting down, or its queue is
/// full. Rejections are also logged (`warn`) and counted in
/// [`DeferStats::rejected`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// The names of the rejected works (`<unnamed #n>` when unnamed).
    pub names: Vec<String>,
    /// Why they were refused.
    pub reason: RejectReason,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            RejectReason::ShuttingDown => write!(
                f,
                "deferred work rejected because the defer runtime is shutting down: {}",
                self.names.join(", ")
            ),
            RejectReason::QueueFull { capacity } => write!(
                f,
                "deferred work rejected because the defer queue is full ({capacity} works wait for a slot; raise `DeferRuntimeBuilder::queue_capacity` or `concurrency`): {}",
                self.names.join(", ")
            ),
        }
    }
}

impl std::error::Error for Rejected {}

/// Live counters of a [`DeferRuntime`](super::DeferRuntime) (see
/// [`DeferRuntime::stats`](super::DeferRuntime::stats)).
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
    /// Works removed by `forget` (on a handle or on the runtime) before
    /// they started.
    pub forgotten: u64,
    /// Works never started because their response failed (status ≥ 400, a
    /// body that broke off, or no response) and they were not `always`.
    pub skipped: u64,
    /// Works refused: the runtime was shutting down or its queue was full.
    pub rejected: u64,
    /// Requests (or scopes) holding work that has not been handed over yet.
    pub pending_handles: usize,
}

/// What [`DeferRuntime::shutdown`](super::DeferRuntime::shutdown) did.
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
    /// Works refused (shutting down, or queue full), by name: the first
    /// [`REJECTED_NAMES_KEPT`] of them.
    pub rejected: Vec<String>,
    /// How many works were refused in all (may exceed `rejected.len()`).
    pub rejected_total: u64,
    /// Request handles (long-polls, streams, scopes still in their body)
    /// that still held unreleased work when the queue drained. Shutdown
    /// does not wait for them: their work, released later, is rejected and
    /// counted.
    pub open_handles: usize,
    /// The works those handles held when shutdown returned, by name (the
    /// first [`REJECTED_NAMES_KEPT`]): released later, they are rejected.
    pub open_handle_work: Vec<String>,
    /// Whether everything queued finished within the grace period.
    pub drained: bool,
    /// Whether the worker threads stopped: every abandoned work has been
    /// dropped and none is running. False only when a work kept its thread
    /// blocked (a blocking call outside `spawn_blocking`) for a further
    /// grace period after it was cancelled.
    pub workers_stopped: bool,
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
        if self.rejected_total > 0 {
            write!(
                f,
                ", {} rejected ({}{})",
                self.rejected_total,
                self.rejected.join(", "),
                if self.rejected_total > self.rejected.len() as u64 {
                    ", …"
                } else {
                    ""
                }
            )?;
        }
        if self.open_handles > 0 {
            write!(
                f,
                ", {} request handle{} still open",
                self.open_handles,
                if self.open_handles == 1 { "" } else { "s" }
            )?;
            if !self.open_handle_work.is_empty() {
                write!(f, " holding {}", self.open_handle_work.join(", "))?;
            }
            f.write_str(" (work they release now is rejected)")?;
        }
        if !self.workers_stopped {
            f.write_str(", a worker thread is still blocked by cancelled work")?;
        }
        Ok(())
    }
}
