//! The five lifecycle arms. Each is absent ([`NoArm`]), a plain closure
//! ([`SyncArm`]) or an async closure ([`AsyncArm`]); an [`ArmSet`] holds one
//! of each kind and is what the engine calls.

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

/// An async closure arm (`async |b, ..| { .. }`).
#[derive(Debug, Clone, Copy)]
pub struct AsyncArm<F>(pub F);

/// `before |b|`: once, before any request starts.
pub trait BeforeArm {
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()>;
}

/// `progress |b, key, response|`: once per success, in completion order.
pub trait ProgressArm<K> {
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState, key: K, response: &Response)
        -> impl Future<Output = ()>;
}

/// `catch |b, key, error|`: once per failure, in completion order.
pub trait CatchArm<K> {
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState, key: K, error: &Error) -> impl Future<Output = ()>;
}

/// `then |b, ok|` and `finally |b, all|`: once at the end, with every result.
pub trait ResultsArm<R> {
    /// Runs the arm.
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()>;
}

impl BeforeArm for NoArm {
    fn call(&mut self, _: &BatchState) -> impl Future<Output = ()> {
        ready(())
    }
}

impl<F: FnMut(&BatchState)> BeforeArm for SyncArm<F> {
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()> {
        (self.0)(batch);
        ready(())
    }
}

impl<F: AsyncFnMut(&BatchState)> BeforeArm for AsyncArm<F> {
    fn call(&mut self, batch: &BatchState) -> impl Future<Output = ()> {
        (self.0)(batch)
    }
}

impl<K> ProgressArm<K> for NoArm {
    fn call(&mut self, _: &BatchState, _: K, _: &Response) -> impl Future<Output = ()> {
        ready(())
    }
}

impl<K, F: FnMut(&BatchState, K, &Response)> ProgressArm<K> for SyncArm<F> {
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        response: &Response,
    ) -> impl Future<Output = ()> {
        (self.0)(batch, key, response);
        ready(())
    }
}

impl<K, F: AsyncFnMut(&BatchState, K, &Response)> ProgressArm<K> for AsyncArm<F> {
    fn call(
        &mut self,
        batch: &BatchState,
        key: K,
        response: &Response,
    ) -> impl Future<Output = ()> {
        (self.0)(batch, key, response)
    }
}

impl<K> CatchArm<K> for NoArm {
    fn call(&mut self, _: &BatchState, _: K, _: &Error) -> impl Future<Output = ()> {
        ready(())
    }
}

impl<K, F: FnMut(&BatchState, K, &Error)> CatchArm<K> for SyncArm<F> {
    fn call(&mut self, batch: &BatchState, key: K, error: &Error) -> impl Future<Output = ()> {
        (self.0)(batch, key, error);
        ready(())
    }
}

impl<K, F: AsyncFnMut(&BatchState, K, &Error)> CatchArm<K> for AsyncArm<F> {
    fn call(&mut self, batch: &BatchState, key: K, error: &Error) -> impl Future<Output = ()> {
        (self.0)(batch, key, error)
    }
}

impl<R> ResultsArm<R> for NoArm {
    fn call(&mut self, _: &BatchState, _: &R) -> impl Future<Output = ()> {
        ready(())
    }
}

impl<R, F: FnMut(&BatchState, &R)> ResultsArm<R> for SyncArm<F> {
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()> {
        (self.0)(batch, results);
        ready(())
    }
}

impl<R, F: AsyncFnMut(&BatchState, &R)> ResultsArm<R> for AsyncArm<F> {
    fn call(&mut self, batch: &BatchState, results: &R) -> impl Future<Output = ()> {
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
    fn before(&mut self, batch: &BatchState) -> impl Future<Output = ()>;
    /// `progress`.
    fn progress(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        response: &Response,
    ) -> impl Future<Output = ()>;
    /// `catch`.
    fn catch(&mut self, batch: &BatchState, key: S::Key, error: &Error)
        -> impl Future<Output = ()>;
    /// `then`.
    fn then(&mut self, batch: &BatchState, ok: &S::AllOk) -> impl Future<Output = ()>;
    /// `finally`.
    fn finally(&mut self, batch: &BatchState, all: &S::All) -> impl Future<Output = ()>;
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
    fn before(&mut self, batch: &BatchState) -> impl Future<Output = ()> {
        self.before.call(batch)
    }
    fn progress(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        response: &Response,
    ) -> impl Future<Output = ()> {
        self.progress.call(batch, key, response)
    }
    fn catch(
        &mut self,
        batch: &BatchState,
        key: S::Key,
        error: &Error,
    ) -> impl Future<Output = ()> {
        self.catch.call(batch, key, error)
    }
    fn then(&mut self, batch: &BatchState, ok: &S::AllOk) -> impl Future<Output = ()> {
        self.then.call(batch, ok)
    }
    fn finally(&mut self, batch: &BatchState, all: &S::All) -> impl Future<Output = ()> {
        self.finally.call(batch, all)
    }
}
