//! A run-time batch over N URLs with a terminal progress bar driven by the
//! `progress` and `catch` arms.
//!
//! Run with `cargo run --example progress [N]` (default 200). A loopback
//! server answers each URL after a few milliseconds; every 37th URL fails.

use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use batch_runtime::{Batch, Client, Request};
use indicatif::{ProgressBar, ProgressStyle};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(200);
    let app = Router::new().route(
        "/item/{i}",
        get(|Path(i): Path<u64>| async move {
            tokio::time::sleep(Duration::from_millis(5 + i % 20)).await;
            if i % 37 == 36 {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("item {i} unavailable"),
                )
            } else {
                (StatusCode::OK, format!("item {i}"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("server failed: {err}");
        }
    });

    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")?.progress_chars("=> "),
    );
    let started = Instant::now();
    let urls = (0..n).map(|i| Request::get(format!("{base}/item/{i}")));
    let results = Batch::new(urls)
        .concurrency(16)
        .progress(|b, _, _| {
            bar.set_position(b.processed_requests() as u64);
            bar.set_message(format!("{} failed", b.failed_requests()));
        })
        .catch(|b, index, err| {
            bar.set_position(b.processed_requests() as u64);
            bar.set_message(format!("{} failed", b.failed_requests()));
            bar.println(format!("#{index}: {err}"));
        })
        .send(&Client::new())
        .await;
    bar.finish();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "{n} requests in {} ms, {failed} failed, results in definition order",
        started.elapsed().as_millis()
    );
    Ok(())
}
