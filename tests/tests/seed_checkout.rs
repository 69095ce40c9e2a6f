//! The seed's testing scenario, with the seed's fake patterns exactly as
//! written (`/api/payments/*`, `/api/inventory/*`, `/api/warehouse/*`): an
//! axum checkout charges the payment now and defers the inventory
//! reservation and the warehouse notification past its response.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{batch, Client, Method, Request};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::ServiceExt;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u32,
    sku: String,
    amount: u64,
}

#[derive(Deserialize)]
struct Charge {
    confirmation: String,
}

#[derive(Deserialize)]
struct Reservation {
    reservation_id: String,
}

#[derive(Clone)]
struct Shop {
    client: Client,
    /// What the deferred batch's arms saw, for the test to read.
    log: Arc<Mutex<Vec<String>>>,
}

async fn checkout(
    State(shop): State<Shop>,
    deferred: Deferred,
    Json(order): Json<Order>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let charge: Charge = shop
        .client
        .send(Request::post("/api/payments/charge").json(&order))
        .await
        .and_then(|response| response.json())
        .map_err(|_| StatusCode::BAD_GATEWAY)?;

    let (then_log, catch_log) = (shop.log.clone(), shop.log.clone());
    batch! {
        inventory: post("/api/inventory/reserve").json(&order) => Reservation,
        warehouse: post("/api/warehouse/notify").json(&order),

        then move |_, ok| push(&then_log, format!("reserved {}", ok.inventory.reservation_id)),
        catch move |_, key, err| push(&catch_log, format!("{key} failed: {err}")),
    }
    .defer(&shop.client, &deferred)
    .name("fulfilment");

    Ok(Json(
        json!({ "order": order.id, "confirmation": charge.confirmation }),
    ))
}

fn push(log: &Mutex<Vec<String>>, line: String) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

#[tokio::test]
async fn the_seed_checkout_test_passes_with_the_seed_patterns_as_written() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let fake = Fake::new();
        fake.stub(
            Method::POST,
            "/api/payments/*",
            Reply::json(json!({ "confirmation": "PAY-42" })),
        );
        fake.stub(
            Method::POST,
            "/api/inventory/*",
            Reply::json(json!({ "reservation_id": "RES-7" })),
        );
        fake.stub(Method::POST, "/api/warehouse/*", Reply::ok());
        let client = Client::builder()
            .base_url("http://shop.test")
            .fake(&fake)
            .build()
            .expect("a fake client with a base URL builds");
        let runtime = DeferRuntime::new();
        let shop = Shop {
            client,
            log: Arc::default(),
        };
        let app = Router::new()
            .route("/checkout", post(checkout))
            .layer(DeferLayer::new(&runtime))
            .with_state(shop.clone());

        let order = Order {
            id: 7,
            sku: "mug".into(),
            amount: 1200,
        };
        let request = http::Request::post("/checkout")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&order).expect("order")))
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        // The response is ready; only the payment has been sent.
        fake.assert_sent_count(1);
        fake.assert_sent(|r| r.url().as_str() == "http://shop.test/api/payments/charge");

        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json body");
        assert_eq!(body, json!({ "order": 7, "confirmation": "PAY-42" }));

        runtime.wait_idle().await;
        fake.assert_sent_count(3);
        fake.assert_sent_in_order(["POST /api/payments/*", "POST /api/inventory/*"]);
        fake.assert_sent_in_order(["POST /api/payments/*", "POST /api/warehouse/*"]);
        fake.assert_sent(|r| {
            r.url().as_str() == "http://shop.test/api/warehouse/notify"
                && r.json::<Order>().as_ref() == Some(&order)
        });
        let log = shop.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(log, ["reserved RES-7"]);
        let stats = runtime.stats();
        assert_eq!((stats.completed, stats.panicked), (1, 0));
    })
    .await
    .expect("the checkout and its deferred work finish within 10 s");
}
