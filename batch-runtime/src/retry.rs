//! Per-request retry: how many times, how long to wait, and on what.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};

use crate::error::{Error, ErrorKind};

type Predicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Retry policy for one request. Batch arms see only the final attempt.
///
/// **On what.** By default a retry happens on connection errors, timeouts
/// and the statuses 429, 502, 503 and 504; [`Retry::when`] replaces that
/// rule.
///
/// **Which methods.** Only idempotent methods (`GET`, `HEAD`, `PUT`,
/// `DELETE`, `OPTIONS`, `TRACE`) are retried after an error where the
/// request may have reached the server (a timeout, a status, a broken
/// connection), so a `POST` that timed out is not charged twice. Other
/// methods (`POST`, `PATCH`, …) are retried only after an error that proves
/// nothing was sent ([`ErrorKind::Connect`]: the connection could not be
/// made; a connect *timeout* is reported as [`ErrorKind::Timeout`] and does
/// not count), or after any retryable error with [`Retry::non_idempotent`]
/// (for endpoints that de-duplicate, e.g. by an idempotency key). The
/// method rule holds with [`Retry::when`] too.
///
/// **How long.** The backoff before attempt *n + 1* is
/// `backoff × 2ⁿ⁻¹`, capped at [`Retry::max_backoff`], with jitter: a
/// random part of up to half of it is taken off (so it is between 50% and
/// 100% of the computed value), which spreads out clients that failed
/// together. A `Retry-After` header on the failed response, in seconds
/// (`120`) or as an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`), is a
/// lower bound: the wait is the longer of it and the backoff, so
/// `Retry-After: 0` does not turn the backoff off. An ask longer than
/// [`Retry::max_retry_after`] ends the retries with that response.
///
/// ```
/// use std::time::Duration;
/// use batch_runtime::{Request, Retry};
///
/// let read = Request::get("/flaky").retry(Retry::times(3).backoff(Duration::from_millis(50)));
/// let charge = Request::post("/charge")
///     .header("idempotency-key", "order-17")
///     .retry(Retry::times(2).non_idempotent());
/// ```
#[derive(Clone)]
pub struct Retry {
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    when: Option<Predicate>,
    non_idempotent: bool,
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
            non_idempotent: false,
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

    /// Retries non-idempotent methods (`POST`, `PATCH`, …) on every
    /// retryable error, not only when nothing was sent. Use it when the
    /// endpoint de-duplicates repeated requests (an idempotency key).
    #[must_use]
    pub fn non_idempotent(mut self) -> Self {
        self.non_idempotent = true;
        self
    }

    /// The number of retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// How long to wait before the next attempt, or `None` to stop.
    /// `attempt` is the 1-based number of the attempt that just failed.
    pub(crate) fn next_wait(&self, attempt: u32, method: &Method, err: &Error) -> Option<Duration> {
        let backoff = self.backoff_for(attempt, err, method)?;
        Some(
            backoff
                .mul_f64(1.0 - jitter() / 2.0)
                .max(retry_after(err).unwrap_or_default()),
        )
    }

    /// The wait before jitter and `Retry-After`, or `None` to stop.
    fn backoff_for(&self, attempt: u32, err: &Error, method: &Method) -> Option<Duration> {
        if attempt > self.retries {
            return None;
        }
        let maybe_sent = err.kind() != &ErrorKind::Connect;
        if maybe_sent && !self.non_idempotent && !is_idempotent(method) {
            return None;
        }
        let retryable = match &self.when {
            Some(predicate) => predicate(err),
            None => default_retryable(err),
        };
        if !retryable {
            return None;
        }
        if retry_after(err).is_some_and(|asked| asked > self.max_retry_after) {
            return None;
        }
        let factor = 2u32.saturating_pow(attempt - 1);
        Some(self.backoff.saturating_mul(factor).min(self.max_backoff))
    }
}

/// Methods that RFC 9110 defines as idempotent: sending one twice has the
/// effect of sending it once.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A random fraction in `[0, 1)`. std's `RandomState` is seeded from the
/// OS per thread and differs per call, which is random enough to spread
/// retries; no RNG crate needed for that.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(0u8) >> 11;
    bits as f64 / (1u64 << 53) as f64
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

