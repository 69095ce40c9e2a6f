//! The batch engine: runs requests with a concurrency limit and calls the
//! arms one at a time, in completion order, on the batch's own task.
//!
//! The deadline bounds the requests, not the arms: once it passes, the
//! requests in flight are dropped and none starts, even while an arm runs;
//! a running arm is not cancelled. A panic anywhere in a batch (an arm, a
//! request's own code such as a retry predicate or a fake's reply closure,
//! a `Deserialize` impl) fails what it was working on, lets the other
//! requests finish, and resumes from `send` after `finally` has run once.

use std::any::Any;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
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
    /// Which requests have a result; kept only when the batch can stop
    /// early (a deadline or fail_fast), to settle the rest afterwards.
    done: Vec<bool>,
}

/// Runs every request and every arm; returns the results in definition
/// order. The first panic (of an arm, a request's own code or a decode) is
/// held until `finally` has run, then resumed.
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
    if span.is_disabled() {
        // No subscriber listens: no span to enter on every poll, or to time.
        return run_in_span(client, requests, slots, options, arms, None).await;
    }
    run_in_span(client, requests, slots, options, arms, Some(span.clone()))
        .instrument(span)
        .await
}

async fn run_in_span<S: Slots, A: Arms<S>>(
    client: &Client,
    requests: Vec<Request>,
    slots: S,
    options: &Options,
    arms: &mut A,
    span: Option<tracing::Span>,
) -> S::All {
    let total = requests.len();
    // Timing is for the span only.
    let timed = span.map(|span| (span, Instant::now()));
    // A request's key reaches its future only for the `batch.request`
    // span, at debug level: no copy of the keys when that cannot be seen.
    let keys: Option<Vec<S::Key>> = tracing::level_enabled!(tracing::Level::DEBUG)
        .then(|| (0..total).map(|i| slots.key(i)).collect());
    // Without a deadline or fail_fast every request completes: nothing to track.
    let may_stop_early = options.deadline.is_some() || options.fail_fast;
    let mut ledger = Ledger {
        slots,
        state: BatchState::new(total),
        panic: None,
        ready: VecDeque::new(),
        done: if may_stop_early {
            vec![false; total]
        } else {
            Vec::new()
        },
    };

    // The lanes of a small batch, inside this future: declared before
    // `in_flight`, which borrows them, so they outlive it.
    let mut inline_lanes = pin!(std::array::from_fn::<_, POLL_ALL_LANES, _>(|_| None));
    // `before` runs before any request starts: nothing is in flight yet.
    let mut in_flight: Option<InFlight<_, _>> = None;
    if A::BEFORE {
        drive(
            || arms.before(&ledger.state),
            &mut in_flight,
            &mut ledger.ready,
            &mut ledger.panic,
        )
        .await;
    }

    let start_request = |i| {
        let key = keys
            .as_ref()
            .map(|keys| &keys[i] as &(dyn std::fmt::Display + Sync));
        start(client, i, &requests[i], key)
    };
    // No arm to call while the requests run, nothing that stops the batch
    // early, and every request in flight at once: the requests are polled
    // together, as `tokio::join!` does, and each result goes straight to
    // its slot, without the lanes' bookkeeping or a queue.
    if !A::PROGRESS
        && !A::CATCH
        && !may_stop_early
        && total <= options.concurrency.min(POLL_ALL_LANES)
    {
        let mut lanes = Lanes::Inline(inline_lanes.as_mut(), total);
        for i in 0..total {
            lanes.lane(i).set(Some(start_request(i)));
        }
        join_lanes(&mut lanes, |completion| {
            settle_without_arms(&mut ledger, &requests, completion);
        })
        .await;
    } else {
        // The deadline lives in `InFlight`, so it is observed wherever the
        // requests are polled: here, and while an arm runs.
        in_flight = Some(InFlight::new(
            total,
            options.concurrency,
            options.deadline,
            inline_lanes.as_mut(),
            start_request,
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
            let failed = settle(&mut ledger, arms, &mut in_flight, &requests, completion).await;
            if failed && options.fail_fast {
                break;
            }
        }
    }
    let deadline_passed = in_flight.as_ref().is_some_and(|running| running.expired);
    // Cancel what still runs; what already completed is settled as it is.
    drop(in_flight.take());
    while let Some(completion) = ledger.ready.pop_front() {
        settle(&mut ledger, arms, &mut in_flight, &requests, completion).await;
    }
    for index in 0..ledger.done.len() {
        if ledger.done[index] {
            continue;
        }
        let request = &requests[index];
        if deadline_passed {
            let err = Error::new(
                ErrorKind::Deadline,
                "the batch deadline passed before this request finished (raise it with `Batch::deadline`)",
            )
            .with_request(&request.method, &redact::url_str(&request.target));
            let completion = Completion {
                index,
                result: Err(err),
                panic: None,
            };
            settle(&mut ledger, arms, &mut in_flight, &requests, completion).await;
        } else {
            // Cancelled by fail_fast: counted as failed, but no `catch`.
            let err = Error::cancelled("an earlier request failed and the batch is fail_fast")
                .with_request(&request.method, &redact::url_str(&request.target))
                .with_key(&ledger.slots.key(index));
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
    // Without a `then` arm (or after a panic, when it does not run) the
    // success values are not built: the results come out in one pass.
    let all = if !A::THEN || panic.is_some() {
        slots.finish_all()
    } else {
        match slots.finish() {
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
        }
    };
    // `finally` runs even after a panic in another arm.
    let mut finally_panic = None;
    if A::FINALLY {
        let (arms_ref, state_ref, all_ref) = (&mut *arms, &state, &all);
        drive(
            move || arms_ref.finally(state_ref, all_ref),
            &mut in_flight,
            &mut VecDeque::new(),
            &mut finally_panic,
        )
        .await;
    }
    if let Some((span, started)) = timed {
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
    if let Some(done) = ledger.done.get_mut(index) {
        *done = true;
    }
    if let Some(payload) = panic {
        report_panic(&mut ledger.panic, "the request's own code", payload);
    }
    let key = ledger.slots.key(index);
    // A slot that keeps the response itself takes it here (no clone, and
    // nothing to decode, so nothing that can panic); others decode it.
    let decoded = match result.map(|response| ledger.slots.keep(index, response)) {
        Err(err) => Err(err),
        Ok(Ok(kept)) => Ok(Seen::Kept(kept)),
        Ok(Err(response)) => decode(
            &mut ledger.slots,
            &mut ledger.panic,
            requests,
            index,
            &response,
        )
        .map(|()| Seen::Owned(response)),
    };
    match decoded {
        Ok(seen) => {
            ledger.state.record_success();
            if A::PROGRESS && ledger.panic.is_none() {
                let response = match &seen {
                    Seen::Kept(response) => response,
                    Seen::Owned(response) => response,
                };
                let (arms, state) = (&mut *arms, &ledger.state);
                let arm = move || arms.progress(state, key, response);
                drive(arm, in_flight, &mut ledger.ready, &mut ledger.panic).await;
            }
            false
        }
        Err(err) => {
            let err = err.with_key(&key);
            ledger.state.record_failure();
            if A::CATCH && ledger.panic.is_none() {
                let (arms, state, err) = (&mut *arms, &ledger.state, &err);
                let arm = move || arms.catch(state, key, err);
                drive(arm, in_flight, &mut ledger.ready, &mut ledger.panic).await;
            }
            ledger.slots.fail(index, err);
            true
        }
    }
}

/// Settles a completion when no arm is to be called for it: `settle`
/// without `progress` and `catch`, and with nothing to wait for. (Only for
/// a batch that cannot stop early, so no `done` to mark.)
fn settle_without_arms<S: Slots>(
    ledger: &mut Ledger<S>,
    requests: &[Request],
    completion: Completion,
) {
    let Completion {
        index,
        result,
        panic,
    } = completion;
    if let Some(payload) = panic {
        report_panic(&mut ledger.panic, "the request's own code", payload);
    }
    let stored = result.and_then(|response| match ledger.slots.keep(index, response) {
        Ok(_) => Ok(()),
        Err(response) => decode(
            &mut ledger.slots,
            &mut ledger.panic,
            requests,
            index,
            &response,
        ),
    });
    match stored {
        Ok(()) => ledger.state.record_success(),
        Err(err) => {
            ledger.state.record_failure();
            let err = err.with_key(&ledger.slots.key(index));
            ledger.slots.fail(index, err);
        }
    }
}

/// Decodes a success into its slot. A panic while decoding fails the
/// request and is held like an arm's.
fn decode<S: Slots>(
    slots: &mut S,
    panic: &mut Option<Panic>,
    requests: &[Request],
    index: usize,
    response: &Response,
) -> Result<(), Error> {
    std::panic::catch_unwind(AssertUnwindSafe(|| slots.decode(index, response)))
        .unwrap_or_else(|payload| {
            let err = Error::new(
                ErrorKind::Decode,
                format!(
                    "decoding the body panicked: {} (the panic resumes from `send` after `finally`)",
                    panic_message(&payload)
                ),
            );
            report_panic(panic, "decoding a response", payload);
            Err(err)
        })
        .map_err(|err| err.with_request(&requests[index].method, &redact::url(response.url())))
}

/// A success as the arms see it: kept in its slot, or decoded from it.
enum Seen<'a> {
    Kept(&'a Response),
    Owned(Response),
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
async fn start(
    client: &Client,
    index: usize,
    request: &Request,
    key: Option<&(dyn std::fmt::Display + Sync)>,
) -> Completion {
    match AssertUnwindSafe(client.execute(request, key))
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

/// Sets of at most this many requests in flight are polled all together on
/// every wake, as `tokio::join!` does; larger sets give each lane its own
/// waker, so a wake polls only the lanes that were woken.
const POLL_ALL_LANES: usize = 4;

/// The requests in flight: never more than `limit`, started in definition
/// order as earlier ones complete. Once the deadline passes, the stream
/// ends: the requests still running are dropped and none starts.
///
/// The futures live in `min(limit, total)` lanes: inside the batch's own
/// future for a few, otherwise in one box per batch. A lane is reused by the
/// next request when its request completes, so a request allocates nothing
/// here (`FuturesUnordered` allocates a task per future, and a request's
/// future is over a kilobyte: above the allocator's small sizes).
struct InFlight<'a, F, Fut> {
    start: F,
    next: usize,
    total: usize,
    lanes: Lanes<'a, Fut>,
    running: usize,
    /// `None`: few lanes, all polled on every wake.
    wakers: Option<LaneWakers>,
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

/// Where the lanes live.
enum Lanes<'a, Fut> {
    /// The first `len` of an array in the batch's future.
    Inline(Pin<&'a mut [Option<Fut>]>, usize),
    Boxed(Pin<Box<[Option<Fut>]>>),
}

impl<Fut> Lanes<'_, Fut> {
    fn len(&self) -> usize {
        match self {
            Lanes::Inline(_, len) => *len,
            Lanes::Boxed(lanes) => lanes.len(),
        }
    }

    fn is_free(&self, lane: usize) -> bool {
        match self {
            Lanes::Inline(lanes, _) => lanes[lane].is_none(),
            Lanes::Boxed(lanes) => lanes[lane].is_none(),
        }
    }

    fn lane(&mut self, lane: usize) -> Pin<&mut Option<Fut>> {
        let lanes = match self {
            Lanes::Inline(lanes, _) => lanes.as_mut(),
            Lanes::Boxed(lanes) => lanes.as_mut(),
        };
        // SAFETY: the lanes are pinned (in the batch's future or in their
        // box) and never moved out of; a lane's future is only replaced in
        // place, by `Pin::set`, which drops the old one where it lies.
        unsafe { lanes.map_unchecked_mut(|lanes| &mut lanes[lane]) }
    }
}

/// One waker per lane; waking it marks the lane and wakes the batch's task.
struct LaneWakers {
    wakers: Box<[Waker]>,
    shared: Arc<LaneShared>,
    /// The lanes without a request, so a start does not scan for one.
    free: Vec<usize>,
}

struct LaneShared {
    /// One bit per lane: woken since it was last polled.
    woken: Box<[AtomicU64]>,
    task: AtomicWaker,
}

struct LaneWaker {
    lane: usize,
    shared: Arc<LaneShared>,
}

impl Wake for LaneWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken[self.lane / 64].fetch_or(1 << (self.lane % 64), Ordering::AcqRel);
        self.shared.task.wake();
    }
}

impl LaneWakers {
    fn new(lanes: usize) -> Self {
        let shared = Arc::new(LaneShared {
            woken: (0..lanes.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            task: AtomicWaker::new(),
        });
        let wakers = (0..lanes)
            .map(|lane| {
                Waker::from(Arc::new(LaneWaker {
                    lane,
                    shared: shared.clone(),
                }))
            })
            .collect();
        LaneWakers {
            wakers,
            shared,
            free: (0..lanes).rev().collect(),
        }
    }

    fn mark(&self, lane: usize) {
        self.shared.woken[lane / 64].fetch_or(1 << (lane % 64), Ordering::AcqRel);
    }
}

impl<'a, F, Fut> InFlight<'a, F, Fut>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Completion>,
{
    /// `inline` holds the lanes when there are at most [`POLL_ALL_LANES`].
    fn new(
        total: usize,
        limit: usize,
        deadline: Option<Duration>,
        inline: Pin<&'a mut [Option<Fut>; POLL_ALL_LANES]>,
        start: F,
    ) -> Self {
        let lanes = limit.max(1).min(total);
        InFlight {
            start,
            next: 0,
            total,
            lanes: if lanes <= POLL_ALL_LANES {
                Lanes::Inline(inline, lanes)
            } else {
                Lanes::Boxed(Box::into_pin((0..lanes).map(|_| None).collect()))
            },
            running: 0,
            wakers: (lanes > POLL_ALL_LANES).then(|| LaneWakers::new(lanes)),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep(d))),
            expired: false,
        }
    }

    /// Starts requests in the free lanes, in definition order.
    fn fill(&mut self) {
        if self.running == self.lanes.len() || self.next == self.total {
            return;
        }
        if let Some(wakers) = &mut self.wakers {
            while self.next < self.total {
                let Some(lane) = wakers.free.pop() else { break };
                let future = (self.start)(self.next);
                self.lanes.lane(lane).set(Some(future));
                wakers.mark(lane);
                self.next += 1;
                self.running += 1;
            }
            return;
        }
        for lane in 0..self.lanes.len() {
            if self.next == self.total {
                break;
            }
            if self.lanes.is_free(lane) {
                let future = (self.start)(self.next);
                self.lanes.lane(lane).set(Some(future));
                self.next += 1;
                self.running += 1;
            }
        }
    }

    /// The next completion among the lanes that may have progressed.
    fn poll_lanes(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let InFlight {
            lanes,
            running,
            wakers,
            ..
        } = self;
        let Some(wakers) = wakers else {
            for lane in 0..lanes.len() {
                if let Some(completion) = poll_lane(lanes, running, lane, cx) {
                    return Poll::Ready(Some(completion));
                }
            }
            return Poll::Pending;
        };
        // Registered before the bits are read: a wake after this point
        // wakes the task again.
        wakers.shared.task.register(cx.waker());
        for word in 0..wakers.shared.woken.len() {
            let mut bits = wakers.shared.woken[word].swap(0, Ordering::AcqRel);
            while bits != 0 {
                let lane = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let mut lane_cx = Context::from_waker(&wakers.wakers[lane]);
                let completion = poll_lane(lanes, running, lane, &mut lane_cx);
                if let Some(completion) = completion {
                    wakers.free.push(lane);
                    // The lanes not polled yet stay marked for the next call.
                    wakers.shared.woken[word].fetch_or(bits, Ordering::AcqRel);
                    return Poll::Ready(Some(completion));
                }
            }
        }
        Poll::Pending
    }
}

/// Polls one lane; a completed request frees it.
fn poll_lane<Fut: Future<Output = Completion>>(
    lanes: &mut Lanes<'_, Fut>,
    running: &mut usize,
    lane: usize,
    cx: &mut Context<'_>,
) -> Option<Completion> {
    let mut slot = lanes.lane(lane);
    let future = slot.as_mut().as_pin_mut()?;
    match future.poll(cx) {
        Poll::Ready(completion) => {
            slot.set(None);
            *running -= 1;
            Some(completion)
        }
        Poll::Pending => None,
    }
}

/// Polls every lane on each wake until all are empty, handing each
/// completion to `complete` as it arrives.
async fn join_lanes<Fut: Future<Output = Completion>>(
    lanes: &mut Lanes<'_, Fut>,
    mut complete: impl FnMut(Completion),
) {
    let mut running = lanes.len();
    poll_fn(|cx| {
        for lane in 0..lanes.len() {
            if let Some(completion) = poll_lane(lanes, &mut running, lane, cx) {
                complete(completion);
            }
        }
        if running == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

impl<F, Fut> InFlight<'_, F, Fut> {
    /// Drops every request in flight.
    fn cancel(&mut self) {
        for lane in 0..self.lanes.len() {
            self.lanes.lane(lane).set(None);
        }
        self.running = 0;
    }
}

/// Inline lanes outlive this value: their requests are dropped with it.
impl<F, Fut> Drop for InFlight<'_, F, Fut> {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl<F, Fut> futures_util::Stream for InFlight<'_, F, Fut>
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
                this.cancel();
                return Poll::Ready(None);
            }
        }
        this.fill();
        if this.running == 0 {
            return Poll::Ready(None);
        }
        this.poll_lanes(cx)
    }
}
