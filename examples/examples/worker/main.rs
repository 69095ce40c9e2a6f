//! A durable worker as a process of its own: it runs the jobs stored on the
//! `durable` connection by any process (a web server, a CLI, the checkout
//! demo) until Ctrl-C or SIGTERM, then finishes the jobs in flight and
//! exits.
//!
//! ```sh
//! cargo run --example worker                      # jobs.db in this directory, named worker-<pid>
//! BATCH_JOBS_STORE=/var/lib/shop/jobs.db cargo run --example worker -- worker-a
//! BATCH_JOBS_STORE=postgres://postgres@127.0.0.1:5432/test cargo run --example worker
//! BATCH_JOBS_STORE=redis://127.0.0.1:6379 cargo run --example worker
//! cargo run --example worker -- --demo-crash      # kill -9 a worker mid-job, start another
//! ```
//!
//! Run several against one store to share the jobs. The job types come
//! from the examples' shared module ([`batch_examples::register`]), the
//! same ones the dispatcher uses. A worker killed mid-job (`kill -9`, an
//! OOM kill, a lost machine) is taken for dead by the other workers, or by
//! its replacement, after two missed heartbeats (30 s each by default):
//! they run its unfinished jobs again, so delivery is at-least-once.
//! `--demo-crash` shows it, see `crash_demo.rs`.

mod crash_demo;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_examples::{register, Shipping};
use batch_runtime::jobs::durable::DurableStore;
use batch_runtime::jobs::Jobs;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--demo-crash") => runtime.block_on(crash_demo::run()),
        // A worker started by the crash demo: quick heartbeats, quiet jobs.
        Some(crash_demo::CHILD) => {
            let name = args.get(1).cloned().unwrap_or_else(|| "worker".to_owned());
            let ctx = Shipping::quiet(&name, Instant::now());
            runtime.block_on(run_worker(&name, ctx, Some(crash_demo::HEARTBEAT)))
        }
        Some(flag) if flag.starts_with('-') => {
            eprintln!("usage: worker [NAME] | worker --demo-crash   (the store: BATCH_JOBS_STORE, default jobs.db)");
            std::process::exit(if flag == "--help" || flag == "-h" {
                0
            } else {
                2
            })
        }
        name => {
            let name = name.map_or_else(|| format!("worker-{}", std::process::id()), str::to_owned);
            runtime.block_on(run_worker(
                &name,
                Shipping::new(&name, Instant::now()),
                None,
            ))
        }
    }
}

/// Runs the stored jobs of `BATCH_JOBS_STORE` (default `jobs.db`) until
/// Ctrl-C or SIGTERM.
async fn run_worker(
    name: &str,
    ctx: Arc<Shipping>,
    heartbeat: Option<Duration>,
) -> Result<(), Box<dyn std::error::Error>> {
    let spec = std::env::var("BATCH_JOBS_STORE").unwrap_or_else(|_| "jobs.db".to_owned());
    let stop = shutdown_signal()?;
    // A SQLite path, or a postgres:// or redis:// URL to share the jobs
    // with workers on other machines.
    let store = DurableStore::open(&spec).await?;
    let store = match heartbeat {
        Some(interval) => store.heartbeat(interval),
        None => store,
    };
    // The store's location leaves a URL's password out.
    let location = store.location().to_owned();
    let jobs = Jobs::builder(ctx).durable(store).build();
    let worker = jobs.durable_worker(name, register)?;
    println!(
        "{name} (pid {}) runs the jobs stored in {location}; Ctrl-C or SIGTERM stops it once its jobs in flight are done",
        std::process::id()
    );
    worker.run_until(stop).await?;
    println!("{name} stopped: no job in flight");
    Ok(())
}

/// Completes on Ctrl-C or (on Unix) SIGTERM. On Unix the handlers are
/// installed now, so a signal that comes before the worker runs is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
