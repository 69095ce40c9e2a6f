//! What a deferred batch costs the response it follows.
//!
//! Run with `cargo bench -p batch-runtime --bench defer`. An upstream with
//! 200 ms latency and a shop server run on their own runtime threads; the
//! upstream stands for a remote host (see `support::Placement`:
//! `BATCH_BENCH_UPSTREAM=shared` lets its server work compete for the
//! cores, as it would not in a deployment). The
//! shop has two handlers that differ only in that one defers a 3-request
//! batch to the upstream. A loopback client measures response times over
//! alternating rounds (waiting for the deferred work to drain between
//! rounds, so its cost lands in the "with" rounds) and prints p50/p99 for
//! both, `defer_ratio` (with/without p50; target <= 1.05) and
//! `defer_p99_ratio` (with/without p99; target <= 1.10), each the median
//! over rounds of that round's ratio. Before the first deferral it also
//! times 5 rounds of the handler without deferred work, on a process that
//! has never deferred any (each after the idle pause a round has), and
//! prints the "with" rounds over that too. Then it defers 10,000 batches
//! at once and prints the RSS growth while they are pending (and the peak
//! while they drain).
//!
//! `BATCH_DEFER_WORK=empty` defers an empty work instead of the batch: the
//! hand-off alone, without the deferred requests' CPU.
//!
//! `BATCH_DEFER_DESIGN=normal-priority` keeps the `DeferRuntime`'s worker
//! at normal CPU priority (`DeferRuntimeBuilder::background_priority(false)`)
//! instead of the default lowest one (Linux's `SCHED_IDLE`).
//! `BATCH_DEFER_DESIGN=nice19` runs it at nice 19 instead, the default
//! before `SCHED_IDLE`: the runtime is built with
//! `background_priority(false)` from a thread at nice 19, whose priority
//! its worker inherits.
//!
//! `BATCH_DEFER_DESIGN=app-runtime` measures the design the runtime did not
//! take: the "with" handler spawns the batch on the application's own tokio
//! runtime (the shop's), bounded by a semaphore and counted for draining as
//! a `TaskTracker` would, instead of handing it to the `DeferRuntime`'s
//! thread. (It spawns when the handler returns rather than after the last
//! body byte: microseconds apart for this two-byte body.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{self, DeferLayer, DeferRuntime, Deferred};
use batch_runtime::{Batch, Client, Request};

mod support;
use support::{percentiles, round, serve_on_thread, start_upstream, Placement};

const ROUNDS: usize = 20;
/// Rounds of responses before any work is deferred.
const CLEAN_ROUNDS: usize = 5;
const PER_ROUND: usize = 1000;
const CLIENTS: usize = 16;
const PENDING: usize = 10_000;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(200);

