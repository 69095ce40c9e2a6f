//! [`Deferred`]: the per-request (or per-scope) handle work is deferred on,
//! [`NoResults`], [`scope`] and [`Batch::defer`].

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::job::{Group, Job, LocalFuture, MakeFuture};
use super::runtime::DeferRuntime;
use super::state::HeldWork;
use super::works::{BoxWork, IntoWorks};
use super::DeferSafe;
use crate::arms::Arms;
use crate::batch::Batch;
use crate::client::Client;
use crate::slots::Slots;
use crate::sync::lock;

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
///   [`always`](NoResults::always);
/// - work named with [`NoResults::name`] can be removed with
///   [`Deferred::forget`] until it starts; a handle forgets only the work
///   registered on it (and its clones), never another request's. Two works
///   may share a name on one handle: both run, and `forget` removes both;
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
    /// A scope opened inside deferred work of the same runtime: its work
    /// starts outside the concurrency limit (see [`Job::exempt`]).
    exempt: bool,
    state: Mutex<State>,
}

enum State {
    /// The response is not out yet: work waits here.
    Collecting {
        work: Vec<Pending>,
        /// The id the runtime gave this handle when it took its first work.
        opened: Option<u64>,
    },
    /// The response is out; `run_all` is false when it failed. `handed`:
    /// the ids and names of the named works this handle queued, the only
    /// ones its `forget` may remove.
    Released {
        run_all: bool,
        handed: Vec<(u64, String)>,
    },
}

/// The ids and names of the named jobs among `jobs`.
fn named(jobs: &[Job]) -> impl Iterator<Item = (u64, String)> + '_ {
    jobs.iter()
        .filter_map(|job| Some((job.id, job.name.clone()?)))
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
                exempt: group.is_some() && runtime.on_worker(),
                group,
                state: Mutex::new(State::Collecting {
                    work: Vec::new(),
                    opened: None,
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

    /// Runs `work` after the response. Chain [`name`](NoResults::name) or
    /// [`always`](NoResults::always) on the result to configure it.
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
    pub fn spawn<F>(&self, work: F) -> NoResults<'_>
    where
        F: Future<Output = ()> + DeferSafe,
    {
        let job = self.job(Job::new(work));
        NoResults::new(self, vec![job])
    }

    /// Runs several works after the response, concurrently (each is its
    /// own work on the runtime), in one call: a tuple of up to 12 futures of
    /// different types, an array or `Vec`, or `.map(..)` over an iterator
    /// (see [`IntoWorks`]). `name` and `always` on the result apply to all
    /// of them.
    ///
    /// ```
    /// # use batch_runtime::defer::{self, DeferRuntime};
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let runtime = DeferRuntime::new();
    /// let done = Arc::new(AtomicUsize::new(0));
    /// let (a, b, c) = (done.clone(), done.clone(), done.clone());
    /// let counter = done.clone();
    /// defer::scope(&runtime, |deferred| async move {
    ///     // Three different async blocks: no boxing.
    ///     deferred.spawn_all((
    ///         async move { a.fetch_add(1, Ordering::SeqCst); },
    ///         async move { b.fetch_add(10, Ordering::SeqCst); },
    ///         async move { c.fetch_add(100, Ordering::SeqCst); tokio::task::yield_now().await },
    ///     ));
    ///     // Many of one type.
    ///     deferred.spawn_all((0..3).map(move |_| {
    ///         let counter = counter.clone();
    ///         async move { counter.fetch_add(1000, Ordering::SeqCst); }
    ///     }));
    /// })
    /// .await;
    /// assert_eq!(done.load(Ordering::SeqCst), 3111);
    /// # });
    /// ```
    pub fn spawn_all(&self, works: impl IntoWorks) -> NoResults<'_> {
        let mut jobs = Vec::new();
        works.into_works(&mut |work: BoxWork| {
            jobs.push(self.job(Job::from_make(Box::new(move || -> LocalFuture { work }))));
        });
        NoResults::new(self, jobs)
    }

    /// Runs every work of any iterator after the response, concurrently,
    /// like [`spawn_all`](Deferred::spawn_all) (which takes tuples, arrays,
    /// `Vec`s and `.map(..)` directly).
    pub fn spawn_iter<I>(&self, works: I) -> NoResults<'_>
    where
        I: IntoIterator,
        I::Item: Future<Output = ()> + DeferSafe,
    {
        let jobs = works
            .into_iter()
            .map(|work| self.job(Job::new(work)))
            .collect();
        NoResults::new(self, jobs)
    }

    /// Registers a work given as a recipe for a (possibly `!Send`) future.
    pub(crate) fn register(&self, make: MakeFuture) -> NoResults<'_> {
        let job = self.job(Job::from_make(make));
        NoResults::new(self, vec![job])
    }

    fn job(&self, mut job: Job) -> Pending {
        if let Some(group) = &self.inner.group {
            job.ticket = Some(group.ticket());
        }
        job.exempt = self.inner.exempt;
        Pending { job, always: false }
    }

    /// Removes the works named `name` that this handle registered and that
    /// have not started: held on the handle before the response is out,
    /// queued on the runtime after. Work other requests registered under
    /// the same name is never touched (that is
    /// [`DeferRuntime::forget`]). Returns how many works were removed.
    pub fn forget(&self, name: &str) -> usize {
        let mut state = self.lock();
        match &mut *state {
            State::Collecting { work, .. } => {
                let (removed, kept): (Vec<Pending>, Vec<Pending>) = std::mem::take(work)
                    .into_iter()
                    .partition(|p| p.job.name.as_deref() == Some(name));
                *work = kept;
                drop(state);
                let count = removed.len();
                // Their `Drop` is user code: never under a lock.
                drop(removed);
                if count > 0 {
                    self.inner.runtime.count_forgotten(count);
                }
                count
            }
            State::Released { handed, .. } => {
                let mut ids = Vec::new();
                handed.retain(|(id, handed_name)| {
                    let matches = handed_name == name;
                    if matches {
                        ids.push(*id);
                    }
                    !matches
                });
                drop(state);
                self.inner.runtime.forget_ids(&ids)
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
                if opened.is_none() {
                    let handle: Weak<dyn HeldWork> = Arc::downgrade(&self.inner) as _;
                    *opened = Some(self.inner.runtime.handle_opened(handle));
                }
                work.extend(jobs);
            }
            State::Released { run_all, handed } => {
                let run_all = *run_all;
                let (run, skip): (Vec<Pending>, Vec<Pending>) =
                    jobs.into_iter().partition(|p| run_all || p.always);
                let run: Vec<Job> = run.into_iter().map(|p| p.job).collect();
                handed.extend(named(&run));
                drop(state);
                if !skip.is_empty() {
                    self.inner.runtime.count_skipped(skip.len());
                }
                drop(skip);
                // A rejection is logged and counted by the runtime.
                let _ = self.inner.runtime.submit(run);
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
        lock(&self.state)
    }

    fn release(&self, run_all: bool) {
        let mut state = self.lock();
        let State::Collecting { work, opened } = &mut *state else {
            return;
        };
        let work = std::mem::take(work);
        let opened = *opened;
        let (run, skip): (Vec<Pending>, Vec<Pending>) =
            work.into_iter().partition(|p| run_all || p.always);
        let jobs: Vec<Job> = run.into_iter().map(|p| p.job).collect();
        *state = State::Released {
            run_all,
            handed: named(&jobs).collect(),
        };
        drop(state);
        let skipped = skip.len();
        drop(skip);
        let Some(handle) = opened else {
            return;
        };
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "deferred work skipped: the response failed and the work is not `always`"
            );
        }
        self.runtime.handle_closed(handle, skipped, jobs);
    }
}

