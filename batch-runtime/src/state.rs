//! The live counters every arm sees.

/// The batch as an arm sees it: counters that are exact at every call.
///
/// `processed = succeeded + failed`, `pending = total - processed`. A
/// request counts as processed once its result is in (and before the arm for
/// it runs). Requests cancelled by `fail_fast` count as failed. Inside `then`
/// and `finally` the batch reports finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchState {
    total: usize,
    succeeded: usize,
    failed: usize,
    finished: bool,
}

impl BatchState {
    pub(crate) fn new(total: usize) -> Self {
        BatchState {
            total,
            succeeded: 0,
            failed: 0,
            finished: false,
        }
    }

    pub(crate) fn record_success(&mut self) {
        self.succeeded += 1;
    }

    pub(crate) fn record_failure(&mut self) {
        self.failed += 1;
    }

    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// How many requests the batch has.
    pub fn total_requests(&self) -> usize {
        self.total
    }

    /// How many have no result yet.
    pub fn pending_requests(&self) -> usize {
        self.total - self.processed_requests()
    }

    /// How many have failed so far (cancelled ones included).
    pub fn failed_requests(&self) -> usize {
        self.failed
    }

    /// How many have succeeded so far.
    pub fn successful_requests(&self) -> usize {
        self.succeeded
    }

    /// How many have a result, success or failure.
    pub fn processed_requests(&self) -> usize {
        self.succeeded + self.failed
    }

    /// Whether every request has its result and the batch is wrapping up
    /// (true inside `then` and `finally`).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether any request failed.
    pub fn has_failures(&self) -> bool {
        self.failed > 0
    }
}