/// `Retry-After` on a status error's response: delta-seconds, or an
/// HTTP date (a date in the past asks for no wait).
fn retry_after(err: &Error) -> Option<Duration> {
    let value = err
        .response()?
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("custom_predicate", &self.when.is_some())
            .field("non_idempotent", &self.non_idempotent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Response;

    fn status_with_retry_after(value: &str) -> Error {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        let url = reqwest::Url::parse("http://h.test/x").unwrap();
        Error::status_error(Response::new(
            StatusCode::SERVICE_UNAVAILABLE,
            headers,
            url,
            &[],
        ))
    }

    fn waits(retry: &Retry, method: &Method, err: &Error, attempts: u32) -> Vec<Option<Duration>> {
        (1..=attempts)
            .map(|n| retry.next_wait(n, method, err))
            .collect()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_stops_after_the_retries() {
        let retry = Retry::times(4)
            .backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(300));
        let err = Error::new(ErrorKind::Connect, "refused");
        let expected = [100u64, 200, 300, 300];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let got = waits(&retry, &Method::GET, &err, 5);
            assert_eq!(got[4], None, "no fifth retry");
            for (wait, full) in got.iter().zip(expected) {
                let wait = wait.expect("retried");
                let full = Duration::from_millis(full);
                assert!(wait <= full && wait >= full / 2, "{wait:?} vs {full:?}");
                seen.insert(wait);
            }
        }
        assert!(seen.len() > 4, "jitter varies the waits: {seen:?}");
    }

    #[test]
    fn only_transient_failures_are_retried_by_default() {
        let retry = Retry::times(1);
        let get = &Method::GET;
        assert!(retry
            .next_wait(1, get, &Error::new(ErrorKind::Decode, "bad json"))
            .is_none());
        assert!(retry
            .next_wait(1, get, &Error::new(ErrorKind::Timeout, "slow"))
            .is_some());
        let custom = Retry::times(1).when(|e| e.is_decode());
        assert!(custom
            .next_wait(1, get, &Error::new(ErrorKind::Decode, "bad json"))
            .is_some());
    }

    #[test]
    fn non_idempotent_methods_are_retried_only_when_nothing_was_sent_or_when_asked() {
        let timeout = Error::new(ErrorKind::Timeout, "slow");
        let refused = Error::new(ErrorKind::Connect, "refused");
        let unavailable = status_with_retry_after("0");
        let retry = Retry::times(1);
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(retry.next_wait(1, &method, &timeout).is_none(), "{method}");
            assert!(
                retry.next_wait(1, &method, &unavailable).is_none(),
                "{method}"
            );
            assert!(retry.next_wait(1, &method, &refused).is_some(), "{method}");
            let custom = Retry::times(1).when(|_| true);
            assert!(custom.next_wait(1, &method, &timeout).is_none(), "{method}");
            let asked = Retry::times(1).non_idempotent();
            assert!(asked.next_wait(1, &method, &timeout).is_some(), "{method}");
        }
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            assert!(retry.next_wait(1, &method, &timeout).is_some(), "{method}");
        }
    }

    #[test]
    fn retry_after_zero_keeps_the_backoff() {
        let retry = Retry::times(3).backoff(Duration::from_millis(100));
        let err = status_with_retry_after("0");
        let got = waits(&retry, &Method::GET, &err, 3);
        for (wait, full) in got.into_iter().zip([100u64, 200, 400]) {
            let wait = wait.expect("retried");
            assert!(wait >= Duration::from_millis(full) / 2, "{wait:?}");
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound_in_seconds_or_as_an_http_date() {
        let retry = Retry::times(1).backoff(Duration::from_millis(1));
        let seconds = retry.next_wait(1, &Method::GET, &status_with_retry_after("2"));
        assert_eq!(seconds, Some(Duration::from_secs(2)));

        let in_five = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
        let wait = retry
            .next_wait(1, &Method::GET, &status_with_retry_after(&in_five))
            .expect("retried");
        // HTTP dates have whole seconds: between 4 and 5 s from now.
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );

        let past = status_with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT");
        let wait = retry.next_wait(1, &Method::GET, &past).expect("retried");
        assert!(wait <= Duration::from_millis(1), "{wait:?}");

        let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(
            retry.next_wait(1, &Method::GET, &status_with_retry_after(&far)),
            None
        );
    }
}
