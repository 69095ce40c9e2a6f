//! Typed result slots: where each request's result lands, in definition
//! order. The `batch!` macro generates a [`Slots`] implementation per
//! invocation; run-time batches use [`IndexSlots`] and [`KeyedSlots`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::keyed::Keyed;
use crate::response::Response;

/// How a successful response becomes a slot's value.
pub trait Decoder {
    /// The value a success produces.
    type Output;
    /// Turns the response into the value, or a decode error.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    fn decode(response: &Response) -> Result<Self::Output, Error>;

    /// Stores the response itself in `slot`, when it is the value (as for
    /// [`Raw`]), and lends it back for the arms: the engine then moves it
    /// in instead of cloning it. Other decoders hand it back, to
    /// [`decode`](Decoder::decode).
    #[doc(hidden)]
    fn keep(slot: &mut Slot<Self::Output>, response: Response) -> Result<&Response, Response> {
        let _ = slot;
        Err(response)
    }
}

/// Keeps the buffered [`Response`] itself.
#[derive(Debug)]
pub enum Raw {}

impl Decoder for Raw {
    type Output = Response;
    fn decode(response: &Response) -> Result<Response, Error> {
        Ok(response.clone())
    }

    fn keep(slot: &mut Slot<Response>, response: Response) -> Result<&Response, Response> {
        Ok(slot.store(response))
    }
}

/// Decodes the body as JSON into `T`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T: DeserializeOwned> Decoder for Json<T> {
    type Output = T;
    fn decode(response: &Response) -> Result<T, Error> {
        response.json()
    }
}

/// One request's result, filled once. No bound on `T`, so that a `batch!`
/// entry whose `=> T` is not deserializable is one error, at `T`.
///
/// Not filled yet is `Err(None)`: the slot is then exactly as large as the
/// `Result<T, Error>` it becomes, and a `Vec` of slots turns into a `Vec`
/// of results in place.
pub struct Slot<T> {
    value: Result<T, Option<Error>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { value: Err(None) }
    }
}

impl<T> Slot<T> {
    /// Stores a decoded value; a decode error is handed back (the engine
    /// records it with [`Slot::fail`]).
    ///
    /// # Errors
    ///
    /// `decoded`'s error.
    pub fn decode(&mut self, decoded: Result<T, Error>) -> Result<(), Error> {
        self.value = Ok(decoded?);
        Ok(())
    }

    /// Stores a value and lends it back.
    fn store(&mut self, value: T) -> &T {
        self.value = Ok(value);
        match &self.value {
            Ok(value) => value,
            Err(_) => unreachable!("a slot just given a value holds it"),
        }
    }

    /// Records a failure.
    pub fn fail(&mut self, error: Error) {
        self.value = Err(Some(error));
    }

    /// The result; a slot the engine never filled (impossible unless the
    /// batch was torn down) reads as cancelled.
    pub fn into_result(self) -> Result<T, Error> {
        self.value.map_err(|error| {
            error.unwrap_or_else(|| Error::cancelled("the request never completed"))
        })
    }
}

/// The result storage of one batch: what `send` returns is its
/// [`All`](Slots::All), what `try_send` returns its [`AllOk`](Slots::AllOk).
/// `batch!` implements it for the results it generates; run-time batches
/// use [`IndexSlots`] and [`KeyedSlots`]. The methods are the engine's.
pub trait Slots {
    /// What identifies a request in arms and errors.
    type Key: Clone + fmt::Display + Send + Sync;
    /// Every success value (given to `then`).
    type AllOk;
    /// Every result (given to `finally` and returned by `send`).
    type All;

    /// How many requests.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The key of the request at `index` (definition order).
    fn key(&self, index: usize) -> Self::Key;
    /// Decodes a success into slot `index`.
    ///
    /// # Errors
    ///
    /// The slot's decode error.
    fn decode(&mut self, index: usize, response: &Response) -> Result<(), Error>;
    /// Stores a success's response itself in slot `index` when that slot's
    /// value is the response, and lends it back for the arms (no clone);
    /// otherwise hands it back to be [`decode`](Slots::decode)d. The
    /// default hands it back.
    #[doc(hidden)]
    fn keep(&mut self, index: usize, response: Response) -> Result<&Response, Response> {
        let _ = index;
        Err(response)
    }
    /// Records a failure in slot `index`.
    fn fail(&mut self, index: usize, error: Error);
    /// Every success value if nothing failed, otherwise every result.
    ///
    /// # Errors
    ///
    /// `Err(all)` when any slot failed.
    fn finish(self) -> Result<Self::AllOk, Self::All>;
    /// Every success value, seen as results.
    fn widen(ok: Self::AllOk) -> Self::All;
    /// Every result, when no `then` arm needs the success values first.
    /// The default goes through [`finish`](Slots::finish).
    #[doc(hidden)]
    fn finish_all(self) -> Self::All
    where
        Self: Sized,
    {
        match self.finish() {
            Ok(ok) => Self::widen(ok),
            Err(all) => all,
        }
    }
    /// Every success value, or the first error in definition order.
    ///
    /// # Errors
    ///
    /// The first failed slot's error.
    fn first_error(all: Self::All) -> Result<Self::AllOk, Error>;
}

