//! The five lifecycle arms. Each is absent ([`NoArm`]), a plain closure
//! ([`SyncArm`]) or a closure returning a future ([`AsyncArm`]); an
//! [`ArmSet`] holds one of each kind and is what the engine calls.
//!
//! Every arm future is `Send` by declaration, so a batch future is `Send`
//! whenever its slots and closures are: that is what lets a batch be
//! deferred onto another task without naming its closure types.

use std::fmt;
use std::future::{ready, Future};

use crate::error::Error;
use crate::response::Response;
use crate::slots::Slots;
use crate::state::BatchState;

/// An arm that was not given.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoArm;

/// A plain closure arm.
#[derive(Debug, Clone, Copy)]
pub struct SyncArm<F>(pub F);

/// An async arm: a closure that returns a future, `|b, key, res| async move { .. }`.
///
/// The closure's arguments are borrowed for the synchronous part of the
/// call; the future it returns must not borrow them (copy out what it
/// needs first) and must be `Send`, so the batch can run on any worker and
/// be deferred.
#[derive(Debug, Clone, Copy)]
pub struct AsyncArm<F>(pub F);

/// `before |b|`: once, before any request starts.
pub trait BeforeArm {
    /// Whether the arm was given: the engine calls only an arm that is there.
    const PRESENT: bool = true;
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send;
}

/// `progress |b, key, response|`: once per success, in completion order.
pub trait ProgressArm<K> {
    /// Whether the arm was given: the engine calls only an arm that is there.
    const PRESENT: bool = true;
    /// Runs the arm.
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        response: &Response,
    ) -> impl Future<Output = ()> + Send;
}

/// `catch |b, key, error|`: once per failure, in completion order.
pub trait CatchArm<K> {
    /// Whether the arm was given: the engine calls only an arm that is there.
    const PRESENT: bool = true;
    /// Runs the arm.
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        error: &Error,
    ) -> impl Future<Output = ()> + Send;
}

/// `then |b, ok|` and `finally |b, all|`: once at the end, with every result.
pub trait ResultsArm<R> {
    /// Whether the arm was given: the engine builds a `then` arm's
    /// argument only for an arm that is there.
    const PRESENT: bool = true;
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()> + Send;
}

impl BeforeArm for NoArm {
    const PRESENT: bool = false;
    fn call(&mut self, _: &BatchState) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

impl<F: FnMut(&BatchState)> BeforeArm for SyncArm<F> {
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send {
        (self.0)(batch);
        ready(())
    }
}

impl<F, Fut> BeforeArm for AsyncArm<F>
where
    F: FnMut(&BatchState) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send {
        (self.0)(batch)
    }
}

impl<K> ProgressArm<K> for NoArm {
    const PRESENT: bool = false;
    fn call(&mut self, _: &BatchState, _: K, _: &Response) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

impl<K, F: FnMut(&BatchState, K, &Response)> ProgressArm<K> for SyncArm<F> {
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        response: &Response,
    ) -> impl Future<Output = ()> + Send {
        (self.0)(batch, key, response);
        ready(())
    }
}

impl<K, F, Fut> ProgressArm<K> for AsyncArm<F>
where
    F: FnMut(&BatchState, K, &Response) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        response: &Response,
    ) -> impl Future<Output = ()> + Send {
        (self.0)(batch, key, response)
    }
}

impl<K> CatchArm<K> for NoArm {
    const PRESENT: bool = false;
    fn call(&mut self, _: &BatchState, _: K, _: &Error) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

impl<K, F: FnMut(&BatchState, K, &Error)> CatchArm<K> for SyncArm<F> {
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        error: &Error,
    ) -> impl Future<Output = ()> + Send {
        (self.0)(batch, key, error);
        ready(())
    }
}

impl<K, F, Fut> CatchArm<K> for AsyncArm<F>
where
    F: FnMut(&BatchState, K, &Error) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        error: &Error,
    ) -> impl Future<Output = ()> + Send {
        (self.0)(batch, key, error)
    }
}

impl<R> ResultsArm<R> for NoArm {
    const PRESENT: bool = false;
    fn call(&mut self, _: &BatchState, _: &R) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

impl<R, F: FnMut(&BatchState, &R)> ResultsArm<R> for SyncArm<F> {
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()> + Send {
        (self.0)(batch, results);
        ready(())
    }
}

impl<R, F, Fut> ResultsArm<R> for AsyncArm<F>
where
    F: FnMut(&BatchState, &R) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()> + Send {
        (self.0)(batch, results)
    }
}

/// One arm of each kind: `before`, `progress`, `then`, `catch`, `finally`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArmSet<B = NoArm, P = NoArm, T = NoArm, C = NoArm, F = NoArm> {
    pub(crate) before: B,
    pub(crate) progress: P,
    pub(crate) then: T,
    pub(crate) catch: C,
    pub(crate) finally: F,
}

