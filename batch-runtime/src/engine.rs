//! The batch engine: runs requests with a concurrency limit and calls the
//! arms one at a time, in completion order, on the batch's own task.

use std::any::Any;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Sleep;
use tracing::Instrument;

use crate::arms::Arms;
use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::redact;
use crate::request::Request;
use crate::response::Response;
use crate::slots::Slots;
use crate::state::BatchState;

/// Requests in flight at once unless [`Batch::concurrency`](crate::Batch::concurrency)
/// says otherwise: enough that a batch of a few keys runs all at once, few
/// enough that a 10,000-request batch does not open 10,000 sockets.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// How a batch runs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) concurrency: usize,
    pub(crate) deadline: Option<Duration>,
    pub(crate) fail_fast: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: DEFAULT_CONCURRENCY,
            deadline: None,
            fail_fast: false,
        }
    }
}

type Panic = Box<dyn Any + Send + 'static>;

/// One request's end: its result, and the panic of code that ran for it
/// outside the arms (a retry predicate, a fake's reply closure), if any.
struct Completion {
    index: usize,
    result: Result<Response, Error>,
    panic: Option<Panic>,
}

/// What the run loop keeps besides the arms and the requests in flight.
struct Ledger<S: Slots> {
    slots: S,
    state: BatchState,
    /// The first panic of an arm (or of a request's own code), resumed
    /// after `finally`.
    panic: Option<Panic>,
    /// Completions that arrived while an arm was running, in order.
    ready: VecDeque<Completion>,
    done: Vec<bool>,
}