fn main() {
    let design = std::env::var("BATCH_DEFER_DESIGN").unwrap_or_default();
    let app_runtime = design == "app-runtime";
    let normal_priority = design == "normal-priority";
    let nice19 = design == "nice19";
    let placement = Placement::from_env();
    let upstream = start_upstream(UPSTREAM_LATENCY, placement);
    println!("{}", placement.describe());
    let runtime = if nice19 {
        build_at_nice19()
    } else {
        DeferRuntime::builder()
            .background_priority(!normal_priority)
            .build()
            .expect("defer runtime")
    };
    let tracker = Tracker::default();
    let shop = start_shop(&runtime, &upstream, app_runtime.then(|| tracker.clone()));
    println!(
        "design: {}",
        if app_runtime {
            "app-runtime (tokio::spawn on the shop's runtime + semaphore)"
        } else if normal_priority {
            "own-thread at normal priority (background_priority(false))"
        } else if nice19 {
            "own-thread at nice 19 (the default before SCHED_IDLE)"
        } else {
            "own-thread (DeferRuntime worker, at background priority: SCHED_IDLE)"
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let client = Client::new();
        // Before anything is deferred: the responses of a server that has
        // never deferred work, a second baseline for the rounds below (a
        // "without" round runs after "with" rounds, on a process that holds
        // their connections and allocations). Each of these rounds follows
        // an idle pause; of the alternating rounds below only those after a
        // "with" round do, so it is not like for like (see the README).
        round(&client, &format!("{shop}/without"), 64, CLIENTS).await;
        let mut clean = Vec::new();
        for _ in 0..CLEAN_ROUNDS {
            // As long as a round waits for the round before's deferred
            // work: after an idle pause the first responses are slower
            // (back-to-back rounds showed a p99 near half as long).
            tokio::time::sleep(UPSTREAM_LATENCY).await;
            clean.extend(round(&client, &format!("{shop}/without"), PER_ROUND, CLIENTS).await);
        }
        let (c50, c99) = percentiles(&mut clean);
        // Warm up connections on both paths.
        round(&client, &format!("{shop}/with"), 64, CLIENTS).await;
        round(&client, &format!("{shop}/without"), 64, CLIENTS).await;
        runtime.wait_idle().await;
        tracker.wait_idle().await;

        let (mut with, mut without) = (Vec::new(), Vec::new());
        // Each round's ratios: a burst of outside load on this shared
        // machine then spoils a round, not the figure.
        let (mut p50_ratios, mut p99_ratios) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            // Alternate which goes first.
            let order = if r % 2 == 0 {
                ["with", "without"]
            } else {
                ["without", "with"]
            };
            let mut this_round = [Vec::new(), Vec::new()];
            for path in order {
                let times = round(&client, &format!("{shop}/{path}"), PER_ROUND, CLIENTS).await;
                runtime.wait_idle().await;
                tracker.wait_idle().await;
                this_round[usize::from(path == "without")] = times;
            }
            let [mut round_with, mut round_without] = this_round;
            let (rw50, rw99) = percentiles(&mut round_with);
            let (rn50, rn99) = percentiles(&mut round_without);
            p50_ratios.push(rw50 / rn50);
            p99_ratios.push(rw99 / rn99);
            with.extend(round_with);
            without.extend(round_without);
        }
        let (w50, w99) = percentiles(&mut with);
        let (n50, n99) = percentiles(&mut without);
        println!(
            "requests: {} with, {} without ({CLIENTS} concurrent clients, upstream latency {} ms)",
            with.len(),
            without.len(),
            UPSTREAM_LATENCY.as_millis()
        );
        println!("with_defer    p50={w50:.3} ms p99={w99:.3} ms (all rounds)");
        println!("without_defer p50={n50:.3} ms p99={n99:.3} ms (all rounds)");
        println!(
            "all rounds pooled: p50 ratio {:.3}, p99 ratio {:.3}",
            w50 / n50,
            w99 / n99
        );
        println!(
            "never deferred p50={c50:.3} ms p99={c99:.3} ms ({} requests before the first deferral); with_defer over it: p50 {:.3}, p99 {:.3}",
            clean.len(),
            w50 / c50,
            w99 / c99
        );
        // The medians over rounds of each round's with/without ratio.
        println!("defer_ratio={:.3}", median(&mut p50_ratios));
        println!("defer_p99_ratio={:.3}", median(&mut p99_ratios));
        let stats = runtime.stats();
        println!(
            "deferred batches completed={} panicked={}",
            stats.completed, stats.panicked
        );

        // Peak RSS growth with 10,000 deferred batches pending.
        let pending_runtime = DeferRuntime::new();
        let upstream_client = Client::builder()
            .base_url(upstream.clone())
            .build()
            .expect("client");
        reset_peak_rss();
        let before = rss_kib("VmRSS:");
        let started = Instant::now();
        // Measured at the end of the scope's body: all batches registered,
        // none started (they start when the body ends).
        let while_pending = defer::scope(&pending_runtime, |deferred| async move {
            for i in 0..PENDING {
                defer_fanout(&upstream_client, &deferred, i);
            }
            rss_kib("VmRSS:")
        })
        .await;
        // The high-water mark also covers the drain: 256 batches in flight,
        // their connections, and the in-process upstream's side of them.
        let peak = rss_kib("VmHWM:").max(while_pending);
        let pending_growth = while_pending.saturating_sub(before);
        println!(
            "pending={PENDING} rss_before={before} KiB while_pending=+{pending_growth} KiB ({:.2} KiB per pending batch); peak while draining=+{} KiB; drained in {:.1} s",
            pending_growth as f64 / PENDING as f64,
            peak.saturating_sub(before),
            started.elapsed().as_secs_f64()
        );
        let sample = Batch::keyed(
            ["inventory", "warehouse", "crm"]
                .map(|service| (service, Request::post(format!("/{service}")))),
        )
        .catch(move |_, key, err| eprintln!("order 0: {key} failed: {err}"));
        println!(
            "a pending 3-request batch: Batch value {} B inline (+ 3 requests of {} B each on the heap, their path strings and keys)",
            std::mem::size_of_val(&sample),
            std::mem::size_of::<Request>()
        );
        let report = pending_runtime.shutdown(Duration::from_secs(30)).await;
        println!("pending runtime: {report}");
        let report = runtime.shutdown(Duration::from_secs(30)).await;
        println!("shop runtime: {report}");
    });
}

