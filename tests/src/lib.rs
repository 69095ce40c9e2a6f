//! Test support: a real HTTP upstream on 127.0.0.1, started inside the test.
//!
//! Routes (all counted in [`Upstream::hits`], and in-flight requests in
//! [`Upstream::max_in_flight`]):
//! - `GET /delay/{ms}`: waits, then `{"delay": ms}`
//! - `GET /status/{code}`: that status, body `status {code}`
//! - `GET /json/{n}`: `{"n": n}`
//! - `GET /bytes/{n}`: `n` bytes of `x`
//! - `GET /invalid-json`: `content-type: application/json`, body `not json`
//! - `ANY /echo`: `{"method", "path", "query", "headers", "body"}`
//! - `GET /flaky/{id}/{failures}/{retry_after}`: answers `503` with
//!   `Retry-After: {retry_after}` the first `failures` times per `id`, then `{"attempts": n}`
//! - `GET /hang`: never answers (an hour)
//! - `POST /record/{name}`: 200, and the name is appended to [`Upstream::recorded`]
//! - `GET /gate/{n}`: waits until `n` requests are in flight at once (at
//!   most 1 s), then `{"gate": n}`: the peak in flight then shows the limit

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};

/// A running loopback upstream; it stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Shared {
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    flaky: Mutex<HashMap<String, u32>>,
    recorded: Mutex<Vec<String>>,
    /// Woken whenever a request arrives, for `/gate/{n}`.
    arrivals: tokio::sync::Notify,
}

struct InFlightGuard(Arc<Shared>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn track(
    State(state): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.arrivals.notify_waiters();
    let _guard = InFlightGuard(state.clone());
    next.run(request).await
}

impl Upstream {
    /// Starts the upstream on `127.0.0.1:0`.
    pub async fn start() -> Upstream {
        let state = Arc::new(Shared::default());
        let app = Router::new()
            .route("/delay/{ms}", get(delay))
            .route("/status/{code}", get(status))
            .route("/json/{n}", get(json))
            .route("/bytes/{n}", get(bytes))
            .route("/invalid-json", get(invalid_json))
            .route("/echo", any(echo))
            .route("/flaky/{id}/{failures}/{retry_after}", get(flaky))
            .route("/hang", get(hang))
            .route("/record/{name}", post(record))
            .route("/gate/{n}", get(gate))
            .layer(axum::middleware::from_fn_with_state(state.clone(), track))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .expect("upstream serves");
        });
        Upstream {
            addr,
            state,
            _shutdown: tx,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// The most requests that were being handled at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Names posted to `/record/{name}`, in arrival order.
    pub fn recorded(&self) -> Vec<String> {
        self.state.recorded.lock().unwrap().clone()
    }
}

/// Serves `app` on `127.0.0.1:0` until the test's runtime ends; returns
/// its address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("app serves");
    });
    addr
}

/// An address on loopback where nothing listens (bound, then released).
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

async fn delay(Path(ms): Path<u64>) -> Json<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(serde_json::json!({ "delay": ms }))
}

async fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("status {code}")).into_response()
}

async fn json(Path(n): Path<u64>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "n": n }))
}

async fn bytes(Path(n): Path<usize>) -> Vec<u8> {
    vec![b'x'; n]
}

async fn invalid_json() -> Response {
    ([("content-type", "application/json")], "not json").into_response()
}

async fn echo(
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Json<serde_json::Value> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("")),
            )
        })
        .collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn flaky(
    State(state): State<Arc<Shared>>,
    Path((id, failures, retry_after)): Path<(String, u32, u64)>,
) -> Response {
    let attempt = {
        let mut flaky = state.flaky.lock().unwrap();
        let count = flaky.entry(id).or_insert(0);
        *count += 1;
        *count
    };
    if attempt <= failures {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", retry_after.to_string())],
            format!("attempt {attempt} failed"),
        )
            .into_response()
    } else {
        Json(serde_json::json!({ "attempts": attempt })).into_response()
    }
}

async fn hang() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "too late"
}

async fn record(State(state): State<Arc<Shared>>, Path(name): Path<String>) -> &'static str {
    state.recorded.lock().unwrap().push(name);
    "ok"
}

async fn gate(State(state): State<Arc<Shared>>, Path(n): Path<usize>) -> Json<serde_json::Value> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        // Registered before the check, so an arrival in between still wakes us.
        let arrived = state.arrivals.notified();
        let mut arrived = std::pin::pin!(arrived);
        arrived.as_mut().enable();
        if state.in_flight.load(Ordering::SeqCst) >= n {
            state.arrivals.notify_waiters();
            break;
        }
        tokio::select! {
            () = arrived => {}
            () = tokio::time::sleep_until(give_up) => break,
        }
    }
    Json(serde_json::json!({ "gate": n }))
}

/// One test of a harness-free test binary (see [`run_tests`]).
pub type HarnessFreeTest = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// `[(name, test), ..]` for [`run_tests`], from async test functions.
#[macro_export]
macro_rules! harness_free_tests {
    ($($name:ident),* $(,)?) => {
        [$((
            stringify!($name),
            (|| ::std::boxed::Box::pin($name())
                as ::std::pin::Pin<::std::boxed::Box<dyn ::std::future::Future<Output = ()> + Send>>)
                as $crate::HarnessFreeTest,
        )),*]
    };
}

/// The test loop of a `harness = false` binary, whose own `main` must run
/// first (a child-process entry). Runs the tests whose names contain one of
/// the command-line filters (all without one), each on a fresh runtime under
/// `limit`, prints libtest-style lines, and exits 1 on any failure.
pub fn run_tests(tests: &[(&str, HarnessFreeTest)], limit: Duration) {
    use futures::FutureExt;
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let total = selected.len();
    println!("\nrunning {total} tests");
    let mut failed = Vec::new();
    for (name, test) in selected {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let outcome = runtime.block_on(async {
            tokio::time::timeout(limit, std::panic::AssertUnwindSafe(test()).catch_unwind()).await
        });
        match outcome {
            Ok(Ok(())) => println!("test {name} ... ok"),
            Ok(Err(_)) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
            Err(_) => {
                println!("test {name} ... FAILED (timed out after {limit:?})");
                failed.push(*name);
            }
        }
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
    if failed.is_empty() {
        println!("\ntest result: ok. {total} passed; 0 failed");
    } else {
        println!("\ntest result: FAILED. failures: {failed:?}");
        std::process::exit(1);
    }
}
