//! Jobs: work that is not an HTTP call the response needs, with retries,
//! a timeout, a failure hook and logging, dispatched on a connection.
//!
//! A [`Job`] is a serializable struct with an async
//! [`handle`](Job::handle) over the application's typed context. A
//! [`Jobs`] value, built once at startup, dispatches it:
//!
//! | connection | where it runs | pick it for |
//! |---|---|---|
//! | [`Connection::Sync`] | now, in the caller, which gets the outcome | tests, CLIs |
//! | [`Connection::Deferred`] | after the response, in this process ([`defer`](crate::defer) rules) | light work the response need not wait for |
//! | [`Connection::Background`] | a child process of this binary | heavy or risky work: a crash fails only that job |
//! | [`Connection::Durable`] | stored in SQLite, PostgreSQL or Redis before the dispatch returns, then a durable worker here or in another process (feature `durable-sqlite`, `durable-postgres` or `durable-redis`) | work that must happen: it survives the process being killed |
//! | [`Connection::Failover`] | `durable`, or `deferred` with a warning when the store cannot take the job | must-happen work that should degrade rather than be refused |
//!
//! In an axum handler a deferred job is one line,
//! `jobs.dispatch(RecordDelivery { order }).after(&deferred);`, and
//! elsewhere `jobs.dispatch(job).on(Connection::Background).await?`.
//! Neither gives the dispatcher the job's outcome: only `sync` does.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::extract::State;
//! use axum::routing::post;
//! use axum::Router;
//! use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
//! use batch_runtime::jobs::background::{child_entry, BackgroundConfig};
//! use batch_runtime::jobs::{Connection, Job, JobError, Jobs};
//! use serde::{Deserialize, Serialize};
//!
//! struct AppState;
//!
//! #[derive(Serialize, Deserialize)]
//! struct RecordDelivery { order: u64 }
//!
//! impl Job for RecordDelivery {
//!     const NAME: &'static str = "record-delivery";
//!     type Context = AppState;
//!     async fn handle(&self, _: &AppState) -> Result<(), JobError> { Ok(()) }
//!     fn tries(&self) -> u32 { 3 }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct RenderInvoice { order: u64 }
//!
//! impl Job for RenderInvoice {
//!     const NAME: &'static str = "render-invoice";
//!     type Context = AppState;
//!     async fn handle(&self, _: &AppState) -> Result<(), JobError> { Ok(()) }
//! }
//!
//! async fn checkout(State(jobs): State<Jobs<AppState>>, deferred: Deferred) -> &'static str {
//!     jobs.dispatch(RecordDelivery { order: 17 }).after(&deferred);
//!     if let Err(e) = jobs.dispatch(RenderInvoice { order: 17 }).on(Connection::Background).await {
//!         tracing::error!(%e, "invoice not queued");
//!     }
//!     "confirmed"
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // In a background child this runs the job and exits.
//!     child_entry(|| AppState, |registry| registry.register::<RenderInvoice>());
//!
//!     let runtime = DeferRuntime::new();
//!     let jobs = Jobs::builder(Arc::new(AppState))
//!         .deferred(&runtime)
//!         .background(BackgroundConfig::default())
//!         .build();
//!     let app = Router::new()
//!         .route("/checkout", post(checkout))
//!         .layer(DeferLayer::new(&runtime))
//!         .with_state(jobs.clone());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     println!("{}", runtime.shutdown(std::time::Duration::from_secs(10)).await);
//!     println!("{}", jobs.shutdown(std::time::Duration::from_secs(10)).await);
//!     Ok(())
//! }
//! ```
//!
//! Tests swap in [`Jobs::fake`] and assert what was pushed.

mod attempt;
pub mod background;
mod dispatch;
#[cfg(feature = "durable")]
pub mod durable;
mod fake;
mod job;
mod stats;

pub use background::{BackgroundConfig, ChildStats, ShutdownReport};
pub use dispatch::{
    Connection, Dispatch, DispatchError, DispatchOn, Dispatched, JobId, Jobs, JobsBuilder,
};
pub use fake::{JobsFake, RanJob};
pub use job::{Backoff, Job, JobError, JobErrorKind, JobSafe, DEFAULT_JOB_TIMEOUT};
pub use stats::{JobStats, Stats};