/// Runs every request and every arm; returns the results in definition
/// order. A panic in an arm is held until `finally` has run, then resumed.
pub(crate) async fn run<S: Slots, A: Arms<S>>(
    client: &Client,
    requests: Vec<Request>,
    slots: S,
    options: &Options,
    arms: &mut A,
) -> S::All {
    let span = tracing::info_span!(
        "batch",
        requests = requests.len(),
        concurrency = options.concurrency,
        failed = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    run_in_span(client, requests, slots, options, arms)
        .instrument(span)
        .await
}

async fn run_in_span<S: Slots, A: Arms<S>>(
    client: &Client,
    requests: Vec<Request>,
    slots: S,
    options: &Options,
    arms: &mut A,
) -> S::All {
    let total = requests.len();
    let span = tracing::Span::current();
    // Timing is for the span only: skip it when no subscriber listens.
    let started = (!span.is_disabled()).then(Instant::now);
    let keys: Vec<S::Key> = (0..total).map(|i| slots.key(i)).collect();
    let mut ledger = Ledger {
        slots,
        state: BatchState::new(total),
        panic: None,
        ready: VecDeque::new(),
        done: vec![false; total],
    };

    // `before` runs before any request starts: nothing is in flight yet.
    let mut in_flight: Option<InFlight<_, _>> = None;
    drive(
        || arms.before(&ledger.state),
        &mut in_flight,
        &mut ledger.ready,
        &mut ledger.panic,
    )
    .await;

    // The deadline lives in `InFlight`, so it is observed wherever the
    // requests are polled: here, and while an arm runs.
    in_flight = Some(InFlight::new(
        total,
        options.concurrency,
        options.deadline,
        |i| start(client, i, &requests[i], &keys[i]),
    ));
    loop {
        let completion = match ledger.ready.pop_front() {
            Some(completion) => completion,
            None => match in_flight.as_mut() {
                Some(running) => match running.next().await {
                    Some(completion) => completion,
                    None => break,
                },
                None => break,
            },
        };
        let failed = settle(
            &mut ledger,
            arms,
            &mut in_flight,
            &requests,
            &keys,
            completion,
        )
        .await;
        if failed && options.fail_fast {
            break;
        }
    }
    let deadline_passed = in_flight.as_ref().is_some_and(|running| running.expired);
    // Cancel what still runs; what already completed is settled as it is.
    drop(in_flight.take());
    while let Some(completion) = ledger.ready.pop_front() {
        settle(
            &mut ledger,
            arms,
            &mut in_flight,
            &requests,
            &keys,
            completion,
        )
        .await;
    }
    for index in 0..total {
        if ledger.done[index] {
            continue;
        }
        let request = &requests[index];
        if deadline_passed {
            let err = Error::new(
                ErrorKind::Deadline,
                "the batch deadline passed before it finished",
            )
            .with_request(&request.method, &redact::url_str(&request.target));
            let completion = Completion {
                index,
                result: Err(err),
                panic: None,
            };
            settle(
                &mut ledger,
                arms,
                &mut in_flight,
                &requests,
                &keys,
                completion,
            )
            .await;
        } else {
            // Cancelled by fail_fast: counted as failed, but no `catch`.
            let err = Error::cancelled("an earlier request failed and the batch is fail_fast")
                .with_request(&request.method, &redact::url_str(&request.target))
                .with_key(&keys[index]);
            ledger.done[index] = true;
            ledger.state.record_failure();
            ledger.slots.fail(index, err);
        }
    }

    let Ledger {
        slots,
        mut state,
        mut panic,
        ..
    } = ledger;
    state.finish();
    let all = match slots.finish() {
        Ok(ok) => {
            if panic.is_none() {
                let (arms, state, ok) = (&mut *arms, &state, &ok);
                drive(
                    move || arms.then(state, ok),
                    &mut in_flight,
                    &mut VecDeque::new(),
                    &mut panic,
                )
                .await;
            }
            S::widen(ok)
        }
        Err(all) => all,
    };
    // `finally` runs even after a panic in another arm.
    let mut finally_panic = None;
    let (arms_ref, state_ref, all_ref) = (&mut *arms, &state, &all);
    drive(
        move || arms_ref.finally(state_ref, all_ref),
        &mut in_flight,
        &mut VecDeque::new(),
        &mut finally_panic,
    )
    .await;
    if let Some(started) = started {
        span.record("failed", state.failed_requests());
        span.record("duration_ms", started.elapsed().as_millis() as u64);
    }
    if let Some(payload) = panic.or(finally_panic) {
        resume_unwind(payload);
    }
    all
}

/// Records one result in its slot and the counters, then runs `progress`
/// or `catch` for it (unless something already panicked). Returns whether
/// it was a failure. A panic while decoding fails the request and is held
/// like an arm's.
async fn settle<S, A, I>(
    ledger: &mut Ledger<S>,
    arms: &mut A,
    in_flight: &mut Option<I>,
    requests: &[Request],
    keys: &[S::Key],
    completion: Completion,
) -> bool
where
    S: Slots,
    A: Arms<S>,
    I: futures_util::Stream<Item = Completion> + Unpin,
{
    let Completion {
        index,
        result,
        panic,
    } = completion;
    ledger.done[index] = true;
    if let Some(payload) = panic {
        report_panic(&mut ledger.panic, "the request's own code", payload);
    }
    let key = &keys[index];
    let decoded = result.and_then(|response| {
        let slots = &mut ledger.slots;
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| slots.decode(index, &response)))
            .unwrap_or_else(|payload| {
                let err = Error::new(
                    ErrorKind::Decode,
                    format!(
                        "decoding the body panicked: {} (the panic resumes from `send` after `finally`)",
                        panic_message(&payload)
                    ),
                );
                report_panic(&mut ledger.panic, "decoding a response", payload);
                Err(err)
            });
        match decoded {
            Ok(()) => Ok(response),
            Err(err) => Err(err.with_request(&requests[index].method, &redact::url(response.url()))),
        }
    });
    match decoded {
        Ok(response) => {
            ledger.state.record_success();
            if ledger.panic.is_none() {
                let (arms, state, key, response) =
                    (&mut *arms, &ledger.state, key.clone(), &response);
                let arm = move || arms.progress(state, key, response);
                drive(arm, in_flight, &mut ledger.ready, &mut ledger.panic).await;
            }
            false
        }
        Err(err) => {
            let err = err.with_key(key);
            ledger.state.record_failure();
            if ledger.panic.is_none() {
                let (arms, state, key, err) = (&mut *arms, &ledger.state, key.clone(), &err);
                let arm = move || arms.catch(state, key, err);
                drive(arm, in_flight, &mut ledger.ready, &mut ledger.panic).await;
            }
            ledger.slots.fail(index, err);
            true
        }
    }
}

