//! [`Deferred`]: the per-request (or per-scope) handle work is deferred on,
//! [`Registered`], [`scope`] and [`Batch::defer`].

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::runtime::{DeferRuntime, Group, Job, LocalFuture, MakeFuture};
use super::DeferSafe;
use crate::arms::Arms;
use crate::batch::Batch;
use crate::client::Client;
use crate::slots::Slots;

/// A handle for deferring work until the response has been sent (or, in a
/// [`scope`], until the scope's body has finished).
///
/// In an axum handler it is an extractor, installed by
/// [`DeferLayer`](super::DeferLayer). Work registered on it is held until
/// the response body has been written to the client (or dropped because
/// the client went away), then handed to the [`DeferRuntime`]:
///
/// - a response with status ≥ 400, or no response at all (the handler was
///   cancelled or panicked), runs only the work marked
///   [`always`](Registered::always);
/// - work named with [`Registered::name`] can be removed with
///   [`Deferred::forget`] until it starts;
/// - once the response is out, work registered on the handle (from
///   deferred work that kept a clone, for example) goes straight to the
///   runtime.
///
/// Cheap to clone; clones share the registered work.
///
/// ```
/// use batch_runtime::defer::{self, DeferRuntime};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runtime = DeferRuntime::new();
/// let (tx, rx) = std::sync::mpsc::channel();
/// defer::scope(&runtime, |deferred| async move {
///     let tx2 = tx.clone();
///     deferred.spawn(async move { tx2.send("audit").unwrap(); }).name("audit");
///     deferred.spawn(async move { tx.send("email").unwrap(); }).name("email");
///     assert_eq!(deferred.forget("email"), 1);
/// })
/// .await;
/// assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["audit"]);
/// # });
/// ```
#[derive(Clone)]
pub struct Deferred {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: DeferRuntime,
    group: Option<Arc<Group>>,
    state: Mutex<State>,
}

enum State {
    /// The response is not out yet: work waits here.
    Collecting {
        work: Vec<Pending>,
        /// Whether the runtime counts this handle as holding work.
        opened: bool,
    },
    /// The response is out; `run_all` is false when it failed.
    Released { run_all: bool },
}

/// A job and whether it runs even when the response failed.
pub(crate) struct Pending {
    job: Job,
    always: bool,
}

