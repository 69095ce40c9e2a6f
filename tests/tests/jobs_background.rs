//! The `background` connection: jobs run in child processes of this test
//! binary, and any crash there fails only that job.
//!
//! This file has its own `main` (`harness = false` in Cargo.toml): a child
//! is this same binary re-executed, and its first act must be
//! `child_entry`, before libtest would parse arguments or start threads.
//! `main` then runs each test below in turn on a fresh tokio runtime
//! under a 60 s timeout, prints `test <name> ... ok|FAILED` and exits
//! non-zero if any failed. Arguments that do not start with `-` filter the
//! tests by substring, as with libtest.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use batch_runtime::jobs::background::{child_entry, BackgroundConfig};
use batch_runtime::jobs::{Backoff, Connection, DispatchError, Job, JobError, Jobs};
use batch_runtime::{Client, Request};
use batch_tests::serve;
use serde::{Deserialize, Serialize};

/// The parent's context: what the `failed` hooks saw.
#[derive(Default)]
struct Ctx {
    failed: Mutex<Vec<String>>,
}

impl Ctx {
    fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }
}

async fn record_failure(ctx: &Ctx, name: &str, error: &JobError) {
    ctx.failed.lock().unwrap().push(format!("{name}: {error}"));
}

/// A file in the temp dir unique to this test run.
fn scratch(name: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "batch-jobs-{}-{name}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

fn append(path: &str, line: &str) -> Result<(), JobError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

/// Writes the pid of the process it runs in.
#[derive(Serialize, Deserialize)]
struct WhoAmI {
    file: String,
}

impl Job for WhoAmI {
    const NAME: &'static str = "who-am-i";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        append(&self.file, &std::process::id().to_string())
    }
}

/// Crashes its process the way it is told to.
#[derive(Serialize, Deserialize)]
struct Crash {
    how: String,
    tries: u32,
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 4096];
    if depth == u64::MAX {
        return 0;
    }
    std::hint::black_box(&frame);
    recurse(depth + 1) + u64::from(frame[0])
}

impl Job for Crash {
    const NAME: &'static str = "crash";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        match self.how.as_str() {
            "abort" => std::process::abort(),
            "panic" => panic!("invoice template missing"),
            "overflow" => {
                std::hint::black_box(recurse(0));
            }
            "oom" => {
                let hog: Vec<u8> = Vec::with_capacity(8 << 30);
                std::hint::black_box(hog);
            }
            "error" => return Err(JobError::new("printer on fire")),
            _ => {}
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
        record_failure(ctx, &self.how, error).await;
    }
}

/// Burns CPU for `ms`, or forever, never awaiting.
#[derive(Serialize, Deserialize)]
struct Burn {
    ms: Option<u64>,
    timeout_ms: u64,
}

impl Job for Burn {
    const NAME: &'static str = "burn";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        let started = Instant::now();
        let mut x = 0u64;
        while self
            .ms
            .is_none_or(|ms| started.elapsed() < Duration::from_millis(ms))
        {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    async fn failed(&self, error: &JobError, ctx: &Ctx) {
        record_failure(ctx, "burn", error).await;
    }
}

/// Appends `start <pid>`, holds its slot for `ms`, appends `end <pid>`.
#[derive(Serialize, Deserialize)]
struct Hold {
    file: String,
    ms: u64,
}

impl Job for Hold {
    const NAME: &'static str = "hold";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        let pid = std::process::id();
        append(&self.file, &format!("start {pid}"))?;
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        append(&self.file, &format!("end {pid}"))
    }
}

/// Not registered in `child_entry`.
#[derive(Serialize, Deserialize)]
struct Forgotten;

impl Job for Forgotten {
    const NAME: &'static str = "forgotten";
    type Context = Ctx;

    async fn handle(&self, _: &Ctx) -> Result<(), JobError> {
        Ok(())
    }

    async fn failed(&self, error: &JobError, ctx: &Ctx) {
        record_failure(ctx, "forgotten", error).await;
    }
}

fn jobs(ctx: &Arc<Ctx>, config: BackgroundConfig) -> Jobs<Ctx> {
    Jobs::builder(ctx.clone())
        .background(config)
        .default_connection(Connection::Background)
        .build()
}

// ---- the tests ----

async fn a_background_job_runs_in_another_process() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());
    let file = scratch("pid");

    let dispatched = jobs.dispatch(WhoAmI { file: file.clone() }).await.unwrap();
    assert_eq!(dispatched.connection(), Connection::Background);
    assert_eq!(dispatched.outcome(), None);
    jobs.wait_idle().await;

    let child: u32 = std::fs::read_to_string(&file)
        .expect("the child wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(child, std::process::id(), "the job ran in the parent");
    assert_eq!(jobs.stats().of::<WhoAmI>().succeeded, 1);
    assert_eq!(jobs.children().started, 1);
    assert_eq!(jobs.children().running, 0);
}

#[derive(Clone)]
struct Shop {
    jobs: Jobs<Ctx>,
}

