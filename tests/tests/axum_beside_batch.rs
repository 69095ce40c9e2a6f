//! axum's routing functions and batch's requests in one file, with no
//! renamed imports: `axum::routing::{get, post}` build the router,
//! `Request::get`/`Request::post` build requests outside `batch!`, and the
//! bare `get`/`post` inside `batch!` are batch's own.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use batch_runtime::{batch, Client, Request};
use batch_tests::{serve, Upstream};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Numbered {
    n: u64,
}

#[derive(Deserialize)]
struct Echo {
    method: String,
    path: String,
    body: String,
}

/// `GET /summary`: two upstream calls at once through `batch!`.
async fn summary(State(upstream): State<Client>) -> Result<Json<Value>, StatusCode> {
    let results = batch! {
        first:  get("/json/1") => Numbered,
        second: get("/json/2") => Numbered,
        audit:  post("/echo").json(&json!({ "seen": "summary" })) => Echo,
    }
    .send(&upstream)
    .await;
    let (first, second, audit) = match (results.first, results.second, results.audit) {
        (Ok(first), Ok(second), Ok(audit)) => (first, second, audit),
        _ => return Err(StatusCode::BAD_GATEWAY),
    };
    Ok(Json(json!({
        "sum": first.n + second.n,
        "audit": [audit.method, audit.path, audit.body],
    })))
}

/// `POST /orders`: one upstream call with `Request::post`.
async fn create_order(
    State(upstream): State<Client>,
    Json(order): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let echo: Echo = upstream
        .send(Request::post("/echo").json(&order))
        .await
        .and_then(|response| response.json())
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(Json(json!({ "forwarded": echo.body, "as": echo.method })))
}

#[tokio::test]
async fn axum_routing_and_batch_requests_share_one_file_without_renaming() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let upstream = Upstream::start().await;
        let to_upstream = Client::builder()
            .base_url(upstream.base_url())
            .build()
            .expect("client for the upstream");
        let app = Router::new()
            .route("/summary", get(summary))
            .route("/orders", post(create_order))
            .with_state(to_upstream);
        let shop = serve(app).await;

        // The test talks to the app with batch's own client, too.
        let to_shop = Client::builder()
            .base_url(format!("http://{shop}"))
            .build()
            .expect("client for the app");
        let summary: Value = to_shop
            .send(Request::get("/summary"))
            .await
            .and_then(|r| r.json())
            .expect("GET /summary answers JSON");
        assert_eq!(
            summary,
            json!({ "sum": 3, "audit": ["POST", "/echo", r#"{"seen":"summary"}"#] })
        );

        let created: Value = to_shop
            .send(Request::post("/orders").json(&json!({ "sku": "mug" })))
            .await
            .and_then(|r| r.json())
            .expect("POST /orders answers JSON");
        assert_eq!(
            created,
            json!({ "forwarded": r#"{"sku":"mug"}"#, "as": "POST" })
        );
        // Three calls for the summary, one for the order.
        assert_eq!(upstream.hits(), 4);
    })
    .await
    .expect("the app answers within 10 s");
}
