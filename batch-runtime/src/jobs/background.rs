//! The `background` connection: each attempt of a job runs in a child
//! process of this same binary, so a crash of any kind (a panic,
//! `abort()`, a stack overflow, running out of memory, an endless loop)
//! fails only that job.
//!
//! The parent re-executes [`std::env::current_exe`] with the environment
//! variable [`CHILD_ENV`] set to the job's name and writes the job as JSON
//! to the child's stdin. The child, at the top of `main`, enters
//! [`child_entry`]: it builds the job's context with the application's
//! function, runs one attempt and prints its outcome on stdout (a line
//! starting with [`OUTCOME_PREFIX`]), then exits. A child that dies
//! without an outcome is a crashed attempt, recorded with its exit status
//! or signal. Retries, the timeout (the child is killed) and `failed` (with
//! the parent's context) are the parent's.
//!
//! ```no_run
//! use std::sync::Arc;
//! use batch_runtime::jobs::background::{child_entry, BackgroundConfig};
//! use batch_runtime::jobs::{Job, JobError, Jobs};
//! use serde::{Deserialize, Serialize};
//!
//! struct AppState;
//!
//! impl AppState {
//!     fn for_child() -> AppState {
//!         AppState
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct RenderInvoice {
//!     order: u64,
//! }
//!
//! impl Job for RenderInvoice {
//!     const NAME: &'static str = "render-invoice";
//!     type Context = AppState;
//!     async fn handle(&self, _: &AppState) -> Result<(), JobError> {
//!         Ok(())
//!     }
//! }
//!
//! fn main() {
//!     // First thing in `main`: in a child this runs the job and exits;
//!     // in the server it returns at once.
//!     child_entry(AppState::for_child, |registry| registry.register::<RenderInvoice>());
//!
//!     let jobs = Jobs::builder(Arc::new(AppState))
//!         .background(BackgroundConfig::default())
//!         .build();
//!     // ... serve, dispatching `jobs.dispatch(job).on(Connection::Background).await`
//! #   let _ = jobs;
//! }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Notify, Semaphore};

use super::attempt::{run_attempts, Run};
use super::dispatch::{DispatchError, JobId};
use super::job::{Job, JobError, JobErrorKind};

/// The environment variable that makes a process of this binary a job
/// child; its value is the job's name.
pub const CHILD_ENV: &str = "BATCH_JOB_CHILD";

/// The start of the stdout line on which a child reports its outcome.
pub const OUTCOME_PREFIX: &str = "batch-job-outcome:";

/// The stack of the thread a child runs its job on (a main thread's).
const CHILD_STACK: usize = 8 << 20;
/// Exit status of a child whose job failed (it reported why).
const EXIT_FAILED: i32 = 1;
/// Exit status of a child that could not run the job it was given.
const EXIT_UNUSABLE: i32 = 2;

/// Configures the `background` connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct BackgroundConfig {
    max_children: usize,
    memory_limit: Option<u64>,
}

impl Default for BackgroundConfig {
    /// At most one child per core ([`std::thread::available_parallelism`]),
    /// no memory limit.
    fn default() -> Self {
        BackgroundConfig {
            max_children: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_limit: None,
        }
    }
}

impl BackgroundConfig {
    /// At most `limit` children at once (at least 1); further jobs wait
    /// for a free slot.
    pub fn max_children(mut self, limit: usize) -> Self {
        self.max_children = limit.max(1);
        self
    }

    /// Limits each child's address space to `bytes` (`RLIMIT_AS`, Unix
    /// only): a job that needs more fails its allocation, which aborts
    /// the child, which fails only that job. Leave room for the binary
    /// itself (tens of MiB).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
}

/// Background children now and at their peak ([`Jobs::children`](super::Jobs::children)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChildStats {
    /// Child processes running now.
    pub running: usize,
    /// The most that ran at once.
    pub peak: usize,
    /// Child processes started in all.
    pub started: u64,
}

/// What [`Jobs::shutdown`](super::Jobs::shutdown) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Background jobs still waiting, running or between attempts when the
    /// grace period ran out, as `name #id` (with `pid n` when a child was
    /// running): their children were killed and `failed` was not called.
    pub abandoned: Vec<String>,
    /// Whether every background job finished within the grace period.
    pub drained: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    pub(crate) fn empty() -> Self {
        ShutdownReport {
            abandoned: Vec::new(),
            drained: true,
            elapsed: Duration::ZERO,
        }
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "background jobs {} in {} ms, {} abandoned",
            if self.drained {
                "drained"
            } else {
                "cut off by the grace period"
            },
            self.elapsed.as_millis(),
            self.abandoned.len()
        )?;
        if !self.abandoned.is_empty() {
            write!(f, " ({})", self.abandoned.join(", "))?;
        }
        Ok(())
    }
}

