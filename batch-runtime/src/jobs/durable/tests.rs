use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::timeout;

use serde::{Deserialize, Serialize};

use super::*;
use crate::jobs::{Connection, DispatchError, Job, JobError};
use crate::jobs::{Jobs, JobsFake};

const LIMIT: Duration = Duration::from_secs(30);

/// A SQLite file in the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(test: &str) -> TempDb {
        let name = format!("batch-durable-{test}-{}.db", unique());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempDb(path)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// `<pid>-<n>`: unique among this run's tests and across reruns' live ones.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

/// The stores the same cases run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[cfg_attr(not(feature = "durable-sqlite"), allow(dead_code))]
    Sqlite,
    #[cfg_attr(not(feature = "durable-postgres"), allow(dead_code))]
    Postgres,
    #[cfg_attr(not(feature = "durable-redis"), allow(dead_code))]
    Redis,
}

impl Kind {
    /// The variable naming the server, for the stores that need one.
    fn env_var(self) -> Option<&'static str> {
        match self {
            Kind::Sqlite => None,
            Kind::Postgres => Some("BATCH_TEST_POSTGRES_URL"),
            Kind::Redis => Some("BATCH_TEST_REDIS_URL"),
        }
    }

    fn example_url(self) -> &'static str {
        match self {
            Kind::Sqlite => "",
            Kind::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Kind::Redis => "redis://127.0.0.1:6379",
        }
    }

    /// A setting that names this kind of store where none can be opened.
    fn unreachable_spec(self) -> String {
        match self {
            Kind::Sqlite => std::env::temp_dir()
                .join("batch-durable-no-such-dir")
                .join("nested")
                .join("jobs.db")
                .display()
                .to_string(),
            // Port 1 on loopback: refused at once.
            Kind::Postgres => "postgres://postgres:hunter2@127.0.0.1:1/test".to_owned(),
            Kind::Redis => "redis://:hunter2@127.0.0.1:1".to_owned(),
        }
    }
}

/// One test's store: a temp SQLite file, or a queue of its own on the
/// PostgreSQL or Redis server of `BATCH_TEST_*_URL`.
struct TestStore {
    spec: String,
    queue: String,
    kind: Kind,
    _file: Option<TempDb>,
}

impl TestStore {
    /// `None` (after one line on stderr per store kind and run) when the
    /// store's server is not configured.
    fn new(kind: Kind, test: &str) -> Option<TestStore> {
        let queue = format!("batch-test-{test}-{}", unique());
        let Some(var) = kind.env_var() else {
            let file = TempDb::new(test);
            return Some(TestStore {
                spec: file.0.display().to_string(),
                queue,
                kind,
                _file: Some(file),
            });
        };
        match std::env::var(var) {
            Ok(spec) if !spec.is_empty() => Some(TestStore {
                spec,
                queue,
                kind,
                _file: None,
            }),
            _ => {
                static NOTED: Mutex<Vec<Kind>> = Mutex::new(Vec::new());
                let mut noted = NOTED.lock().unwrap_or_else(|e| e.into_inner());
                if !noted.contains(&kind) {
                    noted.push(kind);
                    // Straight to stderr: libtest captures `eprintln!`.
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipped: the durable-store tests on {kind:?} (set {var}={} to run them)",
                        kind.example_url()
                    );
                }
                None
            }
        }
    }

    /// A new handle on the test's store and queue, as a fresh process
    /// would open it.
    async fn open(&self) -> DurableStore {
        DurableStore::open(&self.spec)
            .await
            .unwrap_or_else(|e| panic!("the {:?} store opens: {e}", self.kind))
            .queue(&self.queue)
    }
}

/// Runs `case` on a fresh store of `kind`, or skips it.
async fn on<F, Fut>(kind: Kind, test: &str, case: F)
where
    F: FnOnce(TestStore) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(store) = TestStore::new(kind, test) {
        case(store).await;
    }
}

/// One module of tests, `$module::<case>`, running each case on `$kind`.
macro_rules! cases_on {
    ($module:ident, $feature:literal, $kind:ident, [$($case:ident),*]) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on(super::Kind::$kind, stringify!($case), super::$case).await;
                }
            )*
        }
    };
}

/// The cases every store passes, each as a test per enabled store:
/// `jobs::durable::tests::sqlite::<case>`, `...::postgres::<case>`,
/// `...::redis::<case>`.
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        cases_on!(sqlite, "durable-sqlite", Sqlite, [$($case),*]);
        cases_on!(postgres, "durable-postgres", Postgres, [$($case),*]);
        cases_on!(redis, "durable-redis", Redis, [$($case),*]);
    };
}

on_every_store!(
    a_durable_job_is_stored_before_dispatch_returns_and_a_later_worker_runs_it,
    every_stored_job_runs_exactly_once_when_no_worker_dies,
    retries_and_the_failed_hook_run_inside_one_stored_execution_that_is_not_rerun,
    a_job_running_on_a_worker_that_died_runs_again_after_two_missed_heartbeats,
    a_delayed_job_waits_in_the_store_until_its_time,
    a_worker_told_to_stop_finishes_its_job_in_flight_before_returning,
    a_worker_whose_grace_runs_out_returns_counting_the_jobs_left_running,
    failed_jobs_are_listed_with_their_last_error_and_retried_by_id,
    a_durable_dispatch_the_store_cannot_take_fails_naming_the_store,
    failover_stores_the_job_and_runs_it_deferred_when_the_store_cannot_take_it,
    a_job_the_worker_does_not_know_is_kept_as_failed_saying_how_to_register_it,
    a_job_that_does_not_serialize_is_refused_and_nothing_is_stored,
    a_store_that_cannot_be_opened_names_the_store_and_the_step,
    two_queues_on_one_store_do_not_see_each_others_jobs,
    stats_with_store_reads_the_store_including_jobs_other_processes_stored,
    stats_with_store_fails_naming_the_store_when_it_cannot_be_read,
    a_worker_restarted_at_once_under_its_name_still_reruns_the_job_it_died_with,
    an_idle_worker_finds_each_job_another_process_stores_within_its_poll_interval,
    a_job_outlasting_two_heartbeats_on_a_live_worker_is_not_taken_for_orphaned,
    two_live_workers_given_one_name_run_side_by_side_without_taking_each_others_jobs,
    closing_the_store_stops_its_workers_with_an_error_and_refuses_every_command,
);

/// The cases for the stores on a server, run through a loopback proxy
/// the test cuts: a real outage, not a closed handle.
macro_rules! on_every_server {
    ($($case:ident),* $(,)?) => {
        cases_on!(postgres_outage, "durable-postgres", Postgres, [$($case),*]);
        cases_on!(redis_outage, "durable-redis", Redis, [$($case),*]);
    };
}

