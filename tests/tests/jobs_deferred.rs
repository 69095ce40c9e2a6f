//! The `deferred` connection behind a real axum server: a job dispatched
//! with `.after(&deferred)` runs after the last body byte, is skipped on a
//! 500 unless `always`, and (with its retries) is drained by
//! `DeferRuntime::shutdown`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::jobs::{Backoff, Job, JobError, Jobs};
use batch_runtime::{Client, Request};
use batch_tests::serve;
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Shop {
    events: Mutex<Vec<String>>,
    attempts: AtomicU32,
}

impl Shop {
    fn push(&self, event: impl Into<String>) {
        self.events.lock().unwrap().push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordDelivery {
    label: String,
    /// Attempts that fail before one succeeds.
    failures: u32,
    work_ms: u64,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = Shop;

    async fn handle(&self, shop: &Shop) -> Result<(), JobError> {
        shop.push(format!("{} started", self.label));
        tokio::time::sleep(Duration::from_millis(self.work_ms)).await;
        let attempt = shop.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt <= self.failures {
            return Err(JobError::new(format!("carrier down (attempt {attempt})")));
        }
        shop.push(format!("{} done", self.label));
        Ok(())
    }

    fn tries(&self) -> u32 {
        self.failures + 1
    }

    fn backoff(&self) -> Backoff {
        Backoff::fixed(Duration::from_millis(100))
    }
}

fn delivery(label: &str) -> RecordDelivery {
    RecordDelivery {
        label: label.to_owned(),
        failures: 0,
        work_ms: 0,
    }
}

#[derive(Clone)]
struct App {
    shop: Arc<Shop>,
    jobs: Jobs<Shop>,
}

fn app(runtime: &DeferRuntime) -> (App, Router) {
    let shop = Arc::new(Shop::default());
    let jobs = Jobs::builder(shop.clone()).deferred(runtime).build();
    let state = App { shop, jobs };
    let router = Router::new()
        .route("/slow", post(slow_body))
        .route("/fails", post(fails))
        .route("/succeeds", post(succeeds))
        .route("/deliver/{failures}", post(deliver))
        .layer(DeferLayer::new(runtime))
        .with_state(state.clone());
    (state, router)
}

async fn slow_body(State(app): State<App>, deferred: Deferred) -> Body {
    app.jobs.dispatch(delivery("job")).after(&deferred);
    let shop = app.shop.clone();
    let chunks = futures::stream::unfold(0, move |i| {
        let shop = shop.clone();
        async move {
            if i == 4 {
                return None;
            }
            // The body streams slowly: the job must wait for all of it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            shop.push(format!("chunk {i}"));
            Some((
                Ok::<_, Infallible>(Bytes::from(format!("chunk {i};"))),
                i + 1,
            ))
        }
    });
    Body::from_stream(chunks)
}

async fn fails(State(app): State<App>, deferred: Deferred) -> (StatusCode, &'static str) {
    app.jobs.dispatch(delivery("plain")).after(&deferred);
    app.jobs
        .dispatch(delivery("always"))
        .always()
        .after(&deferred);
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn succeeds(State(app): State<App>, deferred: Deferred) -> &'static str {
    app.jobs.dispatch(delivery("plain")).after(&deferred);
    app.jobs
        .dispatch(delivery("always"))
        .always()
        .after(&deferred);
    "ok"
}

async fn deliver(
    State(app): State<App>,
    Path(failures): Path<u32>,
    deferred: Deferred,
) -> &'static str {
    app.jobs
        .dispatch(RecordDelivery {
            label: "slow".to_owned(),
            failures,
            work_ms: 150,
        })
        .after(&deferred);
    "accepted"
}

async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the test finished within 20 s")
}

#[tokio::test]
async fn a_deferred_job_runs_after_the_last_body_byte() {
    within(async {
        let runtime = DeferRuntime::new();
        let (state, router) = app(&runtime);
        let base = format!("http://{}", serve(router).await);

        let reply = Client::new()
            .send(Request::post(format!("{base}/slow")))
            .await
            .expect("200");
        assert_eq!(reply.text(), "chunk 0;chunk 1;chunk 2;chunk 3;");
        runtime.wait_idle().await;

        assert_eq!(
            state.shop.events(),
            [
                "chunk 0",
                "chunk 1",
                "chunk 2",
                "chunk 3",
                "job started",
                "job done"
            ]
        );
        assert_eq!(state.jobs.stats().of::<RecordDelivery>().succeeded, 1);
    })
    .await;
}

#[tokio::test]
async fn a_deferred_job_is_skipped_on_500_unless_always() {
    within(async {
        let runtime = DeferRuntime::new();
        let (state, router) = app(&runtime);
        let base = format!("http://{}", serve(router).await);
        let client = Client::new();

        let err = client
            .send(Request::post(format!("{base}/fails")))
            .await
            .expect_err("500");
        assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        runtime.wait_idle().await;
        assert_eq!(state.shop.events(), ["always started", "always done"]);
        assert_eq!(runtime.stats().skipped, 1);

        client
            .send(Request::post(format!("{base}/succeeds")))
            .await
            .expect("200");
        runtime.wait_idle().await;
        let mut events = state.shop.events();
        events.sort();
        assert_eq!(
            events,
            [
                "always done",
                "always done",
                "always started",
                "always started",
                "plain done",
                "plain started"
            ]
        );
        // Both dispatches on the 500 counted; only the `always` one ran.
        let stats = state.jobs.stats().of::<RecordDelivery>();
        assert_eq!((stats.dispatched, stats.succeeded), (4, 3));
    })
    .await;
}

#[tokio::test]
async fn a_deferred_job_and_its_retries_are_drained_on_shutdown() {
    within(async {
        let runtime = DeferRuntime::new();
        let (state, router) = app(&runtime);
        let base = format!("http://{}", serve(router).await);

        // The job fails once, waits 100 ms, then succeeds: ~400 ms of work
        // still pending when the response is in.
        let reply = Client::new()
            .send(Request::post(format!("{base}/deliver/1")))
            .await
            .expect("200");
        assert_eq!(reply.text(), "accepted");
        let report = runtime.shutdown(Duration::from_secs(10)).await;

        assert!(report.drained, "{report}");
        assert_eq!(report.completed, 1, "{report}");
        assert!(report.abandoned.is_empty(), "{report}");
        assert_eq!(
            state.shop.events(),
            ["slow started", "slow started", "slow done"]
        );
        let stats = state.jobs.stats().of::<RecordDelivery>();
        assert_eq!((stats.succeeded, stats.retried, stats.running), (1, 1, 0));
    })
    .await;
}