/// What the engine needs from a set of arms for slots `S`.
pub trait Arms<S: Slots> {
    /// `before`.
    fn before(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send;
    /// `progress`.
    fn progress(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        response: &Response,
    ) -> impl Future<Output = ()> + Send;
    /// `catch`.
    fn catch(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        error: &Error,
    ) -> impl Future<Output = ()> + Send;
    /// Whether a `then` arm is set: without one, the engine does not
    /// build the success values it would be given.
    const THEN: bool = true;
    /// Whether a `before`, `progress`, `catch` or `finally` arm is set:
    /// the engine calls only the arms that are there.
    const BEFORE: bool = true;
    /// See [`Arms::BEFORE`].
    const PROGRESS: bool = true;
    /// See [`Arms::BEFORE`].
    const CATCH: bool = true;
    /// See [`Arms::BEFORE`].
    const FINALLY: bool = true;
    /// `then`.
    fn then(&mut self, batch: &BatchState, ok: &S::AllOk) -> impl Future<Output = ()> + Send;
    /// `finally`.
    fn finally(&mut self, batch: &BatchState, all: &S::All) -> impl Future<Output = ()> + Send;
}

impl<S, B, P, T, C, F> Arms<S> for ArmSet<B, P, T, C, F>
where
    S: Slots,
    B: BeforeArm,
    P: ProgressArm<S::Key>,
    T: ResultsArm<S::AllOk>,
    C: CatchArm<S::Key>,
    F: ResultsArm<S::All>,
{
    const THEN: bool = T::PRESENT;
    const BEFORE: bool = B::PRESENT;
    const PROGRESS: bool = P::PRESENT;
    const CATCH: bool = C::PRESENT;
    const FINALLY: bool = F::PRESENT;

    fn before(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send {
        self.before.call(batch)
    }
    fn progress(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        response: &Response,
    ) -> impl Future<Output = ()> + Send {
        self.progress.call(batch, key, response)
    }
    fn catch(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        error: &Error,
    ) -> impl Future<Output = ()> + Send {
        self.catch.call(batch, key, error)
    }
    fn then(&mut self, batch: &BatchState, ok: &S::AllOk) -> impl Future<Output = ()> + Send {
        self.then.call(batch, ok)
    }
    fn finally(&mut self, batch: &BatchState, all: &S::All) -> impl Future<Output = ()> + Send {
        self.finally.call(batch, all)
    }
}

/// One lifecycle event, as the single arm closure of [`SharedArms`] sees it.
#[derive(Debug)]
pub enum ArmEvent<'a, K, Ok, All> {
    /// `before |b|`.
    Before(&'a BatchState),
    /// `progress |b, key, response|`.
    Progress(&'a BatchState, K, &'a Response),
    /// `then |b, ok|`.
    Then(&'a BatchState, &'a Ok),
    /// `catch |b, key, error|`.
    Catch(&'a BatchState, K, &'a Error),
    /// `finally |b, all|`.
    Finally(&'a BatchState, &'a All),
}

/// The arms of a `batch!` batch: every arm in one closure, called with
/// each lifecycle event, so the arms share what they capture (two arms may
/// both push to one `Vec`). The closure returns nothing more for a plain
/// arm (its work is done when the closure returns) or the future of an
/// async arm. Like every arm, it runs one event at a time on the batch's
/// task.
pub struct SharedArms<F>(F);

impl<F> SharedArms<F> {
    /// Wraps the closure; `__private::with_arms` makes a batch of it.
    pub(crate) fn new<K, Ok, All, Fut>(arms: F) -> Self
    where
        F: FnMut(ArmEvent<'_, K, Ok, All>) -> Option<Fut>,
    {
        SharedArms(arms)
    }
}

impl<F> fmt::Debug for SharedArms<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedArms")
    }
}

/// Calls the closure now (a plain arm's work happens here) and awaits the
/// async arm's future, if any.
async fn dispatch<Fut: Future<Output = ()>>(pending: Option<Fut>) {
    if let Some(pending) = pending {
        pending.await;
    }
}

impl<S, F, Fut> Arms<S> for SharedArms<F>
where
    S: Slots,
    F: for<'a> FnMut(ArmEvent<'a, S::Key, S::AllOk, S::All>) -> Option<Fut>,
    Fut: Future<Output = ()> + Send,
{
    fn before(&mut self, batch: &BatchState) -> impl Future<Output = ()> + Send {
        dispatch((self.0)(ArmEvent::Before(batch)))
    }
    fn progress(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        response: &Response,
    ) -> impl Future<Output = ()> + Send {
        dispatch((self.0)(ArmEvent::Progress(batch, key, response)))
    }
    fn catch(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        error: &Error,
    ) -> impl Future<Output = ()> + Send {
        dispatch((self.0)(ArmEvent::Catch(batch, key, error)))
    }
    fn then(&mut self, batch: &BatchState, ok: &S::AllOk) -> impl Future<Output = ()> + Send {
        dispatch((self.0)(ArmEvent::Then(batch, ok)))
    }
    fn finally(&mut self, batch: &BatchState, all: &S::All) -> impl Future<Output = ()> + Send {
        dispatch((self.0)(ArmEvent::Finally(batch, all)))
    }
}
