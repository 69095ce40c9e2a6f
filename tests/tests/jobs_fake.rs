//! The jobs fake: a handler under test dispatches into it instead of
//! running jobs; every assertion passes when it should and fails with a
//! message listing what was pushed; `run_pushed` runs the recorded jobs
//! so their HTTP calls reach the HTTP fake.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::fake::{Fake, Reply};
use batch_runtime::jobs::{Connection, Job, JobError, Jobs, JobsFake};
use batch_runtime::{Client, Method, Request};
use batch_tests::serve;
use serde::{Deserialize, Serialize};

struct Shop {
    client: Client,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordDelivery {
    order: u64,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = Shop;

    async fn handle(&self, shop: &Shop) -> Result<(), JobError> {
        shop.client
            .send(Request::post(format!(
                "http://carrier.test/deliveries/{}",
                self.order
            )))
            .await?;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RenderInvoice {
    order: u64,
}

impl Job for RenderInvoice {
    const NAME: &'static str = "render-invoice";
    type Context = Shop;

    async fn handle(&self, _: &Shop) -> Result<(), JobError> {
        Ok(())
    }
}

/// The handler under test: a deferred delivery record and a background
/// invoice per order.
async fn checkout(
    State(jobs): State<Jobs<Shop>>,
    Path(order): Path<u64>,
    deferred: Deferred,
) -> Result<&'static str, String> {
    jobs.dispatch(RecordDelivery { order }).after(&deferred);
    jobs.dispatch(RenderInvoice { order })
        .on(Connection::Background)
        .await
        .map_err(|e| e.to_string())?;
    Ok("confirmed")
}

/// The message of the panic `assertion` raises.
fn failure(assertion: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(assertion)).expect_err("the assertion fails");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("a string panic message")
}

/// Places orders 7 and 8 through a real server whose jobs are faked.
async fn two_orders() -> JobsFake<Shop> {
    let fake = Jobs::<Shop>::fake();
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/checkout/{order}", post(checkout))
        .layer(DeferLayer::new(&runtime))
        .with_state(fake.jobs());
    let base = format!("http://{}", serve(app).await);
    for order in [7, 8] {
        let reply = Client::new()
            .send(Request::post(format!("{base}/checkout/{order}")))
            .await
            .expect("the faked background connection accepts the job");
        assert_eq!(reply.text(), "confirmed");
    }
    runtime.wait_idle().await;
    fake
}

async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the test finished within 20 s")
}

#[tokio::test]
async fn the_fake_records_dispatches_in_order_with_their_connection() {
    let fake = within(two_orders()).await;
    let pushed = fake.pushed();
    assert_eq!(pushed.len(), 4, "{pushed:?}");
    assert!(pushed[0].starts_with("record-delivery #"), "{pushed:?}");
    assert!(
        pushed[0].ends_with(" on deferred: {\"order\":7}"),
        "{pushed:?}"
    );
    assert!(
        pushed[1].ends_with(" on background: {\"order\":7}"),
        "{pushed:?}"
    );
    assert!(
        pushed[3].ends_with(" on background: {\"order\":8}"),
        "{pushed:?}"
    );
}

