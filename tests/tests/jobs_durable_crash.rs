//! The `durable` connection across process deaths: workers and a server
//! are child processes of this test binary, killed with SIGKILL.
//!
//! This file has its own `main` (`harness = false` in Cargo.toml): with
//! `BATCH_DURABLE_ROLE` set, the binary is a child (a durable worker, or a
//! server that dispatches a durable job per request) and runs until it is
//! killed; without it, `main` runs each test below under a 120 s timeout,
//! prints `test <name> ... ok|FAILED` and exits non-zero if any failed.
//!
//! Each test runs on every store: a temp SQLite file, and a queue of its
//! own on the PostgreSQL and Redis servers named by
//! `BATCH_TEST_POSTGRES_URL` and `BATCH_TEST_REDIS_URL` (skipped, with one
//! line saying so, when unset).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use batch_runtime::jobs::durable::DurableStore;
use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
use batch_runtime::{Client, Request};
use batch_tests::serve;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const ROLE: &str = "BATCH_DURABLE_ROLE";
const STORE: &str = "BATCH_DURABLE_STORE";
const QUEUE: &str = "BATCH_DURABLE_QUEUE";
const UPSTREAM: &str = "BATCH_DURABLE_UPSTREAM";
const HEARTBEAT: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(90);

/// What a durable job's `handle` gets: where to post, and who posts.
struct Upstream {
    client: Client,
    base: String,
    worker: String,
}

/// Posts its order to the counting upstream.
#[derive(Serialize, Deserialize)]
struct Hit {
    order: u64,
}

impl Job for Hit {
    const NAME: &'static str = "hit";
    type Context = Upstream;

