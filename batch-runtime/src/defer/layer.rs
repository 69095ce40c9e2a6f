//! [`DeferLayer`]: installs a [`Deferred`] handle on every request and
//! hands its work to the runtime once the response body is done.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::deferred::{Deferred, ReleaseOnDrop};
use super::runtime::DeferRuntime;

/// A tower layer that gives every request a [`Deferred`] handle (a request
/// extension, and an axum extractor) and runs the work registered on it
/// once the response body has been fully written, or dropped (the client
/// went away, `HEAD`, `204`).
///
/// - Status ≥ 400: only work marked [`always`](super::NoResults::always) runs.
/// - A body that fails half-way (its stream returns an error): the client
///   got a truncated response, so only `always` work runs.
/// - A body dropped unfinished because the client disconnected: the work
///   runs as the status says (the handler did its part; the client left).
/// - The handler future is dropped before producing a response: only
///   `always` work runs.
///
/// ```
/// use axum::{routing::post, Json, Router};
/// use batch_runtime::defer::{DeferLayer, DeferRuntime, Deferred};
///
/// async fn checkout(deferred: Deferred) -> Json<&'static str> {
///     deferred.spawn(async { /* send the receipt email */ }).name("receipt");
///     Json("confirmed")
/// }
///
/// let runtime = DeferRuntime::new();
/// let app: Router = Router::new()
///     .route("/checkout", post(checkout))
///     .layer(DeferLayer::new(&runtime));
/// ```
#[derive(Clone)]
pub struct DeferLayer {
    runtime: DeferRuntime,
}

impl DeferLayer {
    /// A layer whose deferred work runs on `runtime`.
    pub fn new(runtime: &DeferRuntime) -> Self {
        DeferLayer {
            runtime: runtime.clone(),
        }
    }
}

impl fmt::Debug for DeferLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DeferLayer {
    type Service = DeferService<S>;

    fn layer(&self, inner: S) -> DeferService<S> {
        DeferService {
            inner,
            runtime: self.runtime.clone(),
        }
    }
}

/// The service [`DeferLayer`] wraps around yours.
#[derive(Clone)]
pub struct DeferService<S> {
    inner: S,
    runtime: DeferRuntime,
}

impl<S> fmt::Debug for DeferService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DeferService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<DeferBody<ResBody>>;
    type Error = S::Error;
    type Future = DeferFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let deferred = Deferred::new(&self.runtime, None);
        request.extensions_mut().insert(deferred.clone());
        DeferFuture {
            inner: self.inner.call(request),
            guard: ReleaseOnDrop(Some(deferred)),
        }
    }
}

pin_project! {
    /// The response future of [`DeferService`]. Dropped before the
    /// response is ready, it runs only the `always` work.
    pub struct DeferFuture<F> {
        #[pin]
        inner: F,
        guard: ReleaseOnDrop,
    }
}

impl<F, B, E> Future for DeferFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<DeferBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let deferred = this.guard.0.take();
        Poll::Ready(match result {
            Ok(response) => {
                let succeeded = response.status().as_u16() < 400;
                let (parts, body) = response.into_parts();
                let body = DeferBody {
                    inner: body,
                    release: deferred.map(|deferred| BodyRelease {
                        deferred,
                        succeeded,
                    }),
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => {
                if let Some(deferred) = deferred {
                    deferred.release(false);
                }
                Err(err)
            }
        })
    }
}

impl<F> fmt::Debug for DeferFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferFuture").finish_non_exhaustive()
    }
}

/// Hands the work over when the body ends or is dropped.
struct BodyRelease {
    deferred: Deferred,
    succeeded: bool,
}

impl Drop for BodyRelease {
    fn drop(&mut self) {
        self.deferred.release(self.succeeded);
    }
}

pin_project! {
    /// A response body that hands the request's deferred work to the
    /// runtime when its last frame has been taken, or when it is dropped
    /// unfinished (the client went away).
    pub struct DeferBody<B> {
        #[pin]
        inner: B,
        release: Option<BodyRelease>,
    }
}

impl<B: Body> Body for DeferBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            // The end: the response is out as the status says.
            None => drop(this.release.take()),
            // A body that broke off: the client got a truncated response,
            // so it counts as failed and only `always` work runs.
            Some(Err(_)) => {
                if let Some(mut release) = this.release.take() {
                    release.succeeded = false;
                }
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for DeferBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferBody")
            .field("released", &self.release.is_none())
            .finish_non_exhaustive()
    }
}

/// The [`Deferred`] extractor was used on a route without [`DeferLayer`].
/// Answers `500` with a message that says how to fix it.
#[derive(Debug, Clone, Copy)]
pub struct MissingDeferLayer;

impl fmt::Display for MissingDeferLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the `Deferred` extractor needs `DeferLayer`: add `.layer(DeferLayer::new(&runtime))` to the router",
        )
    }
}

impl std::error::Error for MissingDeferLayer {}

impl IntoResponse for MissingDeferLayer {
    fn into_response(self) -> axum::response::Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Deferred {
    type Rejection = MissingDeferLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Deferred>()
            .cloned()
            .ok_or(MissingDeferLayer)
    }
}