async fn crash(State(shop): State<Shop>, Path(how): Path<String>) -> Result<String, String> {
    shop.jobs
        .dispatch(Crash { how, tries: 1 })
        .await
        .map_err(|e| e.to_string())?;
    Ok("accepted".to_owned())
}

async fn ping() -> &'static str {
    "pong"
}

async fn burn(State(shop): State<Shop>) -> Result<&'static str, String> {
    shop.jobs
        .dispatch(Burn {
            ms: Some(2000),
            timeout_ms: 30_000,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok("burning")
}

fn shop_router(jobs: &Jobs<Ctx>) -> Router {
    Router::new()
        .route("/crash/{how}", post(crash))
        .route("/burn", post(burn))
        .route("/ping", get(ping))
        .with_state(Shop { jobs: jobs.clone() })
}

async fn abort_in_a_background_job_leaves_the_server_answering_and_the_failure_is_recorded() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());
    let base = format!("http://{}", serve(shop_router(&jobs)).await);
    let client = Client::new();

    let reply = client
        .send(Request::post(format!("{base}/crash/abort")))
        .await
        .unwrap();
    assert_eq!(reply.text(), "accepted");
    jobs.wait_idle().await;

    // The server that dispatched it still answers, and a next job runs.
    let reply = client
        .send(Request::get(format!("{base}/ping")))
        .await
        .unwrap();
    assert_eq!(reply.text(), "pong");
    client
        .send(Request::post(format!("{base}/crash/none")))
        .await
        .unwrap();
    jobs.wait_idle().await;

    let failed = ctx.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("abort: the job's child process crashed: the child (pid ")
            && failed[0].contains("was killed by signal 6 (SIGABRT"),
        "{failed:?}"
    );
    let stats = jobs.stats().of::<Crash>();
    assert_eq!((stats.dispatched, stats.failed, stats.succeeded), (2, 1, 1));
}

async fn a_panic_a_stack_overflow_and_running_out_of_memory_each_fail_only_their_job() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(
        &ctx,
        BackgroundConfig::default()
            .max_children(4)
            .memory_limit(1 << 30),
    );
    for how in ["panic", "overflow", "oom", "error", "none"] {
        jobs.dispatch(Crash {
            how: how.to_owned(),
            tries: 2,
        })
        .await
        .unwrap();
    }
    jobs.wait_idle().await;

    let mut failed = ctx.failed();
    failed.sort();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert_eq!(failed[0], "error: printer on fire");
    assert!(
        failed[1].starts_with("oom: the job's child process crashed"),
        "{failed:?}"
    );
    assert!(failed[1].contains("signal 6"), "{failed:?}");
    assert!(
        failed[2].starts_with("overflow: the job's child process crashed"),
        "{failed:?}"
    );
    assert_eq!(
        failed[3],
        "panic: the job panicked: invoice template missing"
    );
    let stats = jobs.stats().of::<Crash>();
    // Each failing job was tried twice, in a fresh child each time.
    assert_eq!((stats.failed, stats.retried, stats.succeeded), (4, 4, 1));
    assert_eq!(jobs.children().started, 9);
}

async fn a_cpu_bound_job_is_killed_at_its_timeout() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());
    let started = Instant::now();

    jobs.dispatch(Burn {
        ms: None,
        timeout_ms: 500,
    })
    .await
    .unwrap();
    jobs.wait_idle().await;

    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        ctx.failed(),
        ["burn: the attempt ran longer than its timeout of 500ms; raise `Job::timeout` if it needs more"]
    );
    assert_eq!(jobs.children().running, 0);
}

async fn a_background_job_burning_cpu_for_2s_does_not_hold_back_concurrent_responses() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());
    let base = format!("http://{}", serve(shop_router(&jobs)).await);
    let client = Client::new();
    let started = Instant::now();

    let reply = client
        .send(Request::post(format!("{base}/burn")))
        .await
        .unwrap();
    assert_eq!(reply.text(), "burning");
    // The pings must land inside the burn, not before its child starts.
    while jobs.children().running == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the burn's child never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burn_seen = started.elapsed();
    let mut pings = Vec::with_capacity(20);
    for _ in 0..20 {
        let sent = Instant::now();
        let reply = client
            .send(Request::get(format!("{base}/ping")))
            .await
            .unwrap();
        assert_eq!(reply.text(), "pong");
        pings.push(sent.elapsed());
    }
    let burning_throughout = jobs.children().running == 1;
    let pings_done = started.elapsed();
    jobs.wait_idle().await;

    // The bound is the burn itself, not a wall-clock figure: all 20 pings
    // were answered while the child still burned its 2 s of CPU.
    assert!(
        burning_throughout,
        "the burn ended before the pings did: child seen at {burn_seen:?}, \
         pings done at {pings_done:?}, each took {pings:?}"
    );
    assert_eq!(jobs.stats().of::<Burn>().succeeded, 1);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// The most `start`s not yet matched by an `end`, in file order.
