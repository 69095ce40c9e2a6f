//! Not public API: the items `batch!` expansions name by absolute path.
//! Nothing here is covered by semver.

use serde::de::DeserializeOwned;

pub use crate::arms::{ArmEvent, SharedArms};

/// An arm's outcome in `batch!`'s single arm closure: `None` for a plain
/// arm, the boxed future of an async arm.
pub type ArmFuture<'env> = ::core::option::Option<
    ::core::pin::Pin<Box<dyn ::core::future::Future<Output = ()> + Send + 'env>>,
>;

/// The future type of [`ArmFuture`].
pub type BoxedArm<'env> =
    ::core::pin::Pin<Box<dyn ::core::future::Future<Output = ()> + Send + 'env>>;
pub use crate::batch::Batch;
pub use crate::error::Error;
pub use crate::request::Request;
pub use crate::response::Response;
pub use crate::slots::{Slot, Slots};
pub use crate::state::BatchState;

/// The procedural half of `batch!`; the `macro_rules!` trampoline at the
/// crate root calls it with `$crate` first.
pub use batch_macros::batch as batch_impl;

/// What a request expression sees unqualified: `key: post("/path")`.
pub mod verbs {
    pub use crate::request::{delete, get, head, patch, post, put};
}

/// The check on a request expression (`key: <expr>`).
#[diagnostic::on_unimplemented(
    message = "a batch entry needs a `Request`, found `{Self}`",
    label = "this is not a request",
    note = "write the entry as `key: get(\"/path\")` (or `post`, `put`, `patch`, `delete`, `head`), then chain `.json(..)`, `.query(..)`, `.header(..)` …"
)]
pub trait IsRequest {
    /// The request itself.
    fn into_request(self) -> Request;
}

impl IsRequest for Request {
    fn into_request(self) -> Request {
        self
    }
}

/// Checks one request expression; errors land on the user's expression.
pub fn request<R: IsRequest>(request: R) -> Request {
    request.into_request()
}

/// All request expressions, in definition order.
pub fn requests<const N: usize>(requests: [Request; N]) -> Vec<Request> {
    Vec::from(requests)
}

/// The check on a typed entry (`key: <expr> => T`).
#[diagnostic::on_unimplemented(
    message = "`=> {Self}` needs `{Self}: serde::Deserialize`, to decode the JSON body",
    label = "`{Self}` does not implement `serde::Deserialize`",
    note = "add `#[derive(serde::Deserialize)]` to `{Self}`, or drop `=> {Self}` to keep the raw `Response`"
)]
pub trait Decodable: DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> Decodable for T {}

/// Decodes a typed entry's body.
///
/// # Errors
///
/// The decode error.
pub fn json<T: Decodable>(response: &Response) -> Result<T, Error> {
    response.json()
}

/// A typed entry's slot and its decoder. Made where the batch is written
/// (see [`typed`]), so that the generated structs are generic over `T` and
/// `T` may be a type parameter of the function that writes `batch!`.
pub struct Typed<T> {
    slot: Slot<T>,
    decode: fn(&Response) -> Result<T, Error>,
}

/// The slot of `key: <expr> => T`; checks `T: Deserialize` where `T` is
/// written.
pub fn typed<T: Decodable>() -> Typed<T> {
    Typed {
        slot: Slot::default(),
        decode: json::<T>,
    }
}

impl<T> Typed<T> {
    /// Decodes the body into the slot.
    ///
    /// # Errors
    ///
    /// The decode error (the engine records it with [`Typed::fail`]).
    pub fn decode(&mut self, response: &Response) -> Result<(), Error> {
        self.slot.decode((self.decode)(response))
    }

    /// Records a failure.
    pub fn fail(&mut self, error: Error) {
        self.slot.fail(error);
    }

    /// The result.
    pub fn into_result(self) -> Result<T, Error> {
        self.slot.into_result()
    }
}

/// Keeps an untyped entry's response.
///
/// # Errors
///
/// Never; the signature matches [`json`].
pub fn raw(response: &Response) -> Result<Response, Error> {
    <crate::slots::Raw as crate::slots::Decoder>::decode(response)
}

/// The batch `batch!` returns. The arms' closure gets its argument type
/// from the slots, so the arms never name the generated result structs
/// (and a user type called `Results` stays the user's).
pub fn with_arms<'env, S, F>(requests: Vec<Request>, slots: S, arms: F) -> Batch<S, SharedArms<F>>
where
    S: Slots,
    F: for<'a> FnMut(ArmEvent<'a, S::Key, S::AllOk, S::All>) -> ArmFuture<'env>,
{
    let arms = SharedArms::new::<S::Key, S::AllOk, S::All, BoxedArm<'env>>(arms);
    Batch::from_parts(requests, slots, arms)
}

/// The batch `batch!` returns when no arm is written: no arm closure to
/// call for each event, as for a [`Batch::new`](crate::Batch::new) batch.
pub fn without_arms<S: Slots>(requests: Vec<Request>, slots: S) -> Batch<S> {
    Batch::from_parts(requests, slots, crate::arms::ArmSet::default())
}

/// The future of an async arm, boxed for [`SharedArms`].
pub fn async_arm<'env, F>(future: F) -> ArmFuture<'env>
where
    F: core::future::Future<Output = ()> + Send + 'env,
{
    Some(Box::pin(future))
}

/// Runs a plain arm's body, a closure called at once: its borrows of what
/// the arms capture end when it returns, a `return` in it leaves the arm,
/// and a body that is not `()` is an error under the body.
pub fn plain_arm<'env>(arm: impl FnOnce()) -> ArmFuture<'env> {
    arm();
    None
}

/// Keeps an untyped entry's response itself, lent back for the arms: the
/// engine moves it in instead of cloning it.
///
/// # Errors
///
/// Never; the signature matches [`Slots::keep`].
pub fn keep_raw(slot: &mut Slot<Response>, response: Response) -> Result<&Response, Response> {
    <crate::slots::Raw as crate::slots::Decoder>::keep(slot, response)
}
