//! Per-request retry: how many times, how long to wait, and on what.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;

use crate::error::{Error, ErrorKind};

type Predicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Retry policy for one request.
///
/// By default a retry happens only on connection errors, timeouts and the
/// statuses 429, 502, 503 and 504; [`Retry::when`] replaces that rule. The
/// wait before attempt *n + 1* is `backoff × 2ⁿ⁻¹`, capped at
/// [`Retry::max_backoff`]; a `Retry-After: <seconds>` header on the failed
/// response is honoured instead when it asks for no more than
/// [`Retry::max_retry_after`] (a longer ask ends the retries). Batch arms see
/// only the final attempt.
///
/// ```
/// use std::time::Duration;
/// use batch_runtime::{Request, Retry};
///
/// let request = Request::get("/flaky").retry(Retry::times(3).backoff(Duration::from_millis(50)));
/// ```
#[derive(Clone)]
pub struct Retry {
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    when: Option<Predicate>,
}

impl Retry {
    /// Retry up to `retries` times after the first attempt (so at most
    /// `retries + 1` attempts), starting with a 100 ms backoff.
    pub fn times(retries: u32) -> Self {
        Retry {
            retries,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            when: None,
        }
    }

    /// The first wait; it doubles each retry.
    #[must_use]
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The longest computed wait (default 10 s).
    #[must_use]
    pub fn max_backoff(mut self, cap: Duration) -> Self {
        self.max_backoff = cap;
        self
    }

    /// The longest `Retry-After` that is honoured (default 30 s). A server
    /// asking for longer ends the retries with its response.
    #[must_use]
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// Retry exactly when `predicate` says so, instead of the default rule.
    #[must_use]
    pub fn when(mut self, predicate: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(predicate));
        self
    }

    /// The number of retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// How long to wait before the next attempt, or `None` to stop.
    /// `attempt` is the 1-based number of the attempt that just failed.
    pub(crate) fn next_wait(&self, attempt: u32, err: &Error) -> Option<Duration> {
        if attempt > self.retries {
            return None;
        }
        let retryable = match &self.when {
            Some(predicate) => predicate(err),
            None => default_retryable(err),
        };
        if !retryable {
            return None;
        }
        if let Some(asked) = retry_after(err) {
            return (asked <= self.max_retry_after).then_some(asked);
        }
        let factor = 2u32.saturating_pow(attempt - 1);
        Some(self.backoff.saturating_mul(factor).min(self.max_backoff))
    }
}

fn default_retryable(err: &Error) -> bool {
    match err.kind() {
        ErrorKind::Connect | ErrorKind::Timeout => true,
        ErrorKind::Status(status) => matches!(
            *status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        ),
        _ => false,
    }
}

/// `Retry-After` in delta-seconds form on a status error's response.
fn retry_after(err: &Error) -> Option<Duration> {
    let value = err.response()?.headers().get(RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("custom_predicate", &self.when.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_the_retries() {
        let retry = Retry::times(4)
            .backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(300));
        let err = Error::new(ErrorKind::Connect, "refused");
        let waits: Vec<_> = (1..=5).map(|n| retry.next_wait(n, &err)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(waits, vec![ms(100), ms(200), ms(300), ms(300), None]);
    }

    #[test]
    fn only_transient_failures_are_retried_by_default() {
        let retry = Retry::times(1);
        assert!(retry
            .next_wait(1, &Error::new(ErrorKind::Decode, "bad json"))
            .is_none());
        assert!(retry
            .next_wait(1, &Error::new(ErrorKind::Timeout, "slow"))
            .is_some());
        let custom = Retry::times(1).when(|e| e.is_decode());
        assert!(custom
            .next_wait(1, &Error::new(ErrorKind::Decode, "bad json"))
            .is_some());
    }
}
