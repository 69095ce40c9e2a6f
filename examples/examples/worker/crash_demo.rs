//! `cargo run --example worker -- --demo-crash`: a durable worker killed
//! with SIGKILL in the middle of its jobs, and a new one started.
//!
//! On its own, with nothing installed: a counting warehouse on 127.0.0.1, a
//! SQLite store in the temp dir (removed at exit), and this binary started
//! twice more as worker processes. The demo dispatches 20 `ShipOrder` jobs
//! on `durable`, one every 50 ms; each posts to the warehouse, then prints
//! its label for 200 ms. Once the warehouse has 8 shipments, `worker-1` is
//! killed with `kill -9` and `worker-2` is started. It takes the jobs still
//! pending at once, and the ones `worker-1` had taken once `worker-1` has
//! missed two heartbeats (1 s each here, 30 s by default). Those run a
//! second time: delivery is at-least-once, and both runs carry the same
//! stored id for the warehouse to de-duplicate on. The demo checks all of
//! it and exits non-zero if anything is off.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use batch_examples::{ShipOrder, Shipment, Shipping, TempStore};
use batch_runtime::jobs::durable::{DurableStore, StoreCounts};
use batch_runtime::jobs::{Connection, DispatchError, Jobs};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The argument that makes this binary one of the demo's workers.
pub const CHILD: &str = "--demo-crash-worker";
/// The heartbeat of the demo's workers: a worker silent for two of them
/// is taken for dead.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

const JOBS: u32 = 20;
const LABEL_MS: u64 = 200;
const DISPATCH_EVERY: Duration = Duration::from_millis(50);
const KILL_AT_SHIPMENTS: usize = 8;
/// Generous: the demo takes about 4 s.
const LIMIT: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

/// Milliseconds since the demo started, for its log lines.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn log(&self, line: impl std::fmt::Display) {
        println!("[{:>5} ms] {line}", self.0.elapsed().as_millis());
    }
}

/// The warehouse: every shipment it was sent, with when it arrived.
#[derive(Clone)]
struct Warehouse {
    shipments: Arc<Mutex<Vec<(Instant, Shipment)>>>,
    count: watch::Sender<usize>,
}

impl Warehouse {
    async fn start() -> Result<(Warehouse, String), Error> {
        let warehouse = Warehouse {
            shipments: Arc::default(),
            count: watch::channel(0).0,
        };
        async fn ship(State(w): State<Warehouse>, Json(shipment): Json<Shipment>) -> &'static str {
            let mut shipments = w.shipments.lock().unwrap_or_else(|e| e.into_inner());
            shipments.push((Instant::now(), shipment));
            w.count.send_replace(shipments.len());
            "booked"
        }
        let app = Router::new()
            .route("/ship", post(ship))
            .with_state(warehouse.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((warehouse, url))
    }

    async fn wait_for(&self, n: usize) -> Result<(), Error> {
        let mut count = self.count.subscribe();
        tokio::time::timeout(LIMIT, count.wait_for(|c| *c >= n)).await??;
        Ok(())
    }

    /// The shipments by order, each order's in arrival order.
    fn by_order(&self) -> BTreeMap<u32, Vec<(Instant, Shipment)>> {
        let mut by_order: BTreeMap<u32, Vec<_>> = BTreeMap::new();
        for (at, shipment) in self
            .shipments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            by_order
                .entry(shipment.order)
                .or_default()
                .push((*at, shipment.clone()));
        }
        by_order
    }
}

/// Starts this binary as the worker `name` on the store at `db`; returns
/// once it says it runs, and forwards what it prints after that.
async fn start_worker(name: &str, db: &Path, clock: Clock) -> Result<Child, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([CHILD, name])
        .env("BATCH_JOBS_STORE", db)
        .stdout(Stdio::piped())
        // On the demo's error paths, no worker outlives it.
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the worker's stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await??
        .ok_or_else(|| format!("{name} exited before it started"))?;
    clock.log(format_args!("started: {first}"));
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            clock.log(&line);
        }
    });
    Ok(child)
}