impl Deferred {
    pub(crate) fn new(runtime: &DeferRuntime, group: Option<Arc<Group>>) -> Deferred {
        Deferred {
            inner: Arc::new(Inner {
                runtime: runtime.clone(),
                group,
                state: Mutex::new(State::Collecting {
                    work: Vec::new(),
                    opened: false,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// The runtime the work will run on.
    pub fn runtime(&self) -> &DeferRuntime {
        &self.inner.runtime
    }

    /// Runs `work` after the response. Chain [`name`](Registered::name) or
    /// [`always`](Registered::always) on the result to configure it.
    ///
    /// `work` must be `Send + 'static`: move owned, thread-safe values in.
    ///
    /// ```
    /// # use batch_runtime::defer::{self, DeferRuntime};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let runtime = DeferRuntime::new();
    /// defer::scope(&runtime, |deferred| async move {
    ///     let order_id = 42;
    ///     deferred
    ///         .spawn(async move { println!("audit order {order_id}") })
    ///         .name("audit")
    ///         .always();
    /// })
    /// .await;
    /// # });
    /// ```
    pub fn spawn<F>(&self, work: F) -> Registered<'_>
    where
        F: Future<Output = ()> + DeferSafe,
    {
        let job = self.job(Job::new(work));
        Registered::new(self, vec![job])
    }

    /// Runs every work of `works` after the response, concurrently (each
    /// is its own work on the runtime). `name` and `always` on the result
    /// apply to all of them.
    ///
    /// ```
    /// # use batch_runtime::defer::{self, DeferRuntime};
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let runtime = DeferRuntime::new();
    /// let warmed = Arc::new(AtomicUsize::new(0));
    /// let counter = warmed.clone();
    /// defer::scope(&runtime, |deferred| async move {
    ///     deferred.spawn_all((0..3).map(|shard| {
    ///         let counter = counter.clone();
    ///         async move { counter.fetch_add(shard, Ordering::SeqCst); }
    ///     }));
    /// })
    /// .await;
    /// assert_eq!(warmed.load(Ordering::SeqCst), 3);
    /// # });
    /// ```
    pub fn spawn_all<I>(&self, works: I) -> Registered<'_>
    where
        I: IntoIterator,
        I::Item: Future<Output = ()> + DeferSafe,
    {
        let jobs = works
            .into_iter()
            .map(|work| self.job(Job::new(work)))
            .collect();
        Registered::new(self, jobs)
    }

    /// Registers a work given as a recipe for a (possibly `!Send`) future.
    pub(crate) fn register(&self, make: MakeFuture) -> Registered<'_> {
        let job = self.job(Job {
            name: None,
            make,
            ticket: None,
        });
        Registered::new(self, vec![job])
    }

    fn job(&self, mut job: Job) -> Pending {
        if let Some(group) = &self.inner.group {
            job.ticket = Some(group.ticket());
        }
        Pending { job, always: false }
    }

    /// Removes the work named `name` that has not started: on this handle
    /// before the response is out, on the runtime's queue after. Returns
    /// how many works were removed.
    pub fn forget(&self, name: &str) -> usize {
        let mut state = self.lock();
        match &mut *state {
            State::Collecting { work, .. } => {
                let before = work.len();
                work.retain(|p| p.job.name.as_deref() != Some(name));
                before - work.len()
            }
            State::Released { .. } => {
                drop(state);
                self.inner.runtime.forget(name)
            }
        }
    }

    /// How many works wait for the response.
    pub fn len(&self) -> usize {
        match &*self.lock() {
            State::Collecting { work, .. } => work.len(),
            State::Released { .. } => 0,
        }
    }

    /// Whether no work waits for the response.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the response is out (work registered now is handed to the
    /// runtime at once).
    pub fn is_released(&self) -> bool {
        matches!(&*self.lock(), State::Released { .. })
    }

    fn push(&self, jobs: Vec<Pending>) {
        if jobs.is_empty() {
            return;
        }
        let mut state = self.lock();
        match &mut *state {
            State::Collecting { work, opened } => {
                if !*opened {
                    *opened = true;
                    self.inner.runtime.handle_opened();
                }
                work.extend(jobs);
            }
            State::Released { run_all } => {
                let run_all = *run_all;
                drop(state);
                let (run, skip): (Vec<Pending>, Vec<Pending>) =
                    jobs.into_iter().partition(|p| run_all || p.always);
                if !skip.is_empty() {
                    self.inner.runtime.count_skipped(skip.len());
                }
                // A rejection is logged and counted by the runtime.
                let _ = self
                    .inner
                    .runtime
                    .submit(run.into_iter().map(|p| p.job).collect());
            }
        }
    }

    /// The response is out (`run_all`: it succeeded) or will never be
    /// (`run_all` false): hands the work to the runtime. Only the first
    /// call counts.
    pub(crate) fn release(&self, run_all: bool) {
        self.inner.release(run_all);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, run_all: bool) {
        let mut state = self.lock();
        let State::Collecting { work, opened } = &mut *state else {
            return;
        };
        let work = std::mem::take(work);
        let opened = *opened;
        *state = State::Released { run_all };
        drop(state);
        if !opened {
            return;
        }
        let total = work.len();
        let jobs: Vec<Job> = work
            .into_iter()
            .filter(|p| run_all || p.always)
            .map(|p| p.job)
            .collect();
        let skipped = total - jobs.len();
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "deferred work skipped: the response failed and the work is not `always`"
            );
        }
        self.runtime.handle_closed(skipped, jobs);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Never released: no response was produced.
        self.release(false);
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("waiting", &self.len())
            .field("released", &self.is_released())
            .finish()
    }
}

/// Work just registered on a [`Deferred`]; configure it with
/// [`name`](Registered::name) and [`always`](Registered::always). It is
/// handed to the handle when this value is dropped (at the end of the
/// statement, usually). It gives no access to the work's results: nothing
/// in the response can depend on deferred work.
pub struct Registered<'a> {
    deferred: &'a Deferred,
    jobs: Vec<Pending>,
}

impl<'a> Registered<'a> {
    fn new(deferred: &'a Deferred, jobs: Vec<Pending>) -> Self {
        Registered { deferred, jobs }
    }

    /// Names the work: shown in logs and in the shutdown report, and the
    /// key for [`Deferred::forget`] and [`DeferRuntime::forget`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        for pending in &mut self.jobs {
            pending.job.name = Some(name.clone());
        }
        self
    }

