//! The attempt loop every connection shares: one tracing span per attempt,
//! the timeout, panics as failures, `tries` with `backoff`, then `failed`
//! once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use tracing::Instrument;

use super::dispatch::{Connection, JobId};
use super::job::{Job, JobError};
use super::stats::Counters;

/// Where an attempt of a job runs, for the span and the counters.
#[derive(Clone)]
pub(crate) struct Run {
    pub(crate) id: JobId,
    pub(crate) connection: Connection,
    pub(crate) counters: Counters,
}

/// Runs `job` up to `job.tries()` times through `attempt` (given the
/// attempt number, from 1), waiting the backoff between attempts; calls
/// `failed` once if the last attempt fails. Returns the last outcome.
pub(crate) async fn run_attempts<J, A, Fut>(
    job: &J,
    ctx: &J::Context,
    run: &Run,
    mut attempt: A,
) -> Result<(), JobError>
where
    J: Job,
    A: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(), JobError>>,
{
    let tries = job.tries().max(1);
    let backoff = job.backoff();
    let mut number = 1;
    loop {
        let span = tracing::info_span!(
            "job",
            job = J::NAME,
            id = run.id.get(),
            connection = run.connection.as_str(),
            attempt = number,
            pid = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        run.counters.update(J::NAME, |s| s.running += 1);
        let started = Instant::now();
        let outcome = attempt(number).instrument(span.clone()).await;
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        span.record(
            "outcome",
            match &outcome {
                Ok(()) => "succeeded",
                Err(_) => "failed",
            },
        );
        match outcome {
            Ok(()) => {
                run.counters.update(J::NAME, |s| {
                    s.running -= 1;
                    s.succeeded += 1;
                });
                span.in_scope(|| tracing::debug!("job succeeded"));
                return Ok(());
            }
            Err(error) if number < tries => {
                let delay = backoff.delay(number);
                run.counters.update(J::NAME, |s| {
                    s.running -= 1;
                    s.retried += 1;
                });
                span.in_scope(|| {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "job attempt failed; retrying");
                });
                tokio::time::sleep(delay).await;
                number += 1;
            }
            Err(error) => {
                run.counters.update(J::NAME, |s| {
                    s.running -= 1;
                    s.failed += 1;
                });
                span.in_scope(|| {
                    tracing::error!(%error, tries, "job failed after its last attempt; calling `failed`");
                });
                let hook = AssertUnwindSafe(job.failed(&error, ctx))
                    .catch_unwind()
                    .instrument(span)
                    .await;
                if let Err(payload) = hook {
                    let panic = JobError::panicked(payload.as_ref());
                    tracing::error!(job = J::NAME, %panic, "the job's `failed` hook panicked");
                }
                return Err(error);
            }
        }
    }
}

/// One attempt in this process: `handle` under the job's timeout, a panic
/// caught as a failure.
pub(crate) async fn in_process<J: Job>(job: &J, ctx: &J::Context) -> Result<(), JobError> {
    let timeout = job.timeout();
    let handled = AssertUnwindSafe(job.handle(ctx)).catch_unwind();
    match tokio::time::timeout(timeout, handled).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(payload)) => Err(JobError::panicked(payload.as_ref())),
        Err(_) => Err(JobError::timed_out(timeout)),
    }
}
