//! The attempt loop on the `sync` connection: retries follow the backoff,
//! `failed` runs exactly once after the last attempt, a panic or a timeout
//! is a failed attempt, the counters add up, and a connection that is not
//! configured (or does not exist) is a clear error at dispatch.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_runtime::defer::DeferRuntime;
use batch_runtime::jobs::{
    Backoff, Connection, DispatchError, Job, JobError, JobStats, Jobs, DEFAULT_JOB_TIMEOUT,
};
use serde::{Deserialize, Serialize};

/// Every test is bounded: a hung job fails the test instead of hanging it.
async fn within<T>(work: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the test finished within 20 s")
}

#[derive(Default)]
struct Ctx {
    attempts: AtomicU32,
    started: Mutex<Vec<Instant>>,
    failed: Mutex<Vec<String>>,
}

/// Fails its first `failures` attempts.
#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    failures: u32,
    tries: u32,
    base_ms: u64,
}

impl Job for Flaky {
    const NAME: &'static str = "flaky";
    type Context = Ctx;

    async fn handle(&self, ctx: &Ctx) -> Result<(), JobError> {
        ctx.started.lock().unwrap().push(Instant::now());
        let attempt = ctx.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt <= self.failures {
            return Err(JobError::new(format!("attempt {attempt} failed")));
        }
        Ok(())
    }

    fn tries(&self) -> u32 {
        self.tries
    }

    fn backoff(&self) -> Backoff {
        Backoff::exponential(Duration::from_millis(self.base_ms), Duration::from_secs(5))
            .jitter(0.0)
    }

    async fn failed(&self, error: &JobError, ctx: &Ctx) {
        ctx.failed.lock().unwrap().push(error.to_string());
    }
}

fn jobs(ctx: &Arc<Ctx>) -> Jobs<Ctx> {
    Jobs::builder(ctx.clone()).build()
}

#[tokio::test]
async fn retries_follow_the_backoff_and_then_failed_runs_exactly_once() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx);
    let job = Flaky {
        failures: u32::MAX,
        tries: 3,
        base_ms: 60,
    };

    let dispatched = within(jobs.dispatch(job).on(Connection::Sync))
        .await
        .expect("sync is always configured");

    let outcome = dispatched.outcome().expect("sync returns the outcome");
    assert_eq!(outcome.as_ref().unwrap_err().message(), "attempt 3 failed");
    assert_eq!(ctx.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(*ctx.failed.lock().unwrap(), ["attempt 3 failed"]);
    let started = ctx.started.lock().unwrap().clone();
    let gaps: Vec<Duration> = started.windows(2).map(|w| w[1] - w[0]).collect();
    // 60 ms then 120 ms (exponential, no jitter); generous upper bounds.
    assert!(gaps[0] >= Duration::from_millis(60), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(120), "{gaps:?}");
    assert!(
        gaps[1] < Duration::from_millis(120) + Duration::from_secs(2),
        "{gaps:?}"
    );
    let mut expected = JobStats::default();
    expected.dispatched = 1;
    expected.failed = 1;
    expected.retried = 2;
    assert_eq!(jobs.stats().of::<Flaky>(), expected);
}

#[tokio::test]
async fn a_job_that_succeeds_on_a_retry_does_not_call_failed() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx);
    let job = Flaky {
        failures: 2,
        tries: 3,
        base_ms: 1,
    };

    let dispatched = within(jobs.dispatch(job).on(Connection::Sync))
        .await
        .unwrap();

    assert_eq!(dispatched.outcome(), Some(&Ok(())));
    assert_eq!(ctx.attempts.load(Ordering::SeqCst), 3);
    assert!(ctx.failed.lock().unwrap().is_empty());
    let stats = jobs.stats().of::<Flaky>();
    assert_eq!(
        (stats.succeeded, stats.failed, stats.retried, stats.running),
        (1, 0, 2, 0)
    );
}

/// Panics on the attempts listed in `panic_on`.
#[derive(Debug, Serialize, Deserialize)]
struct Panicky {
    panic_on: Vec<u32>,
    tries: u32,
}

impl Job for Panicky {
    const NAME: &'static str = "panicky";
    type Context = Ctx;

    async fn handle(&self, ctx: &Ctx) -> Result<(), JobError> {
        let attempt = ctx.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_on.contains(&attempt) {
            panic!("invoice template missing on attempt {attempt}");
        }
        Ok(())
    }

    fn tries(&self) -> u32 {
        self.tries
    }

    fn backoff(&self) -> Backoff {
        Backoff::none()
    }

