//! Faults on our own server's side of deferred work: a client that leaves
//! mid-response, and a shutdown while deferred batches still have requests
//! in flight against a slow upstream.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::{Batch, Client, Request};
use batch_tests::{serve, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `future` under a generous timeout, naming what hung.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within 30 s: it hangs"),
    }
}

/// A body that never ends, after the given status; defers one plain and
/// one `always` record to the upstream.
async fn endless(
    State(upstream): State<String>,
    Path(code): Path<u16>,
    deferred: Deferred,
) -> (StatusCode, Body) {
    for (name, always) in [("plain", false), ("always", true)] {
        let url = format!("{upstream}/record/{code}-{name}");
        let registered = deferred.spawn(async move {
            Client::new()
                .send(Request::post(url))
                .await
                .expect("record");
        });
        if always {
            registered.always();
        }
    }
    let chunks = futures::stream::unfold((), |()| async {
        tokio::task::yield_now().await;
        Some((Ok::<_, Infallible>(Bytes::from(vec![b'x'; 1024])), ()))
    });
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    (status, Body::from_stream(chunks))
}

#[tokio::test]
async fn a_client_leaving_mid_response_runs_the_work_its_status_allows() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/endless/{code}", get(endless))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let addr = serve(app).await;

    for code in [200, 500] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /endless/{code} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buf = [0u8; 4096];
        let n = within("the first bytes", stream.read(&mut buf))
            .await
            .expect("read");
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(head.starts_with(&format!("HTTP/1.1 {code}")), "{head}");
        assert_eq!(runtime.stats().pending_handles, 1, "the body is still open");
        // The client leaves half-way; the server drops the unfinished body.
        drop(stream);
        within("the deferred work", runtime.wait_idle()).await;
    }
    let mut recorded = upstream.recorded();
    recorded.sort();
    // 200: the handler did its part, the client left: everything runs.
    // 500: only `always` work, as for any failed response.
    assert_eq!(recorded, ["200-always", "200-plain", "500-always"]);
    let stats = runtime.stats();
    assert_eq!((stats.completed, stats.skipped), (3, 1), "{stats:?}");
}

const ORDERS: usize = 12;

/// Orders with an even id hit a fast upstream path, odd ones one that
/// never answers; each defers a one-request batch named `order-{id}`.
async fn order(
    State((upstream, finally)): State<(Client, Arc<AtomicUsize>)>,
    Path(id): Path<usize>,
    deferred: Deferred,
) -> &'static str {
    let path = if id % 2 == 0 {
        "/delay/20".to_owned()
    } else {
        "/hang".to_owned()
    };
    Batch::keyed([("upstream", Request::get(path))])
        .finally(move |_, _| {
            finally.fetch_add(1, Ordering::SeqCst);
        })
        .defer(&upstream, &deferred)
        .name(format!("order-{id}"));
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_batches_in_flight_completes_or_names_each_one() {
    let upstream = Upstream::start().await;
    let upstream_client = Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client");
    let finally = Arc::new(AtomicUsize::new(0));
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/order/{id}", post(order))
        .layer(DeferLayer::new(&runtime))
        .with_state((upstream_client, finally.clone()));
    let shop = format!("http://{}", serve(app).await);

    let client = Client::new();
    for id in 0..ORDERS {
        let reply = client
            .send(Request::post(format!("{shop}/order/{id}")))
            .await
            .expect("order");
        assert_eq!(reply.text(), "ok");
    }
    // Every deferred batch has its request at the upstream.
    within("the deferred requests", async {
        while upstream.hits() < ORDERS {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let report = within("shutdown", runtime.shutdown(Duration::from_millis(500))).await;
    assert!(!report.drained, "{report}");
    assert!(report.workers_stopped, "{report}");
    let mut abandoned = report.abandoned.clone();
    abandoned.sort();
    let mut slow: Vec<String> = (0..ORDERS)
        .filter(|id| id % 2 == 1)
        .map(|id| format!("order-{id}"))
        .collect();
    slow.sort();
    assert_eq!(abandoned, slow, "{report}");
    assert_eq!(report.completed, (ORDERS / 2) as u64, "{report}");
    // `finally` ran once for each batch that completed, and for no
    // abandoned one: they were cancelled mid-request.
    assert_eq!(finally.load(Ordering::SeqCst), ORDERS / 2);
    assert_eq!(upstream.hits(), ORDERS);
}
