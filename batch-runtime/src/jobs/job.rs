//! The [`Job`] trait, its error type and its retry schedule ([`Backoff`]).

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one attempt of a job may run unless [`Job::timeout`] says
/// otherwise: one minute. No job runs forever by default.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A unit of work that is not an HTTP call the response needs: a
/// serializable struct with an async [`handle`](Job::handle) over the
/// application's typed context, dispatched through [`Jobs`](super::Jobs)
/// on a [`Connection`](super::Connection).
///
/// Only [`NAME`](Job::NAME), [`Context`](Job::Context) and
/// [`handle`](Job::handle) are required. Each attempt is bounded by
/// [`timeout`](Job::timeout); a failed attempt (an `Err`, a panic, a
/// timeout, or for background jobs a crashed child) is retried up to
/// [`tries`](Job::tries) attempts in all, waiting [`backoff`](Job::backoff)
/// between them; after the last one [`failed`](Job::failed) runs once.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use batch_runtime::jobs::{Job, JobError};
/// use serde::{Deserialize, Serialize};
///
/// struct AppState {
///     delivered: AtomicUsize,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct RecordDelivery {
///     order: u64,
/// }
///
/// impl Job for RecordDelivery {
///     const NAME: &'static str = "record-delivery";
///     type Context = AppState;
///
///     async fn handle(&self, ctx: &AppState) -> Result<(), JobError> {
///         ctx.delivered.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     }
///
///     fn tries(&self) -> u32 {
///         3
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job: it does not implement `batch_runtime::jobs::Job`",
    label = "only a type that implements `Job` can be dispatched",
    note = "derive `Serialize` and `Deserialize` for it and `impl Job for {Self}` with a `NAME`, a `Context` and an async `handle`"
)]
pub trait Job: Serialize + DeserializeOwned + JobSafe {
    /// A stable name: in logs, stats, the fake's messages and the
    /// background child's registry. Keep it stable across releases.
    const NAME: &'static str;

    /// The application state `handle` receives (a `Client`, a pool, ...).
    type Context: Send + Sync + 'static;

    /// Does the work. An `Err` or a panic fails the attempt. Any
    /// `std::error::Error` converts into [`JobError`] with `?`.
    fn handle(&self, ctx: &Self::Context) -> impl Future<Output = Result<(), JobError>> + Send;

    /// How many attempts in all (default 1: no retry; 0 counts as 1).
    fn tries(&self) -> u32 {
        1
    }

    /// How long to wait before each retry (default [`Backoff::default`]).
    fn backoff(&self) -> Backoff {
        Backoff::default()
    }

    /// How long one attempt may run (default [`DEFAULT_JOB_TIMEOUT`]). A
    /// background child still running then is killed.
    fn timeout(&self) -> Duration {
        DEFAULT_JOB_TIMEOUT
    }

    /// Runs once, after the last attempt failed, with that attempt's
    /// error. For background jobs it runs in the parent, with the
    /// parent's context. A panic here is caught and logged.
    fn failed(&self, error: &JobError, ctx: &Self::Context) -> impl Future<Output = ()> + Send {
        let _ = (error, ctx);
        async {}
    }
}

/// What a job must be besides serializable: `Send + Sync + 'static`,
/// because it is moved to the connection that runs it (another task,
/// another thread, another process) and outlives the dispatching handler.
/// Implemented for every such type; it exists so the compiler's error
/// names the rule.
#[diagnostic::on_unimplemented(
    message = "a job must be `Send + Sync + 'static`, but `{Self}` is not",
    label = "this job outlives the handler that dispatches it and may run on another thread",
    note = "make the job own plain data (`String`, not `&str`; `Arc`, not `Rc`); put shared handles in the job's `Context`"
)]
pub trait JobSafe: Send + Sync + 'static {}

impl<T: Send + Sync + 'static> JobSafe for T {}

