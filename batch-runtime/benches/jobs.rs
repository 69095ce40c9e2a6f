//! What jobs cost.
//!
//! Run with `cargo bench -p batch-runtime --bench jobs`.
//!
//! 1. `deferred`: a shop server (own runtime thread, `DeferLayer`) with two
//!    handlers that differ only in that one dispatches a `RecordDelivery`
//!    job with `.after(&deferred)` (the job POSTs to an upstream with
//!    50 ms latency, a stand-in for a remote host: see
//!    `support::Placement`). A loopback client measures response times over
//!    alternating rounds, waiting for the jobs to drain between rounds, and
//!    prints p50/p99 for both and `job_defer_ratio` (with/without p50).
//!    A third handler dispatches a job that does nothing:
//!    `noop_job_defer_ratio` is the cost of the dispatch alone, without
//!    the job's HTTP call competing for the CPU; `noop_closure_defer_ratio`
//!    the same for a bare `deferred.spawn(async {})`, what defer itself
//!    costs.
//! 2. `background` start cost: no-op jobs one after the other, each
//!    dispatched and waited for: milliseconds per job (spawn, exec of this
//!    binary, `child_entry`, JSON over stdin, outcome over stdout, reap).
//! 3. `background` throughput with the cap saturated: many 20 ms jobs at
//!    once under the default cap (one child per core): jobs per second and
//!    the peak number of children.
//!
//! This binary is its own job child: `main` enters `child_entry` first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::jobs::background::{child_entry, BackgroundConfig};
use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
use batch_runtime::{Client, Request};
use serde::{Deserialize, Serialize};

mod support;
use support::{percentiles, round, serve_on_thread, start_upstream, Placement};

const ROUNDS: usize = 8;
const PER_ROUND: usize = 400;
const CLIENTS: usize = 16;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(50);
const SEQUENTIAL_JOBS: usize = 30;
const SATURATING_JOBS: usize = 60;

/// The shop's context: a client for the upstream.
struct Shop {
    upstream: Client,
}

#[derive(Serialize, Deserialize)]
struct RecordDelivery {
    order: u64,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = Shop;

    async fn handle(&self, shop: &Shop) -> Result<(), JobError> {
        shop.upstream
            .send(Request::post(format!("/deliveries/{}", self.order)))
            .await?;
        Ok(())
    }
}

/// Works `ms` milliseconds (0: nothing).
#[derive(Serialize, Deserialize)]
struct Render {
    ms: u64,
}

impl Job for Render {
    const NAME: &'static str = "render";
    type Context = Shop;