    async fn failed(&self, error: &JobError, ctx: &Ctx) {
        ctx.failed
            .lock()
            .unwrap()
            .push(format!("panic={} {error}", error.is_panic()));
    }
}

#[tokio::test]
async fn a_panic_in_handle_counts_as_a_failed_attempt() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx);

    // Retried after the panic, then succeeds.
    let retried = within(
        jobs.dispatch(Panicky {
            panic_on: vec![1],
            tries: 2,
        })
        .on(Connection::Sync),
    )
    .await
    .unwrap();
    assert_eq!(retried.outcome(), Some(&Ok(())));
    assert!(ctx.failed.lock().unwrap().is_empty());

    // Out of tries: the panic is the failure given to `failed`.
    let failed = within(
        jobs.dispatch(Panicky {
            panic_on: vec![3],
            tries: 1,
        })
        .on(Connection::Sync),
    )
    .await
    .unwrap();
    let error = failed.outcome().unwrap().as_ref().unwrap_err();
    assert!(error.is_panic(), "{error:?}");
    assert_eq!(
        *ctx.failed.lock().unwrap(),
        ["panic=true the job panicked: invoice template missing on attempt 3"]
    );
    let stats = jobs.stats().of::<Panicky>();
    assert_eq!(
        (
            stats.dispatched,
            stats.succeeded,
            stats.failed,
            stats.retried
        ),
        (2, 1, 1, 1)
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Sleeper {
    timeout_ms: u64,
}

impl Job for Sleeper {
    const NAME: &'static str = "sleeper";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[tokio::test]
async fn an_attempt_longer_than_its_timeout_fails_as_timed_out() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx);
    let started = Instant::now();

    let dispatched = within(
        jobs.dispatch(Sleeper { timeout_ms: 100 })
            .on(Connection::Sync),
    )
    .await
    .unwrap();

    let error = dispatched.outcome().unwrap().as_ref().unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(error.to_string().contains("Job::timeout"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(jobs.stats().of::<Sleeper>().failed, 1);
}

#[test]
fn the_default_timeout_is_one_minute() {
    assert_eq!(DEFAULT_JOB_TIMEOUT, Duration::from_secs(60));
    assert_eq!(
        Flaky {
            failures: 0,
            tries: 1,
            base_ms: 1
        }
        .timeout(),
        DEFAULT_JOB_TIMEOUT
    );
}

#[tokio::test]
async fn an_unconfigured_connection_is_a_clear_error_at_dispatch() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx);
    let job = || Flaky {
        failures: 0,
        tries: 1,
        base_ms: 1,
    };

    let background = within(jobs.dispatch(job()).on(Connection::Background))
        .await
        .unwrap_err();
    assert_eq!(
        background,
        DispatchError::NotConfigured {
            job: "flaky",
            connection: Connection::Background
        }
    );
    assert_eq!(
        background.to_string(),
        "cannot dispatch job `flaky`: the `background` connection is not configured; add `.background(BackgroundConfig::default())` to `Jobs::builder` and call `child_entry` first in `main`"
    );

    let deferred = within(jobs.dispatch(job()).on(Connection::Deferred))
        .await
        .unwrap_err();
    assert!(
        deferred
            .to_string()
            .contains("the `deferred` connection is not configured; in a handler dispatch with `.after(&deferred)`"),
        "{deferred}"
    );

    // Nothing ran and nothing counts as dispatched.
    assert_eq!(ctx.attempts.load(Ordering::SeqCst), 0);
    assert_eq!(jobs.stats().of::<Flaky>(), JobStats::default());
}

#[test]
fn an_unknown_connection_name_is_a_clear_error() {
    let error = "redis".parse::<Connection>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown job connection `redis`: expected one of `sync`, `deferred`, `background`, `durable`, `failover`"
    );
    assert_eq!(
        "background".parse::<Connection>(),
        Ok(Connection::Background)
    );
}

#[tokio::test]
async fn without_on_a_dispatch_goes_to_the_default_connection() {
    let ctx = Arc::new(Ctx::default());
    let runtime = DeferRuntime::new();
    let jobs = Jobs::builder(ctx.clone())
        .deferred(&runtime)
        .default_connection(Connection::Deferred)
        .build();

    let dispatched = within(jobs.dispatch(Flaky {
        failures: 0,
        tries: 1,
        base_ms: 1,
    }))
    .await
    .unwrap();

    // Outside a request `deferred` runs through `defer::scope`: done on return.
    assert_eq!(dispatched.connection(), Connection::Deferred);
    assert_eq!(dispatched.outcome(), None);
    assert_eq!(ctx.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(runtime.stats().completed, 1);
    assert_eq!(jobs.stats().of::<Flaky>().succeeded, 1);
}
