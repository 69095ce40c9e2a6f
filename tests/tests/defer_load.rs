//! Load: 2,000 requests over loopback, each deferring a 3-request batch to
//! a loopback upstream, then a graceful shutdown (server first, then the
//! defer runtime) in which every deferred request reaches the upstream.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::{Batch, Client, Request};
use batch_tests::Upstream;

const REQUESTS: usize = 2_000;

async fn order(
    State(upstream): State<Client>,
    Path(id): Path<usize>,
    deferred: Deferred,
) -> &'static str {
    Batch::keyed(
        ["inventory", "warehouse", "crm"]
            .map(|service| (service, Request::post(format!("/record/{id}-{service}")))),
    )
    .catch(|_, key, err| panic!("deferred {key} failed: {err}"))
    .defer(&upstream, &deferred);
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_no_deferred_request() {
    let upstream = Upstream::start().await;
    let upstream_client = Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client");
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/order/{id}", post(order))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream_client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shop = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let started = Instant::now();
    let replies = Batch::new((0..REQUESTS).map(|id| Request::post(format!("{shop}/order/{id}"))))
        .concurrency(32)
        .try_send(&Client::new())
        .await
        .expect("every order succeeds");
    assert_eq!(replies.len(), REQUESTS);
    let sent_in = started.elapsed();

    // Graceful shutdown: stop taking requests, then drain deferred work.
    stop_tx.send(()).expect("stop");
    server.await.expect("server task").expect("server");
    let report = runtime.shutdown(Duration::from_secs(60)).await;
    assert!(report.drained, "{report}");
    assert!(report.abandoned.is_empty(), "{report}");
    assert!(report.rejected.is_empty(), "{report}");
    assert_eq!(report.completed, REQUESTS as u64, "{report}");
    assert_eq!(report.panicked, 0, "{report}");

    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 3 * REQUESTS);
    let unique: HashSet<&String> = recorded.iter().collect();
    assert_eq!(
        unique.len(),
        3 * REQUESTS,
        "a deferred request was sent twice"
    );
    assert!(unique.contains(&format!("{}-crm", REQUESTS - 1)));
    eprintln!(
        "{REQUESTS} requests in {sent_in:?}; shutdown drained in {:?}",
        report.elapsed
    );
}
