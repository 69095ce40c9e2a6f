//! Load: 2,000 requests over loopback, each deferring a 3-request batch to
//! a loopback upstream, then a graceful shutdown (server first, then the
//! defer runtime) in which every deferred request reaches the upstream —
//! also when 10% of the batches hit a failing upstream path, and when a
//! long-poll keeps its request handle open across the shutdown.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred, ShutdownReport};
use batch_runtime::{Batch, Client, Request};
use batch_tests::Upstream;

const REQUESTS: usize = 2_000;

#[derive(Clone)]
struct Shop {
    upstream: Client,
    /// Every `fail_every`-th order's `crm` call hits `/status/503`.
    fail_every: Option<usize>,
    caught: Arc<AtomicUsize>,
    /// Released by the test: ends the long-poll's body.
    long_poll: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
}

async fn order(
    State(shop): State<Shop>,
    Path(id): Path<usize>,
    deferred: Deferred,
) -> &'static str {
    let fails = shop.fail_every.is_some_and(|every| id % every == 0);
    let crm = if fails {
        Request::get("/status/503")
    } else {
        Request::post(format!("/record/{id}-crm"))
    };
    let caught = shop.caught.clone();
    Batch::keyed([
        (
            "inventory",
            Request::post(format!("/record/{id}-inventory")),
        ),
        (
            "warehouse",
            Request::post(format!("/record/{id}-warehouse")),
        ),
        ("crm", crm),
    ])
    .catch(move |_, key, err| {
        assert!(
            fails && key == "crm" && err.status().map(|s| s.as_u16()) == Some(503),
            "deferred {key} failed: {err}"
        );
        caught.fetch_add(1, Ordering::SeqCst);
    })
    .defer(&shop.upstream, &deferred);
    "ok"
}

/// A long-poll: defers a record, then streams its one chunk only when the
/// test releases it.
async fn long_poll(State(shop): State<Shop>, deferred: Deferred) -> Body {
    Batch::keyed([("record", Request::post("/record/long-poll"))])
        .defer(&shop.upstream, &deferred)
        .name("long-poll");
    let gate = shop
        .long_poll
        .lock()
        .unwrap()
        .take()
        .expect("one long-poll");
    let chunk = futures::stream::once(async move {
        let _ = gate.await;
        Ok::<_, Infallible>(Bytes::from_static(b"news"))
    });
    Body::from_stream(chunk)
}

/// Runs a load scenario under a generous timeout, naming what hung.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(300), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within 300 s: it hangs"),
    }
}

struct Run {
    upstream: Upstream,
    report: ShutdownReport,
    caught: usize,
    runtime: DeferRuntime,
}

/// Serves the shop, sends `REQUESTS` orders 32 at a time, then stops the
/// server and shuts the runtime down. With `hold_long_poll`, a long-poll
/// is open across the runtime's shutdown and ends only after it.
async fn run(fail_every: Option<usize>, hold_long_poll: bool) -> Run {
    let upstream = Upstream::start().await;
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let shop = Shop {
        upstream: Client::builder()
            .base_url(upstream.base_url())
            .build()
            .expect("client"),
        fail_every,
        caught: Arc::default(),
        long_poll: Arc::new(Mutex::new(Some(gate_rx))),
    };
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/order/{id}", post(order))
        .route("/poll", get(long_poll))
        .layer(DeferLayer::new(&runtime))
        .with_state(shop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let poll = if hold_long_poll {
        let url = format!("{base}/poll");
        let poll = tokio::spawn(async move { Client::new().send(Request::get(url)).await });
        while runtime.stats().pending_handles == 0 {
            tokio::task::yield_now().await;
        }
        Some(poll)
    } else {
        None
    };

    let started = Instant::now();
    let replies = Batch::new((0..REQUESTS).map(|id| Request::post(format!("{base}/order/{id}"))))
        .concurrency(32)
        .try_send(&Client::new())
        .await
        .expect("every order succeeds");
    assert_eq!(replies.len(), REQUESTS);
    let sent_in = started.elapsed();

    // Graceful shutdown: stop taking requests, then drain deferred work.
    stop_tx.send(()).expect("stop");
    let report = match poll {
        None => {
            server.await.expect("server task").expect("server");
            runtime.shutdown(Duration::from_secs(60)).await
        }
        Some(poll) => {
            // The server waits for the long-poll; the runtime does not.
            let report = runtime.shutdown(Duration::from_secs(60)).await;
            gate_tx.send(()).expect("end the long-poll");
            let reply = poll.await.expect("poll task").expect("long-poll reply");
            assert_eq!(reply.text(), "news");
            server.await.expect("server task").expect("server");
            report
        }
    };
    eprintln!(
        "{REQUESTS} requests in {sent_in:?}; shutdown drained in {:?}; upstream counted {} requests",
        report.elapsed,
        upstream.hits()
    );
    Run {
        caught: shop.caught.load(Ordering::SeqCst),
        upstream,
        report,
        runtime,
    }
}

/// Every deferred request reached the upstream once, none twice.
fn assert_nothing_lost(upstream: &Upstream, failing: usize) {
    assert_eq!(
        upstream.hits(),
        3 * REQUESTS,
        "requests counted at the upstream"
    );
    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 3 * REQUESTS - failing);
    let unique: HashSet<&String> = recorded.iter().collect();
    assert_eq!(
        unique.len(),
        recorded.len(),
        "a deferred request was sent twice"
    );
    assert!(unique.contains(&format!("{}-inventory", REQUESTS - 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_no_deferred_request() {
    let Run {
        upstream, report, ..
    } = within("the load run", run(None, false)).await;
    assert!(report.drained, "{report}");
    assert!(report.abandoned.is_empty(), "{report}");
    assert!(report.rejected.is_empty(), "{report}");
    assert_eq!(report.open_handles, 0, "{report}");
    assert_eq!(report.completed, REQUESTS as u64, "{report}");
    assert_eq!(report.panicked, 0, "{report}");
    assert_nothing_lost(&upstream, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_a_failing_upstream_path_loses_nothing() {
    let Run {
        upstream,
        report,
        caught,
        ..
    } = within("the load run", run(Some(10), false)).await;
    assert!(report.drained, "{report}");
    assert!(report.abandoned.is_empty(), "{report}");
    // A batch with a failed request still ends normally: `catch` ran.
    assert_eq!(report.completed, REQUESTS as u64, "{report}");
    assert_eq!(report.panicked, 0, "{report}");
    assert_eq!(caught, REQUESTS / 10);
    assert_nothing_lost(&upstream, REQUESTS / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_a_long_poll_open_returns_and_counts_its_work() {
    let Run {
        upstream,
        report,
        runtime,
        ..
    } = within("the load run", run(None, true)).await;
    assert!(report.drained, "{report}");
    assert!(report.abandoned.is_empty(), "{report}");
    assert_eq!(report.completed, REQUESTS as u64, "{report}");
    assert_eq!(report.open_handles, 1, "{report}");
    // The long-poll's work came after the shutdown: refused and counted,
    // never sent.
    let stats = runtime.stats();
    assert_eq!(stats.rejected, 1, "{stats:?}");
    assert_eq!(stats.pending_handles, 0, "{stats:?}");
    assert_eq!(
        runtime.shutdown(Duration::from_secs(1)).await.rejected,
        ["long-poll"]
    );
    assert!(!upstream.recorded().contains(&"long-poll".to_owned()));
    assert_nothing_lost(&upstream, 0);
}