/// The parent's side: the cap, the jobs in flight, shutdown.
pub(crate) struct Background {
    shared: Arc<Shared>,
}

struct Shared {
    config: BackgroundConfig,
    permits: Semaphore,
    state: Mutex<State>,
    /// Notified whenever a job leaves `active`.
    idle: Notify,
    /// Set at the end of the grace period: supervisors drop their attempt,
    /// whose [`ChildGuard`] kills the child and reaps it.
    abandon: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Jobs dispatched and not finished: name and the running child's pid.
    active: BTreeMap<JobId, (&'static str, Option<u32>)>,
    children: ChildStats,
    /// Killed children not reaped yet.
    reaping: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    async fn wait_until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let idle = {
                let state = self.lock();
                state.active.is_empty() && state.reaping == 0
            };
            if idle {
                return;
            }
            notified.await;
        }
    }
}

impl Background {
    pub(crate) fn new(config: BackgroundConfig) -> Self {
        let (abandon, _) = watch::channel(false);
        Background {
            shared: Arc::new(Shared {
                permits: Semaphore::new(config.max_children),
                config,
                state: Mutex::new(State::default()),
                idle: Notify::new(),
                abandon,
            }),
        }
    }

    pub(crate) fn children(&self) -> ChildStats {
        self.shared.lock().children
    }

    pub(crate) async fn wait_idle(&self) {
        self.shared.wait_until_idle().await;
    }

    /// Serializes `job` now (so a bad job fails the dispatch) and hands it
    /// to a supervising task on the current tokio runtime.
    pub(crate) fn dispatch<J: Job>(
        &self,
        job: J,
        ctx: Arc<J::Context>,
        run: Run,
    ) -> Result<(), DispatchError> {
        let input = serde_json::to_string(&job).map_err(|e| DispatchError::Serialize {
            job: J::NAME,
            message: e.to_string(),
        })?;
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(DispatchError::ShuttingDown { job: J::NAME });
            }
            state.active.insert(run.id, (J::NAME, None));
        }
        let shared = self.shared.clone();
        let mut abandon = self.shared.abandon.subscribe();
        tokio::spawn(async move {
            let id = run.id;
            let attempts = run_attempts(&job, &ctx, &run, |_| {
                attempt_in_child(&shared, J::NAME, id, &input, job.timeout())
            });
            tokio::select! {
                // The outcome is logged, counted and given to `failed`.
                _ = attempts => {}
                _ = abandon.wait_for(|abandoned| *abandoned) => {}
            }
            shared.lock().active.remove(&id);
            shared.idle.notify_waiters();
        });
        Ok(())
    }

    pub(crate) async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let started = Instant::now();
        self.shared.lock().closed = true;
        let drained = tokio::time::timeout(grace, self.shared.wait_until_idle())
            .await
            .is_ok();
        let abandoned: Vec<String> = self
            .shared
            .lock()
            .active
            .iter()
            .map(|(id, (name, pid))| match pid {
                Some(pid) => format!("{name} {id} (pid {pid})"),
                None => format!("{name} {id}"),
            })
            .collect();
        if !drained {
            self.shared.abandon.send_replace(true);
            self.shared.wait_until_idle().await;
            tracing::warn!(
                ?abandoned,
                "background jobs abandoned at shutdown; their children were killed"
            );
        }
        ShutdownReport {
            abandoned,
            drained,
            elapsed: started.elapsed(),
        }
    }
}

/// What a child prints after [`OUTCOME_PREFIX`], as a JSON object
/// `{"ok", "panicked", "error"}`. Written and read through
/// `serde_json::Value`: a private `Serialize` type here would show up in
/// the compiler's list of serializable types when a user's job is not.
struct Outcome {
    ok: bool,
    panicked: bool,
    error: String,
}

impl Outcome {
    fn to_json(&self) -> String {
        serde_json::json!({ "ok": self.ok, "panicked": self.panicked, "error": self.error })
            .to_string()
    }

