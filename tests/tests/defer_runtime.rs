//! `DeferRuntime`: panics are isolated, nested work runs, `forget` cancels,
//! concurrency is bounded, scopes wait for their work, and shutdown drains
//! within the grace period and reports what it abandoned past it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{self, DeferLayer, DeferRuntime, Deferred};
use batch_runtime::{Batch, Client, Request};
use batch_tests::{serve, Upstream};

async fn record(url: String) {
    Client::new()
        .send(Request::post(url))
        .await
        .expect("record");
}

static FINALLY_RAN: AtomicUsize = AtomicUsize::new(0);

async fn panics(State(upstream): State<String>, deferred: Deferred) -> &'static str {
    deferred
        .spawn(async { panic!("deferred work blew up") })
        .name("explodes");
    // A deferred batch whose arm panics: `finally` still runs, then the
    // panic is caught by the runtime.
    Batch::keyed([("ping", Request::get(format!("{upstream}/json/1")))])
        .then(|_, _| panic!("then arm blew up"))
        .finally(|_, _| {
            FINALLY_RAN.fetch_add(1, Ordering::SeqCst);
        })
        .defer(&Client::new(), &deferred)
        .name("batch-with-panicking-arm");
    "ok"
}

#[tokio::test]
async fn panicking_deferred_work_leaves_the_server_serving() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/panics", post(panics))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let base = format!("http://{}", serve(app).await);
    let client = Client::new();

    for _ in 0..3 {
        let reply = client
            .send(Request::post(format!("{base}/panics")))
            .await
            .expect("the server keeps serving");
        assert_eq!(reply.text(), "ok");
        runtime.wait_idle().await;
    }
    let stats = runtime.stats();
    assert_eq!(stats.panicked, 6, "{stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
    assert_eq!(FINALLY_RAN.load(Ordering::SeqCst), 3);
    // The runtime still runs new work.
    runtime
        .spawn(record(upstream.url("/record/after")))
        .expect("accepted");
    runtime.wait_idle().await;
    assert_eq!(runtime.stats().completed, 1);
}

async fn nests(State(upstream): State<String>, deferred: Deferred) -> &'static str {
    let handle = deferred.clone();
    deferred
        .spawn(async move {
            record(format!("{upstream}/record/outer")).await;
            // Deferred from deferred work, on the request's handle...
            let inner = upstream.clone();
            handle
                .spawn(async move { record(format!("{inner}/record/inner-handle")).await })
                .name("inner-handle");
            // ...and on the runtime directly.
            let inner = upstream.clone();
            handle
                .runtime()
                .spawn(async move { record(format!("{inner}/record/inner-runtime")).await })
                .expect("accepted");
        })
        .name("outer");
    "ok"
}

#[tokio::test]
async fn work_deferred_from_deferred_work_runs() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/nests", post(nests))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let base = format!("http://{}", serve(app).await);

    Client::new()
        .send(Request::post(format!("{base}/nests")))
        .await
        .expect("ok");
    runtime.wait_idle().await;
    let mut recorded = upstream.recorded();
    recorded.sort();
    assert_eq!(recorded, ["inner-handle", "inner-runtime", "outer"]);
    assert_eq!(runtime.stats().completed, 3);
}

async fn forgets(State(upstream): State<String>, deferred: Deferred) -> &'static str {
    let (a, b) = (upstream.clone(), upstream.clone());
    deferred
        .spawn(async move { record(format!("{a}/record/audit")).await })
        .name("audit");
    deferred
        .spawn(async move { record(format!("{b}/record/email")).await })
        .name("email");
    assert_eq!(deferred.forget("email"), 1);
    assert_eq!(deferred.forget("no-such-work"), 0);
    "ok"
}

#[tokio::test]
async fn forget_cancels_named_work() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/forgets", post(forgets))
        .layer(DeferLayer::new(&runtime))
        .with_state(upstream.base_url());
    let base = format!("http://{}", serve(app).await);

    Client::new()
        .send(Request::post(format!("{base}/forgets")))
        .await
        .expect("ok");
    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["audit"]);
}

#[tokio::test]
async fn forget_on_the_runtime_removes_queued_work_before_it_starts() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    runtime
        .spawn_named("holds-the-slot", async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
        })
        .expect("accepted");
    started_rx.await.expect("started");
    runtime
        .spawn_named("later", record(upstream.url("/record/later")))
        .expect("accepted");
    runtime
        .spawn_named("kept", record(upstream.url("/record/kept")))
        .expect("accepted");
    assert_eq!(runtime.stats().queued, 2);
    assert_eq!(runtime.forget("later"), 1);
    assert_eq!(
        runtime.forget("holds-the-slot"),
        0,
        "running work is not forgotten"
    );
    release_tx.send(()).expect("release");
    runtime.wait_idle().await;
    assert_eq!(upstream.recorded(), ["kept"]);
    assert_eq!(runtime.stats().forgotten, 1);
}