on_every_server!(
    failover_runs_the_job_deferred_when_the_store_server_goes_down,
    a_durable_dispatch_to_a_server_that_went_down_fails_naming_the_store_in_bounded_time,
    a_dispatch_to_a_server_that_stopped_answering_fails_within_the_documented_timeouts,
    a_worker_keeps_running_through_a_store_outage_and_runs_jobs_once_the_store_is_back,
    a_worker_told_to_give_up_after_a_bound_stops_with_an_error_naming_the_outage,
    a_worker_stops_promptly_when_shut_down_during_an_outage,
    a_worker_back_on_its_store_times_a_new_outage_from_its_own_first_failure,
);

/// The cases for PostgreSQL alone: how it maps our semantics onto
/// apalis-postgres (see `postgres.rs`).
#[cfg(feature = "durable-postgres")]
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_dispatch_whose_insert_is_never_answered_fails_in_bounded_time() {
        super::on(
            super::Kind::Postgres,
            "insert_never_answered",
            super::a_durable_dispatch_whose_insert_is_never_answered_fails_in_bounded_time,
        )
        .await;
    }
}

/// The connection is fine until the job's `INSERT` is sent, which never
/// reaches the server (nor does anything after it): the dispatch still
/// fails in bounded time, though the connection was checked healthy.
#[cfg_attr(not(feature = "durable-postgres"), allow(dead_code))]
async fn a_durable_dispatch_whose_insert_is_never_answered_fails_in_bounded_time(db: TestStore) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NEEDLE: &[u8] = b"INSERT INTO apalis.jobs";
    let target = db.server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("the proxy's address");
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swallowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (armed_in, swallowed_in) = (armed.clone(), swallowed.clone());
    let proxy = tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let target = target.clone();
            let (armed, swallowed) = (armed_in.clone(), swallowed_in.clone());
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let answers = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    // Keep the client's side open.
                    std::future::pending::<()>().await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if armed.load(Ordering::SeqCst)
                        && buf[..n].windows(NEEDLE.len()).any(|w| w == NEEDLE)
                    {
                        swallowed.store(true, Ordering::SeqCst);
                        // Both ends stay open; the server never sees it.
                        std::future::pending::<()>().await;
                    }
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                answers.abort();
            });
        }
    });
    let mut through = via(&db.spec, addr);
    // In clear, so the proxy can see the INSERT go by.
    through.query_pairs_mut().append_pair("sslmode", "disable");
    let store = DurableStore::open(through.as_str())
        .await
        .expect("the store opens through the proxy")
        .queue(&db.queue);
    let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();

    armed.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let error = timeout(
        LIMIT,
        jobs.dispatch(Deliver { order: 1 }).on(Connection::Durable),
    )
    .await
    .expect("the dispatch fails within the limit instead of hanging")
    .expect_err("the INSERT is never answered");
    let failed_after = started.elapsed();
    assert!(
        swallowed.load(Ordering::SeqCst),
        "the INSERT was sent: {error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(store.location())
            && message.contains("storing the job failed")
            && message.contains("no answer from the server")
            && message.contains("may or may not have been committed"),
        "{message}"
    );
    assert!(
        failed_after < Duration::from_secs(15),
        "failed after {failed_after:?}"
    );
    proxy.abort();
}

/// What a [`Proxy`] does with its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Forward,
    /// Closes every connection and refuses new ones: a server that went
    /// down.
    Cut,
    /// Holds every connection open, new ones too, and forwards nothing: a
    /// network partition or a frozen host.
    Frozen,
}

/// A TCP proxy on loopback to the store's server, which the test takes
/// down (`cut`) or silences (`freeze`), and brings back (`restore`).
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
struct Proxy {
    addr: std::net::SocketAddr,
    target: String,
    link: watch::Sender<Link>,
    accept: Mutex<tokio::task::JoinHandle<()>>,
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
impl Proxy {
    async fn to(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (link, _) = watch::channel(Link::Forward);
        let accept = Proxy::serve(listener, target.clone(), &link);
        Proxy {
            addr,
            target,
            link,
            accept: Mutex::new(accept),
        }
    }

