//! What the examples share: the durable jobs that the checkout demo
//! dispatches and that `cargo run --example worker` runs, so a dispatcher
//! and a worker in another process register the same types under the same
//! names.
//!
//! A job stored by one process is run by whichever worker takes it: the
//! worker must know the job's [`Job::NAME`] (see [`register`]) and build
//! the job's context ([`Shipping`]) for itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_runtime::jobs::durable::{self, DurableRegistry};
use batch_runtime::jobs::{Job, JobError};
use batch_runtime::{Client, Request};
use serde::{Deserialize, Serialize};

/// The context of the durable jobs: an HTTP client, the name of the
/// worker that runs them (for its log lines) and a clock for timestamps.
pub struct Shipping {
    client: Client,
    worker: String,
    started: Instant,
    quiet: bool,
}

impl Shipping {
    /// The context of a worker named `worker` whose log lines say the
    /// milliseconds since `started`.
    pub fn new(worker: &str, started: Instant) -> Arc<Shipping> {
        Shipping::build(worker, started, false)
    }

    /// The same, printing nothing per job (for the crash demo's workers,
    /// which run many).
    pub fn quiet(worker: &str, started: Instant) -> Arc<Shipping> {
        Shipping::build(worker, started, true)
    }

    fn build(worker: &str, started: Instant, quiet: bool) -> Arc<Shipping> {
        Arc::new(Shipping {
            client: Client::new(),
            worker: worker.to_owned(),
            started,
            quiet,
        })
    }

    fn log(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            println!(
                "[{:>5} ms] {}: {line}",
                self.started.elapsed().as_millis(),
                self.worker
            );
        }
    }
}

/// Books the shipment of an order with the warehouse: work that must
/// happen even if the shop dies right after answering, so it goes on the
/// `durable` connection.
///
/// `handle` posts `{order, stored_id}` to `{warehouse}/ship`, then spends
/// `label_ms` printing the label before it is done. Delivery is
/// at-least-once: a job interrupted by a crash runs again, with the same
/// [`durable::stored_id`], which the warehouse can use to de-duplicate.
///
/// (The demos' warehouses listen on ephemeral loopback ports, so the job
/// carries the address; a real job would take it from its context.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipOrder {
    /// The order's number.
    pub order: u32,
    /// The warehouse's base URL.
    pub warehouse: String,
    /// How long printing the label takes, after the warehouse has the order.
    pub label_ms: u64,
}

/// The body [`ShipOrder`] posts to the warehouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    /// The order's number.
    pub order: u32,
    /// The job's id in the store: the same on every run of the job.
    pub stored_id: Option<String>,
    /// The worker that ran this run.
    pub worker: String,
}

impl Job for ShipOrder {
    const NAME: &'static str = "ship-order";
    type Context = Shipping;

    async fn handle(&self, ctx: &Shipping) -> Result<(), JobError> {
        let shipment = Shipment {
            order: self.order,
            stored_id: durable::stored_id(),
            worker: ctx.worker.clone(),
        };
        let response = ctx
            .client
            .send(Request::post(format!("{}/ship", self.warehouse)).json(&shipment))
            .await?;
        if !response.status().is_success() {
            return Err(JobError::new(format!(
                "the warehouse answered {}",
                response.status()
            )));
        }
        tokio::time::sleep(Duration::from_millis(self.label_ms)).await;
        ctx.log(format_args!(
            "order {}: ShipOrder ran (durable, stored id {})",
            self.order,
            shipment.stored_id.as_deref().unwrap_or("-")
        ));
        Ok(())
    }

    fn tries(&self) -> u32 {
        3
    }

    async fn failed(&self, error: &JobError, ctx: &Shipping) {
        ctx.log(format_args!(
            "order {}: ShipOrder failed for good, kept in the store as failed: {error}",
            self.order
        ));
    }
}

/// Registers every durable job of the examples with a worker: pass it to
/// `jobs.durable_worker(name, register)`.
pub fn register(registry: &mut DurableRegistry<Shipping>) -> &mut DurableRegistry<Shipping> {
    registry.register::<ShipOrder>()
}

/// A SQLite store's file in the temp dir, removed with its `-wal` and
/// `-shm` files when this guard is dropped: at the end of the demo, and on
/// its error paths (an early `?` return or a panic) too.
#[derive(Debug)]
pub struct TempStore {
    path: std::path::PathBuf,
}

impl TempStore {
    /// A fresh path `batch-<name>-<pid>.db` in the temp dir (any file left
    /// there by an earlier process with the same pid is removed).
    pub fn new(name: &str) -> TempStore {
        let path = std::env::temp_dir().join(format!("batch-{name}-{}.db", std::process::id()));
        let store = TempStore { path };
        store.remove();
        store
    }

    /// The store's file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::TempStore;

    fn files(db: &std::path::Path) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut file = db.to_path_buf().into_os_string();
                file.push(suffix);
                file.into()
            })
            .collect()
    }

    fn fill(store: &TempStore) {
        for path in files(store.path()) {
            std::fs::write(path, b"x").expect("the temp dir is writable");
        }
    }

    #[test]
    fn a_temp_store_removes_its_file_and_the_wal_files_when_dropped() {
        let store = TempStore::new("guard-test");
        let paths = files(store.path());
        fill(&store);
        drop(store);
        for path in &paths {
            assert!(!path.exists(), "{} is left", path.display());
        }
    }

    #[test]
    fn a_temp_store_is_removed_when_the_code_holding_it_panics() {
        let db =
            std::env::temp_dir().join(format!("batch-guard-panic-test-{}.db", std::process::id()));
        let outcome = std::panic::catch_unwind(|| {
            let store = TempStore::new("guard-panic-test");
            assert_eq!(store.path(), db);
            fill(&store);
            panic!("the demo failed halfway");
        });
        assert!(outcome.is_err());
        for path in files(&db) {
            assert!(!path.exists(), "{} is left", path.display());
        }
    }

    #[test]
    fn a_temp_store_starts_from_no_file() {
        let first = TempStore::new("guard-fresh-test");
        fill(&first);
        // A store of an earlier process with the same pid is not reused.
        std::mem::forget(first);
        let second = TempStore::new("guard-fresh-test");
        for path in files(second.path()) {
            assert!(!path.exists(), "{} is left", path.display());
        }
    }
}