/// Runs an arm to completion while the requests in flight keep going
/// (their completions queue up in `ready`), so a slow arm cannot starve
/// them into timeouts. A panic, whether the closure's own (sync arms run
/// when called) or its future's, is caught into `panic`.
async fn drive<Call, Fut, I>(
    call: Call,
    in_flight: &mut Option<I>,
    ready: &mut VecDeque<Completion>,
    panic: &mut Option<Panic>,
) where
    Call: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
    I: futures_util::Stream<Item = Completion> + Unpin,
{
    let arm = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(arm) => arm,
        Err(payload) => {
            report_panic(panic, "a batch arm", payload);
            return;
        }
    };
    let mut arm = pin!(AssertUnwindSafe(arm).catch_unwind());
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(outcome) = arm.as_mut().poll(cx) {
            return Poll::Ready(outcome);
        }
        if let Some(in_flight) = in_flight.as_mut() {
            while let Poll::Ready(Some(completion)) = in_flight.poll_next_unpin(cx) {
                ready.push_back(completion);
            }
        }
        Poll::Pending
    })
    .await;
    if let Err(payload) = outcome {
        report_panic(panic, "a batch arm", payload);
    }
}

/// Keeps the first panic to resume after `finally`; later ones are logged only.
fn report_panic(panic: &mut Option<Panic>, what: &str, payload: Panic) {
    tracing::error!(panic = %panic_message(&payload), "{what} panicked; `finally` still runs");
    panic.get_or_insert(payload);
}

pub(crate) fn panic_message(payload: &Panic) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// One request's future: sends it (with retries) under its key. A panic in
/// the request's own code (a retry predicate, a fake's reply closure) fails
/// the request and travels with it, to resume after `finally`.
async fn start<K: std::fmt::Display + Sync>(
    client: &Client,
    index: usize,
    request: &Request,
    key: &K,
) -> Completion {
    match AssertUnwindSafe(client.execute(request, Some(key)))
        .catch_unwind()
        .await
    {
        Ok(result) => Completion {
            index,
            result,
            panic: None,
        },
        Err(payload) => {
            let err = Error::cancelled(&format!(
                "the request panicked: {} (the panic resumes from `send` after `finally`)",
                panic_message(&payload)
            ))
            .with_request(&request.method, &redact::url_str(&request.target));
            Completion {
                index,
                result: Err(err),
                panic: Some(payload),
            }
        }
    }
}

/// The requests in flight: never more than `limit`, started in definition
/// order as earlier ones complete. Once the deadline passes, the stream
/// ends: the requests still running are dropped and none starts.
struct InFlight<F, Fut> {
    start: F,
    next: usize,
    total: usize,
    limit: usize,
    running: FuturesUnordered<Fut>,
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl<F, Fut> InFlight<F, Fut>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Completion>,
{
    fn new(total: usize, limit: usize, deadline: Option<Duration>, start: F) -> Self {
        InFlight {
            start,
            next: 0,
            total,
            limit: limit.max(1),
            running: FuturesUnordered::new(),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep(d))),
            expired: false,
        }
    }

    fn fill(&mut self) {
        while self.running.len() < self.limit && self.next < self.total {
            self.running.push((self.start)(self.next));
            self.next += 1;
        }
    }
}

impl<F, Fut> futures_util::Stream for InFlight<F, Fut>
where
    F: FnMut(usize) -> Fut + Unpin,
    Fut: Future<Output = Completion>,
{
    type Item = Completion;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        // The deadline first: a completion observed after it counts as late.
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.expired = true;
                this.running.clear();
                return Poll::Ready(None);
            }
        }
        this.fill();
        match this.running.poll_next_unpin(cx) {
            Poll::Ready(Some(completion)) => {
                this.fill();
                Poll::Ready(Some(completion))
            }
            other => other,
        }
    }
}
