//! Fan-out cost of a batch versus raw reqwest.
//!
//! `cargo bench -p batch-runtime --bench fanout`: a loopback axum server runs
//! on its own runtime thread; the client side alternates raw reqwest and the
//! batch engine over many rounds and prints medians and ratios (`ratio`,
//! `small_ratio`, `macro_ratio`; lower is better, 1.0 is parity). The raw
//! side of `ratio` keeps every status and body, as a batch keeps every
//! result; `ratio_vs_discarding` compares with raw reqwest dropping each body
//! on arrival. `macro_ratio` compares `batch!` with the same batch written
//! against the runtime API. Last, `peak_rss_100k_mib` is the peak resident
//! memory of a child process that runs one 100,000-request batch keeping
//! every result.
//!
//! Modes, for counting instructions (`benches/instructions.sh`):
//! - `BATCH_BENCH_ONLY=raw|batch|small-raw|small-batch|macro|none` runs one
//!   side once, on a current-thread runtime, against an upstream in a child
//!   process, so a profiler that does not follow children (callgrind's
//!   default) counts the client only. `none` does everything but the
//!   requests: the start-up and teardown share, to subtract.
//! - `BATCH_BENCH_ONLY=rss` runs the 100,000-request batch and prints the
//!   process's peak RSS (`VmHWM`).
//! - `BATCH_BENCH_SERVE=1` is the upstream: it prints its port and serves
//!   until its stdin closes.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use batch_runtime::{batch, Batch, Client, Request};
use futures::StreamExt;

const FANOUT: usize = 5_000;
const CONCURRENCY: usize = 64;
const SMALL_BATCHES: usize = 2_000;
const RSS_REQUESTS: usize = 100_000;
/// Loopback timings on a shared 2-core machine are noisy: each round times
/// both sides back to back, and the reported ratio is the median of the
/// per-round ratios, which cancels drift between rounds.
const ROUNDS: usize = 31;

fn main() {
    if std::env::var_os("BATCH_BENCH_SERVE").is_some() {
        serve_until_stdin_closes();
    } else if let Ok(side) = std::env::var("BATCH_BENCH_ONLY") {
        run_only(&side);
    } else {
        run_paired();
    }
}

/// One side, once, against an upstream in a child process.
fn run_only(side: &str) {
    let (mut upstream, addr) = spawn_upstream();
    let url = format!("http://{addr}/item");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let requests = rt.block_on(async {
        let raw = raw_client();
        let client = Client::new();
        match side {
            "none" => 0,
            "raw" => {
                raw_fanout(&raw, &url).await;
                FANOUT
            }
            "batch" => {
                batch_fanout(&client, &url).await;
                FANOUT
            }
            "small-raw" => {
                raw_small(&raw, &url).await;
                SMALL_BATCHES * 3
            }
            "small-batch" => {
                batch_small(&client, &url).await;
                SMALL_BATCHES * 3
            }
            "macro" => {
                macro_small(&client, &url).await;
                SMALL_BATCHES * 3
            }
            "rss" => {
                let before = peak_rss_kib();
                let results = Batch::new((0..RSS_REQUESTS).map(|_| Request::get(&url)))
                    .concurrency(CONCURRENCY)
                    .send(&client)
                    .await;
                let peak = peak_rss_kib();
                assert!(results.iter().all(Result::is_ok));
                println!("rss_before_kib={before}");
                println!("peak_rss_100k_kib={peak}");
                drop(results);
                RSS_REQUESTS
            }
            other => panic!(
                "BATCH_BENCH_ONLY={other}: expected raw, batch, small-raw, small-batch, macro, none or rss"
            ),
        }
    });
    println!("side={side} requests={requests}");
    stop_upstream(&mut upstream);
}

/// The paired wall-clock rounds, then the RSS child.
fn run_paired() {
    let addr = start_server();
    let url = format!("http://{addr}/item");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let raw = raw_client();
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
    drop(rt);
    print_peak_rss();
}

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(batch_runtime::DEFAULT_TIMEOUT)
        .connect_timeout(batch_runtime::DEFAULT_CONNECT_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// Runs the `rss` mode in a child, so the peak is that batch's alone.
fn print_peak_rss() {
    let exe = std::env::current_exe().expect("bench executable");
    let output = Command::new(exe)
        .env("BATCH_BENCH_ONLY", "rss")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the rss child");
    assert!(output.status.success(), "the rss child failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("the rss child printed no {name}: {stdout}"))
    };
    let before = field("rss_before_kib") / 1024.0;
    let peak = field("peak_rss_100k_kib") / 1024.0;
    println!("rss: one {RSS_REQUESTS}-request batch keeping every result, child process");
    println!("  peak RSS {peak:.1} MiB ({before:.1} MiB before the batch)");
    println!("peak_rss_100k_mib={peak:.1}");
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
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

/// Starts this executable as the upstream (`BATCH_BENCH_SERVE=1`) and reads
/// the address it prints.
fn spawn_upstream() -> (Child, std::net::SocketAddr) {
    let exe = std::env::current_exe().expect("bench executable");
    let mut child = Command::new(exe)
        .env("BATCH_BENCH_SERVE", "1")
        .env_remove("BATCH_BENCH_ONLY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the upstream process");
    let stdout = child.stdout.take().expect("upstream stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the upstream address");
    let addr = line.trim().parse().unwrap_or_else(|e| {
        panic!("the upstream printed {line:?}, not an address: {e}");
    });
    (child, addr)
}

fn stop_upstream(child: &mut Child) {
    // Closing its stdin ends it.
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The upstream process: serves until its parent closes our stdin.
fn serve_until_stdin_closes() {
    let addr = start_server();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{addr}").expect("print the address");
    stdout.flush().expect("flush the address");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
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
