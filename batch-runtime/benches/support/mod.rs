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

/// Where the upstream's CPU goes.
///
/// The upstream stands for another service, on another machine in
/// production. In-process on a 2-core machine, its server work (three
/// requests for each order the shop answers) competes with the shop for
/// the cores and shows in the shop's tail latency, a cost a deployment
/// does not pay. `Remote` (the default) runs its threads under Linux's
/// `SCHED_IDLE`, so it gets only the CPU nothing else wants; the deferred
/// work's own client side keeps its normal priority and is counted.
/// `BATCH_BENCH_UPSTREAM=shared` keeps it at normal priority.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    Remote,
    SharedCores,
}

impl Placement {
    pub fn from_env() -> Self {
        match std::env::var("BATCH_BENCH_UPSTREAM").as_deref() {
            Ok("shared") => Placement::SharedCores,
            Ok("remote") | Err(_) => Placement::Remote,
            Ok(other) => panic!("BATCH_BENCH_UPSTREAM={other}: expected `remote` or `shared`"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Placement::Remote => {
                "upstream as a remote host (its threads under SCHED_IDLE; BATCH_BENCH_UPSTREAM=shared to let it compete)"
            }
            Placement::SharedCores => "upstream sharing the cores at normal priority",
        }
    }
}

/// An upstream that answers every request after `latency`.
pub fn start_upstream(latency: Duration, placement: Placement) -> String {
    let app = Router::new().fallback(move || async move {
        tokio::time::sleep(latency).await;
        "ok"
    });
    serve_on_thread("upstream", app, placement == Placement::Remote)
}

/// Puts the calling thread (and the threads it starts afterwards) under
/// `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    assert_eq!(
        set,
        0,
        "sched_setscheduler(SCHED_IDLE): {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(not(target_os = "linux"))]
fn idle_priority() {
    panic!(
        "the remote-upstream model needs Linux's SCHED_IDLE; run with BATCH_BENCH_UPSTREAM=shared"
    );
}

/// Serves `app` on 127.0.0.1:0 from a one-worker runtime on its own thread.
/// `idle`: under `SCHED_IDLE`, runtime threads included (see [`Placement`]).
pub fn serve_on_thread(name: &str, app: Router, idle: bool) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if idle {
                // Before the runtime starts its worker: they inherit it.
                idle_priority();
            }
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