/// Slots of a [`Batch::new`](crate::Batch::new) batch: keyed by index
/// (definition order), values decoded by `D`; results in a `Vec`.
pub struct IndexSlots<D: Decoder = Raw> {
    slots: Vec<Slot<D::Output>>,
}

/// Slots of a [`Batch::keyed`](crate::Batch::keyed) batch: your keys `K`,
/// values decoded by `D`; results in a [`Keyed`], looked up by key.
pub struct KeyedSlots<K, D: Decoder = Raw> {
    keys: Vec<K>,
    slots: Vec<Slot<D::Output>>,
}

fn empty<T>(count: usize) -> Vec<Slot<T>> {
    (0..count).map(|_| Slot::default()).collect()
}

/// Every result if nothing failed, otherwise every result as `Result`s.
fn finish<T>(slots: Vec<Slot<T>>) -> Result<Vec<T>, Vec<Result<T, Error>>> {
    let all: Vec<Result<T, Error>> = slots.into_iter().map(Slot::into_result).collect();
    if all.iter().all(Result::is_ok) {
        Ok(all.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(all)
    }
}

impl<D: Decoder> IndexSlots<D> {
    pub(crate) fn new(count: usize) -> Self {
        IndexSlots {
            slots: empty(count),
        }
    }

    pub(crate) fn retype<E: Decoder>(self) -> IndexSlots<E> {
        IndexSlots::new(self.slots.len())
    }
}

impl<K, D: Decoder> KeyedSlots<K, D> {
    pub(crate) fn new(keys: Vec<K>) -> Self {
        let slots = empty(keys.len());
        KeyedSlots { keys, slots }
    }

    pub(crate) fn retype<E: Decoder>(self) -> KeyedSlots<K, E> {
        KeyedSlots::new(self.keys)
    }
}

impl<D: Decoder> Slots for IndexSlots<D> {
    type Key = usize;
    type AllOk = Vec<D::Output>;
    type All = Vec<Result<D::Output, Error>>;

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn key(&self, index: usize) -> usize {
        index
    }

    fn decode(&mut self, index: usize, response: &Response) -> Result<(), Error> {
        self.slots[index].decode(D::decode(response))
    }

    fn keep(&mut self, index: usize, response: Response) -> Result<&Response, Response> {
        D::keep(&mut self.slots[index], response)
    }

    fn fail(&mut self, index: usize, error: Error) {
        self.slots[index].fail(error);
    }

    fn finish(self) -> Result<Self::AllOk, Self::All> {
        finish(self.slots)
    }

    fn finish_all(self) -> Self::All {
        self.slots.into_iter().map(Slot::into_result).collect()
    }

    fn widen(ok: Self::AllOk) -> Self::All {
        ok.into_iter().map(Ok).collect()
    }

    fn first_error(all: Self::All) -> Result<Self::AllOk, Error> {
        all.into_iter().collect()
    }
}

impl<K, D> Slots for KeyedSlots<K, D>
where
    K: Clone + fmt::Display + Send + Sync,
    D: Decoder,
{
    type Key = K;
    type AllOk = Keyed<K, D::Output>;
    type All = Keyed<K, Result<D::Output, Error>>;

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn key(&self, index: usize) -> K {
        self.keys[index].clone()
    }

    fn decode(&mut self, index: usize, response: &Response) -> Result<(), Error> {
        self.slots[index].decode(D::decode(response))
    }

    fn keep(&mut self, index: usize, response: Response) -> Result<&Response, Response> {
        D::keep(&mut self.slots[index], response)
    }

    fn fail(&mut self, index: usize, error: Error) {
        self.slots[index].fail(error);
    }

    fn finish(self) -> Result<Self::AllOk, Self::All> {
        let keys = self.keys;
        match finish(self.slots) {
            Ok(values) => Ok(keys.into_iter().zip(values).collect()),
            Err(all) => Err(keys.into_iter().zip(all).collect()),
        }
    }

    fn finish_all(self) -> Self::All {
        let results = self.slots.into_iter().map(Slot::into_result);
        self.keys.into_iter().zip(results).collect()
    }

    fn widen(ok: Self::AllOk) -> Self::All {
        ok.into_iter().map(|(k, v)| (k, Ok(v))).collect()
    }

    fn first_error(all: Self::All) -> Result<Self::AllOk, Error> {
        all.into_iter()
            .map(|(k, result)| result.map(|v| (k, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What lets `finish_all` turn the slots' `Vec` into the results'
    /// in place, with no new allocation.
    #[test]
    fn a_slot_is_exactly_as_large_as_the_result_it_becomes() {
        use std::mem::size_of;
        assert_eq!(
            size_of::<Slot<Response>>(),
            size_of::<Result<Response, Error>>()
        );
        assert_eq!(size_of::<Slot<u64>>(), size_of::<Result<u64, Error>>());
    }
}
