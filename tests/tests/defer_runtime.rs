//! `DeferRuntime`: panics are isolated, nested work runs, `forget` cancels,
//! concurrency is bounded, scopes wait for their work, and shutdown drains
//! within the grace period and reports what it abandoned past it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

// ---- hardening (issue 7) ----

/// Runs `future` under a generous timeout, naming what hung.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within 20 s: it hangs"),
    }
}

#[tokio::test]
async fn shutdown_returns_once_the_queue_drains_while_a_request_handle_is_open() {
    let runtime = DeferRuntime::new();
    let (registered_tx, registered_rx) = tokio::sync::oneshot::channel::<()>();
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let ran = Arc::new(AtomicUsize::new(0));
    // A long-lived handle (a long-poll, an SSE stream): it holds work and
    // stays open across the shutdown.
    let held = {
        let (runtime, ran) = (runtime.clone(), ran.clone());
        tokio::spawn(async move {
            defer::scope(&runtime, |deferred| async move {
                let ran = ran.clone();
                deferred
                    .spawn(async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .name("held-open");
                registered_tx.send(()).expect("registered");
                let _ = hold_rx.await;
            })
            .await;
        })
    };
    registered_rx.await.expect("registered");
    runtime
        .spawn_named("quick", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
        })
        .expect("accepted");

    let report = within("shutdown", runtime.shutdown(Duration::from_secs(30))).await;
    assert!(
        report.elapsed < Duration::from_secs(10),
        "shutdown waited for the open handle: {report}"
    );
    assert!(report.drained, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert_eq!(report.open_handles, 1, "{report}");
    assert_eq!(report.open_handle_work, ["held-open"], "{report}");
    assert!(
        report
            .to_string()
            .contains("1 request handle still open holding held-open"),
        "{report}"
    );

    // The handle releases its work after shutdown returned: it is refused,
    // counted and named, never run.
    hold_tx.send(()).expect("release");
    within("the held scope", held).await.expect("scope task");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let stats = runtime.stats();
    assert_eq!(stats.rejected, 1, "{stats:?}");
    assert_eq!(stats.pending_handles, 0, "{stats:?}");
    let again = runtime.shutdown(Duration::from_secs(1)).await;
    assert_eq!(again.rejected, ["held-open"], "{again}");
}

/// A scope whose body sends a clone of its handle out, then ends: the
/// handle's work is queued behind `holds-the-slot`.
fn open_scope(
    runtime: &DeferRuntime,
    log: &Arc<Mutex<Vec<String>>>,
    entries: &'static [(&'static str, &'static str)],
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<Deferred>,
) {
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let (runtime, log) = (runtime.clone(), log.clone());
    let task = tokio::spawn(async move {
        defer::scope(&runtime, |deferred| async move {
            for (name, entry) in entries {
                let log = log.clone();
                deferred
                    .spawn(async move { log.lock().unwrap().push((*entry).to_owned()) })
                    .name(*name);
            }
            handle_tx.send(deferred.clone()).expect("handle");
        })
        .await;
    });
    (task, handle_rx)
}

/// Occupies the only slot of a concurrency-1 runtime until released.
async fn hold_the_slot(runtime: &DeferRuntime) -> tokio::sync::oneshot::Sender<()> {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    runtime
        .spawn_named("holds-the-slot", async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
        })
        .expect("accepted");
    started_rx.await.expect("started");
    release_tx
}