/// Polls the store (it has no change signal) until every job is done.
async fn wait_all_done(store: &DurableStore) -> Result<StoreCounts, Error> {
    tokio::time::timeout(LIMIT, async {
        loop {
            let counts = store.counts().await?;
            if counts.done >= u64::from(JOBS) {
                return Ok(counts);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

/// Asks the worker to stop as a deploy would, with SIGTERM, and waits
/// for it to finish its jobs in flight and exit.
async fn terminate(child: &mut Child) -> Result<std::process::ExitStatus, Error> {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    #[cfg(not(unix))]
    child.start_kill()?;
    Ok(tokio::time::timeout(LIMIT, child.wait()).await??)
}

/// Runs the demo; an error if any of its checks fails.
pub async fn run() -> Result<(), Error> {
    let clock = Clock(Instant::now());
    let db = TempStore::new("crash-demo");
    let (warehouse, warehouse_url) = Warehouse::start().await?;
    let store = DurableStore::sqlite(db.path()).await?.heartbeat(HEARTBEAT);
    println!("crash demo: a durable worker killed with kill -9 mid-job, then a new one");
    println!("  store: {} (removed at exit)", db.path().display());
    println!("  warehouse (counts every shipment): {warehouse_url}");
    println!(
        "  orphan timeout: the workers' heartbeat is {} s; a worker silent for 2 heartbeats \
         ({} s, counted in whole seconds so up to {} s) is taken for dead and the next \
         heartbeat of a live worker puts its unfinished jobs back to pending (default \
         heartbeat 30 s: DurableStore::heartbeat)",
        HEARTBEAT.as_secs(),
        2 * HEARTBEAT.as_secs(),
        3 * HEARTBEAT.as_secs()
    );

    let mut first = start_worker("worker-1", db.path(), clock).await?;
    let first_pid = first.id().unwrap_or_default();
    clock.log(format_args!(
        "dispatching {JOBS} ShipOrder jobs on `durable`, one every {} ms; each posts to the \
         warehouse, then prints its label for {LABEL_MS} ms",
        DISPATCH_EVERY.as_millis()
    ));
    let jobs = Jobs::builder(Shipping::quiet("dispatcher", clock.0))
        .durable(store.clone())
        .build();
    let dispatcher = tokio::spawn({
        let (jobs, warehouse) = (jobs.clone(), warehouse_url.clone());
        async move {
            for order in 1..=JOBS {
                let job = ShipOrder {
                    order,
                    warehouse: warehouse.clone(),
                    label_ms: LABEL_MS,
                };
                jobs.dispatch(job).on(Connection::Durable).await?;
                tokio::time::sleep(DISPATCH_EVERY).await;
            }
            Ok::<(), DispatchError>(())
        }
    });

    warehouse.wait_for(KILL_AT_SHIPMENTS).await?;
    first.kill().await?;
    let killed_at = Instant::now();
    let at_kill = store.counts().await?;
    clock.log(format_args!(
        "the warehouse has {} shipments: kill -9 worker-1 (pid {first_pid})",
        *warehouse.count.borrow()
    ));
    clock.log(format_args!(
        "the store at the kill: {} done, {} taken by worker-1 and not marked done, {} pending, \
         {} not dispatched yet",
        at_kill.done,
        at_kill.running,
        at_kill.pending,
        u64::from(JOBS) - (at_kill.done + at_kill.running + at_kill.pending + at_kill.failed)
    ));

    let mut second = start_worker("worker-2", db.path(), clock).await?;
    dispatcher.await??;
    clock.log("all jobs dispatched");
    let counts = wait_all_done(&store).await?;
    clock.log(format_args!(
        "the store: {} done, {} running, {} pending, {} failed",
        counts.done, counts.running, counts.pending, counts.failed
    ));
    clock.log("kill -TERM worker-2: it finishes its jobs in flight, then exits");
    let status = terminate(&mut second).await?;
    clock.log(format_args!("worker-2 exited: {status}"));

    // What happened, checked.
    let by_order = warehouse.by_order();
    let twice: Vec<u32> = by_order
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(order, _)| *order)
        .collect();
    let mut problems = Vec::new();
    if counts.done != u64::from(JOBS) || counts.failed + counts.pending + counts.running != 0 {
        problems.push(format!("the store's counts are off: {counts:?}"));
    }
    if by_order.keys().copied().ne(1..=JOBS) {
        problems.push(format!(
            "orders missing at the warehouse: {:?}",
            (1..=JOBS)
                .filter(|o| !by_order.contains_key(o))
                .collect::<Vec<_>>()
        ));
    }
    if let Some((order, runs)) = by_order.iter().find(|(_, runs)| runs.len() > 2) {
        problems.push(format!("order {order} ran {} times", runs.len()));
    }
    if twice.len() as u64 > at_kill.running {
        problems.push(format!(
            "{} jobs ran twice but only {} were taken by worker-1 at the kill",
            twice.len(),
            at_kill.running
        ));
    }
    for order in &twice {
        let runs = &by_order[order];
        let workers: Vec<&str> = runs.iter().map(|(_, s)| s.worker.as_str()).collect();
        if workers != ["worker-1", "worker-2"] {
            problems.push(format!("order {order} ran on {workers:?}"));
        }
        if runs
            .iter()
            .any(|(_, s)| s.stored_id.is_none() || s.stored_id != runs[0].1.stored_id)
        {
            problems.push(format!("order {order}'s runs carried different stored ids"));
        }
    }
    let rerun_after: Vec<Duration> = twice
        .iter()
        .map(|order| by_order[order][1].0.saturating_duration_since(killed_at))
        .collect();
    let stats = jobs.stats().of::<ShipOrder>();

    println!("\nsummary");
    println!(
        "  jobs completed: {} of {JOBS} done in the store ({} failed); this process dispatched {}",
        counts.done, counts.failed, stats.dispatched
    );
    println!(
        "  every job reached the warehouse: {} ({} of {JOBS} orders, {} shipments)",
        if by_order.len() == JOBS as usize {
            "yes"
        } else {
            "NO"
        },
        by_order.len(),
        by_order.values().map(Vec::len).sum::<usize>()
    );
    println!(
        "  ran twice: {} (orders {twice:?}), all in flight on worker-1 at the kill ({} taken \
         and not done); each ran again on worker-2 with the same stored id",
        twice.len(),
        at_kill.running
    );
    if let (Some(first), Some(last)) = (rerun_after.iter().min(), rerun_after.iter().max()) {
        println!(
            "  the orphaned jobs ran again {:.1}-{:.1} s after the kill (orphan timeout: 2 missed \
             heartbeats of {} s, counted from worker-1's last heartbeat, which came before the \
             kill)",
            first.as_secs_f64(),
            last.as_secs_f64(),
            HEARTBEAT.as_secs()
        );
    }
    if problems.is_empty() {
        println!("  all checks passed");
        Ok(())
    } else {
        for problem in &problems {
            println!("  PROBLEM: {problem}");
        }
        Err(format!("{} check(s) failed", problems.len()).into())
    }
}
