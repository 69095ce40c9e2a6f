//! Work that runs after the response has been sent.
//!
//! Does the response need the result? If not, defer it:
//!
//! - a deferred batch: [`Batch::defer`](crate::Batch::defer), sent after
//!   the response with all its arms;
//! - deferred closures: [`Deferred::spawn`], and [`Deferred::spawn_all`]
//!   for several at once (a tuple of different futures, or many of one).
//!
//! In an axum app, [`DeferLayer`] gives every request a [`Deferred`]
//! handle (an extractor); its work starts once the response body has been
//! written (or dropped because the client left), is skipped when the
//! status is ≥ 400 unless marked [`always`](NoResults::always), and runs
//! on a [`DeferRuntime`]: bounded, panic-isolated, with a graceful
//! [`shutdown`](DeferRuntime::shutdown) that reports what it abandoned.
//! Outside HTTP, [`scope`] runs the deferred work when its body ends.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::post, Json, Router};
//! use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
//! use batch_runtime::{Batch, Client, Request};
//!
//! async fn checkout(deferred: Deferred) -> Json<&'static str> {
//!     let client = Client::new();
//!     Batch::keyed([
//!         ("warehouse", Request::post("http://127.0.0.1:9000/notify")),
//!         ("crm", Request::post("http://127.0.0.1:9001/event")),
//!     ])
//!         .catch(|_, key, err| tracing::warn!(%key, %err, "deferred call failed"))
//!         .defer(&client, &deferred);
//!     Json("confirmed")
//! }
//!
//! # async fn run(stop: tokio::sync::oneshot::Receiver<()>) -> std::io::Result<()> {
//! let runtime = DeferRuntime::new();
//! let app = Router::new()
//!     .route("/checkout", post(checkout))
//!     .layer(DeferLayer::new(&runtime));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async { let _ = stop.await; })
//!     .await?;
//! let report = runtime.shutdown(Duration::from_secs(10)).await;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod deferred;
mod handover;
mod job;
#[cfg(feature = "axum")]
mod layer;
mod report;
mod runtime;
mod state;
mod worker;
mod works;

pub use deferred::{scope, Deferred, NoResults};
#[cfg(feature = "axum")]
pub use layer::{DeferBody, DeferFuture, DeferLayer, DeferService, MissingDeferLayer};
pub use report::{DeferStats, RejectReason, Rejected, ShutdownReport, REJECTED_NAMES_KEPT};
pub use runtime::{
    DeferRuntime, DeferRuntimeBuilder, DEFAULT_DEFER_CONCURRENCY, DEFAULT_DEFER_QUEUE_CAPACITY,
    DEFAULT_DEFER_WORKERS,
};
pub use works::IntoWorks;

/// What deferred work must be: `Send + 'static`, because it runs after the
/// handler has returned, on the [`DeferRuntime`]'s worker thread. Implemented
/// for every such type. When deferred work captures an `Rc` or a borrow, the
/// compiler's notes name this bound ("required by this bound"); the main
/// message is rustc's own, naming the value that is not `Send` or the borrow
/// that does not live for `'static` — the thing to fix.
#[diagnostic::on_unimplemented(
    message = "deferred work must be `Send + 'static`, but `{Self}` is not",
    label = "this is deferred: it runs after the response, on another thread",
    note = "move owned, thread-safe values into deferred work: clone an `Arc` instead of using `Rc`, own a `String` instead of borrowing a `&str` from the request"
)]
pub trait DeferSafe: Send + 'static {}

impl<T: Send + 'static> DeferSafe for T {}