/// A runtime whose worker runs at nice 19: built at normal priority from a
/// thread at nice 19, whose priority the worker thread inherits.
#[cfg(target_os = "linux")]
fn build_at_nice19() -> DeferRuntime {
    std::thread::spawn(|| {
        // SAFETY: a plain syscall on the calling thread (pid 0 on Linux).
        let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        assert_eq!(set, 0, "setpriority: {}", std::io::Error::last_os_error());
        DeferRuntime::builder()
            .background_priority(false)
            .build()
            .expect("defer runtime")
    })
    .join()
    .expect("builder thread")
}

#[cfg(not(target_os = "linux"))]
fn build_at_nice19() -> DeferRuntime {
    panic!("BATCH_DEFER_DESIGN=nice19 needs Linux's per-thread setpriority");
}

fn defer_fanout(upstream: &Client, deferred: &Deferred, id: usize) {
    Batch::keyed(
        ["inventory", "warehouse", "crm"]
            .map(|service| (service, Request::post(format!("/{service}")))),
    )
    .catch(move |_, key, err| eprintln!("order {id}: {key} failed: {err}"))
    .defer(upstream, deferred);
}

#[derive(Clone)]
struct Shop {
    upstream: Client,
    /// Set for the app-runtime design.
    app: Option<Tracker>,
    /// `BATCH_DEFER_WORK=empty`: defer an empty work instead of the batch,
    /// to tell the hand-off's cost from the deferred requests' cost.
    empty_work: bool,
}

async fn with_defer(State(shop): State<Shop>, deferred: Deferred) -> &'static str {
    match &shop.app {
        None if shop.empty_work => {
            deferred.spawn(async {});
        }
        None => defer_fanout(&shop.upstream, &deferred, 0),
        Some(tracker) => {
            // The same three requests, joined: a `Batch` future cannot be
            // proven `Send` here ("implementation of `FnOnce`/`Clone` is not
            // general enough" for a keyed batch, with or without arms), so
            // `tokio::spawn` refuses it. That is why deferred batches keep
            // the runtime's own thread, where futures need not be `Send`.
            let client = shop.upstream.clone();
            tracker.spawn(async move {
                let calls = ["inventory", "warehouse", "crm"]
                    .map(|service| client.send(Request::post(format!("/{service}"))));
                for result in futures::future::join_all(calls).await {
                    if let Err(err) = result {
                        eprintln!("order 0: {err}");
                    }
                }
            });
        }
    }
    "ok"
}

async fn without_defer(State(_shop): State<Shop>, _deferred: Deferred) -> &'static str {
    "ok"
}

/// The app-runtime design's bookkeeping: a semaphore for the limit and a
/// count of live tasks to drain on, as `tokio_util::task::TaskTracker` keeps.
#[derive(Clone, Default)]
struct Tracker(Arc<TrackerInner>);

#[derive(Default)]
struct TrackerInner {
    live: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
    limit: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl Tracker {
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let inner = self.0.clone();
        let limit = inner
            .limit
            .get_or_init(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    defer::DEFAULT_DEFER_CONCURRENCY,
                ))
            })
            .clone();
        inner.live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if let Ok(_permit) = limit.acquire().await {
                work.await;
            }
            if inner.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.0.live.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn start_shop(runtime: &DeferRuntime, upstream: &str, app: Option<Tracker>) -> String {
    let upstream = Client::builder()
        .base_url(upstream)
        .build()
        .expect("upstream client");
    let app = Router::new()
        .route("/with", post(with_defer))
        .route("/without", post(without_defer))
        .layer(DeferLayer::new(runtime))
        .with_state(Shop {
            upstream,
            app,
            empty_work: std::env::var("BATCH_DEFER_WORK").as_deref() == Ok("empty"),
        });
    serve_on_thread("shop", app, false)
}

/// A line of /proc/self/status in KiB (0 where unavailable).
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
