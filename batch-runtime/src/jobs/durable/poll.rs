//! How an idle worker looks for jobs: on a timer that always stays armed.

use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};

/// Wakes an idle worker every `interval` to look for jobs.
///
/// Instead of apalis' `IntervalStrategy`: when its timer fires it arms a
/// new one without polling it, so no wake-up is registered; if the fetch
/// in flight then finds nothing, the worker sleeps until something else
/// wakes it (its next heartbeat, up to 30 s) however short the interval.
/// This one always leaves a timer armed, as `PollStrategy::poll_drive`'s
/// contract asks.
pub(crate) struct EveryInterval(tokio::time::Interval);

impl EveryInterval {
    /// Needs a tokio runtime.
    pub(crate) fn new(interval: Duration) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        EveryInterval(ticks)
    }
}

impl PollStrategy for EveryInterval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut ticked = false;
        // Until `Pending`, which registers the waker for the next tick.
        while self.0.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if ticked {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
