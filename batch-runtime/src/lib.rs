//! batch: concurrent and after-the-response HTTP for tokio web services.

mod arms;
mod batch;
mod client;
pub mod defer;
mod engine;
mod error;
pub mod fake;
mod redact;
mod request;
mod response;
mod retry;
mod slots;
mod state;

#[doc(hidden)]
pub mod __private;

pub use arms::{
    ArmSet, Arms, AsyncArm, BeforeArm, CatchArm, NoArm, ProgressArm, ResultsArm, SyncArm,
};
pub use batch::Batch;
pub use client::{
    Client, ClientBuilder, DEFAULT_BODY_LIMIT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
pub use engine::DEFAULT_CONCURRENCY;
pub use error::{Error, ErrorKind};
pub use request::{delete, get, head, patch, post, put, Request};
pub use response::Response;
pub use retry::Retry;
pub use slots::{Decoder, DynSlots, Json, Raw, Slot, Slots};
pub use state::BatchState;

pub use reqwest::header;
pub use reqwest::{Method, StatusCode, Url};
