//! Concurrent and after-the-response HTTP for tokio web services.
//!
//! One macro, [`batch!`], turns named requests and lifecycle arms into a
//! typed [`Batch`]: the requests run concurrently, results come back in
//! definition order as a generated struct, and the key set, the result types
//! and the arm signatures are checked by the compiler.
//!
//! The checkout of a shop: reserve inventory, charge the payment, tell the
//! warehouse. Here against the in-process [`fake`]; in production the same
//! code runs against a [`Client`] with a base URL.
//!
//! ```
//! use batch_runtime::fake::{Fake, Reply};
//! use batch_runtime::{batch, Client, Method};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Reservation {
//!     reservation_id: String,
//! }
//!
//! #[derive(Debug, Deserialize)]
//! struct Charge {
//!     confirmation: String,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let fake = Fake::new();
//! fake.stub(Method::POST, "*/inventory/reserve", Reply::json(serde_json::json!({ "reservation_id": "r-17" })));
//! fake.stub(Method::POST, "*/payments/charge", Reply::json(serde_json::json!({ "confirmation": "ch-42" })));
//! fake.stub(Method::POST, "*/warehouse/notify", Reply::status(503));
//! let client = Client::builder().base_url("http://shop.test/api").fake(&fake).build()?;
//!
//! let order = serde_json::json!({ "order": 17, "sku": "mug", "amount": 1200 });
//! let mut confirmation = None;
//! let mut problems = Vec::new();
//! let mut summary = String::new();
//!
//! let outcome = batch! {
//!     inventory: post("/inventory/reserve").json(&order) => Reservation,
//!     payment:   post("/payments/charge").json(&order)   => Charge,
//!     warehouse: post("/warehouse/notify").json(&order),
//!
//!     then    |_, ok| confirmation = Some(ok.payment.confirmation.clone()),
//!     catch   |_, key, err| match key {
//!         Key::Inventory | Key::Payment => problems.push(format!("order blocked: {err}")),
//!         Key::Warehouse => problems.push(format!("retry later: {key}")),
//!     },
//!     finally |b, _| summary = format!("{} of {} failed", b.failed_requests(), b.total_requests()),
//! }
//! .send(&client)
//! .await;
//!
//! // `then` did not run: the warehouse failed. Every field is a Result.
//! assert_eq!(confirmation, None);
//! assert_eq!(outcome.payment?.confirmation, "ch-42");
//! assert_eq!(outcome.inventory?.reservation_id, "r-17");
//! assert_eq!(outcome.warehouse.unwrap_err().status().map(|s| s.as_u16()), Some(503));
//! assert_eq!(problems, ["retry later: warehouse"]);
//! assert_eq!(summary, "1 of 3 failed");
//! fake.assert_sent_count(3);
//! # Ok::<(), batch_runtime::Error>(()) }).unwrap();
//! ```
//!
//! The four patterns, chosen by one question — does the response need the
//! result?
//!
//! | pattern | runs | gives the caller |
//! |---|---|---|
//! | pool: `batch!{..}.send(&client)` with no arms | now, concurrently | typed results, definition order |
//! | batch: the same with `before/progress/then/catch/finally` | now, concurrently | results, lifecycle arms, live counters |
//! | deferred batch: `batch!{..}.defer(&client, &deferred)` | after the response | nothing: results are unreachable by type |
//! | deferred closures: `deferred.spawn(async move {..})` | after the response | nothing |
//!
//! Modules: [`fake`] (a transport for tests, with assertions), [`defer`]
//! (work after the response, a tower layer, graceful drain), [`jobs`]
//! (a `Job` trait dispatched on `sync`, `deferred` or `background`),
//! [`types`] (the types in [`Batch`]'s signatures). Run-time batches over
//! any number of requests use [`Batch::new`] (results in a `Vec`, by index)
//! and [`Batch::keyed`] (results in a [`Keyed`], by your keys). Every
//! guarantee is listed in the README and pinned by a test.

mod arms;
mod batch;
mod client;
pub mod defer;
mod engine;
mod error;
pub mod fake;
pub mod jobs;
mod keyed;
mod redact;
mod request;
mod response;
mod retry;
mod slots;
mod state;
mod sync;

#[doc(hidden)]
pub mod __private;