/// Why a job attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobErrorKind {
    /// `handle` returned an error.
    Failed,
    /// `handle` panicked.
    Panicked,
    /// The attempt ran longer than [`Job::timeout`].
    TimedOut,
    /// The background child died without reporting an outcome (abort,
    /// signal, stack overflow, out of memory) or could not be started.
    Crashed,
}

/// The error of a failed job attempt: what `handle` returned, or what the
/// runtime observed (a panic, a timeout, a crashed child).
///
/// Any `std::error::Error` converts into it, so `?` works in
/// [`Job::handle`]; [`JobError::new`] takes a message.
#[derive(Clone, PartialEq, Eq)]
pub struct JobError {
    kind: JobErrorKind,
    message: String,
}

impl JobError {
    /// A failure with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        JobError::with_kind(JobErrorKind::Failed, message)
    }

    pub(crate) fn with_kind(kind: JobErrorKind, message: impl fmt::Display) -> Self {
        JobError {
            kind,
            message: message.to_string(),
        }
    }

    pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        JobError::with_kind(JobErrorKind::Panicked, text)
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        JobError::with_kind(
            JobErrorKind::TimedOut,
            format!(
                "the attempt ran longer than its timeout of {after:?}; raise `Job::timeout` if it needs more"
            ),
        )
    }

    /// Why the attempt failed.
    pub fn kind(&self) -> JobErrorKind {
        self.kind
    }

    /// The message alone (the error's text, the panic message, the exit
    /// status of a crashed child).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether `handle` panicked.
    pub fn is_panic(&self) -> bool {
        self.kind == JobErrorKind::Panicked
    }

    /// Whether the attempt ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind == JobErrorKind::TimedOut
    }

    /// Whether a background child died without reporting an outcome.
    pub fn is_crash(&self) -> bool {
        self.kind == JobErrorKind::Crashed
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            JobErrorKind::Failed => write!(f, "{}", self.message),
            JobErrorKind::Panicked => write!(f, "the job panicked: {}", self.message),
            JobErrorKind::TimedOut => write!(f, "{}", self.message),
            JobErrorKind::Crashed => write!(f, "the job's child process crashed: {}", self.message),
        }
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError::new(error)
    }
}

/// How long to wait before retry `n` of a job: exponential (`base`,
/// `2 × base`, `4 × base`, ...) up to `cap`, minus a random share of up
/// to `jitter` of it so that jobs failing together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use batch_runtime::jobs::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
}

impl Backoff {
    /// Doubling from `base`, never above `cap`, with the default jitter
    /// (20 %).
    pub fn exponential(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            jitter: 0.2,
        }
    }

    /// The same delay before every retry, without jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            base: delay,
            cap: delay,
            jitter: 0.0,
        }
    }

    /// Retry at once.
    pub fn none() -> Self {
        Backoff::fixed(Duration::ZERO)
    }

    /// Takes a random share of up to `fraction` (clamped to 0..=1) off
    /// each delay; 0 makes the delays exact.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay before retry `retry` (1 = the wait after the first
    /// attempt failed), jitter included.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if self.jitter == 0.0 {
            return ceiling;
        }
        ceiling.mul_f64(1.0 - self.jitter * unit_random())
    }

    /// The delay before retry `retry` without jitter: the most it waits.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The jitter fraction.
    pub fn jitter_fraction(&self) -> f64 {
        self.jitter
    }
}

impl Default for Backoff {
    /// Exponential from 1 s, capped at 1 min, 20 % jitter.
    fn default() -> Self {
        Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// A number in `0..1`, from std's randomly keyed hasher: jitter needs no
/// quality randomness, only different values in different processes.
fn unit_random() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b =
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50)).jitter(0.0);
        let delays: Vec<_> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(50));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b =
            Backoff::exponential(Duration::from_millis(1000), Duration::from_secs(10)).jitter(0.5);
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(
                d <= Duration::from_millis(1000) && d >= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }

    #[test]
    fn panic_payloads_become_messages() {
        let e = JobError::panicked(&"boom");
        assert!(e.is_panic());
        assert_eq!(e.to_string(), "the job panicked: boom");
    }
}
