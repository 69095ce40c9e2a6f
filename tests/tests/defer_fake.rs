//! Testing deferred work with the fake: send a request through the app
//! (`tower::ServiceExt::oneshot`), read the body, wait for the deferred
//! work, then assert on what the fake saw.

use axum::body::Body;
use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{Batch, Client, Method, Request};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Deserialize)]
struct Charge {
    confirmation: String,
}

async fn checkout(
    State(client): State<Client>,
    deferred: Deferred,
    Json(order): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    // The response needs the charge: send it now.
    let charge: Charge = client
        .send(Request::post("/payments/charge").json(&order))
        .await
        .and_then(|r| r.json())
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    // The response does not need these: defer them.
    Batch::keyed([
        (
            "inventory",
            Request::post("/inventory/reserve").json(&order),
        ),
        ("warehouse", Request::post("/warehouse/notify").json(&order)),
    ])
    .defer(&client, &deferred)
    .name("fulfilment");
    Ok(Json(json!({ "confirmation": charge.confirmation })))
}

/// The shop under test: its services are the fake, its deferred work runs
/// on a runtime the test can wait on.
fn shop(fake: &Fake) -> (Router, DeferRuntime) {
    let client = Client::builder()
        .base_url("http://services.test")
        .fake(fake)
        .build()
        .expect("client");
    let runtime = DeferRuntime::new();
    let app = Router::new()
        .route("/checkout", post(checkout))
        .layer(DeferLayer::new(&runtime))
        .with_state(client);
    (app, runtime)
}

#[tokio::test]
async fn checkout_returns_the_confirmation_and_defers_inventory_and_warehouse() {
    let fake = Fake::new();
    fake.stub(
        Method::POST,
        "*/payments/charge",
        Reply::json(json!({ "confirmation": "PAY-123" })),
    );
    fake.stub(Method::POST, "*/inventory/*", Reply::ok());
    fake.stub(Method::POST, "*/warehouse/*", Reply::ok());
    let (app, runtime) = shop(&fake);

    let request = http::Request::post("/checkout")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"sku":"tea","qty":2}"#))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    // The response is ready; only the payment has been sent so far.
    fake.assert_sent_count(1);

    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["confirmation"], "PAY-123");

    runtime.wait_idle().await;
    fake.assert_sent_count(3);
    fake.assert_sent_in_order(["POST */payments/charge", "POST */inventory/reserve"]);
    fake.assert_sent_in_order(["POST */payments/charge", "POST */warehouse/notify"]);
    fake.assert_sent(|r| {
        r.url().path() == "/inventory/reserve"
            && r.json::<Value>() == Some(json!({"sku":"tea","qty":2}))
    });
}

#[tokio::test]
async fn a_failed_checkout_defers_nothing() {
    let fake = Fake::new();
    fake.stub(Method::POST, "*/payments/charge", Reply::status(402));
    let (app, runtime) = shop(&fake);
    let request = http::Request::post("/checkout")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    response.into_body().collect().await.expect("body");
    runtime.wait_idle().await;
    fake.assert_sent_count(1);
}