    async fn handle(&self, up: &Upstream) -> Result<(), JobError> {
        let url = format!("{}/hit/{}/{}", up.base, self.order, up.worker);
        let response = up.client.send(Request::post(url)).await?;
        if !response.status().is_success() {
            return Err(JobError::new(format!(
                "the upstream answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

/// The store every process of one test opens: a setting for
/// `DurableStore::open` and a queue of the test's own.
#[derive(Clone)]
struct StoreSpec {
    spec: String,
    queue: String,
}

async fn open_store(store: &StoreSpec) -> DurableStore {
    DurableStore::open(&store.spec)
        .await
        .unwrap_or_else(|e| panic!("the durable store opens: {e}"))
        .queue(&store.queue)
        .heartbeat(HEARTBEAT)
}

fn child_store() -> StoreSpec {
    StoreSpec {
        spec: required_env(STORE),
        queue: required_env(QUEUE),
    }
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"))
}

// ---- the children ----

/// A durable worker until killed.
async fn worker_child(name: String) {
    let ctx = Arc::new(Upstream {
        client: Client::new(),
        base: required_env(UPSTREAM),
        worker: name.clone(),
    });
    let jobs = Jobs::builder(ctx)
        .durable(open_store(&child_store()).await)
        .build();
    let worker = jobs
        .durable_worker(&name, |r| r.register::<Hit>())
        .expect("durable is configured");
    println!("ready");
    worker
        .run_until(std::future::pending())
        .await
        .expect("the worker runs until it is killed");
}

/// A server whose `/checkout/{order}` stores a durable job and answers;
/// prints its address.
async fn server_child() {
    let ctx = Arc::new(Upstream {
        client: Client::new(),
        base: required_env(UPSTREAM),
        worker: "server".to_owned(),
    });
    let jobs = Jobs::builder(ctx)
        .durable(open_store(&child_store()).await)
        .build();
    async fn checkout(State(jobs): State<Jobs<Upstream>>, Path(order): Path<u64>) -> String {
        match jobs.dispatch(Hit { order }).on(Connection::Durable).await {
            Ok(_) => format!("order {order} confirmed"),
            Err(e) => format!("order {order} not queued: {e}"),
        }
    }
    let app = Router::new()
        .route("/checkout/{order}", post(checkout))
        .with_state(jobs);
    let addr = serve(app).await;
    println!("listening {addr}");
    std::future::pending::<()>().await;
}

// ---- the parent's side ----

/// The counting upstream: every hit by order, and the total published.
#[derive(Clone)]
struct Counter {
    hits: Arc<Mutex<BTreeMap<u64, u32>>>,
    by_worker: Arc<Mutex<BTreeMap<String, u32>>>,
    total: watch::Sender<usize>,
}

impl Counter {
    async fn serve() -> (Counter, String) {
        let counter = Counter {
            hits: Arc::default(),
            by_worker: Arc::default(),
            total: watch::channel(0).0,
        };
        async fn hit(
            State(counter): State<Counter>,
            Path((order, worker)): Path<(u64, String)>,
        ) -> &'static str {
            // A little work per job, so that some are in flight at a kill.
            tokio::time::sleep(Duration::from_millis(5)).await;
            *counter.hits.lock().unwrap().entry(order).or_insert(0) += 1;
            *counter.by_worker.lock().unwrap().entry(worker).or_insert(0) += 1;
            counter.total.send_modify(|t| *t += 1);
            "counted"
        }
        let app = Router::new()
            .route("/hit/{order}/{worker}", post(hit))
            .with_state(counter.clone());
        let base = format!("http://{}", serve(app).await);
        (counter, base)
    }

    async fn wait_total(&self, n: usize) {
        let mut rx = self.total.subscribe();
        tokio::time::timeout(LIMIT, rx.wait_for(|t| *t >= n))
            .await
            .unwrap_or_else(|_| panic!("the upstream did not reach {n} hits within {LIMIT:?}"))
            .expect("the counter lives");
    }

    async fn wait_distinct(&self, n: usize) {
        let mut rx = self.total.subscribe();
        let hits = self.hits.clone();
        tokio::time::timeout(LIMIT, rx.wait_for(move |_| hits.lock().unwrap().len() >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {n} jobs reached the upstream within {LIMIT:?}",
                    self.hits.lock().unwrap().len()
                )
            })
            .expect("the counter lives");
    }
}

/// A SQLite file in the temp dir, removed with its WAL files on drop.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// The stores every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    Redis,
}

/// One test's store (a temp file, or a queue of its own on a server),
/// or `None` after saying it is skipped.
fn store_for(kind: Kind, test: &str) -> Option<(StoreSpec, Option<TempDb>)> {
    let unique = format!(
        "{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let queue = format!("batch-crash-{unique}");
    let (var, example) = match kind {
        Kind::Sqlite => {
            let path = std::env::temp_dir().join(format!("batch-durable-crash-{unique}.db"));
            let _ = std::fs::remove_file(&path);
            let spec = path.display().to_string();
            return Some((StoreSpec { spec, queue }, Some(TempDb(path))));
        }
        Kind::Postgres => (
            "BATCH_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        Kind::Redis => ("BATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    };
    match std::env::var(var) {
        Ok(spec) if !spec.is_empty() => Some((StoreSpec { spec, queue }, None)),
        _ => {
            println!("skipped: {test} on {kind:?} (set {var}={example} to run it)");
            None
        }
    }
}

/// Starts this binary as a child in `role`; returns it once it printed its
/// first line (`ready`, or `listening <addr>`), with that line.
async fn start_child(role: &str, store: &StoreSpec, upstream: &str) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .env(ROLE, role)
        .env(STORE, &store.spec)
        .env(QUEUE, &store.queue)
        .env(UPSTREAM, upstream)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("the child reports within the limit")
        .expect("the child's stdout reads")
        .expect("the child printed a line before exiting");
    (child, line)
}

/// The parent's `Jobs`: it only dispatches.
async fn dispatcher(store: &StoreSpec, upstream: &str) -> Jobs<Upstream> {
    Jobs::builder(Arc::new(Upstream {
        client: Client::new(),
        base: upstream.to_owned(),
        worker: "parent".to_owned(),
    }))
    .durable(open_store(store).await)
    .build()
}

async fn three_worker_processes_on_one_store_run_each_job_exactly_once(kind: Kind) {
    const N: u64 = 1_000;
    let Some((db, _file)) = store_for(kind, "three-workers") else {
        return;
    };
    let (counter, upstream) = Counter::serve().await;
    let jobs = dispatcher(&db, &upstream).await;
    let mut workers = Vec::new();
    for name in ["worker:a", "worker:b", "worker:c"] {
        workers.push(start_child(name, &db, &upstream).await.0);
    }
    // Dispatched while the workers run: they share the file with them.
    for order in 0..N {
        jobs.dispatch(Hit { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
    }
    counter.wait_total(N as usize).await;
    for worker in &mut workers {
        kill_9(worker).await;
    }
    let hits = counter.hits.lock().unwrap().clone();
    assert_eq!(hits.len() as u64, N);
    assert!(
        hits.values().all(|n| *n == 1),
        "run twice: {:?}",
        hits.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let split = counter.by_worker.lock().unwrap().clone();
    assert_eq!(split.values().sum::<u32>() as u64, N);
    assert_eq!(split.len(), 3, "every worker took jobs: {split:?}");
    println!("  {kind:?}: three workers, {N} jobs, each once, split {split:?}");
}

/// SIGKILL, and reap it.
async fn kill_9(child: &mut Child) {
    child.kill().await.expect("SIGKILL the child");
}

async fn every_job_reaches_the_upstream_after_the_worker_is_killed_with_sigkill_mid_run(
    kind: Kind,
) {
    const N: u64 = 200;
    let Some((db, _file)) = store_for(kind, "sigkill") else {
        return;
    };
    let (counter, upstream) = Counter::serve().await;
    let jobs = dispatcher(&db, &upstream).await;
    for order in 0..N {
        jobs.dispatch(Hit { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
    }

    let (mut first, _) = start_child("worker:first", &db, &upstream).await;
    counter.wait_total(50).await;
    kill_9(&mut first).await;
    let at_kill = *counter.total.borrow();

    let started = Instant::now();
    let (mut second, _) = start_child("worker:second", &db, &upstream).await;
    counter.wait_distinct(N as usize).await;
    let recovered_in = started.elapsed();
    kill_9(&mut second).await;

    let hits = counter.hits.lock().unwrap().clone();
    assert_eq!(hits.len() as u64, N, "every job reached the upstream");
    assert_eq!(
        hits.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );
    let duplicated: Vec<u64> = hits
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(order, _)| *order)
        .collect();
    assert!(
        hits.values().all(|n| *n <= 2),
        "a job ran more than twice: {hits:?}"
    );
    // Only jobs in flight at the kill run twice: apalis locks up to
    // `batch_size` (10) jobs per fetch and queues up to 4 x 10
    // acknowledgements before writing them, so at most 50, and only jobs
    // that had reached the upstream before the kill. (apalis-sqlite and
    // apalis-postgres alike: both drive apalis-core's `Persisted` with a
    // default `batch_size` of 10.)
    let in_flight_bound = 50;
    assert!(
        duplicated.len() <= in_flight_bound && duplicated.len() <= at_kill,
        "{} duplicates ({at_kill} hits before the kill)",
        duplicated.len()
    );
    println!(
        "  {kind:?}: sigkill: {N} jobs, {at_kill} hits before the kill, {} run twice ({duplicated:?}), all done {:.1} s after the restart",
        duplicated.len(),
        recovered_in.as_secs_f64()
    );
}

async fn a_job_stored_by_a_server_killed_right_after_its_response_is_run_by_a_fresh_worker(
    kind: Kind,
) {
    let Some((db, _file)) = store_for(kind, "server-killed") else {
        return;
    };
    let (counter, upstream) = Counter::serve().await;
    let (mut server, line) = start_child("server", &db, &upstream).await;
    let addr = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the server printed `{line}`"))
        .to_owned();
    let reply = Client::new()
        .send(Request::post(format!("http://{addr}/checkout/42")))
        .await
        .expect("the server answers");
    assert_eq!(reply.text(), "order 42 confirmed");
    kill_9(&mut server).await;
    assert_eq!(*counter.total.borrow(), 0, "no worker has run yet");

    let (mut worker, _) = start_child("worker:fresh", &db, &upstream).await;
    counter.wait_total(1).await;
    kill_9(&mut worker).await;
    assert_eq!(
        counter.hits.lock().unwrap().clone(),
        BTreeMap::from([(42, 1)])
    );
}

// ---- the harness ----

fn main() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    if let Ok(role) = std::env::var(ROLE) {
        match role.strip_prefix("worker:") {
            Some(name) => runtime().block_on(worker_child(name.to_owned())),
            None => runtime().block_on(server_child()),
        }
        return;
    }

    let tests = batch_tests::harness_free_tests![
        sqlite_sigkill,
        sqlite_server_killed,
        sqlite_three_workers,
        postgres_sigkill,
        postgres_server_killed,
        postgres_three_workers,
        redis_sigkill,
        redis_server_killed,
        redis_three_workers,
    ];
    batch_tests::run_tests(&tests, Duration::from_secs(120));
}

/// Each scenario on one store, as a test of its own.
macro_rules! on_store {
    ($($name:ident => $scenario:ident($kind:ident)),* $(,)?) => {
        $(async fn $name() { $scenario(Kind::$kind).await })*
    };
}

on_store!(
    sqlite_sigkill => every_job_reaches_the_upstream_after_the_worker_is_killed_with_sigkill_mid_run(Sqlite),
    sqlite_server_killed => a_job_stored_by_a_server_killed_right_after_its_response_is_run_by_a_fresh_worker(Sqlite),
    sqlite_three_workers => three_worker_processes_on_one_store_run_each_job_exactly_once(Sqlite),
    postgres_sigkill => every_job_reaches_the_upstream_after_the_worker_is_killed_with_sigkill_mid_run(Postgres),
    postgres_server_killed => a_job_stored_by_a_server_killed_right_after_its_response_is_run_by_a_fresh_worker(Postgres),
    postgres_three_workers => three_worker_processes_on_one_store_run_each_job_exactly_once(Postgres),
    redis_sigkill => every_job_reaches_the_upstream_after_the_worker_is_killed_with_sigkill_mid_run(Redis),
    redis_server_killed => a_job_stored_by_a_server_killed_right_after_its_response_is_run_by_a_fresh_worker(Redis),
    redis_three_workers => three_worker_processes_on_one_store_run_each_job_exactly_once(Redis),
);
