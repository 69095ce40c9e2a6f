//! A shop whose `POST /checkout` charges the payment (the response needs
//! it) and defers the rest (inventory, warehouse, analytics, CRM) until
//! after the response has been sent.
//!
//! Run with `cargo run --example checkout`. Six small upstream services and
//! the shop start on 127.0.0.1; a client places four orders one after the
//! other and a timeline shows each response returning long before its
//! deferred batch finishes. Order 3 meets a warehouse `503`, so `catch`
//! shows. Then the shop shuts down gracefully and the defer runtime drains.
//!
//! Jobs, the last leaf: each checkout also dispatches a `RecordDelivery`
//! job on `deferred` (after the response, with retries) and a
//! `RenderInvoice` job on `background`, a child process of this binary
//! that burns CPU for a while. For order 2 the invoice renderer calls
//! `abort()`: that child dies, its job fails alone (the `failed` hook
//! runs in the shop), and the shop keeps serving.
//!
//! Durable jobs: each checkout also stores a `ShipOrder` job on `durable`,
//! in a SQLite file in the temp dir (removed at exit), before it answers:
//! had the shop died right after the response, the shipment would still be
//! booked by the next worker. A durable worker in the shop's own process
//! runs it; `cargo run --example worker` runs the same job types as a
//! process of its own, and `-- --demo-crash` kills one mid-job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use batch_examples::{register, ShipOrder, Shipment, Shipping, TempStore};
use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
use batch_runtime::jobs::background::{child_entry, BackgroundConfig};
use batch_runtime::jobs::durable::{DurableStore, StoreError, WorkerError};
use batch_runtime::jobs::{Backoff, Connection, Job, JobError, Jobs};
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

/// Milliseconds since the Unix epoch: a background child has its own
/// `Instant`s, so jobs carry the shop's start as wall-clock time.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// What jobs receive: in the shop, its clock and client; in a background
/// child, a fresh one ([`Office::for_child`]).
struct Office {
    clock: Clock,
    client: Client,
    analytics: String,
    /// Lines written by `failed` hooks, for the summary.
    failures: std::sync::Mutex<Vec<String>>,
}

impl Office {
    /// The context a background child builds for itself at startup.
    fn for_child() -> Office {
        Office {
            clock: Clock(Instant::now()),
            client: Client::new(),
            analytics: String::new(),
            failures: std::sync::Mutex::default(),
        }
    }

    fn failed(&self, line: String) {
        self.clock.log(&line);
        if let Ok(mut failures) = self.failures.lock() {
            failures.push(line);
        }
    }
}

/// Records the delivery with analytics, after the response.
#[derive(Serialize, Deserialize)]
struct RecordDelivery {
    order: Order,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = Office;

    async fn handle(&self, office: &Office) -> Result<(), JobError> {
        office
            .client
            .send(Request::post(format!("{}/event", office.analytics)).json(&self.order))
            .await?;
        office.clock.log(format_args!(
            "order {}: RecordDelivery job done (deferred, in the shop's process)",
            self.order.id
        ));
        Ok(())
    }

    fn tries(&self) -> u32 {
        3
    }

    fn backoff(&self) -> Backoff {
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
    }

    async fn failed(&self, error: &JobError, office: &Office) {
        office.failed(format!(
            "order {}: failed hook: delivery not recorded: {error}",
            self.order.id
        ));
    }
}

/// Renders the invoice PDF: CPU-heavy, so it runs in a child process.
#[derive(Serialize, Deserialize)]
struct RenderInvoice {
    order: u32,
    shop_started_unix_ms: u128,
}

impl Job for RenderInvoice {
    const NAME: &'static str = "render-invoice";
    type Context = Office;

    async fn handle(&self, _: &Office) -> Result<(), JobError> {
        let at = || unix_ms().saturating_sub(self.shop_started_unix_ms);
        let pid = std::process::id();
        println!(
            "[{:>5} ms] order {}: RenderInvoice started in child pid {pid}",
            at(),
            self.order
        );
        // Burn CPU for a while, as a PDF renderer would.
        let started = Instant::now();
        let mut x = 1u64;
        while started.elapsed() < Duration::from_millis(700) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            if self.order == 2 && started.elapsed() > Duration::from_millis(300) {
                // A bug in the renderer's native code: the process dies.
                std::process::abort();
            }
        }
        println!(
            "[{:>5} ms] order {}: invoice rendered in child pid {pid}",
            at(),
            self.order
        );
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn failed(&self, error: &JobError, office: &Office) {
        office.failed(format!(
            "order {}: failed hook (in the shop): invoice flagged for a manual run: {error}",
            self.order
        ));
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
    jobs: Jobs<Office>,
    /// The durable jobs: their context is `Shipping`, shared with the
    /// `worker` example, so they have a `Jobs` of their own.
    shipping: Jobs<Shipping>,
    started_unix_ms: u128,
}

struct Services {
    payments: String,
    inventory: String,
    warehouse: String,
    analytics: String,
    crm: String,
    carrier: String,
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

