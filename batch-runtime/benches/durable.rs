//! What the `durable` connection costs on SQLite and on PostgreSQL, beside
//! apalis used directly on the same kind of store in the same run.
//!
//! Run with `cargo bench -p batch-runtime --features durable-sqlite --bench durable`
//! for SQLite. PostgreSQL is measured too when the bench is built with
//! `durable-postgres` and `BATCH_BENCH_POSTGRES_URL` (or, if it is unset,
//! `BATCH_TEST_POSTGRES_URL`) names a database, e.g.
//! `BATCH_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench
//! -p batch-runtime --features durable-sqlite,durable-postgres --bench durable`;
//! otherwise one line says it was skipped. Each side gets a queue of its
//! own, whose rows are deleted at the end. The PostgreSQL figures are
//! printed with a `_postgres` suffix (`durable_ratio_postgres=`,
//! `durable_e2e_ratio_postgres=`), apalis direct being `apalis-postgres`'
//! `PostgresStorage` on a pool of its own.
//!
//! 1. Dispatch latency: a small job dispatched on `durable` (serialized,
//!    committed) one after the other, against `push_task` of the same JSON
//!    on an `apalis_sqlite::SqliteStorage`, in alternating rounds; p50/p99
//!    of each and `durable_ratio` (ours over apalis direct, p50).
//! 2. End to end: jobs stored first, then one worker started; jobs per
//!    second until the last one ran, ours (a `DurableWorker`) and apalis
//!    direct (a `WorkerBuilder` with a plain handler); `durable_e2e_ratio`
//!    (apalis' jobs/s over ours: above 1 means we are slower). Three
//!    alternating runs, each side's best kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_sqlite::{Config, SqliteConnectOptions, SqlitePoolOptions, SqliteStorage};
use batch_runtime::jobs::durable::DurableStore;
use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use tokio::sync::watch;

const ROUNDS: usize = 6;
const PER_ROUND: usize = 200;
const E2E_JOBS: u64 = 1_000;
const E2E_RUNS: usize = 3;
const POLL: Duration = Duration::from_millis(100);

/// Counts runs and publishes the count.
struct Done(watch::Sender<u64>);

impl Done {
    fn new() -> Arc<Done> {
        Arc::new(Done(watch::channel(0).0))
    }