pub use batch::Batch;
pub use client::{
    Client, ClientBuilder, DEFAULT_BODY_LIMIT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
pub use engine::DEFAULT_CONCURRENCY;
pub use error::{Error, ErrorKind};
pub use keyed::Keyed;
pub use request::Request;
pub use response::Response;
pub use retry::Retry;
pub use state::BatchState;

/// The types [`Batch`]'s signatures mention: its slots (where results land)
/// and its arms. You rarely name them; they are here so that a function
/// can return a configured batch, and so that the signatures link somewhere.
///
/// ```
/// use batch_runtime::types::{ArmSet, IndexSlots, Json, NoArm, SyncArm};
/// use batch_runtime::{Batch, BatchState, Request};
///
/// /// Numbers, decoded, with a `before` arm.
/// fn numbers(
///     urls: Vec<String>,
/// ) -> Batch<IndexSlots<Json<u32>>, ArmSet<SyncArm<impl FnMut(&BatchState)>>> {
///     Batch::new(urls.into_iter().map(Request::get))
///         .json::<u32>()
///         .before(|b| println!("{} requests", b.total_requests()))
/// }
/// # let _: ArmSet<NoArm> = ArmSet::default();
/// # let _ = numbers(vec![]);
/// ```
pub mod types {
    pub use crate::arms::{
        ArmSet, Arms, AsyncArm, BeforeArm, CatchArm, NoArm, ProgressArm, ResultsArm, SharedArms,
        SyncArm,
    };
    pub use crate::keyed::KeyedIter;
    pub use crate::slots::{Decoder, IndexSlots, Json, KeyedSlots, Raw, Slots};
}

/// The reqwest this crate is built on, for
/// [`ClientBuilder::with_reqwest`] (proxies, certificates, user agent, …).
pub use reqwest;
pub use reqwest::header;
pub use reqwest::{Method, StatusCode, Url};

/// Builds a [`Batch`] of named requests with typed results and lifecycle arms.
///
/// ```text
/// batch! {
///     key: <request expression> [=> DecodeAs],   // one or more, in definition order
///     ...
///     before   |b| ..,              // once, before any request starts
///     progress |b, key, response| .., // once per success
///     then     |b, ok| ..,          // once, only if nothing failed
///     catch    |b, key, error| ..,  // once per failure
///     finally  |b, all| ..,         // once, always, last
/// }
/// ```
///
/// - A request expression sees `get`, `post`, `put`, `patch`, `delete` and
///   `head` without an import and must be a [`Request`].
/// - `=> T` decodes a successful body as JSON into `T: serde::Deserialize`;
///   without it the value is the buffered [`Response`].
/// - In the arms the keys are an enum `Key` (`Key::Payment` for
///   `payment`; `Copy`, `Eq`, `Hash`, `Display` as written, `Key::as_str`,
///   `Key::ALL`). `then`'s `ok` has a field per key with the success value
///   (`ok.payment: T`; compiler messages call it `Succeeded`); `finally`'s
///   `all`, and what `send` returns, a field per key with the result
///   (`all.payment: Result<T, Error>`; called `Results`).
/// - No name is reserved: `=> T` and the request expressions are resolved
///   in your scope before anything is generated, so your own types may be
///   called `Key`, `Results` or `Succeeded`. Only inside the arms does `Key`
///   mean the batch's key enum.
/// - `b` is the [`BatchState`]. Every arm is optional and given at most
///   once. The arms become one closure that runs one event at a time on
///   the batch's task, so they share what they capture: `progress` and
///   `catch` may both push to the same `Vec`, no cell needed.
/// - An arm that awaits returns an `async` block:
///   `then |b, ok| { let id = ok.payment.id.clone(); async move { audit(id).await } }`.
///   The future must be `Send` and may not borrow the arguments or move
///   captured state out: copy out what it needs first. An
///   `async move |..| ..` closure that borrows nothing works too.
///
/// The macro returns a [`Batch`]: chain options (`.concurrency(n)`,
/// `.deadline(d)`, `.fail_fast()`) and finish with [`Batch::send`] (every
/// result, a `Results`) or [`Batch::try_send`] (a `Succeeded`, or the first
/// error in definition order).
///
/// ```
/// use batch_runtime::fake::{Fake, Reply};
/// use batch_runtime::{batch, Method};
///
/// #[derive(serde::Deserialize)]
/// struct Charge {
///     id: String,
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let fake = Fake::new();
/// fake.stub(Method::POST, "*/charge", Reply::json(serde_json::json!({ "id": "ch_1" })));
/// fake.stub(Method::POST, "*/notify", Reply::status(503));
/// let client = fake.client();
///
/// let mut failed = Vec::new();
/// let all = batch! {
///     payment: post("http://pay.test/charge").json(&4200) => Charge,
///     warehouse: post("http://warehouse.test/notify"),
///
///     catch |_, key, _| failed.push(key),
/// }
/// .send(&client)
/// .await;
///
/// assert_eq!(all.payment.unwrap().id, "ch_1");
/// assert!(all.warehouse.unwrap_err().status().is_some());
/// assert_eq!(failed.len(), 1);
/// # });
/// ```
#[macro_export]
macro_rules! batch {
    ($($input:tt)*) => {
        $crate::__private::batch_impl! { $crate; $($input)* }
    };
}

/// Every Rust block of the README, compiled and run as a doctest
/// (`cargo test --doc -p batch-runtime ReadmeDoctests`), so a README that
/// drifts from the crate fails CI. The doctests read `README.source.md`,
/// which keeps their hidden set-up lines; `README.md` is that file without
/// them, checked by the `readme` test in `batch-tests`.
#[cfg(doctest)]
#[doc = include_str!("../../README.source.md")]
pub struct ReadmeDoctests;