    fn from_json(json: &str) -> Option<Outcome> {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(Outcome {
            ok: value.get("ok")?.as_bool()?,
            panicked: value
                .get("panicked")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            error: value
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// One attempt: waits for a slot under the cap, starts a child, feeds it
/// the job, waits for its outcome up to `timeout` (then kills it).
async fn attempt_in_child(
    shared: &Arc<Shared>,
    name: &'static str,
    id: JobId,
    input: &str,
    timeout: Duration,
) -> Result<(), JobError> {
    let crashed = |message: String| JobError::with_kind(JobErrorKind::Crashed, message);
    let _permit = shared
        .permits
        .acquire()
        .await
        .map_err(|_| crashed("the background connection is closed".to_owned()))?;
    let exe = std::env::current_exe().map_err(|e| {
        crashed(format!(
            "cannot find this program's executable to start a child: {e}"
        ))
    })?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .env(CHILD_ENV, name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(bytes) = shared.config.memory_limit {
        limit_memory(&mut command, bytes);
    }
    let child = command.spawn().map_err(|e| {
        crashed(format!(
            "cannot start a child process from `{}`: {e}",
            exe.display()
        ))
    })?;
    let mut guard = ChildGuard {
        child: Some(child),
        shared: shared.clone(),
    };
    let Some(child) = guard.child.as_mut() else {
        return Err(crashed("the child vanished".to_owned()));
    };
    let pid = child.id();
    tracing::Span::current().record("pid", pid);
    {
        let mut state = shared.lock();
        if let Some(entry) = state.active.get_mut(&id) {
            entry.1 = pid;
        }
        let children = &mut state.children;
        children.running += 1;
        children.started += 1;
        children.peak = children.peak.max(children.running);
    }
    let _running = RunningChild(shared);

    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let exchange = async {
        if let Some(mut stdin) = stdin.take() {
            // A child that died before reading is reported by its status.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let mut reported = None;
        if let Some(stdout) = stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix(OUTCOME_PREFIX) {
                    Some(json) => reported = Outcome::from_json(json),
                    // The job's own prints, passed through as they come
                    // (the blank line before the outcome is not one).
                    None if line.is_empty() => {}
                    None => println!("{line}"),
                }
            }
        }
        let status = child.wait().await;
        (reported, status)
    };
    let (reported, status) = match tokio::time::timeout(timeout, exchange).await {
        Ok(done) => done,
        Err(_) => {
            // Dropping `exchange` released the child: kill and reap it.
            let _ = child.kill().await;
            guard.child = None;
            return Err(JobError::timed_out(timeout));
        }
    };
    // Reaped: nothing left for the guard to kill.
    guard.child = None;
    let status = status.map_err(|e| crashed(format!("waiting for the child failed: {e}")))?;
    match reported {
        Some(Outcome { ok: true, .. }) if status.success() => Ok(()),
        Some(Outcome {
            ok: false,
            panicked,
            error,
        }) => Err(JobError::with_kind(
            if panicked {
                JobErrorKind::Panicked
            } else {
                JobErrorKind::Failed
            },
            error,
        )),
        _ => Err(crashed(describe_exit(status, pid))),
    }
}

/// Owns a child until it has been reaped. Dropped with the child still
/// in it (the attempt was abandoned at shutdown), it kills the child and
/// reaps it on a task that shutdown waits for.
struct ChildGuard {
    child: Option<tokio::process::Child>,
    shared: Arc<Shared>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to reap on: `kill_on_drop` hands it to tokio's
            // orphan reaper.
            return;
        };
        self.shared.lock().reaping += 1;
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let _ = child.wait().await;
            shared.lock().reaping -= 1;
            shared.idle.notify_waiters();
        });
    }
}

/// Counts a child as running until dropped.
struct RunningChild<'a>(&'a Shared);

impl Drop for RunningChild<'_> {
    fn drop(&mut self) {
        self.0.lock().children.running -= 1;
    }
}

fn describe_exit(status: ExitStatus, pid: Option<u32>) -> String {
    let pid = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                6 => " (SIGABRT: abort, a stack overflow or a failed allocation)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                _ => "",
            };
            return format!(
                "the child{pid} was killed by signal {signal}{name} before reporting an outcome"
            );
        }
    }
    match status.code() {
        Some(EXIT_UNUSABLE) => format!(
            "the child{pid} could not run the job (exit status {EXIT_UNUSABLE}); see its stderr: is the job registered in `child_entry`, and is `child_entry` the first thing in `main`?"
        ),
        Some(code) => {
            format!("the child{pid} exited with status {code} before reporting an outcome")
        }
        None => format!("the child{pid} ended without an exit status"),
    }
}

