//! Not public API: the items `batch!` expansions name by absolute path.
//! Nothing here is covered by semver.

pub use crate::arms::{ArmSet, AsyncArm, NoArm, SyncArm};
pub use crate::batch::Batch;
pub use crate::error::Error;
pub use crate::request::Request;
pub use crate::response::Response;
pub use crate::slots::{Decoder, Json, Raw, Slot, Slots};
pub use crate::state::BatchState;
