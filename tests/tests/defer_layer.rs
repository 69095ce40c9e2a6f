//! `DeferLayer` over real loopback servers: deferred work starts after the
//! last body byte, is skipped on failed responses unless `always`, runs when
//! the client disconnects, and only `always` work survives a dropped handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred, NoResults};
use batch_runtime::{Client, Request};
use batch_tests::{serve, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Defers a POST of `/record/{name}` to the upstream.
fn record<'d>(deferred: &'d Deferred, upstream: &str, name: &str) -> NoResults<'d> {
    let url = format!("{upstream}/record/{name}");
    deferred.spawn(async move {
        Client::new()
            .send(Request::post(url))
            .await
            .expect("record");
    })
}

/// Sends a raw HTTP/1.1 request that closes the connection after the reply.
async fn raw_request(addr: SocketAddr, method: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    events: Arc<Mutex<Vec<String>>>,
    gate: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
}

/// A body of five chunks whose last one is held until the test says so.
async fn gated_body(State(shared): State<Shared>, deferred: Deferred) -> Body {
    let events = shared.events.clone();
    let url = format!("{}/record/after-body", shared.upstream);
    deferred
        .spawn(async move {
            events.lock().unwrap().push("work started".to_owned());
            Client::new()
                .send(Request::post(url))
                .await
                .expect("record");
        })
        .name("after-body");
    let gate = shared.gate.lock().unwrap().take().expect("one request");
    let events = shared.events.clone();
    let chunks = futures::stream::unfold((0, Some(gate)), move |(i, gate)| {
        let events = events.clone();
        async move {
            if i == 5 {
                return None;
            }
            let gate = if i == 4 {
                // The last chunk waits for the test's signal.
                let _ = gate?.await;
                None
            } else {
                gate
            };
            events.lock().unwrap().push(format!("chunk {i}"));
            Some((
                Ok::<_, Infallible>(Bytes::from(format!("chunk {i};"))),
                (i + 1, gate),
            ))
        }
    });
    Body::from_stream(chunks)
}

#[tokio::test]
async fn deferred_work_starts_only_after_the_last_body_byte() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let shared = Shared {
        upstream: upstream.base_url(),
        events: Arc::default(),
        gate: Arc::new(Mutex::new(Some(gate_rx))),
    };
    let app = Router::new()
        .route("/slow", get(gated_body))
        .layer(DeferLayer::new(&runtime))
        .with_state(shared.clone());
    let addr = serve(app).await;

    let mut stream = raw_request(addr, "GET", "/slow").await;
    let mut received = String::new();
    let mut buf = [0u8; 1024];
    // Everything but the last chunk arrives; the body is still open.
    while !received.contains("chunk 3;") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the first four chunks arrive")
            .expect("read");
        assert!(n > 0, "closed early: {received:?}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Give the runtime every chance to start early: it must not. The
    // handle still counts as pending and nothing ran.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let stats = runtime.stats();
    assert_eq!(stats.pending_handles, 1, "{stats:?}");
    assert_eq!(
        (stats.queued, stats.running, stats.completed),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(upstream.recorded().is_empty());

    gate_tx.send(()).expect("open the gate");
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_string(&mut received),
    )
    .await
    .expect("the last chunk arrives")
    .expect("read the rest");
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.contains("chunk 4;"), "{received}");

    runtime.wait_idle().await;
    let events = shared.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "chunk 0",
            "chunk 1",
            "chunk 2",
            "chunk 3",
            "chunk 4",
            "work started"
        ]
    );
    assert_eq!(upstream.recorded(), ["after-body"]);
    assert_eq!(runtime.stats().completed, 1);
}

type Gate = Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>;

async fn breaks_half_way(
    State((upstream, gate)): State<(String, Gate)>,
    deferred: Deferred,
) -> Body {
    record(&deferred, &upstream, "plain");
    record(&deferred, &upstream, "always").always();
    let gate = gate.lock().unwrap().take().expect("one request");
    // The first half goes out; once the test has read it, the body fails.
    let chunks = futures::stream::unfold(Some(gate), |gate| async move {
        let _ = gate?.await;
        Some((
            Err::<Bytes, _>(std::io::Error::other("the database cursor died")),
            None,
        ))
    });
    let first = futures::stream::once(async { Ok(Bytes::from_static(b"first half;")) });
    Body::from_stream(futures::StreamExt::chain(first, chunks))
}