    /// Runs the work even when the response failed (status ≥ 400) or was
    /// never produced (the handler was cancelled or panicked).
    pub fn always(mut self) -> Self {
        for pending in &mut self.jobs {
            pending.always = true;
        }
        self
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.deferred.push(std::mem::take(&mut self.jobs));
    }
}

impl fmt::Debug for Registered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("works", &self.jobs.len())
            .field(
                "names",
                &self
                    .jobs
                    .iter()
                    .map(|p| p.job.name.as_deref())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Runs `body` with a [`Deferred`] handle, then runs the work it deferred
/// and waits for that work (and any work deferred from it on the same
/// handle) to finish. For CLIs and jobs: the "response" is the body's end.
///
/// If `body` panics or the scope is dropped before the body finishes, only
/// the work marked [`always`](Registered::always) runs (and is not waited
/// for). A deferred work that panics is logged and counted by the runtime;
/// the scope still returns.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use batch_runtime::defer::{self, DeferRuntime};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runtime = DeferRuntime::new();
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let in_scope = log.clone();
/// let answer = defer::scope(&runtime, |deferred| async move {
///     let later = in_scope.clone();
///     deferred.spawn(async move { later.lock().unwrap().push("deferred") });
///     in_scope.lock().unwrap().push("body");
///     42
/// })
/// .await;
/// assert_eq!(answer, 42);
/// assert_eq!(*log.lock().unwrap(), ["body", "deferred"]);
/// # });
/// ```
pub async fn scope<F, Fut, T>(runtime: &DeferRuntime, body: F) -> T
where
    F: FnOnce(Deferred) -> Fut,
    Fut: Future<Output = T>,
{
    let group = Arc::new(Group::default());
    let deferred = Deferred::new(runtime, Some(group.clone()));
    let guard = ReleaseOnDrop(Some(deferred.clone()));
    let output = body(deferred).await;
    guard.release(true);
    group.wait().await;
    output
}

/// Releases a handle when dropped (with `run_all` false), unless released
/// explicitly first.
pub(crate) struct ReleaseOnDrop(pub(crate) Option<Deferred>);

impl ReleaseOnDrop {
    pub(crate) fn release(mut self, run_all: bool) {
        if let Some(deferred) = self.0.take() {
            deferred.release(run_all);
        }
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(deferred) = self.0.take() {
            deferred.release(false);
        }
    }
}

impl<S, A> Batch<S, A>
where
    S: Slots + 'static,
    A: Arms<S> + 'static,
    Self: DeferSafe,
{
    /// Sends the batch after the response (see [`Deferred`]); its arms run
    /// then. Returns nothing that reaches the results: a response cannot
    /// depend on deferred work.
    ///
    /// Everything the batch captures (arms included) must be
    /// `Send + 'static`. A panicking arm is caught after `finally`, logged
    /// and counted by the [`DeferRuntime`].
    ///
    /// ```
    /// use batch_runtime::defer::{self, DeferRuntime};
    /// use batch_runtime::fake::{Fake, Reply};
    /// use batch_runtime::{Batch, Method, Request};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let fake = Fake::new();
    /// fake.stub(Method::POST, "*", Reply::ok());
    /// let client = fake.client();
    /// let runtime = DeferRuntime::new();
    ///
    /// defer::scope(&runtime, |deferred| async move {
    ///     Batch::keyed([
    ///         ("inventory", Request::post("http://inventory.test/reserve")),
    ///         ("warehouse", Request::post("http://warehouse.test/notify")),
    ///     ])
    ///     .catch(|_, key, err| eprintln!("{key} failed: {err}"))
    ///     .defer(&client, &deferred)
    ///     .name("fulfilment");
    /// })
    /// .await;
    /// fake.assert_sent_count(2);
    /// # });
    /// ```
    pub fn defer<'d>(self, client: &Client, deferred: &'d Deferred) -> Registered<'d> {
        let client = client.clone();
        let make: MakeFuture = Box::new(move || -> LocalFuture {
            Box::pin(async move {
                let _results = self.send(&client).await;
            })
        });
        deferred.register(make)
    }
}