    fn hit(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    async fn wait(&self, n: u64) {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(Duration::from_secs(300), rx.wait_for(|c| *c >= n))
            .await
            .expect("every job ran within 300 s")
            .expect("the counter lives");
    }
}

#[derive(Serialize, Deserialize)]
struct Receipt {
    order: u64,
    email: String,
}

impl Receipt {
    fn new(order: u64) -> Receipt {
        Receipt {
            order,
            email: format!("customer-{order}@example.com"),
        }
    }
}

impl Job for Receipt {
    const NAME: &'static str = "receipt";
    type Context = Done;
    async fn handle(&self, done: &Done) -> Result<(), JobError> {
        done.hit();
        Ok(())
    }
}

struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let path =
            std::env::temp_dir().join(format!("batch-bench-{}-{name}.db", std::process::id()));
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

/// apalis used directly: a pool and storage on `path` with the same
/// connection settings as ours (WAL, `synchronous = NORMAL` on every
/// connection), so the ratio is the cost of our layer, not of durability.
async fn direct_storage(path: &PathBuf) -> SqliteStorage<Receipt> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10))
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let setup = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .expect("the direct store opens");
    SqliteStorage::setup(&setup)
        .await
        .expect("the direct store's schema");
    setup.close().await;
    let pool = SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .expect("the direct store opens");
    SqliteStorage::new(&pool).with_config(Config::default().queue("direct"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

async fn dispatch_latency() {
    let ours_db = TempDb::new("dispatch-ours");
    let direct_db = TempDb::new("dispatch-direct");
    let store = DurableStore::sqlite(&ours_db.0)
        .await
        .expect("our store opens");
    let jobs = Jobs::builder(Done::new()).durable(store).build();
    let mut direct = direct_storage(&direct_db.0).await;

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut order = 0;
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            order += 1;
            let started = Instant::now();
            jobs.dispatch(Receipt::new(order))
                .on(Connection::Durable)
                .await
                .expect("our store takes the job");
            ours.push(started.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..PER_ROUND {
            order += 1;
            let started = Instant::now();
            direct
                .push_task(TaskBuilder::new(Receipt::new(order)).build())
                .await
                .expect("the direct store takes the job");
            theirs.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (o50, o99) = summary(ours);
    let (d50, d99) = summary(theirs);
    println!("durable_dispatch       p50={o50:.3} ms p99={o99:.3} ms");
    println!("apalis_direct_push     p50={d50:.3} ms p99={d99:.3} ms");
    println!("durable_ratio={:.3}", o50 / d50);
}

async fn direct_handler(_: Receipt, done: Data<Arc<Done>>) -> Result<(), BoxDynError> {
    done.hit();
    Ok(())
}

/// Ours: jobs per second through a `DurableWorker`.
async fn end_to_end_ours() -> f64 {
    let db = TempDb::new("e2e-ours");
    let store = DurableStore::sqlite(&db.0).await.expect("our store opens");
    end_to_end_on(store).await
}

/// Ours on `store`: `E2E_JOBS` stored, then one `DurableWorker` runs them.
async fn end_to_end_on(store: DurableStore) -> f64 {
    let done = Done::new();
    let store = store.poll_interval(POLL);
    let jobs = Jobs::builder(done.clone()).durable(store).build();
    for order in 0..E2E_JOBS {
        jobs.dispatch(Receipt::new(order))
            .on(Connection::Durable)
            .await
            .expect("our store takes the job");
    }
    let worker = jobs
        .durable_worker("bench-ours", |r| r.register::<Receipt>())
        .expect("durable is configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    done.wait(E2E_JOBS).await;
    let ours = E2E_JOBS as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = running.await;
    ours
}

/// apalis direct: jobs per second through a plain handler.
async fn end_to_end_direct() -> f64 {
    let db = TempDb::new("e2e-direct");
    let done = Done::new();
    let mut storage = direct_storage(&db.0).await;
    for order in 0..E2E_JOBS {
        storage
            .push_task(TaskBuilder::new(Receipt::new(order)).build())
            .await
            .expect("the direct store takes the job");
    }
    let worker = WorkerBuilder::new("bench-direct")
        .backend(storage.poll_with_interval(POLL))
        .data(done.clone())
        .build(direct_handler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    done.wait(E2E_JOBS).await;
    let theirs = E2E_JOBS as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = running.await;
    theirs
}

/// Alternating runs; each side keeps its best (the machine is shared).
async fn end_to_end() {
    let (mut ours, mut theirs) = (0.0f64, 0.0f64);
    for _ in 0..E2E_RUNS {
        ours = ours.max(end_to_end_ours().await);
        theirs = theirs.max(end_to_end_direct().await);
    }
    println!("durable_e2e_jobs_per_s={ours:.0} ({E2E_JOBS} stored jobs, one worker)");
    println!("apalis_direct_e2e_jobs_per_s={theirs:.0}");
    println!("durable_e2e_ratio={:.3}", theirs / ours);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        dispatch_latency().await;
        end_to_end().await;
        postgres::run().await;
    });
}

/// The database the PostgreSQL half runs on, if any.
fn postgres_url() -> Option<String> {
    ["BATCH_BENCH_POSTGRES_URL", "BATCH_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|url| !url.is_empty()))
}

#[cfg(not(feature = "durable-postgres"))]
mod postgres {
    pub(crate) async fn run() {
        let how = "build with `--features durable-sqlite,durable-postgres` and set \
                   BATCH_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test";
        match super::postgres_url() {
            Some(_) => println!("skipped: durable on PostgreSQL: this build lacks the `durable-postgres` feature ({how})"),
            None => println!("skipped: durable on PostgreSQL ({how})"),
        }
    }
}

#[cfg(feature = "durable-postgres")]
mod postgres {
    //! The same two measures on PostgreSQL.

    use std::time::{Duration, Instant};

    use apalis_core::backend::ext::BackendExt;
    use apalis_core::backend::TaskSink;
    use apalis_core::task::builder::TaskBuilder;
    use apalis_core::worker::builder::WorkerBuilder;
    use apalis_postgres::{Config, PgPool, PostgresStorage};
    use batch_runtime::jobs::durable::DurableStore;
    use batch_runtime::jobs::{Connection, Jobs};
    use sqlx::postgres::PgPoolOptions;

    use super::{
        direct_handler, end_to_end_on, summary, Done, Receipt, E2E_JOBS, E2E_RUNS, PER_ROUND, POLL,
        ROUNDS,
    };

    /// A queue name no other run uses.
    fn queue(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("batch-bench-{name}-{}-{nanos}", std::process::id())
    }

    /// apalis-postgres used directly, on a pool of its own with the same
    /// acquire timeout as ours.
    async fn direct_storage(url: &str, queue: &str) -> PostgresStorage<Receipt> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .expect("the direct store connects");
        PostgresStorage::setup(&pool)
            .await
            .expect("the direct store's schema");
        PostgresStorage::new(&pool).with_config(Config::default().queue(queue))
    }

    async fn our_store(url: &str, queue: &str) -> DurableStore {
        DurableStore::postgres(url)
            .await
            .expect("our store opens")
            .queue(queue)
    }

    /// Deletes the rows of the bench's queues.
    async fn forget(pool: &PgPool, queues: &[String]) {
        sqlx::query("DELETE FROM apalis.jobs WHERE job_type = ANY($1)")
            .bind(queues)
            .execute(pool)
            .await
            .expect("the bench's rows are deleted");
        sqlx::query("DELETE FROM apalis.workers WHERE worker_type = ANY($1)")
            .bind(queues)
            .execute(pool)
            .await
            .expect("the bench's workers are deleted");
    }

    async fn dispatch_latency(url: &str, queues: &mut Vec<String>) {
        let (ours_queue, direct_queue) = (queue("dispatch-ours"), queue("dispatch-direct"));
        queues.extend([ours_queue.clone(), direct_queue.clone()]);
        let jobs = Jobs::builder(Done::new())
            .durable(our_store(url, &ours_queue).await)
            .build();
        let mut direct = direct_storage(url, &direct_queue).await;

        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut order = 0;
        for _ in 0..ROUNDS {
            for _ in 0..PER_ROUND {
                order += 1;
                let started = Instant::now();
                jobs.dispatch(Receipt::new(order))
                    .on(Connection::Durable)
                    .await
                    .expect("our store takes the job");
                ours.push(started.elapsed().as_secs_f64() * 1e3);
            }
            for _ in 0..PER_ROUND {
                order += 1;
                let started = Instant::now();
                direct
                    .push_task(TaskBuilder::new(Receipt::new(order)).build())
                    .await
                    .expect("the direct store takes the job");
                theirs.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let (o50, o99) = summary(ours);
        let (d50, d99) = summary(theirs);
        println!("durable_dispatch_postgres       p50={o50:.3} ms p99={o99:.3} ms");
        println!("apalis_direct_push_postgres     p50={d50:.3} ms p99={d99:.3} ms");
        println!("durable_ratio_postgres={:.3}", o50 / d50);
    }

    async fn end_to_end_direct(url: &str, queue: &str) -> f64 {
        let done = Done::new();
        let mut storage = direct_storage(url, queue).await;
        for order in 0..E2E_JOBS {
            storage
                .push_task(TaskBuilder::new(Receipt::new(order)).build())
                .await
                .expect("the direct store takes the job");
        }
        let worker = WorkerBuilder::new(format!("{queue}-worker"))
            .backend(storage.poll_with_interval(POLL))
            .data(done.clone())
            .build(direct_handler);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let running = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
            Ok::<(), std::io::Error>(())
        }));
        done.wait(E2E_JOBS).await;
        let theirs = E2E_JOBS as f64 / started.elapsed().as_secs_f64();
        let _ = stop.send(());
        let _ = running.await;
        theirs
    }

    async fn end_to_end(url: &str, queues: &mut Vec<String>) {
        let (mut ours, mut theirs) = (0.0f64, 0.0f64);
        for _ in 0..E2E_RUNS {
            let (ours_queue, direct_queue) = (queue("e2e-ours"), queue("e2e-direct"));
            queues.extend([ours_queue.clone(), direct_queue.clone()]);
            ours = ours.max(end_to_end_on(our_store(url, &ours_queue).await).await);
            theirs = theirs.max(end_to_end_direct(url, &direct_queue).await);
        }
        println!("durable_e2e_jobs_per_s_postgres={ours:.0} ({E2E_JOBS} stored jobs, one worker)");
        println!("apalis_direct_e2e_jobs_per_s_postgres={theirs:.0}");
        println!("durable_e2e_ratio_postgres={:.3}", theirs / ours);
    }

    pub(crate) async fn run() {
        let Some(url) = super::postgres_url() else {
            println!(
                "skipped: durable on PostgreSQL (set BATCH_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test to run it)"
            );
            return;
        };
        let mut queues = Vec::new();
        dispatch_latency(&url, &mut queues).await;
        end_to_end(&url, &mut queues).await;
        let pool = PgPool::connect(&url).await.expect("the cleanup connects");
        forget(&pool, &queues).await;
    }
}