impl HeldWork for Inner {
    fn held(&self) -> Vec<String> {
        match &*self.lock() {
            State::Collecting { work, .. } => work.iter().map(|p| p.job.display_name()).collect(),
            State::Released { .. } => Vec::new(),
        }
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

/// What [`Deferred::spawn`] and [`Batch::defer`] return: a handle to name
/// the work ([`name`](NoResults::name)) or mark it
/// [`always`](NoResults::always), and no results — they do not exist until
/// after the response, and nothing in the response can depend on them. To
/// use a batch's results, `.send(&client).await` it instead of deferring it.
///
/// The work is handed to the [`Deferred`] handle when this value is dropped
/// (at the end of the statement, usually).
pub struct NoResults<'a> {
    deferred: &'a Deferred,
    jobs: Vec<Pending>,
}

impl<'a> NoResults<'a> {
    fn new(deferred: &'a Deferred, jobs: Vec<Pending>) -> Self {
        NoResults { deferred, jobs }
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

impl Drop for NoResults<'_> {
    fn drop(&mut self) {
        self.deferred.push(std::mem::take(&mut self.jobs));
    }
}

impl fmt::Debug for NoResults<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoResults")
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
/// the work marked [`always`](NoResults::always) runs (and is not waited
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
    pub fn defer<'d>(self, client: &Client, deferred: &'d Deferred) -> NoResults<'d> {
        let client = client.clone();
        let make: MakeFuture = Box::new(move || -> LocalFuture {
            Box::pin(async move {
                let _results = self.send(&client).await;
            })
        });
        deferred.register(make)
    }
}
