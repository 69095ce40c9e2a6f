//! [`Batch`]: requests, options and arms, consumed by `send`.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::arms::{ArmSet, Arms, AsyncArm, SyncArm};
use crate::client::Client;
use crate::engine::{self, Options};
use crate::error::Error;
use crate::request::Request;
use crate::response::Response;
use crate::slots::{DynSlots, Json, Raw, Slots};
use crate::state::BatchState;

/// A set of requests that run concurrently, with lifecycle arms.
///
/// `batch!` builds one with typed keys and results; [`Batch::new`] and
/// [`Batch::keyed`] build one at run time from any number of requests. A
/// batch is consumed by [`send`](Batch::send): it cannot be sent twice.
///
/// ```
/// use batch_runtime::fake::{Fake, Reply};
/// use batch_runtime::{Batch, Method, Request};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let fake = Fake::new();
/// fake.stub(Method::GET, "*", Reply::json(&7));
/// let client = fake.client();
///
/// let urls = (0..100).map(|i| format!("http://numbers.test/{i}"));
/// let mut seen = 0;
/// let numbers: Vec<u32> = Batch::new(urls.map(Request::get))
///     .json::<u32>()
///     .concurrency(8)
///     .progress(|_, _, _| seen += 1)
///     .try_send(&client)
///     .await?;
/// assert_eq!(numbers.len(), 100);
/// assert_eq!(seen, 100);
/// # Ok::<(), batch_runtime::Error>(()) }).unwrap();
/// ```
#[must_use = "a batch does nothing until it is sent"]
pub struct Batch<S, A = ArmSet> {
    requests: Vec<Request>,
    slots: S,
    arms: A,
    options: Options,
}

impl Batch<DynSlots<usize, Raw>> {
    /// A batch keyed by index (definition order), keeping each response.
    pub fn new(requests: impl IntoIterator<Item = Request>) -> Self {
        let requests: Vec<Request> = requests.into_iter().collect();
        let keys = (0..requests.len()).collect();
        Batch::from_slots(requests, DynSlots::new(keys))
    }
}

impl<K> Batch<DynSlots<K, Raw>>
where
    K: Clone + std::fmt::Display + Send + Sync + 'static,
{
    /// A batch with your own keys (strings, ids …), shown in errors and
    /// passed to `progress` and `catch`.
    pub fn keyed(requests: impl IntoIterator<Item = (K, Request)>) -> Self {
        let (keys, requests): (Vec<K>, Vec<Request>) = requests.into_iter().unzip();
        Batch::from_slots(requests, DynSlots::new(keys))
    }

    /// Decodes every successful body as JSON into `T`; a body that does not
    /// decode is a failure of that request.
    pub fn json<T: DeserializeOwned>(self) -> Batch<DynSlots<K, Json<T>>> {
        Batch {
            requests: self.requests,
            slots: self.slots.retype(),
            arms: self.arms,
            options: self.options,
        }
    }
}

impl<S: Slots> Batch<S> {
    /// A batch over slots you provide, with no arm yet.
    pub fn from_slots(requests: Vec<Request>, slots: S) -> Self {
        Batch::from_parts(requests, slots, ArmSet::default())
    }
}

impl<S: Slots, A> Batch<S, A> {
    /// A batch over slots and arms you provide; `batch!` uses this with a
    /// [`Dispatch`](crate::Dispatch), so that its arms share what they capture.
    pub fn from_parts(requests: Vec<Request>, slots: S, arms: A) -> Self {
        debug_assert_eq!(requests.len(), slots.len());
        Batch {
            requests,
            slots,
            arms,
            options: Options::default(),
        }
    }

    /// How many requests the batch has.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the batch has no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// At most `limit` requests in flight at once (at least 1). The default
    /// is [`DEFAULT_CONCURRENCY`](crate::DEFAULT_CONCURRENCY).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.options.concurrency = limit.max(1);
        self
    }

    /// Requests still unfinished `deadline` after the requests start (after
    /// `before`) fail with [`ErrorKind::Deadline`](crate::ErrorKind::Deadline)
    /// (`catch` runs for each).
    ///
    /// The deadline bounds the requests, not the arms. When it passes, the
    /// requests in flight are dropped and no other starts, even while an arm
    /// is running; a response that arrives after it counts as `Deadline`.
    /// An arm that is running is not cancelled, and the arms still due
    /// (`catch` for each late request, then `finally`) run after it, so
    /// `send` returns later than the deadline by as long as the arms take.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.options.deadline = Some(deadline);
        self
    }

    /// The first failure cancels the rest: they end as
    /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled), without `catch`.
    pub fn fail_fast(mut self) -> Self {
        self.options.fail_fast = true;
        self
    }
}

impl<S: Slots, B, P, T, C, F> Batch<S, ArmSet<B, P, T, C, F>> {
    fn map_arms<A2>(self, change: impl FnOnce(ArmSet<B, P, T, C, F>) -> A2) -> Batch<S, A2> {
        Batch {
            requests: self.requests,
            slots: self.slots,
            arms: change(self.arms),
            options: self.options,
        }
    }