    /// Accepts connections on `listener` and handles each as `link` says.
    fn serve(
        listener: tokio::net::TcpListener,
        target: String,
        link: &watch::Sender<Link>,
    ) -> tokio::task::JoinHandle<()> {
        let link_rx = link.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let mut link_rx = link_rx.clone();
                tokio::spawn(async move {
                    let link_now = *link_rx.borrow();
                    if link_now == Link::Cut {
                        return;
                    }
                    if link_now == Link::Forward {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let changed = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => None,
                            link = link_rx.wait_for(|link| *link != Link::Forward) => {
                                link.ok().map(|link| *link)
                            }
                        };
                        if changed != Some(Link::Frozen) {
                            return;
                        }
                        // Frozen: both sockets stay open, silent.
                        std::future::pending::<()>().await;
                        drop(outbound);
                    }
                    // Accepted while frozen: never answered.
                    std::future::pending::<()>().await;
                    drop(inbound);
                });
            }
        })
    }

    /// The server goes down: connections are closed, new ones refused.
    fn cut(&self) {
        self.accept.lock().expect("proxy lock").abort();
        self.link.send_replace(Link::Cut);
    }

    fn freeze(&self) {
        self.link.send_replace(Link::Frozen);
    }

    /// The server is back on the same address, after a `cut`.
    async fn restore(&self) {
        // The cut listener closes once its aborted task is dropped.
        let listener = timeout(LIMIT, async {
            loop {
                match tokio::net::TcpListener::bind(self.addr).await {
                    Ok(listener) => return listener,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the proxy binds its address again");
        self.link.send_replace(Link::Forward);
        let accept = Proxy::serve(listener, self.target.clone(), &self.link);
        *self.accept.lock().expect("proxy lock") = accept;
    }
}

/// `spec` (a server store's URL) with its host and port replaced by
/// `addr`.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
fn via(spec: &str, addr: std::net::SocketAddr) -> url::Url {
    let mut url = url::Url::parse(spec).expect("a server store's setting is a URL");
    url.set_ip_host(addr.ip()).expect("an IP host");
    url.set_port(Some(addr.port())).expect("a port");
    url
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
impl TestStore {
    /// The store's server, `host:port`.
    fn server(&self) -> String {
        let url = url::Url::parse(&self.spec).expect("a server store's setting is a URL");
        let default_port = if self.kind == Kind::Postgres {
            5432
        } else {
            6379
        };
        format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port().unwrap_or(default_port)
        )
    }

    /// Opens the test's store through a [`Proxy`] the test controls.
    async fn open_through_proxy(&self) -> (DurableStore, Proxy) {
        let proxy = Proxy::to(self.server()).await;
        let store = DurableStore::open(via(&self.spec, proxy.addr).as_str())
            .await
            .unwrap_or_else(|e| panic!("the {:?} store opens through the proxy: {e}", self.kind))
            .queue(&self.queue);
        (store, proxy)
    }
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn failover_runs_the_job_deferred_when_the_store_server_goes_down(db: TestStore) {
    let ledger = Ledger::new();
    let (store, proxy) = db.open_through_proxy().await;
    let runtime = crate::defer::DeferRuntime::new();
    let jobs = Jobs::builder(ledger.clone())
        .durable(store.clone())
        .deferred(&runtime)
        .build();
    let stored = jobs
        .dispatch(Deliver { order: 1 })
        .on(Connection::Failover)
        .await
        .expect("the store takes the job");
    assert_eq!(stored.connection(), Connection::Durable);

    proxy.cut();
    let fell_back = timeout(
        LIMIT,
        jobs.dispatch(Deliver { order: 2 }).on(Connection::Failover),
    )
    .await
    .expect("failover decides within the limit")
    .expect("failover runs the job deferred");
    assert_eq!(fell_back.connection(), Connection::Deferred);
    assert_eq!(fell_back.stored_id(), None);
    assert_eq!(ledger.sorted_runs(), vec![2]);
    // The job stored before the outage is still there for a worker.
    let direct = db.open().await;
    assert_eq!(direct.counts().await.expect("counts").pending, 1);
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_durable_dispatch_to_a_server_that_went_down_fails_naming_the_store_in_bounded_time(
    db: TestStore,
) {
    let (store, proxy) = db.open_through_proxy().await;
    let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
    proxy.cut();
    let error = timeout(
        LIMIT,
        jobs.dispatch(Deliver { order: 1 }).on(Connection::Durable),
    )
    .await
    .expect("the dispatch fails within the limit instead of hanging")
    .expect_err("the server is down");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot dispatch job `deliver` on `durable`: durable job store `")
            && message.contains(store.location())
            && message.contains("storing the job failed"),
        "{message}"
    );
    assert_eq!(jobs.stats().of::<Deliver>().dispatched, 0);
}

/// Records which orders ran, and publishes how many runs there were.
struct Ledger {
    runs: Mutex<Vec<u64>>,
    stored_ids: Mutex<Vec<Option<String>>>,
    count: watch::Sender<usize>,
    failed_hook: watch::Sender<u32>,
    gate: tokio::sync::Semaphore,
}

impl Ledger {
    fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            runs: Mutex::new(Vec::new()),
            stored_ids: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            failed_hook: watch::channel(0).0,
            gate: tokio::sync::Semaphore::new(0),
        })
    }

    fn record(&self, order: u64) {
        self.stored_ids
            .lock()
            .expect("ledger lock")
            .push(stored_id());
        let mut runs = self.runs.lock().expect("ledger lock");
        runs.push(order);
        let n = runs.len();
        drop(runs);
        self.count.send_replace(n);
    }

    async fn wait_runs(&self, n: usize) {
        let mut rx = self.count.subscribe();
        timeout(LIMIT, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} runs did not happen within {LIMIT:?}"))
            .expect("ledger sender alive");
    }

    fn sorted_runs(&self) -> Vec<u64> {
        let mut runs = self.runs.lock().expect("ledger lock").clone();
        runs.sort_unstable();
        runs
    }
}

#[derive(Serialize, Deserialize)]
struct Deliver {
    order: u64,
}

impl Job for Deliver {
    const NAME: &'static str = "deliver";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        ledger.record(self.order);
        Ok(())
    }
}

/// Fails every attempt.
#[derive(Serialize, Deserialize)]
struct Refund {
    order: u64,
}

impl Job for Refund {
    const NAME: &'static str = "refund";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        ledger.record(self.order);
        Err(JobError::new("the payment provider said no"))
    }
    fn tries(&self) -> u32 {
        2
    }
    fn backoff(&self) -> crate::jobs::Backoff {
        crate::jobs::Backoff::fixed(Duration::from_millis(1))
    }
    async fn failed(&self, _: &JobError, ledger: &Ledger) {
        ledger.failed_hook.send_modify(|n| *n += 1);
    }
}

/// Hangs on its first run (the worker is killed meanwhile), succeeds
/// after.
#[derive(Serialize, Deserialize)]
struct Invoice {
    order: u64,
}

impl Job for Invoice {
    const NAME: &'static str = "invoice";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        let first = ledger.runs.lock().expect("ledger lock").is_empty();
        ledger.record(self.order);
        if first {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Waits for the ledger's gate to open.
#[derive(Serialize, Deserialize)]
struct Gated {
    order: u64,
}

impl Job for Gated {
    const NAME: &'static str = "gated";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        ledger.record(self.order);
        let _permit = ledger.gate.acquire().await?;
        Ok(())
    }
}

/// A worker for every job type of these tests.
fn test_worker(jobs: &Jobs<Ledger>, name: &str) -> DurableWorker<Ledger> {
    jobs.durable_worker(name, |r| {
        r.register::<Deliver>()
            .register::<Refund>()
            .register::<Invoice>()
            .register::<Gated>()
            .register::<Slow>()
    })
    .expect("durable is configured")
}

/// Runs `worker` on a task of its own until the sender fires or drops.
fn spawn(
    worker: DurableWorker<Ledger>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn spawn_worker(
    jobs: &Jobs<Ledger>,
    name: &str,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    spawn(test_worker(jobs, name))
}

async fn stop_worker(
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let _ = stop.send(());
    timeout(LIMIT, task)
        .await
        .expect("the worker stops after its shutdown signal")
        .expect("the worker task did not panic")
        .expect("the worker stopped without a store error");
}

async fn a_durable_job_is_stored_before_dispatch_returns_and_a_later_worker_runs_it(db: TestStore) {
    {
        // The dispatching "process": no worker, dropped before one starts.
        let store = db.open().await;
        let jobs = Jobs::builder(Ledger::new()).durable(store).build();
        for order in 1..=3 {
            let dispatched = jobs
                .dispatch(Deliver { order })
                .on(Connection::Durable)
                .await
                .expect("the store takes the job");
            assert_eq!(dispatched.connection(), Connection::Durable);
            assert_eq!(dispatched.outcome(), None);
        }
        assert_eq!(jobs.stats().of::<Deliver>().dispatched, 3);
    }
    // A fresh store handle and context: only the file carries the jobs.
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store).build();
    let (stop, task) = spawn_worker(&jobs, "later-worker");
    ledger.wait_runs(3).await;
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), vec![1, 2, 3]);
    assert_eq!(jobs.stats().of::<Deliver>().succeeded, 3);
}

async fn every_stored_job_runs_exactly_once_when_no_worker_dies(db: TestStore) {
    const N: u64 = 200;
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store).build();
    for order in 0..N {
        jobs.dispatch(Deliver { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
    }
    let (stop, task) = spawn_worker(&jobs, "once-worker");
    ledger.wait_runs(N as usize).await;
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), (0..N).collect::<Vec<_>>());
}

async fn retries_and_the_failed_hook_run_inside_one_stored_execution_that_is_not_rerun(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store).build();
    jobs.dispatch(Refund { order: 9 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    // A job after it shows the worker moved on.
    jobs.dispatch(Deliver { order: 10 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (stop, task) = spawn_worker(&jobs, "retry-worker");
    ledger.wait_runs(3).await;
    let mut failed = ledger.failed_hook.subscribe();
    timeout(LIMIT, failed.wait_for(|n| *n >= 1))
        .await
        .expect("the refund's `failed` hook runs after its two tries")
        .expect("ledger sender alive");
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), vec![9, 9, 10]);
    assert_eq!(*ledger.failed_hook.borrow(), 1);
    let refund = jobs.stats().of::<Refund>();
    assert_eq!((refund.retried, refund.failed), (1, 1));
}

/// What [`a_worker_dies_mid_job`] saw.
struct Rescue {
    ledger: Arc<Ledger>,
    jobs: Jobs<Ledger>,
    stored_id: Option<String>,
    /// From the dying worker's end to the job's second run.
    recovered_after: Duration,
}

/// A worker named `dying` dies mid-job (no ack, no more heartbeats); one
/// named `rescuing` starts at once; returns once the job ran again.
async fn a_worker_dies_mid_job(
    db: &TestStore,
    heartbeat: Duration,
    dying: &str,
    rescuing: &str,
) -> Rescue {
    let ledger = Ledger::new();
    let store = db.open().await.heartbeat(heartbeat);
    let jobs = Jobs::builder(ledger.clone()).durable(store).build();
    let dispatched = jobs
        .dispatch(Invoice { order: 5 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (_never_stopped, dying) = spawn_worker(&jobs, dying);
    ledger.wait_runs(1).await;
    dying.abort();
    let killed_at = std::time::Instant::now();
    let (stop, task) = spawn_worker(&jobs, rescuing);
    ledger.wait_runs(2).await;
    let recovered_after = killed_at.elapsed();
    stop_worker(stop, task).await;
    Rescue {
        ledger,
        jobs,
        stored_id: dispatched.stored_id().map(str::to_owned),
        recovered_after,
    }
}

async fn a_job_running_on_a_worker_that_died_runs_again_after_two_missed_heartbeats(db: TestStore) {
    let heartbeat = Duration::from_secs(1);
    let Rescue {
        ledger,
        jobs,
        stored_id,
        recovered_after,
    } = a_worker_dies_mid_job(&db, heartbeat, "dying-worker", "rescuing-worker").await;
    assert_eq!(ledger.sorted_runs(), vec![5, 5]);
    // Both runs see the same stored id: `handle` can de-duplicate on it.
    let ids = ledger.stored_ids.lock().expect("ledger lock").clone();
    assert_eq!(ids.len(), 2);
    assert!(ids[0].is_some() && ids[0] == ids[1], "{ids:?}");
    assert_eq!(ids[0], stored_id);
    assert_eq!(jobs.stats().of::<Invoice>().succeeded, 1);
    // Two heartbeats, at whole-second resolution, plus one to notice.
    assert!(
        recovered_after >= heartbeat && recovered_after < heartbeat * 6,
        "recovered after {recovered_after:?}"
    );
}

/// Polls the store's counts (it has no change signal) until `done`.
async fn wait_counts(store: &DurableStore, done: impl Fn(&StoreCounts) -> bool) -> StoreCounts {
    timeout(LIMIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            let counts = store.counts().await.expect("the store counts");
            if done(&counts) {
                return counts;
            }
        }
    })
    .await
    .expect("the store reached the expected counts")
}

async fn a_delayed_job_waits_in_the_store_until_its_time(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let dispatched_at = std::time::Instant::now();
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .delay(Duration::from_secs(2))
        .await
        .expect("the store takes the delayed job");
    jobs.dispatch(Deliver { order: 2 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let counts = store.counts().await.expect("the store counts");
    assert_eq!((counts.pending, counts.done), (2, 0));
    let (stop, task) = spawn_worker(&jobs, "delay-worker");
    ledger.wait_runs(2).await;
    let delayed_ran_after = dispatched_at.elapsed();
    stop_worker(stop, task).await;
    assert_eq!(*ledger.runs.lock().expect("ledger lock"), vec![2, 1]);
    // Whole seconds: 2 s from a time truncated to the second.
    assert!(
        delayed_ran_after >= Duration::from_secs(1),
        "ran after {delayed_ran_after:?}"
    );
}

async fn a_worker_told_to_stop_finishes_its_job_in_flight_before_returning(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    jobs.dispatch(Gated { order: 8 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (stop, mut task) = spawn_worker(&jobs, "graceful-worker");
    ledger.wait_runs(1).await;
    let _ = stop.send(());
    assert!(
        timeout(Duration::from_millis(300), &mut task)
            .await
            .is_err(),
        "the worker returned while its job was still running"
    );
    ledger.gate.add_permits(1);
    timeout(LIMIT, task)
        .await
        .expect("the worker returns once its job is done")
        .expect("the worker task did not panic")
        .expect("the worker stopped without a store error");
    let counts = store.counts().await.expect("the store counts");
    assert_eq!((counts.done, counts.running, counts.pending), (1, 0, 0));
}

#[tokio::test]
async fn a_delay_on_a_connection_that_runs_at_once_is_refused() {
    let jobs = Jobs::builder(Ledger::new()).build();
    let error = jobs
        .dispatch(Deliver { order: 1 })
        .on(Connection::Sync)
        .delay(Duration::from_secs(1))
        .await
        .expect_err("sync cannot delay");
    assert_eq!(
        error,
        DispatchError::DelayUnsupported {
            job: "deliver",
            connection: Connection::Sync
        }
    );
    assert!(error
        .to_string()
        .contains("only the `durable` connection can run a job later"));
}

async fn failed_jobs_are_listed_with_their_last_error_and_retried_by_id(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let dispatched = jobs
        .dispatch(Refund { order: 7 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let id = dispatched
        .stored_id()
        .expect("a durable job has a stored id")
        .to_owned();
    let (stop, task) = spawn_worker(&jobs, "failing-worker");
    let counts = wait_counts(&store, |c| c.failed == 1).await;
    assert_eq!((counts.pending, counts.running, counts.done), (0, 0, 0));
    let failed = store.failed_jobs().await.expect("the store lists");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].id.as_str(), failed[0].job.as_str()),
        (id.as_str(), "refund")
    );
    assert!(
        failed[0]
            .last_error
            .contains("the payment provider said no"),
        "{failed:?}"
    );

    assert!(!store.retry("no-such-job").await.expect("the store answers"));
    assert!(store.retry(&id).await.expect("the store answers"));
    ledger.wait_runs(4).await;
    wait_counts(&store, |c| {
        c.failed == 1 && c.pending == 0 && c.running == 0
    })
    .await;
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), vec![7, 7, 7, 7]);
    assert_eq!(*ledger.failed_hook.borrow(), 2);
}

async fn a_durable_dispatch_the_store_cannot_take_fails_naming_the_store(db: TestStore) {
    let store = db.open().await;
    let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
    store.close().await;
    let error = jobs
        .dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect_err("a closed store takes nothing");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot dispatch job `deliver` on `durable`: durable job store `")
            && message.contains(store.location())
            && message.contains("storing the job failed"),
        "{message}"
    );
    assert_eq!(jobs.stats().of::<Deliver>().dispatched, 0);
}

async fn failover_stores_the_job_and_runs_it_deferred_when_the_store_cannot_take_it(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let runtime = crate::defer::DeferRuntime::new();
    let jobs = Jobs::builder(ledger.clone())
        .durable(store.clone())
        .deferred(&runtime)
        .build();

    let stored = jobs
        .dispatch(Deliver { order: 1 })
        .on(Connection::Failover)
        .await
        .expect("the store takes the job");
    assert_eq!(stored.connection(), Connection::Durable);
    assert!(stored.stored_id().is_some());
    assert_eq!(store.counts().await.expect("counts").pending, 1);
    assert!(
        ledger.sorted_runs().is_empty(),
        "a stored job waits for a worker"
    );

    store.close().await;
    let fell_back = jobs
        .dispatch(Deliver { order: 2 })
        .on(Connection::Failover)
        .await
        .expect("failover runs the job deferred");
    assert_eq!(fell_back.connection(), Connection::Deferred);
    assert_eq!(fell_back.stored_id(), None);
    // Outside a request, `deferred` waits for the job.
    assert_eq!(ledger.sorted_runs(), vec![2]);

    let error = jobs
        .dispatch(Deliver { order: 3 })
        .on(Connection::Failover)
        .delay(Duration::from_secs(1))
        .await
        .expect_err("a delayed job cannot fall back to `deferred`");
    assert!(matches!(error, DispatchError::Store { .. }), "{error}");
    assert_eq!(jobs.stats().of::<Deliver>().dispatched, 2);
}

#[cfg(feature = "durable-sqlite")]
#[tokio::test]
async fn every_connection_of_the_store_commits_with_wal_and_synchronous_normal() {
    let db = TestStore::new(Kind::Sqlite, "pragmas").expect("SQLite needs no server");
    let store = db.open().await;
    #[allow(irrefutable_let_patterns)]
    let Backend::Sqlite(backend) = &store.inner.backend
    else {
        unreachable!("a file path opens SQLite")
    };
    let pool = backend.pool();
    // Hold several connections at once, so the one that ran the schema
    // setup is among them.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.acquire().await.expect("a connection"));
    }
    for conn in &mut held {
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .expect("journal_mode");
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .expect("synchronous");
        // 1 = NORMAL: in WAL mode a commit survives the process being
        // killed; 0 (OFF) would not survive an OS crash consistently.
        assert_eq!((mode.as_str(), sync), ("wal", 1));
    }
}

/// Not registered with the test workers.
#[derive(Serialize, Deserialize)]
struct Unknown {
    order: u64,
}

impl Job for Unknown {
    const NAME: &'static str = "unknown";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        ledger.record(self.order);
        Ok(())
    }
}

async fn a_job_the_worker_does_not_know_is_kept_as_failed_saying_how_to_register_it(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    jobs.dispatch(Unknown { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (stop, task) = spawn_worker(&jobs, "unknowing-worker");
    wait_counts(&store, |c| c.failed == 1).await;
    stop_worker(stop, task).await;
    let failed = store.failed_jobs().await.expect("the store lists");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].job, "unknown");
    assert!(
        failed[0]
            .last_error
            .contains("job `unknown` is not registered with this worker; add `registry.register::<unknown>()`"),
        "{failed:?}"
    );
    assert!(ledger.sorted_runs().is_empty());
}

/// A map with non-string keys: not JSON.
#[derive(Serialize, Deserialize)]
struct NotJson {
    by_pair: HashMap<(u8, u8), u8>,
}

impl Job for NotJson {
    const NAME: &'static str = "not-json";
    type Context = Ledger;
    async fn handle(&self, _: &Ledger) -> Result<(), JobError> {
        Ok(())
    }
}

async fn a_job_that_does_not_serialize_is_refused_and_nothing_is_stored(db: TestStore) {
    let store = db.open().await;
    let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
    let error = jobs
        .dispatch(NotJson {
            by_pair: HashMap::from([((1, 2), 3)]),
        })
        .on(Connection::Durable)
        .await
        .expect_err("a tuple-keyed map is not JSON");
    assert!(
        matches!(
            error,
            DispatchError::Serialize {
                job: "not-json",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("does not serialize to JSON"),
        "{error}"
    );
    assert_eq!(
        store.counts().await.expect("counts"),
        StoreCounts::default()
    );
}

async fn a_store_that_cannot_be_opened_names_the_store_and_the_step(db: TestStore) {
    let spec = db.kind.unreachable_spec();
    let error = DurableStore::open(&spec)
        .await
        .expect_err("nothing to open there");
    let message = error.to_string();
    assert!(message.contains("failed"), "{message}");
    // The location names the store, never its password.
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!error.location().contains("hunter2"), "{error:?}");
    match db.kind {
        Kind::Sqlite => {
            assert_eq!(error.location(), spec);
            assert!(message.contains("opening the file"), "{message}");
            assert!(message.contains("jobs.db"), "{message}");
        }
        Kind::Postgres | Kind::Redis => {
            assert!(error.location().contains("127.0.0.1:1"), "{error:?}");
        }
    }
}

#[test]
fn a_store_setting_opens_the_store_its_form_names() {
    assert_eq!(kind_of("jobs.db"), StoreKind::Sqlite);
    assert_eq!(kind_of("/var/lib/app/jobs.db"), StoreKind::Sqlite);
    assert_eq!(kind_of("sqlite://jobs.db"), StoreKind::Sqlite);
    assert_eq!(kind_of("postgres://u@db/app"), StoreKind::Postgres);
    assert_eq!(kind_of("postgresql://u@db/app"), StoreKind::Postgres);
    assert_eq!(kind_of("redis://cache:6379"), StoreKind::Redis);
    assert_eq!(kind_of("rediss://cache:6379"), StoreKind::Redis);
}

#[cfg(not(feature = "durable-redis"))]
#[tokio::test]
async fn a_store_whose_feature_is_off_says_which_feature_to_enable() {
    let error = DurableStore::open("redis://:hunter2@127.0.0.1:6379")
        .await
        .expect_err("durable-redis is off in this build");
    let message = error.to_string();
    assert!(message.contains("`durable-redis` feature"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

async fn a_worker_whose_grace_runs_out_returns_counting_the_jobs_left_running(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    jobs.dispatch(Gated { order: 3 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let worker = jobs
        .durable_worker("impatient-worker", |r| r.register::<Gated>())
        .expect("durable is configured")
        .grace(Duration::from_millis(200));
    let (stop, task) = spawn(worker);
    ledger.wait_runs(1).await;
    let _ = stop.send(());
    let error = timeout(LIMIT, task)
        .await
        .expect("the worker returns once its grace runs out")
        .expect("the worker task did not panic")
        .expect_err("a job was still running");
    assert_eq!(error.abandoned(), 1, "{error}");
    assert!(
        error
            .to_string()
            .contains("grace of 200ms ran out with 1 job(s) still running"),
        "{error}"
    );
    // Not lost: still taken in the store, for another worker once this
    // one's heartbeat is missed.
    let counts = store.counts().await.expect("the store counts");
    assert_eq!((counts.running, counts.done), (1, 0), "{counts:?}");
}

async fn two_queues_on_one_store_do_not_see_each_others_jobs(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let other = store
        .clone()
        .queue(&format!("{}-other", store.queue_name()));
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let other_jobs = Jobs::builder(Ledger::new()).durable(other.clone()).build();
    other_jobs
        .dispatch(Deliver { order: 2 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (stop, task) = spawn_worker(&jobs, "one-queue-worker");
    ledger.wait_runs(1).await;
    wait_counts(&store, |c| c.done == 1).await;
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), vec![1]);
    let counts = other.counts().await.expect("the store counts");
    assert_eq!((counts.pending, counts.done), (1, 0), "{counts:?}");
}

#[tokio::test]
async fn durable_without_a_store_is_refused_with_how_to_configure_it() {
    let jobs = Jobs::builder(Ledger::new()).build();
    let error = jobs
        .dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect_err("no store configured");
    let message = error.to_string();
    assert!(
        message.contains("`durable` connection is not configured"),
        "{message}"
    );
    assert!(message.contains(".durable(store)"), "{message}");
    assert!(jobs.durable_worker("w", |r| r).is_err());
}

#[tokio::test]
async fn the_jobs_fake_records_durable_dispatches() {
    let fake: JobsFake<Ledger> = Jobs::fake();
    let jobs = fake.jobs();
    jobs.dispatch(Deliver { order: 4 })
        .on(Connection::Durable)
        .await
        .expect("the fake takes every job");
    fake.assert_pushed_on::<Deliver>(Connection::Durable, |j| j.order == 4);
    fake.assert_pushed_count::<Deliver>(1);
}

#[test]
fn durable_parses_from_configuration() {
    assert_eq!("durable".parse::<Connection>(), Ok(Connection::Durable));
    assert_eq!(Connection::Durable.to_string(), "durable");
    assert_eq!("failover".parse::<Connection>(), Ok(Connection::Failover));
    assert_eq!(Connection::Failover.to_string(), "failover");
}

async fn stats_with_store_reads_the_store_including_jobs_other_processes_stored(db: TestStore) {
    let jobs = Jobs::builder(Ledger::new())
        .durable(db.open().await)
        .build();
    for order in 0..3 {
        jobs.dispatch(Deliver { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
    }
    // Another process' dispatcher: its own `Jobs` on the same store.
    let other = Jobs::builder(Ledger::new())
        .durable(db.open().await)
        .build();
    other
        .dispatch(Deliver { order: 3 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");

    let stats = jobs.stats_with_store().await.expect("the store counts");
    let store = stats.store().expect("a durable store is configured");
    assert_eq!(
        (store.pending, store.running, store.failed, store.done),
        (4, 0, 0, 0)
    );
    // The in-process counters are this `Jobs`' own.
    assert_eq!(stats.of::<Deliver>().dispatched, 3);
    assert_eq!(stats.iter().count(), 1);
    // `stats()` reads no store.
    assert_eq!(jobs.stats().store(), None);
    assert!(jobs.stats().iter().eq(stats.iter()));
}

async fn stats_with_store_fails_naming_the_store_when_it_cannot_be_read(db: TestStore) {
    let store = db.open().await;
    let jobs = Jobs::builder(Ledger::new()).durable(store.clone()).build();
    store.close().await;
    let error = jobs
        .stats_with_store()
        .await
        .expect_err("a closed store counts nothing");
    assert_eq!(error.location(), store.location());
    assert!(
        error.to_string().contains("counting the jobs failed"),
        "{error}"
    );
    // The in-process counters stay readable.
    assert_eq!(jobs.stats().store(), None);
}

#[tokio::test]
async fn stats_with_store_is_none_without_a_durable_store_and_for_the_fake() {
    let jobs = Jobs::builder(Ledger::new()).build();
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Sync)
        .await
        .expect("sync runs the job");
    let stats = jobs.stats_with_store().await.expect("no store to fail");
    assert_eq!(stats.store(), None);
    assert_eq!(stats.of::<Deliver>().succeeded, 1);

    let fake = Jobs::<Ledger>::fake();
    let stats = fake.jobs().stats_with_store().await.expect("no store");
    assert_eq!(stats.store(), None);
}

/// A store may take back a dead worker's jobs only while no live worker
/// holds its name: a worker restarted at once under the same name must
/// not adopt (and so never re-run) the job its predecessor died with.
async fn a_worker_restarted_at_once_under_its_name_still_reruns_the_job_it_died_with(
    db: TestStore,
) {
    let heartbeat = Duration::from_secs(1);
    let Rescue {
        ledger,
        jobs,
        recovered_after,
        ..
    } = a_worker_dies_mid_job(&db, heartbeat, "phoenix-worker", "phoenix-worker").await;
    assert_eq!(ledger.sorted_runs(), vec![5, 5]);
    assert_eq!(jobs.stats().of::<Invoice>().succeeded, 1);
    assert!(
        recovered_after < heartbeat * 6,
        "recovered after {recovered_after:?}"
    );
}

/// An idle worker learns of jobs stored by other processes only by
/// polling: each must be found within a few poll intervals, never at the
/// next heartbeat (30 s).
async fn an_idle_worker_finds_each_job_another_process_stores_within_its_poll_interval(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let poll = Duration::from_millis(50);
    let jobs = Jobs::builder(ledger.clone())
        .durable(db.open().await.poll_interval(poll))
        .build();
    let other = Jobs::builder(Ledger::new())
        .durable(db.open().await)
        .build();
    let (stop, task) = spawn_worker(&jobs, "idle-worker");
    let mut slowest = Duration::ZERO;
    for order in 0..12u64 {
        // Land at different points of the poll cycle.
        tokio::time::sleep(Duration::from_millis(37 * (order % 4) + 20)).await;
        let stored_at = std::time::Instant::now();
        other
            .dispatch(Deliver { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
        timeout(Duration::from_secs(5), ledger.wait_runs(order as usize + 1))
            .await
            .unwrap_or_else(|_| panic!("job {order} was not found within 5 s of being stored"));
        slowest = slowest.max(stored_at.elapsed());
    }
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), (0..12).collect::<Vec<_>>());
    assert!(slowest < Duration::from_secs(5), "slowest {slowest:?}");
}

// Found on Redis first (see the `redis` module docs), held on every store:
// a live worker is never taken for dead, replicas may share a name, a
// store that stops answering fails in bounded time, and `close` stops the
// workers on the handle.

/// Sleeps past the orphan timeout of a 1 s heartbeat (3 s on Redis).
#[derive(Serialize, Deserialize)]
struct Slow {
    order: u64,
}

impl Job for Slow {
    const NAME: &'static str = "slow";
    type Context = Ledger;
    async fn handle(&self, ledger: &Ledger) -> Result<(), JobError> {
        ledger.record(self.order);
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }
}

async fn a_job_outlasting_two_heartbeats_on_a_live_worker_is_not_taken_for_orphaned(db: TestStore) {
    let ledger = Ledger::new();
    let store = db.open().await.heartbeat(Duration::from_secs(1));
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    for order in 0..4 {
        jobs.dispatch(Slow { order })
            .on(Connection::Durable)
            .await
            .expect("the store takes the job");
    }
    // Two live workers: each one's heartbeats look for the other's
    // orphans all along the 5 s jobs (more than 2 x 1 s).
    let (stop_a, a) = spawn_worker(&jobs, "live-a");
    let (stop_b, b) = spawn_worker(&jobs, "live-b");
    wait_counts(&store, |c| c.done == 4).await;
    stop_worker(stop_a, a).await;
    stop_worker(stop_b, b).await;
    assert_eq!(ledger.sorted_runs(), vec![0, 1, 2, 3], "a job ran twice");
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.running, counts.failed), (0, 0, 0));
}

async fn two_live_workers_given_one_name_run_side_by_side_without_taking_each_others_jobs(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let store = db.open().await.heartbeat(Duration::from_secs(1));
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    jobs.dispatch(Slow { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    // Replicas started from one configuration share a name.
    let (stop_a, a) = spawn_worker(&jobs, "replica");
    ledger.wait_runs(1).await;
    let (stop_b, b) = spawn_worker(&jobs, "replica");
    jobs.dispatch(Slow { order: 2 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    wait_counts(&store, |c| c.done == 2).await;
    stop_worker(stop_a, a).await;
    stop_worker(stop_b, b).await;
    assert_eq!(ledger.sorted_runs(), vec![1, 2], "a job ran twice");
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_dispatch_to_a_server_that_stopped_answering_fails_within_the_documented_timeouts(
    db: TestStore,
) {
    let (store, proxy) = db.open_through_proxy().await;
    let runtime = crate::defer::DeferRuntime::new();
    let ledger = Ledger::new();
    let jobs = Jobs::builder(ledger.clone())
        .durable(store.clone())
        .deferred(&runtime)
        .build();
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    proxy.freeze();
    for order in [2, 3] {
        // Each waits for its answer (the response timeout) or,
        // once the connection is dropped, for a new one (the
        // connect timeout, tried twice).
        let started = std::time::Instant::now();
        let error = timeout(
            LIMIT,
            jobs.dispatch(Deliver { order }).on(Connection::Durable),
        )
        .await
        .expect("the dispatch fails within the limit instead of hanging")
        .expect_err("the server does not answer");
        let took = started.elapsed();
        let message = error.to_string();
        assert!(
            message.contains(store.location()) && message.contains("storing the job failed"),
            "{message}"
        );
        // Documented: about 5 to 7 s.
        assert!(
            took < Duration::from_secs(12),
            "{order}: failed after {took:?}"
        );
    }
    let fell_back = timeout(
        LIMIT,
        jobs.dispatch(Deliver { order: 4 }).on(Connection::Failover),
    )
    .await
    .expect("failover decides within the limit")
    .expect("failover runs the job deferred");
    assert_eq!(fell_back.connection(), Connection::Deferred);
    assert_eq!(ledger.sorted_runs(), vec![4]);
}

async fn closing_the_store_stops_its_workers_with_an_error_and_refuses_every_command(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let store = db.open().await;
    let other_queue = store.clone().queue(&format!("{}-other", db.queue));
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    let (_stop, task) = spawn_worker(&jobs, "closed-worker");
    ledger.wait_runs(1).await;
    store.close().await;
    let error = timeout(LIMIT, task)
        .await
        .expect("the worker stops once its store is closed")
        .expect("the worker task did not panic")
        .expect_err("a closed store is an error for its worker");
    assert!(error.to_string().contains(store.location()), "{error}");
    let counted = store.counts().await.expect_err("counts on a closed store");
    assert!(
        counted.to_string().contains("counting the jobs failed"),
        "{counted}"
    );
    // Handles derived from the closed one share its connection.
    assert!(other_queue.counts().await.is_err());
    assert!(store.failed_jobs().await.is_err());
    assert!(store.retry("any").await.is_err());
    // Another open of the same server is a connection of its own.
    // The job ran; whether its result was written before the close
    // or it is still taken by the stopped worker (to run again
    // after its heartbeat is missed), it is not lost.
    let reopened = db.open().await;
    let counts = reopened.counts().await.expect("counts");
    assert_eq!(
        (counts.done + counts.running, counts.pending),
        (1, 0),
        "{counts:?}"
    );
}

// A store that fails under a worker: the worker reconnects, with backoff,
// until it is shut down or its `give_up_after` runs out.

/// Waits until `worker`'s runs failed on a store error `n` times in all.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn wait_store_failures(failures: &mut watch::Receiver<u32>, n: u32) {
    timeout(LIMIT, failures.wait_for(|seen| *seen >= n))
        .await
        .unwrap_or_else(|_| panic!("the worker did not see {n} store failures within {LIMIT:?}"))
        .expect("the worker's failure count lives as long as the worker");
}

/// Spawns `worker` and returns once it has run one job, recorded as done,
/// so its run has started: with its count of store failures, its stop
/// and its task.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_started_worker(
    jobs: &Jobs<Ledger>,
    ledger: &Ledger,
    store: &DurableStore,
    worker: DurableWorker<Ledger>,
) -> (
    watch::Receiver<u32>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let failures = worker.store_failures();
    let (stop, task) = spawn(worker);
    jobs.dispatch(Deliver { order: 1 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    ledger.wait_runs(1).await;
    // Recorded as done before the outage, so it never runs again.
    wait_counts(store, |c| c.done == 1).await;
    (failures, stop, task)
}

/// Brings the store back, has another process store job 2 straight on the
/// server, and waits until the worker ran it: only a run that registered
/// in the store again fetches jobs.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn back_with_a_second_job(db: &TestStore, proxy: &Proxy, ledger: &Ledger) {
    proxy.restore().await;
    let other = Jobs::builder(Ledger::new())
        .durable(db.open().await)
        .build();
    other
        .dispatch(Deliver { order: 2 })
        .on(Connection::Durable)
        .await
        .expect("the store takes the job");
    ledger.wait_runs(2).await;
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_worker_keeps_running_through_a_store_outage_and_runs_jobs_once_the_store_is_back(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let (store, proxy) = db.open_through_proxy().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let worker = test_worker(&jobs, "enduring-worker");
    let (mut failures, stop, mut task) = a_started_worker(&jobs, &ledger, &store, worker).await;

    proxy.cut();
    wait_store_failures(&mut failures, 1).await;
    assert!(
        timeout(Duration::from_secs(3), &mut task).await.is_err(),
        "the worker stopped during the outage"
    );

    back_with_a_second_job(&db, &proxy, &ledger).await;
    stop_worker(stop, task).await;
    assert_eq!(ledger.sorted_runs(), vec![1, 2]);
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_worker_told_to_give_up_after_a_bound_stops_with_an_error_naming_the_outage(
    db: TestStore,
) {
    let ledger = Ledger::new();
    let (store, proxy) = db.open_through_proxy().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let worker = test_worker(&jobs, "giving-up-worker").give_up_after(Duration::from_secs(1));
    let (failures, _stop, task) = a_started_worker(&jobs, &ledger, &store, worker).await;

    proxy.cut();
    let cut_at = std::time::Instant::now();
    let error = timeout(LIMIT, task)
        .await
        .expect("the worker gives up within the limit")
        .expect("the worker task did not panic")
        .expect_err("its store failed for longer than its bound");
    let message = error.to_string();
    assert!(
        message.contains("giving-up-worker")
            && message.contains(store.location())
            && message.contains("the store has been failing for ")
            && message.contains("(give_up_after is 1s); last error: durable job store `")
            && message.contains("running a worker failed"),
        "{message}"
    );
    assert_eq!(error.abandoned(), 0);
    // It tried again before giving up, at the bound.
    assert!(*failures.borrow() >= 2, "{} failures", *failures.borrow());
    assert!(cut_at.elapsed() >= Duration::from_secs(1));
}

#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_worker_stops_promptly_when_shut_down_during_an_outage(db: TestStore) {
    let ledger = Ledger::new();
    let (store, proxy) = db.open_through_proxy().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let worker = test_worker(&jobs, "interrupted-worker");
    let (mut failures, stop, task) = a_started_worker(&jobs, &ledger, &store, worker).await;

    proxy.cut();
    wait_store_failures(&mut failures, 1).await;
    // Past the first wait: on PostgreSQL the next run is waiting for a
    // connection, which takes up to 5 s to fail.
    tokio::time::sleep(reconnect::FIRST_WAIT * 3).await;
    let _ = stop.send(());
    // Under PostgreSQL's 5 s wait for a connection: a run that has not
    // reached the store is not waited for.
    timeout(Duration::from_secs(3), task)
        .await
        .expect("the worker returns promptly once told to stop")
        .expect("the worker task did not panic")
        .expect("a worker shut down during an outage stops without an error");
}

/// A run that started ends the outage: the next failure starts a new one,
/// timed from itself, not from the first failure of the previous outage.
#[cfg_attr(
    not(any(feature = "durable-postgres", feature = "durable-redis")),
    allow(dead_code)
)]
async fn a_worker_back_on_its_store_times_a_new_outage_from_its_own_first_failure(db: TestStore) {
    const BOUND: Duration = Duration::from_secs(3);
    let ledger = Ledger::new();
    let (store, proxy) = db.open_through_proxy().await;
    let jobs = Jobs::builder(ledger.clone()).durable(store.clone()).build();
    let worker = test_worker(&jobs, "resilient-worker").give_up_after(BOUND);
    let (mut failures, _stop, mut task) = a_started_worker(&jobs, &ledger, &store, worker).await;

    // A first outage, much shorter than the bound.
    proxy.cut();
    wait_store_failures(&mut failures, 1).await;
    back_with_a_second_job(&db, &proxy, &ledger).await;
    tokio::time::sleep(BOUND).await;

    // The first outage began more than the bound ago.
    let seen = *failures.borrow();
    proxy.cut();
    wait_store_failures(&mut failures, seen + 1).await;
    assert!(
        timeout(BOUND / 3, &mut task).await.is_err(),
        "the worker gave up at the first failure of a new outage"
    );
    let error = timeout(LIMIT, task)
        .await
        .expect("the worker gives up on the new outage within the limit")
        .expect("the worker task did not panic")
        .expect_err("its store failed for longer than its bound");
    assert!(
        error
            .to_string()
            .contains("the store has been failing for "),
        "{error}"
    );
}
