//! A shop whose `POST /checkout` charges the payment (the response needs
//! it) and defers the rest (inventory, warehouse, analytics, CRM) until
//! after the response has been sent.
//!
//! Run with `cargo run --example checkout`. Five small upstream services and
//! the shop start on 127.0.0.1; a client places four orders one after the
//! other and a timeline shows each response returning long before its
//! deferred batch finishes. Order 3 meets a warehouse `503`, so `catch`
//! shows. Then the shop shuts down gracefully and the defer runtime drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::{batch, Client, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Milliseconds since the example started, for the timeline.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u128 {
        self.0.elapsed().as_millis()
    }

    fn log(&self, line: impl std::fmt::Display) {
        println!("[{:>5} ms] {line}", self.ms());
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    sku: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Charge {
    confirmation: String,
}

#[derive(Deserialize)]
struct Reservation {
    reservation: String,
}

#[derive(Clone)]
struct Shop {
    client: Client,
    services: Arc<Services>,
    clock: Clock,
    /// When each order's deferred batch finished (ms since start).
    finished: Arc<std::sync::Mutex<Vec<(u32, u128)>>>,
}

struct Services {
    payments: String,
    inventory: String,
    warehouse: String,
    analytics: String,
    crm: String,
}

async fn checkout(
    State(shop): State<Shop>,
    deferred: Deferred,
    Json(order): Json<Order>,
) -> impl IntoResponse {
    let s = &shop.services;
    // The response needs the charge: send it now.
    let charge = shop
        .client
        .send(Request::post(format!("{}/charge", s.payments)).json(&order))
        .await
        .and_then(|response| response.json::<Charge>());
    let charge = match charge {
        Ok(charge) => charge,
        Err(err) => {
            let body = json!({ "order": order.id, "error": err.to_string() });
            return (StatusCode::PAYMENT_REQUIRED, Json(body));
        }
    };

    // The response does not need the rest: defer it.
    let (clock, id, deferred_at) = (shop.clock, order.id, shop.clock.ms());
    let finished = shop.finished.clone();
    batch! {
        inventory: Request::post(format!("{}/reserve", s.inventory)).json(&order) => Reservation,
        warehouse: Request::post(format!("{}/notify", s.warehouse)).json(&order),
        analytics: Request::post(format!("{}/event", s.analytics)).json(&order),
        crm:       Request::post(format!("{}/touch", s.crm)).json(&order),

        then move |_, ok| clock.log(format_args!(
            "order {id}: deferred batch ok (reservation {})", ok.inventory.reservation
        )),
        catch move |_, key, err| clock.log(format_args!("order {id}: deferred {key} failed: {err}")),
        finally move |b, _| {
            clock.log(format_args!(
                "order {id}: deferred batch finished, {}/{} ok, {} ms after it was deferred",
                b.total_requests() - b.failed_requests(),
                b.total_requests(),
                clock.ms() - deferred_at,
            ));
            if let Ok(mut finished) = finished.lock() {
                finished.push((id, clock.ms()));
            }
        },
    }
    .defer(&shop.client, &deferred)
    .name(format!("order-{id}-fulfilment"));

    let body = json!({
        "order": order.id,
        "status": "confirmed",
        "confirmation": charge.confirmation,
    });
    (StatusCode::OK, Json(body))
}

/// Starts one upstream service on 127.0.0.1:0 that answers `route` after
/// `delay`, with `reply(order)`.
async fn service(
    route: &str,
    delay: Duration,
    reply: fn(&Order) -> (StatusCode, serde_json::Value),
) -> std::io::Result<String> {
    let app = Router::new().route(
        route,
        post(move |Json(order): Json<Order>| async move {
            tokio::time::sleep(delay).await;
            let (status, body) = reply(&order);
            (status, Json(body))
        }),
    );
    let addr = serve(app, std::future::pending()).await?;
    Ok(format!("http://{addr}"))
}

async fn serve(
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            eprintln!("server on {addr} failed: {err}");
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Clock(Instant::now());
    let services = Services {
        payments: service("/charge", Duration::from_millis(60), |o| {
            (
                StatusCode::OK,
                json!({ "confirmation": format!("PAY-{:04}", o.id * 7919 % 10_000) }),
            )
        })
        .await?,
        inventory: service("/reserve", Duration::from_millis(150), |o| {
            (
                StatusCode::OK,
                json!({ "reservation": format!("RES-{}-{}", o.sku, o.qty) }),
            )
        })
        .await?,
        warehouse: service("/notify", Duration::from_millis(300), |o| {
            if o.id == 3 {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "picking robots are charging" }),
                )
            } else {
                (StatusCode::OK, json!({ "queued": true }))
            }
        })
        .await?,
        analytics: service("/event", Duration::from_millis(100), |_| {
            (StatusCode::OK, json!({}))
        })
        .await?,
        crm: service("/touch", Duration::from_millis(220), |_| {
            (StatusCode::OK, json!({}))
        })
        .await?,
    };

    let runtime = DeferRuntime::new();
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shop = Shop {
        finished: finished.clone(),
        client: Client::builder().timeout(Duration::from_secs(5)).build()?,
        services: Arc::new(services),
        clock,
    };
    let app = Router::new()
        .route("/checkout", post(checkout))
        .layer(DeferLayer::new(&runtime))
        .with_state(shop);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shop_url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    clock.log(format_args!(
        "shop listening on {shop_url}; five upstream services up"
    ));

    let customer = Client::new();
    let mut responses = Vec::new();
    for (id, sku) in [(1, "tea"), (2, "coffee"), (3, "cocoa"), (4, "mate")] {
        let order = Order {
            id,
            sku: sku.to_owned(),
            qty: id,
        };
        let started = clock.ms();
        let response = customer
            .send(Request::post(format!("{shop_url}/checkout")).json(&order))
            .await?;
        let body: serde_json::Value = response.json()?;
        let took = clock.ms() - started;
        clock.log(format_args!(
            "order {id}: response {} in {took} ms: {body}",
            response.status()
        ));
        responses.push((id, clock.ms(), took));
    }

    clock.log("all orders placed; shutting the shop down gracefully");
    let _ = stop_tx.send(());
    server.await??;
    clock.log("server stopped; draining deferred work");
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    clock.log(format_args!("defer runtime {report}"));

    println!("\ntimeline (ms since start)");
    println!("order  response took  response at  deferred batch finished at");
    let finished = finished.lock().map(|f| f.clone()).unwrap_or_default();
    for (id, at, took) in &responses {
        let done = finished.iter().find(|(order, _)| order == id).map_or_else(
            || "never".to_owned(),
            |(_, ms)| format!("{ms} ms (+{} ms)", ms - at),
        );
        println!("{id:>5}  {:>10} ms  {:>8} ms  {done}", took, at);
    }
    println!(
        "\nEach checkout answered after the payment only; its inventory/warehouse/\
         analytics/CRM batch ran after the response had been sent."
    );
    Ok(())
}