#[tokio::test]
async fn forget_on_a_handle_after_the_response_removes_only_that_handles_work() {
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let release = hold_the_slot(&runtime).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (first, first_handle) = open_scope(&runtime, &log, &[("fulfilment", "first")]);
    let first_handle = first_handle.await.expect("first handle");
    let (second, second_handle) = open_scope(&runtime, &log, &[("fulfilment", "second")]);
    let _second_handle = second_handle.await.expect("second handle");
    within("queueing", async {
        while runtime.stats().queued < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    assert_eq!(first_handle.forget("fulfilment"), 1);
    assert_eq!(first_handle.forget("fulfilment"), 0, "already forgotten");
    release.send(()).expect("release");
    within("both scopes", async {
        first.await.expect("first scope");
        second.await.expect("second scope");
    })
    .await;
    assert_eq!(*log.lock().unwrap(), ["second"]);
    assert_eq!(runtime.stats().forgotten, 1);
}

#[tokio::test]
async fn two_works_with_the_same_name_on_one_handle_both_run_and_forget_removes_both() {
    let runtime = DeferRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (kept, forgot) = (log.clone(), log.clone());
    defer::scope(&runtime, |deferred| async move {
        for entry in ["a", "b"] {
            let log = kept.clone();
            deferred
                .spawn(async move { log.lock().unwrap().push(entry) })
                .name("twice");
        }
        assert_eq!(deferred.len(), 2, "the second does not replace the first");
        let log = forgot.clone();
        deferred
            .spawn(async move { log.lock().unwrap().push("other") })
            .name("other");
        assert_eq!(deferred.forget("other"), 1);
    })
    .await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, ["a", "b"]);

    defer::scope(&runtime, |deferred| async move {
        for _ in 0..2 {
            deferred.spawn(async {}).name("twice");
        }
        assert_eq!(deferred.forget("twice"), 2);
    })
    .await;
    assert_eq!(runtime.stats().forgotten, 3);
}

#[tokio::test]
async fn a_scope_opened_in_deferred_work_completes_when_concurrency_is_saturated() {
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let nested = runtime.clone();
    runtime
        .spawn_named("opens-a-scope", async move {
            let ran = Arc::new(AtomicUsize::new(0));
            let inner = ran.clone();
            defer::scope(&nested, |deferred| async move {
                deferred.spawn(async move {
                    inner.fetch_add(1, Ordering::SeqCst);
                });
            })
            .await;
            // The scope waited for its work, although this work holds the
            // only slot.
            done_tx.send(ran.load(Ordering::SeqCst)).expect("done");
        })
        .expect("accepted");
    assert_eq!(within("the nested scope", done_rx).await.expect("done"), 1);
    within("wait_idle", runtime.wait_idle()).await;
    assert_eq!(runtime.stats().completed, 2);
}

#[tokio::test]
async fn wait_idle_from_deferred_work_panics_at_once_saying_why() {
    use futures::FutureExt;
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let (message_tx, message_rx) = tokio::sync::oneshot::channel();
    let inner = runtime.clone();
    runtime
        .spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(inner.wait_idle())
                .catch_unwind()
                .await;
            let message = match outcome {
                Ok(()) => "returned".to_owned(),
                Err(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
            };
            message_tx.send(message).expect("message");
        })
        .expect("accepted");
    let message = within("wait_idle in deferred work", message_rx)
        .await
        .expect("message");
    assert!(
        message.contains("wait_idle") && message.contains("deferred work"),
        "{message}"
    );
}

#[test]
fn wait_idle_never_returns_before_a_released_handles_work_is_queued() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let runtime = DeferRuntime::new();
        for round in 0..2_000 {
            let done = Arc::new(AtomicUsize::new(0));
            let (registered_tx, registered_rx) = tokio::sync::oneshot::channel::<()>();
            let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
            let scope = {
                let (runtime, done) = (runtime.clone(), done.clone());
                tokio::spawn(async move {
                    defer::scope(&runtime, |deferred| async move {
                        deferred.spawn(async move {
                            done.fetch_add(1, Ordering::SeqCst);
                        });
                        registered_tx.send(()).expect("registered");
                        let _ = go_rx.await;
                    })
                    .await;
                })
            };
            registered_rx.await.expect("registered");
            // Watch, from a thread of its own, for a moment where the
            // runtime looks idle although the handle's work has not run.
            let watcher = {
                let (runtime, done) = (runtime.clone(), done.clone());
                std::thread::spawn(move || loop {
                    let stats = runtime.stats();
                    if stats.queued == 0 && stats.running == 0 && stats.pending_handles == 0 {
                        return (done.load(Ordering::SeqCst), stats);
                    }
                })
            };
            go_tx.send(()).expect("go");
            let (done_when_idle, stats) = watcher.join().expect("watcher");
            assert_eq!(
                done_when_idle, 1,
                "round {round}: idle before the handle's work was queued: {stats:?}"
            );
            within("scope", scope).await.expect("scope task");
        }
    });
}

/// Calls `runtime.stats()` when dropped: user code that re-enters the
/// runtime from a `Drop`.
struct ReentersOnDrop(DeferRuntime, Arc<AtomicUsize>);

