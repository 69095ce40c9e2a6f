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
use crate::slots::{IndexSlots, Json, KeyedSlots, Slots};
use crate::state::BatchState;

/// A set of requests that run concurrently, with lifecycle arms.
///
/// `batch!` builds one with typed keys and results; [`Batch::new`] and
/// [`Batch::keyed`] build one at run time from any number of requests. A
/// batch is consumed by [`send`](Batch::send): it cannot be sent twice.
///
/// The type parameters are where the results land (`S`, see
/// [`types`](crate::types)) and the arms (`A`); plain `Batch` is what
/// [`Batch::new`] builds: responses by index, no arm.
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
pub struct Batch<S = IndexSlots, A = ArmSet> {
    requests: Vec<Request>,
    slots: S,
    arms: A,
    options: Options,
}

impl Batch {
    /// A batch keyed by index (definition order), keeping each response.
    /// [`send`](Batch::send) returns a `Vec<Result<Response, Error>>`,
    /// [`try_send`](Batch::try_send) a `Vec<Response>`, in definition order.
    pub fn new(requests: impl IntoIterator<Item = Request>) -> Self {
        let requests: Vec<Request> = requests.into_iter().collect();
        let slots = IndexSlots::new(requests.len());
        Batch::from_parts(requests, slots, ArmSet::default())
    }

    /// Decodes every successful body as JSON into `T`; a body that does not
    /// decode is a failure of that request.
    pub fn json<T: DeserializeOwned>(self) -> Batch<IndexSlots<Json<T>>> {
        Batch {
            requests: self.requests,
            slots: self.slots.retype(),
            arms: self.arms,
            options: self.options,
        }
    }
}

impl<K> Batch<KeyedSlots<K>>
where
    K: Clone + std::fmt::Display + Send + Sync,
{
    /// A batch with your own keys (strings, ids …), shown in errors and
    /// passed to `progress` and `catch`. [`send`](Batch::send) returns a
    /// [`Keyed`](crate::Keyed)`<K, Result<Response, Error>>`, looked up by
    /// key (`results["eu"]`) and iterated in definition order;
    /// [`try_send`](Batch::try_send) a `Keyed<K, Response>`.
    pub fn keyed(requests: impl IntoIterator<Item = (K, Request)>) -> Self {
        let (keys, requests): (Vec<K>, Vec<Request>) = requests.into_iter().unzip();
        Batch::from_parts(requests, KeyedSlots::new(keys), ArmSet::default())
    }

    /// Decodes every successful body as JSON into `T`; a body that does not
    /// decode is a failure of that request.
    pub fn json<T: DeserializeOwned>(self) -> Batch<KeyedSlots<K, Json<T>>> {
        Batch {
            requests: self.requests,
            slots: self.slots.retype(),
            arms: self.arms,
            options: self.options,
        }
    }
}

impl<S: Slots, A> Batch<S, A> {
    /// A batch over slots and arms; `batch!` builds its batches with this
    /// (through `__private::with_arms`).
    pub(crate) fn from_parts(requests: Vec<Request>, slots: S, arms: A) -> Self {
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

/// For each arm, its two setters: `before` takes a plain closure,
/// `before_async` a closure returning a future. Each replaces one type
/// parameter of the [`ArmSet`] and keeps the other four.
macro_rules! arm_setters {
    ($(
        $(#[doc = $doc:literal])+
        fn $sync:ident / $async_:ident ($($arg:ty),*) {
            sets $field:ident, keeps $($keep:ident),*
        } -> $sync_ret:ty, $async_ret:ty;
    )*) => {$(
        $(#[doc = $doc])+
        pub fn $sync<G>(self, arm: G) -> Batch<S, $sync_ret>
        where
            G: FnMut($($arg),*),
        {
            self.map_arms(|a| ArmSet { $field: SyncArm(arm), $($keep: a.$keep),* })
        }

        #[doc = concat!(
            "`", stringify!($sync), "`, as a closure returning a `Send` future that does \
             not borrow the arguments (`|..| async move { .. }`, see [`AsyncArm`])."
        )]
        pub fn $async_<G, Fut>(self, arm: G) -> Batch<S, $async_ret>
        where
            G: FnMut($($arg),*) -> Fut,
            Fut: Future<Output = ()> + Send,
        {
            self.map_arms(|a| ArmSet { $field: AsyncArm(arm), $($keep: a.$keep),* })
        }
    )*};
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

    arm_setters! {
        /// `before`: once, before any request starts.
        fn before / before_async (&BatchState) {
            sets before, keeps progress, then, catch, finally
        } -> ArmSet<SyncArm<G>, P, T, C, F>, ArmSet<AsyncArm<G>, P, T, C, F>;

        /// `progress`: once per success, in completion order.
        fn progress / progress_async (&BatchState, S::Key, &Response) {
            sets progress, keeps before, then, catch, finally
        } -> ArmSet<B, SyncArm<G>, T, C, F>, ArmSet<B, AsyncArm<G>, T, C, F>;

        /// `then`: once, with every success value, only if nothing failed.
        fn then / then_async (&BatchState, &S::AllOk) {
            sets then, keeps before, progress, catch, finally
        } -> ArmSet<B, P, SyncArm<G>, C, F>, ArmSet<B, P, AsyncArm<G>, C, F>;

        /// `catch`: once per failure, in completion order.
        fn catch / catch_async (&BatchState, S::Key, &Error) {
            sets catch, keeps before, progress, then, finally
        } -> ArmSet<B, P, T, SyncArm<G>, F>, ArmSet<B, P, T, AsyncArm<G>, F>;

        /// `finally`: once, always, last, with every result.
        fn finally / finally_async (&BatchState, &S::All) {
            sets finally, keeps before, progress, then, catch
        } -> ArmSet<B, P, T, C, SyncArm<G>>, ArmSet<B, P, T, C, AsyncArm<G>>;
    }
}

impl<S: Slots, A: Arms<S>> Batch<S, A> {
    /// Runs the batch and returns every result, in definition order:
    ///
    /// | batch | `send` returns |
    /// |---|---|
    /// | `batch! { payment: .. => Charge, .. }` | its `Results` struct: a field per key, `payment: Result<Charge, Error>` |
    /// | [`Batch::new`] | `Vec<Result<Response, Error>>` (`Vec<Result<T, Error>>` after `.json::<T>()`) |
    /// | [`Batch::keyed`] | [`Keyed`](crate::Keyed)`<K, Result<Response, Error>>`, looked up by key |
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
    /// The success values are a `Succeeded` struct for `batch!` (a field per
    /// key, `payment: Charge`), a `Vec` for [`Batch::new`] and a
    /// [`Keyed`](crate::Keyed)`<K, T>` for [`Batch::keyed`].
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