    async fn handle(&self, _: &Shop) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

fn shop_for(upstream: &str) -> Shop {
    Shop {
        upstream: Client::builder()
            .base_url(upstream)
            .build()
            .expect("upstream client"),
    }
}

fn main() {
    child_entry(
        || shop_for("http://127.0.0.1:9"),
        |registry| registry.register::<RecordDelivery>().register::<Render>(),
    );

    let placement = Placement::from_env();
    let upstream = start_upstream(UPSTREAM_LATENCY, placement);
    println!("{}", placement.describe());
    let runtime = DeferRuntime::new();
    let jobs = Jobs::builder(Arc::new(shop_for(&upstream)))
        .background(BackgroundConfig::default())
        .build();
    let shop = start_shop(&runtime, &jobs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let client = Client::new();
        round(&client, &format!("{shop}/with"), 64, CLIENTS).await;
        round(&client, &format!("{shop}/without"), 64, CLIENTS).await;
        runtime.wait_idle().await;

        let (mut with, mut without, mut noop, mut closure) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let mut order = ["with", "without", "noop", "closure"];
            order.rotate_left(r % 4);
            for path in order {
                let times = round(&client, &format!("{shop}/{path}"), PER_ROUND, CLIENTS).await;
                runtime.wait_idle().await;
                match path {
                    "with" => with.extend(times),
                    "without" => without.extend(times),
                    "noop" => noop.extend(times),
                    _ => closure.extend(times),
                }
            }
        }
        let (w50, w99) = percentiles(&mut with);
        let (n50, n99) = percentiles(&mut without);
        let (o50, o99) = percentiles(&mut noop);
        let (c50, c99) = percentiles(&mut closure);
        println!(
            "deferred: {} requests with a job, {} without ({CLIENTS} concurrent clients, job upstream latency {} ms)",
            with.len(),
            without.len(),
            UPSTREAM_LATENCY.as_millis()
        );
        println!("with_deferred_job    p50={w50:.3} ms p99={w99:.3} ms");
        println!("without_deferred_job p50={n50:.3} ms p99={n99:.3} ms");
        println!("with_noop_job        p50={o50:.3} ms p99={o99:.3} ms");
        println!("with_noop_closure    p50={c50:.3} ms p99={c99:.3} ms");
        println!("job_defer_ratio={:.3}", w50 / n50);
        // The dispatch itself, without the job's own work competing for
        // the CPU: a job that does nothing.
        println!("noop_job_defer_ratio={:.3}", o50 / n50);
        // The same with a bare deferred closure: what defer itself costs.
        println!("noop_closure_defer_ratio={:.3}", c50 / n50);
        let stats = jobs.stats().of::<RecordDelivery>();
        println!(
            "record-delivery jobs: dispatched={} succeeded={} failed={}",
            stats.dispatched, stats.succeeded, stats.failed
        );

        // Background start cost: one job at a time.
        let render = |ms| jobs.dispatch(Render { ms }).on(Connection::Background);
        render(0).await.expect("background configured");
        jobs.wait_idle().await;
        let started = Instant::now();
        for _ in 0..SEQUENTIAL_JOBS {
            render(0).await.expect("background configured");
            jobs.wait_idle().await;
        }
        let per_job = started.elapsed().as_secs_f64() * 1000.0 / SEQUENTIAL_JOBS as f64;
        println!("background_start_ms_per_job={per_job:.2} ({SEQUENTIAL_JOBS} no-op jobs, one at a time)");

        // Throughput with the cap saturated.
        let cap = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = Instant::now();
        for _ in 0..SATURATING_JOBS {
            render(20).await.expect("background configured");
        }
        jobs.wait_idle().await;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "background_saturated_jobs_per_s={:.1} ({SATURATING_JOBS} jobs of 20 ms, cap {cap}, peak children {}, {:.2} s)",
            SATURATING_JOBS as f64 / elapsed,
            jobs.children().peak,
            elapsed
        );
        let stats = jobs.stats().of::<Render>();
        println!(
            "render jobs: succeeded={} failed={}",
            stats.succeeded, stats.failed
        );
        println!("{}", runtime.shutdown(Duration::from_secs(30)).await);
        println!("{}", jobs.shutdown(Duration::from_secs(30)).await);
    });
}

async fn with_job(State(jobs): State<Jobs<Shop>>, deferred: Deferred) -> &'static str {
    jobs.dispatch(RecordDelivery { order: 17 }).after(&deferred);
    "ok"
}

async fn with_noop_job(State(jobs): State<Jobs<Shop>>, deferred: Deferred) -> &'static str {
    jobs.dispatch(Render { ms: 0 }).after(&deferred);
    "ok"
}

async fn with_noop_closure(State(_jobs): State<Jobs<Shop>>, deferred: Deferred) -> &'static str {
    deferred.spawn(async {}).name("noop");
    "ok"
}

async fn without_job(State(_jobs): State<Jobs<Shop>>, _deferred: Deferred) -> &'static str {
    "ok"
}

fn start_shop(runtime: &DeferRuntime, jobs: &Jobs<Shop>) -> String {
    let app = Router::new()
        .route("/with", post(with_job))
        .route("/without", post(without_job))
        .route("/noop", post(with_noop_job))
        .route("/closure", post(with_noop_closure))
        .layer(DeferLayer::new(runtime))
        .with_state(jobs.clone());
    serve_on_thread("shop", app, false)
}