impl Drop for ReentersOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stats();
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` on its own thread; fails if it does not return in 20 s (a
/// deadlocked thread is left behind rather than hanging the test).
fn on_thread_within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s: deadlock"))
}

#[test]
fn a_work_whose_drop_reenters_the_runtime_can_be_forgotten_and_abandoned() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    let report = on_thread_within("forget and shutdown", move || {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        tokio.block_on(async move {
            let runtime = DeferRuntime::builder()
                .concurrency(1)
                .build()
                .expect("runtime");
            let _release = hold_the_slot(&runtime).await;
            for name in ["forgotten", "abandoned"] {
                let guard = ReentersOnDrop(runtime.clone(), seen.clone());
                runtime
                    .spawn_named(name, async move {
                        let _guard = guard;
                    })
                    .expect("accepted");
            }
            assert_eq!(runtime.forget("forgotten"), 1);
            runtime.shutdown(Duration::from_millis(50)).await
        })
    });
    assert_eq!(
        report.abandoned,
        ["holds-the-slot", "abandoned"],
        "{report}"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

/// Counts its drops.
struct CountsDrop(Arc<AtomicUsize>);

impl Drop for CountsDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_returns_only_after_abandoned_work_has_stopped() {
    for _ in 0..20 {
        let runtime = DeferRuntime::new();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let guard = CountsDrop(dropped.clone());
        runtime
            .spawn_named("never-ends", async move {
                let _guard = guard;
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
            })
            .expect("accepted");
        started_rx.await.expect("started");
        let report = within("shutdown", runtime.shutdown(Duration::from_millis(20))).await;
        assert_eq!(report.abandoned, ["never-ends"], "{report}");
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "shutdown returned while the abandoned work was still alive"
        );
    }
}

#[tokio::test]
async fn worker_threads_run_blocking_works_side_by_side() {
    let runtime = DeferRuntime::builder()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let (a_tx, a_rx) = std::sync::mpsc::channel::<std::thread::ThreadId>();
    let (b_tx, b_rx) = std::sync::mpsc::channel::<std::thread::ThreadId>();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    // Each work blocks its thread until it hears from the other: on one
    // shared thread, the first would wait in vain.
    for (me, tell, hear) in [("a", a_tx, b_rx), ("b", b_tx, a_rx)] {
        let seen = seen_tx.clone();
        runtime
            .spawn_named(me, async move {
                tell.send(std::thread::current().id()).expect("tell");
                let other = hear.recv_timeout(Duration::from_secs(5));
                seen.send((me, std::thread::current().id(), other.ok()))
                    .expect("seen");
            })
            .expect("accepted");
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(within("both works", seen_rx.recv()).await.expect("seen"));
    }
    for (me, thread, other) in &seen {
        let other =
            other.unwrap_or_else(|| panic!("{me} never heard from the other work: {seen:?}"));
        assert_ne!(*thread, other, "{me} shared its thread: {seen:?}");
    }
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.completed, 2, "{report}");
}

#[tokio::test]
async fn dropping_the_runtime_without_shutdown_finishes_queued_work_in_the_background() {
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .build()
        .expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5 {
        let tx = tx.clone();
        runtime
            .spawn(async move {
                tokio::task::yield_now().await;
                tx.send(i).expect("send");
            })
            .expect("accepted");
    }
    drop(tx);
    drop(runtime);
    let mut ran = Vec::new();
    while let Some(i) = within("queued work after the drop", rx.recv()).await {
        ran.push(i);
    }
    assert_eq!(ran, [0, 1, 2, 3, 4], "queued work runs in order, none lost");
}

#[tokio::test]
async fn a_full_queue_refuses_work_with_a_logged_counted_rejection() {
    let runtime = DeferRuntime::builder()
        .concurrency(1)
        .queue_capacity(2)
        .build()
        .expect("runtime");
    assert_eq!(runtime.queue_capacity(), 2);
    assert_eq!(
        DeferRuntime::new().queue_capacity(),
        defer::DEFAULT_DEFER_QUEUE_CAPACITY
    );
    let release = hold_the_slot(&runtime).await;
    let ran = Arc::new(AtomicUsize::new(0));
    for name in ["first", "second"] {
        let ran = ran.clone();
        runtime
            .spawn_named(name, async move {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .expect("room in the queue");
    }
    let refused = runtime
        .spawn_named("third", async {})
        .expect_err("the queue is full");
    assert_eq!(refused.names, ["third"]);
    assert_eq!(
        refused.reason,
        defer::RejectReason::QueueFull { capacity: 2 }
    );
    assert!(refused.to_string().contains("queue_capacity"), "{refused}");
    assert_eq!(runtime.stats().rejected, 1);

    // A request handle whose work does not fit: counted, not run.
    defer::scope(&runtime, |deferred| async move {
        deferred.spawn(async {}).name("from-a-request");
    })
    .await;
    assert_eq!(runtime.stats().rejected, 2);

    release.send(()).expect("release");
    within("wait_idle", runtime.wait_idle()).await;
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.rejected, ["third", "from-a-request"], "{report}");
    assert_eq!(report.rejected_total, 2, "{report}");
}

#[tokio::test]
async fn rejected_names_are_capped_and_the_rest_counted() {
    let runtime = DeferRuntime::new();
    let _ = runtime.shutdown(Duration::from_secs(5)).await;
    let total = defer::REJECTED_NAMES_KEPT + 500;
    for i in 0..total {
        runtime
            .spawn_named(format!("late-{i}"), async {})
            .expect_err("shut down");
    }
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.rejected.len(), defer::REJECTED_NAMES_KEPT);
    assert_eq!(report.rejected_total, total as u64);
    assert_eq!(report.rejected[0], "late-0");
    assert_eq!(runtime.stats().rejected, total as u64);
}

async fn send_receipt(log: Arc<Mutex<Vec<&'static str>>>) {
    tokio::task::yield_now().await;
    log.lock().unwrap().push("receipt");
}

#[tokio::test]
async fn spawn_all_takes_different_futures_in_one_call() {
    let runtime = DeferRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    let (each, kept) = (log.clone(), log.clone());
    defer::scope(&runtime, |deferred| async move {
        // Three futures of three types: an async block, another one that
        // awaits, and an async fn's future.
        let registered = deferred
            .spawn_all((
                async move { a.lock().unwrap().push("audit") },
                async move {
                    tokio::task::yield_now().await;
                    b.lock().unwrap().push("search-index");
                },
                send_receipt(c),
            ))
            .name("after-checkout");
        drop(registered);
        assert_eq!(deferred.len(), 3);
        deferred.spawn_all([1, 2].map(|_| {
            let each = each.clone();
            async move { each.lock().unwrap().push("array") }
        }));
        deferred.spawn_iter(std::iter::once(async {}).filter(|_| true));
        assert_eq!(deferred.forget("after-checkout"), 3);
        deferred.spawn_all((async move { kept.lock().unwrap().push("kept") },));
    })
    .await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, ["array", "array", "kept"]);

    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    defer::scope(&runtime, |deferred| async move {
        deferred.spawn_all((
            async move { a.lock().unwrap().push("audit") },
            async move {
                tokio::task::yield_now().await;
                b.lock().unwrap().push("search-index");
            },
            send_receipt(c),
        ));
    })
    .await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, ["audit", "receipt", "search-index"]);
    assert_eq!(runtime.stats().completed, 7);
}

/// The worker threads run in Linux's `SCHED_IDLE` class by default, and
/// only they: the caller's thread keeps its class; `background_priority(false)`
/// keeps the workers in the builder's class.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn defer_workers_run_at_background_priority_unless_told_otherwise() {
    fn own_class() -> i32 {
        // SAFETY: a plain syscall about the calling thread (pid 0 on Linux).
        unsafe { libc::sched_getscheduler(0) }
    }
    let before = own_class();
    assert_ne!(
        before,
        libc::SCHED_IDLE,
        "the test's own thread starts normal"
    );
    let runtimes = [
        ("the default", DeferRuntime::new(), libc::SCHED_IDLE),
        (
            "background_priority(false)",
            DeferRuntime::builder()
                .background_priority(false)
                .build()
                .expect("runtime"),
            before,
        ),
    ];
    for (what, runtime, expected) in runtimes {
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime
            .spawn(async move {
                // A blocking-pool thread the work starts inherits the class.
                let blocking = tokio::task::spawn_blocking(own_class).await.expect("ran");
                let _ = tx.send((own_class(), blocking));
            })
            .expect("queued");
        let (seen, blocking) = rx.await.expect("the work ran");
        assert_eq!(seen, expected, "{what}");
        assert_eq!(blocking, expected, "{what}: spawn_blocking");
        let report = runtime.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.completed, 1, "{report}");
    }
    assert_eq!(own_class(), before, "the caller's thread keeps its class");
}

/// At background priority deferred work is behind the responses, not
/// starved: it still runs while more normal-priority threads than cores
/// spin.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn background_work_still_runs_while_every_core_is_busy() {
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let spinners: Vec<_> = (0..=cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let runtime = DeferRuntime::new();
    let started = std::time::Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    runtime
        .spawn(async move {
            let _ = tx.send(());
        })
        .expect("queued");
    let ran = tokio::time::timeout(Duration::from_secs(20), rx).await;
    let waited = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().expect("spinner");
    }
    assert!(
        ran.is_ok(),
        "deferred work did not run within 20 s while {} threads spun",
        cores + 1
    );
    eprintln!(
        "deferred work ran after {waited:?} with {} spinning threads",
        cores + 1
    );
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.completed, 1, "{report}");
}
