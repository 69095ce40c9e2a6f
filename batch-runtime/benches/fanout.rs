//! Fan-out cost of a batch versus raw reqwest, side by side in one process.
//!
//! Run with `cargo bench -p batch-runtime --bench fanout`. A loopback axum
//! server runs on its own runtime thread; the client side alternates raw
//! reqwest and the batch engine over many rounds and prints medians and
//! ratios (`ratio`, `small_ratio`, `macro_ratio`; lower is better, 1.0 is
//! parity). The raw side of `ratio` keeps every status and body, as a batch
//! keeps every result; `ratio_vs_discarding` compares with raw reqwest
//! dropping each body on arrival. `macro_ratio` compares `batch!` with the same batch written
//! against the runtime API.

use std::future::Future;
use std::time::{Duration, Instant};

use batch_runtime::{batch, Batch, Client, Request};
use futures::StreamExt;

const FANOUT: usize = 5_000;
const CONCURRENCY: usize = 64;
const SMALL_BATCHES: usize = 2_000;
/// Loopback timings on a shared 2-core machine are noisy: each round times
/// both sides back to back, and the reported ratio is the median of the
/// per-round ratios, which cancels drift between rounds.
const ROUNDS: usize = 31;

fn main() {
    let addr = start_server();
    let url = format!("http://{addr}/item");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let raw = reqwest::Client::builder()
            .timeout(batch_runtime::DEFAULT_TIMEOUT)
            .connect_timeout(batch_runtime::DEFAULT_CONNECT_TIMEOUT)
            .build()
            .expect("reqwest client");
        let client = Client::new();
        // Warm both connection pools.
        raw_fanout(&raw, &url).await;
        batch_fanout(&client, &url).await;

        let fanout = alternate(|| raw_fanout(&raw, &url), || batch_fanout(&client, &url)).await;
        let discarding = alternate(
            || raw_discarding(&raw, &url),
            || batch_fanout(&client, &url),
        )
        .await;
        println!("fanout: {FANOUT} requests at concurrency {CONCURRENCY}, {ROUNDS} rounds");
        println!(
            "  raw reqwest, keeping status and body: median {:.1} ms",
            fanout.a_ms
        );
        println!(
            "  batch, progress arm, every response:  median {:.1} ms",
            fanout.b_ms
        );
        println!(
            "  raw reqwest, discarding bodies:       median {:.1} ms",
            discarding.a_ms
        );

        let small = alternate(|| raw_small(&raw, &url), || batch_small(&client, &url)).await;
        println!("small: {SMALL_BATCHES} sequential 3-request batches, {ROUNDS} rounds");
        println!("  raw tokio::join! of 3: median {:.1} ms", small.a_ms);
        println!("  Batch::new of 3:       median {:.1} ms", small.b_ms);

        let typed = alternate(|| batch_small(&client, &url), || macro_small(&client, &url)).await;
        println!("macro: {SMALL_BATCHES} sequential 3-request batches, {ROUNDS} rounds");
        println!(
            "  Batch::new of 3 (runtime API): median {:.1} ms",
            typed.a_ms
        );
        println!(
            "  batch! of 3 typed keys:        median {:.1} ms",
            typed.b_ms
        );

        println!("ratio={:.3}", fanout.ratio);
        println!("ratio_vs_discarding={:.3}", discarding.ratio);
        println!("small_ratio={:.3}", small.ratio);
        println!("macro_ratio={:.3}", typed.ratio);
    });
}

/// What `alternate` measured: the median time of each side and the
/// median of the per-round ratios `b / a`.
struct Paired {
    a_ms: f64,
    b_ms: f64,
    ratio: f64,
}

/// Runs `a` and `b` back to back, `ROUNDS` times, swapping who goes first
/// each round so neither always gets a warm cache.
async fn alternate<A, AF, B, BF>(mut a: A, mut b: B) -> Paired
where
    A: FnMut() -> AF,
    AF: Future<Output = ()>,
    B: FnMut() -> BF,
    BF: Future<Output = ()>,
{
    let mut a_times = Vec::with_capacity(ROUNDS);
    let mut b_times = Vec::with_capacity(ROUNDS);
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (a_time, b_time) = if round % 2 == 0 {
            let a_time = timed(a()).await;
            (a_time, timed(b()).await)
        } else {
            let b_time = timed(b()).await;
            (timed(a()).await, b_time)
        };
        ratios.push(b_time.as_secs_f64() / a_time.as_secs_f64());
        a_times.push(a_time.as_secs_f64() * 1000.0);
        b_times.push(b_time.as_secs_f64() * 1000.0);
    }
    Paired {
        a_ms: median(a_times),
        b_ms: median(b_times),
        ratio: median(ratios),
    }
}

async fn timed(work: impl Future<Output = ()>) -> Duration {
    let started = Instant::now();
    work.await;
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The raw equivalent of a batch: every status and body, kept until the end.
async fn raw_fanout(raw: &reqwest::Client, url: &str) {
    let results: Vec<(reqwest::StatusCode, bytes::Bytes)> = futures::stream::iter(0..FANOUT)
        .map(|_| async {
            let response = raw.get(url).send().await.expect("raw send");
            let status = response.status();
            (status, response.bytes().await.expect("raw body"))
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert_eq!(results.len(), FANOUT);
}

/// Raw fan-out that drops each body as it arrives: a lower bound.
async fn raw_discarding(raw: &reqwest::Client, url: &str) {
    let ok = futures::stream::iter(0..FANOUT)
        .map(|_| async {
            let response = raw.get(url).send().await.expect("raw send");
            response.bytes().await.expect("raw body").len()
        })
        .buffer_unordered(CONCURRENCY)
        .count()
        .await;
    assert_eq!(ok, FANOUT);
}

async fn batch_fanout(client: &Client, url: &str) {
    let mut seen = 0usize;
    let results = Batch::new((0..FANOUT).map(|_| Request::get(url)))
        .concurrency(CONCURRENCY)
        .progress(|_, _, _| seen += 1)
        .send(client)
        .await;
    assert_eq!(seen, FANOUT);
    assert_eq!(results.len(), FANOUT);
}

async fn raw_small(raw: &reqwest::Client, url: &str) {
    for _ in 0..SMALL_BATCHES {
        let one = || async {
            raw.get(url)
                .send()
                .await
                .expect("send")
                .bytes()
                .await
                .expect("body")
        };
        let (a, b, c) = tokio::join!(one(), one(), one());
        assert!(!a.is_empty() && !b.is_empty() && !c.is_empty());
    }
}

async fn batch_small(client: &Client, url: &str) {
    for _ in 0..SMALL_BATCHES {
        let results = Batch::new([Request::get(url), Request::get(url), Request::get(url)])
            .send(client)
            .await;
        assert!(results.iter().all(Result::is_ok));
    }
}

async fn macro_small(client: &Client, url: &str) {
    for _ in 0..SMALL_BATCHES {
        let all = batch! {
            first: get(url),
            second: get(url),
            third: get(url),
        }
        .send(client)
        .await;
        assert!(all.first.is_ok() && all.second.is_ok() && all.third.is_ok());
    }
}

/// A loopback upstream on its own runtime thread, answering a small JSON body.
fn start_server() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/item",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({ "id": 1, "name": "item" }))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("server address")
}