fn peak(lines: &str) -> usize {
    let (mut now, mut peak) = (0usize, 0usize);
    for line in lines.lines() {
        if line.starts_with("start") {
            now += 1;
            peak = peak.max(now);
        } else if line.starts_with("end") {
            now -= 1;
        }
    }
    peak
}

async fn the_child_cap_holds() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default().max_children(2));
    let file = scratch("cap");

    for _ in 0..6 {
        jobs.dispatch(Hold {
            file: file.clone(),
            ms: 800,
        })
        .await
        .unwrap();
    }
    jobs.wait_idle().await;

    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), 12, "{lines}");
    // Counted by the children themselves: never more than 2 at once.
    assert_eq!(peak(&lines), 2, "{lines}");
    let children = jobs.children();
    assert_eq!(
        (children.peak, children.started, children.running),
        (2, 6, 0)
    );
    assert_eq!(jobs.stats().of::<Hold>().succeeded, 6);
}

async fn shutdown_waits_for_children_up_to_the_grace_and_reports_what_it_abandoned() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default().max_children(2));
    let file = scratch("shutdown");

    let quick = jobs
        .dispatch(Hold {
            file: file.clone(),
            ms: 100,
        })
        .await
        .unwrap();
    let stuck = jobs
        .dispatch(Hold {
            file: file.clone(),
            ms: 60_000,
        })
        .await
        .unwrap();
    let report = jobs.shutdown(Duration::from_millis(1500)).await;

    assert!(!report.drained, "{report}");
    assert!(report.elapsed < Duration::from_secs(10), "{report}");
    assert_eq!(report.abandoned.len(), 1, "{report}");
    let prefix = format!("hold {} (pid ", stuck.id());
    assert!(report.abandoned[0].starts_with(&prefix), "{report}");
    assert!(
        !report.to_string().contains(&quick.id().to_string()),
        "{report}"
    );
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("end")).count(),
        1,
        "{lines}"
    );
    assert_eq!(jobs.children().running, 0);
    // The abandoned child is dead (gone, or a zombie awaiting its reaper).
    let pid = report.abandoned[0]
        .trim_start_matches(&prefix)
        .trim_end_matches(')');
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert_eq!(state, Some('Z'), "the abandoned child still runs: {stat}");
    }

    let refused = jobs.dispatch(Hold { file, ms: 1 }).await.unwrap_err();
    assert_eq!(refused, DispatchError::ShuttingDown { job: "hold" });
}

async fn an_unregistered_job_fails_with_a_clear_error() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());

    jobs.dispatch(Forgotten).await.unwrap();
    jobs.wait_idle().await;

    let failed = ctx.failed();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("could not run the job (exit status 2)")
            && failed[0].contains("is the job registered in `child_entry`"),
        "{failed:?}"
    );
}

/// Every line traced in this process (a global subscriber set in `main`).
static TRACES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        TRACES.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        Captured
    }
}

async fn each_attempt_has_a_span_with_job_id_connection_attempt_pid_and_outcome() {
    let ctx = Arc::new(Ctx::default());
    let jobs = jobs(&ctx, BackgroundConfig::default());

    let dispatched = jobs
        .dispatch(Crash {
            how: "error".to_owned(),
            tries: 2,
        })
        .await
        .unwrap();
    jobs.wait_idle().await;

    let traces = String::from_utf8_lossy(&TRACES.lock().unwrap()).into_owned();
    let id = format!("id={} ", dispatched.id().get());
    let closed: Vec<&str> = traces
        .lines()
        .filter(|line| line.contains(&id) && line.contains("close"))
        .collect();
    assert_eq!(closed.len(), 2, "one span per attempt: {closed:#?}");
    for (line, attempt) in closed.iter().zip(1..) {
        for field in [
            "job{job=\"crash\"".to_owned(),
            "connection=\"background\"".to_owned(),
            format!("attempt={attempt} "),
            "pid=".to_owned(),
            "duration_ms=".to_owned(),
            "outcome=\"failed\"".to_owned(),
        ] {
            assert!(line.contains(&field), "`{field}` missing from {line}");
        }
    }
}

// ---- the harness ----

fn main() {
    // In a child: run the job and exit. In the test process: returns.
    child_entry(Ctx::default, |registry| {
        registry
            .register::<WhoAmI>()
            .register::<Crash>()
            .register::<Burn>()
            .register::<Hold>()
    });

    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(Captured)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let tests = batch_tests::harness_free_tests![
        each_attempt_has_a_span_with_job_id_connection_attempt_pid_and_outcome,
        a_background_job_runs_in_another_process,
        abort_in_a_background_job_leaves_the_server_answering_and_the_failure_is_recorded,
        a_panic_a_stack_overflow_and_running_out_of_memory_each_fail_only_their_job,
        a_cpu_bound_job_is_killed_at_its_timeout,
        a_background_job_burning_cpu_for_2s_does_not_hold_back_concurrent_responses,
        the_child_cap_holds,
        shutdown_waits_for_children_up_to_the_grace_and_reports_what_it_abandoned,
        an_unregistered_job_fails_with_a_clear_error,
    ];
    batch_tests::run_tests(&tests, Duration::from_secs(60));
}