#[tokio::test]
async fn a_200_whose_body_breaks_half_way_runs_only_always_work() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let gate: Gate = Arc::new(Mutex::new(Some(gate_rx)));
    let app = Router::new()
        .route("/breaks", get(breaks_half_way))
        .layer(DeferLayer::new(&runtime))
        .with_state((upstream.base_url(), gate));
    let addr = serve(app).await;

    let mut stream = raw_request(addr, "GET", "/breaks").await;
    let mut received = String::new();
    let mut buf = [0u8; 1024];
    while !received.contains("first half;") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the first half arrives")
            .expect("read");
        assert!(n > 0, "closed early: {received:?}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    gate_tx.send(()).expect("break the body");
    // The server aborts the connection mid-body.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the broken response");

    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["always"]);
    let stats = runtime.stats();
    assert_eq!((stats.completed, stats.skipped), (1, 1), "{stats:?}");
}

async fn fails(State(upstream): State<String>, deferred: Deferred) -> impl IntoResponse {
    record(&deferred, &upstream, "plain");
    record(&deferred, &upstream, "always").always();
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn succeeds(State(upstream): State<String>, deferred: Deferred) -> &'static str {
    record(&deferred, &upstream, "plain");
    record(&deferred, &upstream, "always").always();
    "ok"
}

#[tokio::test]
async fn deferred_work_is_skipped_on_status_500_unless_always() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/fails", post(fails))
        .route("/succeeds", post(succeeds))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let addr = serve(app).await;
    let client = Client::new();

    let err = client
        .send(Request::post(format!("http://{addr}/fails")))
        .await
        .expect_err("500");
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["always"]);
    assert_eq!(runtime.stats().skipped, 1);

    client
        .send(Request::post(format!("http://{addr}/succeeds")))
        .await
        .expect("200");
    runtime.wait_idle().await;
    let mut recorded = upstream.recorded();
    recorded.sort();
    assert_eq!(recorded, ["always", "always", "plain"]);
    assert_eq!(runtime.stats().skipped, 1);
}

async fn endless(State(upstream): State<String>, deferred: Deferred) -> Body {
    record(&deferred, &upstream, "client-gone");
    let chunks = futures::stream::unfold(0u32, |i| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some((Ok::<_, Infallible>(Bytes::from(vec![b'x'; 1024])), i + 1))
    });
    Body::from_stream(chunks)
}

#[tokio::test]
async fn deferred_work_runs_when_the_client_disconnects() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/endless", get(endless))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let addr = serve(app).await;

    let mut stream = raw_request(addr, "GET", "/endless").await;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(upstream.recorded().is_empty(), "ran before the body ended");
    drop(stream);

    // The server notices the closed socket, drops the body, runs the work.
    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["client-gone"]);
}

async fn no_content(State(upstream): State<String>, deferred: Deferred) -> StatusCode {
    record(&deferred, &upstream, "no-content");
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn deferred_work_runs_after_head_and_204_responses() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/empty", get(no_content))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let addr = serve(app).await;

    let mut stream = raw_request(addr, "GET", "/empty").await;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");
    let mut stream = raw_request(addr, "HEAD", "/empty").await;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");

    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["no-content", "no-content"]);
}

#[tokio::test]
async fn a_dropped_handler_runs_only_always_work() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let (registered_tx, registered_rx) = tokio::sync::oneshot::channel::<()>();
    let registered_tx = Arc::new(Mutex::new(Some(registered_tx)));
    let base = upstream.base_url();
    let app = Router::new()
        .route(
            "/hangs",
            get(move |deferred: Deferred| async move {
                record(&deferred, &base, "plain");
                record(&deferred, &base, "always").always();
                if let Some(tx) = registered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                std::future::pending::<()>().await;
            }),
        )
        .layer(DeferLayer::new(&runtime));

    let request = http::Request::get("/hangs")
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request);
    tokio::select! {
        _ = response => panic!("the handler never answers"),
        _ = registered_rx => {}
    }
    // `response` is dropped here: the handler was cancelled without a response.
    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["always"]);
    assert_eq!(runtime.stats().skipped, 1);
}

#[tokio::test]
async fn the_extractor_without_the_layer_says_how_to_fix_it() {
    let app = Router::new().route("/", get(|_deferred: Deferred| async { "unreachable" }));
    let response = app
        .oneshot(
            http::Request::get("/")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("DeferLayer::new"), "{text}");
}