#[cfg(unix)]
fn limit_memory(command: &mut tokio::process::Command, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: between fork and exec the closure only calls setrlimit,
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[cfg(not(unix))]
fn limit_memory(_: &mut tokio::process::Command, _: u64) {
    tracing::warn!("BackgroundConfig::memory_limit is only enforced on Unix");
}

// ---- the child's side ----

type RunFn<C> = fn(&str, &C, &tokio::runtime::Runtime) -> Result<(), JobError>;

/// The job types a child can run, filled in [`child_entry`].
pub struct Registry<C> {
    runners: HashMap<&'static str, RunFn<C>>,
}

impl<C: Send + Sync + 'static> Registry<C> {
    /// Lets children run jobs of type `J`.
    pub fn register<J: Job<Context = C>>(&mut self) -> &mut Self {
        self.runners.insert(J::NAME, run_registered::<J>);
        self
    }
}

impl<C> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.runners.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("jobs", &names).finish()
    }
}

fn run_registered<J: Job>(
    input: &str,
    ctx: &J::Context,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), JobError> {
    let job: J = serde_json::from_str(input).map_err(|e| {
        JobError::new(format!(
            "the child could not read job `{}` from its stdin: {e}",
            J::NAME
        ))
    })?;
    runtime.block_on(job.handle(ctx))
}

/// Call first in `main`. In the server (no [`CHILD_ENV`]) it returns at
/// once. In a child started by the `background` connection it builds the
/// context with `make_context`, runs the one job it was sent (its type
/// must be registered by `register`), prints the outcome and exits the
/// process: it never returns. The job runs on a thread of its own with
/// its own tokio runtime, so calling this inside `#[tokio::main]` works
/// too; before it, do nothing that should not happen once per job.
pub fn child_entry<C, M, R>(make_context: M, register: R)
where
    C: Send + Sync + 'static,
    M: FnOnce() -> C + Send,
    R: for<'r> FnOnce(&'r mut Registry<C>) -> &'r mut Registry<C>,
{
    let Some(name) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let code = match run_child(&name, make_context, register) {
        Ok(()) => report(&Outcome {
            ok: true,
            panicked: false,
            error: String::new(),
        }),
        Err(ChildError::Job(error)) => {
            report(&Outcome {
                ok: false,
                panicked: error.is_panic(),
                error: error.message().to_owned(),
            });
            EXIT_FAILED
        }
        Err(ChildError::Unusable(message)) => {
            eprintln!("batch-runtime background child for job `{name}`: {message}");
            EXIT_UNUSABLE
        }
    };
    std::process::exit(code);
}

enum ChildError {
    Job(JobError),
    Unusable(String),
}

fn run_child<C, M, R>(name: &str, make_context: M, register: R) -> Result<(), ChildError>
where
    C: Send + Sync + 'static,
    M: FnOnce() -> C + Send,
    R: for<'r> FnOnce(&'r mut Registry<C>) -> &'r mut Registry<C>,
{
    let mut registry = Registry {
        runners: HashMap::new(),
    };
    register(&mut registry);
    let Some(run) = registry.runners.get(name).copied() else {
        return Err(ChildError::Unusable(format!(
            "job `{name}` is not registered: add `registry.register::<YourJob>()` to the `child_entry` call in `main` (registered: {registry:?})"
        )));
    };
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| ChildError::Unusable(format!("cannot read the job from stdin: {e}")))?;
    // A thread of its own: `child_entry` may be called inside
    // `#[tokio::main]`, where a second runtime cannot block the thread.
    // Its stack is the size of a main thread's.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name(format!("batch-job-{name}"))
            .stack_size(CHILD_STACK)
            .spawn_scoped(scope, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        ChildError::Unusable(format!("cannot start a tokio runtime: {e}"))
                    })?;
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let ctx = make_context();
                    run(&input, &ctx, &runtime)
                }));
                match outcome {
                    Ok(result) => result.map_err(ChildError::Job),
                    Err(payload) => Err(ChildError::Job(JobError::panicked(payload.as_ref()))),
                }
            })
            .map_err(|e| ChildError::Unusable(format!("cannot start the job's thread: {e}")))?;
        worker
            .join()
            .unwrap_or_else(|payload| Err(ChildError::Job(JobError::panicked(payload.as_ref()))))
    })
}

/// Prints the outcome line; the exit status when it succeeded.
fn report(outcome: &Outcome) -> i32 {
    let line = outcome.to_json();
    let mut stdout = std::io::stdout().lock();
    // If stdout is gone the parent sees the exit status alone.
    let _ = writeln!(stdout, "\n{OUTCOME_PREFIX}{line}");
    let _ = stdout.flush();
    0
}
