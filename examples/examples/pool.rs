//! The pool pattern: a dashboard handler that needs three results, fetched
//! concurrently with typed results (`batch!` with no arms).
//!
//! Run with `cargo run --example pool`. A loopback "users" API answers each
//! call after 150 ms; the dashboard answers in about 150 ms, not 450.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use batch_runtime::{batch, Client, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderSummary {
    id: u32,
    total_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Notification {
    text: String,
}

#[derive(Serialize)]
struct Dashboard {
    user: User,
    orders: Vec<OrderSummary>,
    notifications: Vec<Notification>,
}

async fn dashboard(
    State(api): State<Client>,
    Path(id): Path<u32>,
) -> Result<Json<Dashboard>, (StatusCode, String)> {
    let all = batch! {
        user:          Request::get(format!("/users/{id}")) => User,
        orders:        Request::get(format!("/users/{id}/orders")) => Vec<OrderSummary>,
        notifications: Request::get(format!("/users/{id}/notifications")) => Vec<Notification>,
    }
    .send(&api)
    .await;
    let bad_gateway = |e: batch_runtime::Error| (StatusCode::BAD_GATEWAY, e.to_string());
    Ok(Json(Dashboard {
        user: all.user.map_err(bad_gateway)?,
        orders: all.orders.map_err(bad_gateway)?,
        notifications: all.notifications.map_err(bad_gateway)?,
    }))
}

async fn slow<T>(value: T) -> Json<T> {
    tokio::time::sleep(Duration::from_millis(150)).await;
    Json(value)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = Router::new()
        .route(
            "/users/{id}",
            get(|Path(id): Path<u32>| {
                slow(User {
                    id,
                    name: format!("user {id}"),
                })
            }),
        )
        .route(
            "/users/{id}/orders",
            get(|Path(id): Path<u32>| {
                slow(vec![
                    OrderSummary {
                        id: id * 100 + 1,
                        total_cents: 1250,
                    },
                    OrderSummary {
                        id: id * 100 + 2,
                        total_cents: 990,
                    },
                ])
            }),
        )
        .route(
            "/users/{id}/notifications",
            get(|| {
                slow(vec![Notification {
                    text: "your tea has shipped".to_owned(),
                }])
            }),
        );
    let users_url = serve(users).await?;
    let api = Client::builder().base_url(users_url).build()?;
    let shop = serve(
        Router::new()
            .route("/dashboard/{id}", get(dashboard))
            .with_state(api),
    )
    .await?;

    let started = Instant::now();
    let response = Client::new()
        .send(Request::get(format!("{shop}/dashboard/7")))
        .await?;
    let body: serde_json::Value = response.json()?;
    println!(
        "GET /dashboard/7 answered in {} ms (three 150 ms calls, concurrently):",
        started.elapsed().as_millis()
    );
    println!("{}", serde_json::to_string_pretty(&body)?);
    assert_eq!(body["user"], json!({ "id": 7, "name": "user 7" }));
    Ok(())
}

async fn serve(app: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("server failed: {err}");
        }
    });
    Ok(format!("http://{addr}"))
}