#[tokio::test]
async fn concurrency_is_bounded_as_measured_at_the_upstream() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::builder()
        .concurrency(4)
        .build()
        .expect("runtime");
    assert_eq!(runtime.concurrency(), 4);
    assert_eq!(
        DeferRuntime::new().concurrency(),
        defer::DEFAULT_DEFER_CONCURRENCY
    );
    let client = Client::new();
    for _ in 0..24 {
        let (client, url) = (client.clone(), upstream.url("/delay/40"));
        runtime
            .spawn(async move {
                client.send(Request::get(url)).await.expect("delay");
            })
            .expect("accepted");
    }
    runtime.wait_idle().await;
    assert_eq!(upstream.hits(), 24);
    assert!(
        upstream.max_in_flight() <= 4,
        "max in flight {}",
        upstream.max_in_flight()
    );
    assert_eq!(runtime.stats().completed, 24);
}

#[tokio::test]
async fn shutdown_drains_queued_work_within_the_grace_period() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::builder()
        .concurrency(2)
        .build()
        .expect("runtime");
    for i in 0..10 {
        let url = upstream.url(&format!("/record/job-{i}"));
        let delay = upstream.url("/delay/20");
        runtime
            .spawn_named(format!("job-{i}"), async move {
                Client::new()
                    .send(Request::get(delay))
                    .await
                    .expect("delay");
                record(url).await;
            })
            .expect("accepted");
    }
    // Work that defers more work once the shutdown has begun: accepted,
    // because it comes from deferred work.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (nested_runtime, nested_url) = (runtime.clone(), upstream.url("/record/nested"));
    runtime
        .spawn_named("defers-during-drain", async move {
            let _ = go_rx.await;
            nested_runtime
                .spawn_named("nested", record(nested_url))
                .expect("nested work is accepted while draining");
        })
        .expect("accepted");
    let (report, ()) = tokio::join!(runtime.shutdown(Duration::from_secs(30)), async {
        go_tx.send(()).expect("go");
    });
    assert!(report.drained, "{report}");
    assert!(report.abandoned.is_empty(), "{report}");
    assert_eq!(report.completed, 12, "{report}");
    assert_eq!(upstream.recorded().len(), 11);
    assert!(upstream.recorded().contains(&"nested".to_owned()));

    let late = runtime.spawn_named("too-late", async {});
    let rejected = late.expect_err("intake is closed");
    assert_eq!(rejected.names, ["too-late"]);
    assert!(rejected.to_string().contains("shutting down"), "{rejected}");
}

#[tokio::test]
async fn shutdown_reports_work_abandoned_past_the_grace_period() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let finished = Arc::new(AtomicUsize::new(0));
    runtime
        .spawn_named("quick", record(upstream.url("/record/quick")))
        .expect("accepted");
    let done = finished.clone();
    let hang = upstream.url("/hang");
    runtime
        .spawn_named("hangs", async move {
            let _ = Client::new().send(Request::get(hang)).await;
            done.fetch_add(1, Ordering::SeqCst);
        })
        .expect("accepted");
    runtime
        .spawn_named("queued-behind", record(upstream.url("/record/queued")))
        .expect("accepted");

    let report = runtime.shutdown(Duration::from_millis(300)).await;
    assert!(!report.drained, "{report}");
    assert_eq!(report.abandoned, ["hangs", "queued-behind"], "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert!(
        report.to_string().contains("hangs, queued-behind"),
        "{report}"
    );
    assert_eq!(upstream.recorded(), ["quick"]);
    assert_eq!(finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_scope_runs_its_deferred_work_after_its_body_and_waits_for_it() {
    let upstream = Upstream::start().await;
    let runtime = DeferRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::new();
    let (in_body, url) = (log.clone(), upstream.url("/record/from-scope"));
    let upstream_ref = &upstream;
    let answer = defer::scope(&runtime, |deferred| async move {
        let later = in_body.clone();
        deferred.spawn(async move {
            later.lock().unwrap().push("deferred");
            record(url).await;
        });
        Batch::keyed([("one", Request::post(upstream_ref.url("/record/batch-one")))])
            .defer(&client, &deferred)
            .name("batch");
        in_body.lock().unwrap().push("body");
        assert!(
            upstream_ref.recorded().is_empty(),
            "nothing runs before the body ends"
        );
        7
    })
    .await;
    assert_eq!(answer, 7);
    assert_eq!(*log.lock().unwrap(), ["body", "deferred"]);
    let mut recorded = upstream.recorded();
    recorded.sort();
    assert_eq!(recorded, ["batch-one", "from-scope"]);
}