    // The shipment must happen even if the shop dies right after
    // answering: store it (durable) before the response.
    let ship = ShipOrder {
        order: order.id,
        warehouse: s.carrier.clone(),
        label_ms: 100,
    };
    match shop.shipping.dispatch(ship).on(Connection::Durable).await {
        Ok(stored) => shop.clock.log(format_args!(
            "order {}: ShipOrder stored before the response (durable, stored id {})",
            order.id,
            stored.stored_id().unwrap_or("-")
        )),
        Err(err) => {
            let body = json!({ "order": order.id, "error": err.to_string() });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    }

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

    // Jobs: one line for a deferred job; the invoice goes to a child.
    shop.jobs
        .dispatch(RecordDelivery {
            order: order.clone(),
        })
        .after(&deferred);
    let invoice = RenderInvoice {
        order: order.id,
        shop_started_unix_ms: shop.started_unix_ms,
    };
    if let Err(err) = shop.jobs.dispatch(invoice).on(Connection::Background).await {
        shop.clock
            .log(format_args!("order {id}: invoice not queued: {err}"));
    }

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

/// The carrier's booking desk, which `ShipOrder` posts to.
async fn carrier() -> std::io::Result<String> {
    let app = Router::new().route(
        "/ship",
        post(|Json(shipment): Json<Shipment>| async move {
            tokio::time::sleep(Duration::from_millis(80)).await;
            Json(json!({ "booked": shipment.order }))
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing: in a background child this runs one job and exits.
    child_entry(Office::for_child, |registry| {
        registry.register::<RenderInvoice>()
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(shop_main())
}

async fn shop_main() -> Result<(), Box<dyn std::error::Error>> {
    // Declared first, so it is dropped last: the store's files go on every
    // way out of this function, an early `?` included.
    let db = TempStore::new("checkout");
    let clock = Clock(Instant::now());
    let started_unix_ms = unix_ms();
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
        carrier: carrier().await?,
    };

    let runtime = DeferRuntime::new();
    let office = Arc::new(Office {
        clock,
        client: Client::builder().timeout(Duration::from_secs(5)).build()?,
        analytics: services.analytics.clone(),
        failures: std::sync::Mutex::default(),
    });
    let jobs = Jobs::builder(office.clone())
        .deferred(&runtime)
        .background(BackgroundConfig::default())
        .build();
    // Durable jobs: a SQLite store, and a worker in this process.
    let store = DurableStore::sqlite(db.path()).await?;
    let shipping = Jobs::builder(Shipping::new("shop-worker", clock.0))
        .durable(store)
        .build();
    let (stop_worker, stop_signal) = tokio::sync::oneshot::channel::<()>();
    let worker = shipping.durable_worker("shop-worker", register)?;
    let worker = tokio::spawn(worker.run_until(async {
        let _ = stop_signal.await;
    }));

    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shop = Shop {
        jobs: jobs.clone(),
        shipping: shipping.clone(),
        started_unix_ms,
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
        "shop listening on {shop_url}; six upstream services up; durable jobs in {}",
        db.path().display()
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
    let report = jobs.shutdown(Duration::from_secs(10)).await;
    clock.log(format_args!("jobs: {report}"));
    // The store is the durable jobs' source of truth: wait until it says
    // they have all run, then stop the worker (it would finish a job in
    // flight first).
    let store = shipping.durable_store().ok_or("durable is configured")?;
    let mut worker = worker;
    wait_until_run(store, responses.len(), &mut worker).await?;
    let _ = stop_worker.send(());
    worker.await??;
    let shipping_stats = shipping.stats_with_store().await?;
    clock.log("durable worker stopped");

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
    println!("\njobs (dispatched / succeeded / failed / retried)");
    for (name, s) in jobs.stats().iter().chain(shipping_stats.iter()) {
        println!(
            "{name:<16} {} / {} / {} / {}",
            s.dispatched, s.succeeded, s.failed, s.retried
        );
    }
    if let Some(c) = shipping_stats.store() {
        println!(
            "durable store (pending / running / failed / done): {} / {} / {} / {}",
            c.pending, c.running, c.failed, c.done
        );
    }
    let failures = office
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    println!("failed hooks: {}", failures.len());
    for line in &failures {
        println!("  {line}");
    }
    let slowest = responses
        .iter()
        .map(|(_, _, took)| *took)
        .max()
        .unwrap_or(0);
    println!(
        "\nEach checkout answered after the payment only (slowest {slowest} ms, while \
         invoices burned CPU for 700 ms each); its inventory/warehouse/analytics/CRM \
         batch and RecordDelivery job ran after the response had been sent. Order 2's \
         invoice child aborted: that job failed alone, the shop kept serving. Each \
         ShipOrder was in the store before its response: a crash after answering would \
         not have lost it."
    );
    store.close().await;
    Ok(())
}

/// Waits until the store says `jobs` durable jobs have run (done or
/// failed); an error if the worker stops first or it takes over 30 s.
async fn wait_until_run(
    store: &DurableStore,
    jobs: usize,
    worker: &mut tokio::task::JoinHandle<Result<(), WorkerError>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let all_run = async {
        loop {
            let counts = store.counts().await?;
            if counts.done + counts.failed >= jobs as u64 {
                return Ok::<_, StoreError>(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        all_run = all_run => Ok(all_run?),
        stopped = worker => Err(format!("the durable worker stopped early: {stopped:?}").into()),
        () = tokio::time::sleep(Duration::from_secs(30)) => Err(format!(
            "the durable jobs have not all run after 30 s: {:?}",
            store.counts().await?
        )
        .into()),
    }
}