#[tokio::test]
async fn assert_pushed_passes_on_a_match_and_fails_listing_what_was_pushed() {
    let fake = within(two_orders()).await;
    fake.assert_pushed::<RecordDelivery>(|job| job.order == 8);

    let message = failure(|| fake.assert_pushed::<RecordDelivery>(|job| job.order == 9));
    assert!(
        message.starts_with("expected a `record-delivery` job to be pushed matching the filter, but none was; pushed:\n  record-delivery #"),
        "{message}"
    );
    assert!(message.contains("render-invoice #"), "{message}");
    assert!(
        message.contains("on background: {\"order\":8}"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_pushed_on_checks_the_connection() {
    let fake = within(two_orders()).await;
    fake.assert_pushed_on::<RecordDelivery>(Connection::Deferred, |job| job.order == 7);
    fake.assert_pushed_on::<RenderInvoice>(Connection::Background, |_| true);

    let message = failure(|| {
        fake.assert_pushed_on::<RenderInvoice>(Connection::Deferred, |_| true);
    });
    assert!(
        message.starts_with("expected a `render-invoice` job to be pushed on `deferred` matching the filter, but none was; pushed:"),
        "{message}"
    );
    assert!(
        message.contains("on background: {\"order\":7}"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_pushed_count_passes_on_the_count_and_fails_with_the_real_one() {
    let fake = within(two_orders()).await;
    fake.assert_pushed_count::<RenderInvoice>(2);

    let message = failure(|| fake.assert_pushed_count::<RenderInvoice>(1));
    assert!(
        message.starts_with("expected 1 `render-invoice` jobs to be pushed, but 2 were; pushed:"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_not_pushed_passes_when_absent_and_fails_listing_what_was_pushed() {
    let fake = Jobs::<Shop>::fake();
    fake.jobs()
        .dispatch(RecordDelivery { order: 3 })
        .on(Connection::Sync)
        .await
        .unwrap();
    fake.assert_not_pushed::<RenderInvoice>();

    let message = failure(|| fake.assert_not_pushed::<RecordDelivery>());
    assert!(
        message.starts_with("expected no `record-delivery` job to be pushed, but 1 were; pushed:\n  record-delivery #"),
        "{message}"
    );
    assert!(message.ends_with(" on sync: {\"order\":3}"), "{message}");
}

#[tokio::test]
async fn assert_nothing_pushed_passes_when_empty_and_fails_listing_what_was_pushed() {
    let fake = Jobs::<Shop>::fake();
    fake.assert_nothing_pushed();
    let message = failure(|| fake.assert_pushed::<RecordDelivery>(|_| true));
    assert!(message.ends_with("nothing was pushed"), "{message}");

    fake.jobs()
        .dispatch(RenderInvoice { order: 5 })
        .always()
        .on(Connection::Background)
        .await
        .unwrap();
    let message = failure(|| fake.assert_nothing_pushed());
    assert!(
        message.starts_with("expected no job to be pushed; pushed:\n  render-invoice #"),
        "{message}"
    );
    assert!(
        message.ends_with(" on background (always): {\"order\":5}"),
        "{message}"
    );
}

#[tokio::test]
async fn the_fake_uses_the_configured_default_connection() {
    let fake = JobsFake::<Shop>::with_default_connection(Connection::Background);
    fake.jobs()
        .dispatch(RenderInvoice { order: 1 })
        .await
        .unwrap();
    fake.assert_pushed_on::<RenderInvoice>(Connection::Background, |job| job.order == 1);
}

#[tokio::test]
async fn run_pushed_runs_the_recorded_jobs_once_against_the_http_fake() {
    let fake = within(two_orders()).await;
    let http = Fake::new();
    http.stub(Method::POST, "*/deliveries/7", Reply::ok());
    http.stub(Method::POST, "*/deliveries/8", Reply::status(503));
    let shop = Shop {
        client: http.client(),
    };

    let ran = within(fake.run_pushed(&shop)).await;

    let summary: Vec<(&str, bool)> = ran.iter().map(|r| (r.name, r.outcome.is_ok())).collect();
    assert_eq!(
        summary,
        [
            ("record-delivery", true),
            ("render-invoice", true),
            ("record-delivery", false),
            ("render-invoice", true)
        ]
    );
    let error = ran[2].outcome.as_ref().unwrap_err();
    assert!(error.message().contains("503"), "{error}");
    http.assert_sent_count(2);
    http.assert_sent_in_order(["*/deliveries/7", "*/deliveries/8"]);

    // Already run: a second call runs nothing.
    assert!(within(fake.run_pushed(&shop)).await.is_empty());
    http.assert_sent_count(2);
    // Running does not change what was pushed.
    fake.assert_pushed_count::<RecordDelivery>(2);
}

#[test]
fn jobs_fake_shares_its_log_with_every_jobs_clone() {
    let fake = Arc::new(Jobs::<Shop>::fake());
    let jobs = fake.jobs().clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            jobs.dispatch(RecordDelivery { order: 1 }).await.unwrap();
        });
    fake.assert_pushed_count::<RecordDelivery>(1);
}