    /// `before`: once, before any request starts.
    pub fn before<G>(self, arm: G) -> Batch<S, ArmSet<SyncArm<G>, P, T, C, F>>
    where
        G: FnMut(&BatchState),
    {
        self.map_arms(|a| ArmSet {
            before: SyncArm(arm),
            progress: a.progress,
            then: a.then,
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `before`, as a closure returning a future (`|b| async move { .. }`).
    /// The future must be `Send` and must not borrow the arguments.
    pub fn before_async<G, Fut>(self, arm: G) -> Batch<S, ArmSet<AsyncArm<G>, P, T, C, F>>
    where
        G: FnMut(&BatchState) -> Fut,
        Fut: Future<Output = ()> + Send,
    {
        self.map_arms(|a| ArmSet {
            before: AsyncArm(arm),
            progress: a.progress,
            then: a.then,
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `progress`: once per success, in completion order.
    pub fn progress<G>(self, arm: G) -> Batch<S, ArmSet<B, SyncArm<G>, T, C, F>>
    where
        G: FnMut(&BatchState, S::Key, &Response),
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: SyncArm(arm),
            then: a.then,
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `progress`, as a closure returning a `Send` future that does not borrow
    /// the arguments (see [`AsyncArm`]).
    pub fn progress_async<G, Fut>(self, arm: G) -> Batch<S, ArmSet<B, AsyncArm<G>, T, C, F>>
    where
        G: FnMut(&BatchState, S::Key, &Response) -> Fut,
        Fut: Future<Output = ()> + Send,
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: AsyncArm(arm),
            then: a.then,
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `then`: once, with every success value, only if nothing failed.
    pub fn then<G>(self, arm: G) -> Batch<S, ArmSet<B, P, SyncArm<G>, C, F>>
    where
        G: FnMut(&BatchState, &S::AllOk),
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: SyncArm(arm),
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `then`, as a closure returning a `Send` future that does not borrow
    /// the arguments (see [`AsyncArm`]).
    pub fn then_async<G, Fut>(self, arm: G) -> Batch<S, ArmSet<B, P, AsyncArm<G>, C, F>>
    where
        G: FnMut(&BatchState, &S::AllOk) -> Fut,
        Fut: Future<Output = ()> + Send,
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: AsyncArm(arm),
            catch: a.catch,
            finally: a.finally,
        })
    }

    /// `catch`: once per failure, in completion order.
    pub fn catch<G>(self, arm: G) -> Batch<S, ArmSet<B, P, T, SyncArm<G>, F>>
    where
        G: FnMut(&BatchState, S::Key, &Error),
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: a.then,
            catch: SyncArm(arm),
            finally: a.finally,
        })
    }

    /// `catch`, as a closure returning a `Send` future that does not borrow
    /// the arguments (see [`AsyncArm`]).
    pub fn catch_async<G, Fut>(self, arm: G) -> Batch<S, ArmSet<B, P, T, AsyncArm<G>, F>>
    where
        G: FnMut(&BatchState, S::Key, &Error) -> Fut,
        Fut: Future<Output = ()> + Send,
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: a.then,
            catch: AsyncArm(arm),
            finally: a.finally,
        })
    }

    /// `finally`: once, always, last, with every result.
    pub fn finally<G>(self, arm: G) -> Batch<S, ArmSet<B, P, T, C, SyncArm<G>>>
    where
        G: FnMut(&BatchState, &S::All),
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: a.then,
            catch: a.catch,
            finally: SyncArm(arm),
        })
    }

    /// `finally`, as a closure returning a `Send` future that does not borrow
    /// the arguments (see [`AsyncArm`]).
    pub fn finally_async<G, Fut>(self, arm: G) -> Batch<S, ArmSet<B, P, T, C, AsyncArm<G>>>
    where
        G: FnMut(&BatchState, &S::All) -> Fut,
        Fut: Future<Output = ()> + Send,
    {
        self.map_arms(|a| ArmSet {
            before: a.before,
            progress: a.progress,
            then: a.then,
            catch: a.catch,
            finally: AsyncArm(arm),
        })
    }
}

impl<S: Slots, A: Arms<S>> Batch<S, A> {
    /// Runs the batch and returns every result in definition order.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of an arm, after `finally` has run.
    pub async fn send(mut self, client: &Client) -> S::All {
        engine::run(
            client,
            self.requests,
            self.slots,
            &self.options,
            &mut self.arms,
        )
        .await
    }

    /// Runs the batch and returns every success value, or the first error
    /// in definition order. Arms run exactly as with [`Batch::send`].
    ///
    /// # Errors
    ///
    /// The first failed request's error.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of an arm, after `finally` has run.
    pub async fn try_send(self, client: &Client) -> Result<S::AllOk, Error> {
        S::first_error(self.send(client).await)
    }
}

impl<S, A> std::fmt::Debug for Batch<S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("requests", &self.requests)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch future is `Send` in generic code whenever its parts are:
    /// what deferring a batch onto another task relies on.
    #[allow(dead_code)]
    fn batch_future_is_send_in_generic_code<S, A>(batch: Batch<S, A>, client: Client)
    where
        S: Slots + Send + 'static,
        S::All: Send + Sync,
        S::AllOk: Send + Sync,
        A: Arms<S> + Send + 'static,
    {
        fn is_send<T: Send + 'static>(_: T) {}
        is_send(async move {
            batch.send(&client).await;
        });
    }
}
