//! What the latency benches share: loopback servers on their own threads,
//! a closed-loop load of concurrent clients, and percentiles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use batch_runtime::{Client, Request};

/// `total` POSTs to `url` from `clients` concurrent loops; each request's
/// latency in milliseconds.
pub async fn round(client: &Client, url: &str, total: usize, clients: usize) -> Vec<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let loops = (0..clients).map(|_| {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let started = Instant::now();
                client
                    .send(Request::post(&url))
                    .await
                    .expect("shop answers");
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times
        }
    });
    futures::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// p50 and p99 of `times` (sorted in place).
pub fn percentiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// An upstream that answers every request after `latency`.
pub fn start_upstream(latency: Duration) -> String {
    let app = Router::new().fallback(move || async move {
        tokio::time::sleep(latency).await;
        "ok"
    });
    serve_on_thread("upstream", app)
}

/// Serves `app` on 127.0.0.1:0 from a one-worker runtime on its own thread.
pub fn serve_on_thread(name: &str, app: Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                axum::serve(listener, app).await.expect("serve");
            });
        })
        .expect("server thread");
    format!("http://{}", rx.recv().expect("server address"))
}
