//! The HTTP client: base URL, default headers, timeouts, body limit, and the
//! transport (real reqwest or the in-process fake).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use tracing::Instrument;

use crate::error::{too_large, Error, ErrorKind};
use crate::fake::Fake;
use crate::redact;
use crate::request::{Prepared, Request};
use crate::response::{pack, pack_head, Response};

/// Default total timeout of a request: connect, send, and read the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default response body limit: 10 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 10 * 1024 * 1024;
/// The most redirects one request follows; the next one fails with
/// [`ErrorKind::Redirect`]. Stated as "10" in the public docs.
pub(crate) const MAX_REDIRECTS: usize = 10;

/// An HTTP client for batches. Cheap to clone: clones share one connection
/// pool (or one [`Fake`]).
///
/// # The base URL
///
/// Paths are appended to the base URL and can never change its scheme, host
/// or port: `//other.host/x`, `..` above the base path and absolute URLs to
/// another origin are refused before any I/O with
/// [`ErrorKind::BaseUrlEscape`]. Without a base URL, absolute URLs are
/// required. A base URL is a scheme, host, port and path: one with a query
/// or a fragment is refused by [`ClientBuilder::build`] (put parameters on
/// each request with [`Request::query`]). A user name and password in it
/// are sent (as basic auth) but never printed.
///
/// # Redirects
///
/// Redirects are followed, and each one is checked before its target is
/// contacted. One that breaks a rule is not followed: the request fails
/// with [`ErrorKind::Redirect`], whose message names the target (redacted)
/// and the rule. The rules:
///
/// - with a base URL, a redirect stays under it: the same scheme, host and
///   port, and a path under the base path (the rule for request paths);
/// - never from `https` to `http`;
/// - never to a URL visited already in this request (a loop);
/// - at most 10 redirects per request.
///
/// The same policy is installed on a builder given with
/// [`ClientBuilder::with_reqwest`]. The [`Fake`] does not follow redirects:
/// a stubbed 3xx reply is the response.
///
/// # Printing
///
/// `Debug`, error messages and tracing fields print URLs with the whole
/// userinfo (`user:password@`) as `***@` and the values of well-known
/// secret query parameters (`access_token`, `api_key`, `token`, `key`,
/// `signature`, `password`, `client_secret`, `code`, names ending in
/// `_token`, `_secret`, `_key`, …) as `***`; header values of
/// `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` as
/// `<redacted>`. What is sent is unchanged.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    base: Option<Arc<Base>>,
    headers: HeaderMap,
    timeout: Duration,
    body_limit: usize,
}

enum Transport {
    Http(reqwest::Client),
    Fake(Fake),
}

/// A base URL, split once into what joined URLs are checked against.
struct Base {
    url: Url,
    /// The base without a trailing slash; paths are appended after a `/`.
    prefix: String,
    /// The base path with a trailing slash: joined paths must stay under it.
    path: String,
}

const LEAVES_ORIGIN: &str = "it would change the scheme, host or port of the base URL";
const LEAVES_PATH: &str = "it resolves outside the base URL's path";

impl Base {
    /// Parses and checks a base URL: http(s), a host, no query, no fragment.
    fn parse(raw: &str) -> Result<Base, Error> {
        let url = absolute_url(raw)?;
        if url.query().is_some() || url.fragment().is_some() {
            let part = if url.query().is_some() {
                "a query (`?…`)"
            } else {
                "a fragment (`#…`)"
            };
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                format!(
                    "base URL `{}` has {part}, which every request path would be appended to; \
                     give the base URL as scheme, host, port and path only, and put query \
                     parameters on each request with `Request::query`",
                    redact::url(&url)
                ),
            ));
        }
        let prefix = url.as_str().trim_end_matches('/').to_owned();
        let path = format!("{}/", url.path().trim_end_matches('/'));
        Ok(Base { url, prefix, path })
    }

    /// Whether `url` stays under the base: same origin, path under the
    /// base path. The error says which rule it broke.
    fn check(&self, url: &Url) -> Result<(), &'static str> {
        let same_origin = url.scheme() == self.url.scheme()
            && url.host_str() == self.url.host_str()
            && url.port_or_known_default() == self.url.port_or_known_default();
        if !same_origin {
            return Err(LEAVES_ORIGIN);
        }
        let path = url.path();
        if !(path.starts_with(&self.path) || format!("{path}/") == self.path) {
            return Err(LEAVES_PATH);
        }
        Ok(())
    }
}

/// Whether a redirect from the URLs visited so far (`previous`, first the
/// requested one) to `next` may be followed; see [`Client`]'s docs.
fn redirect_allowed(base: Option<&Base>, previous: &[Url], next: &Url) -> Result<(), String> {
    let target = redact::url(next);
    if previous.len() > MAX_REDIRECTS {
        return Err(format!(
            "redirect to `{target}` not followed: more than {MAX_REDIRECTS} redirects"
        ));
    }
    if previous.contains(next) {
        return Err(format!(
            "redirect to `{target}` not followed: a redirect loop (it was visited already)"
        ));
    }
    if previous.last().is_some_and(|from| from.scheme() == "https") && next.scheme() == "http" {
        return Err(format!(
            "redirect to `{target}` not followed: it would downgrade https to http"
        ));
    }
    if let Some(base) = base {
        if let Err(why) = base.check(next) {
            return Err(format!(
                "redirect to `{target}` not followed: {why} `{}`",
                redact::url(&base.url)
            ));
        }
    }
    Ok(())
}

/// The redirect policy of one client: [`redirect_allowed`] for each hop.
fn redirect_policy(base: Option<Arc<Base>>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        match redirect_allowed(base.as_deref(), attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(why),
        }
    })
}

impl Client {
    /// A client with the defaults: no base URL, 30 s total and 10 s connect
    /// timeout, 10 MiB body limit.
    ///
    /// # Panics
    ///
    /// If the TLS backend cannot be initialised (as `reqwest::Client::new`).
    pub fn new() -> Self {
        match Client::builder().build() {
            Ok(client) => client,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            base_url: None,
            headers: HeaderMap::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            fake: None,
            reqwest: None,
            error: None,
        }
    }

    /// The response body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The default total timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends one request (with its retries) outside any batch.
    ///
    /// # Errors
    ///
    /// Every failure of [`ErrorKind`]: a bad or escaping URL, transport
    /// errors, timeouts, a redirect not followed, status ≥ 400, a body over
    /// the limit.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        self.execute(&request, None).await
    }

    /// Resolves the URL and merges headers, refusing escapes before any I/O.
    #[inline(always)]
    pub(crate) fn prepare(&self, request: &Request) -> Result<Prepared, Error> {
        if let Some(err) = request.build_error() {
            return Err(Error::new(ErrorKind::Builder, err)
                .with_request(&request.method, &redact::url_str(&request.target)));
        }
        let mut url = self
            .resolve(&request.target)
            .map_err(|e| e.with_request(&request.method, &redact::url_str(&request.target)))?;
        let added = request.added_query();
        if !added.is_empty() {
            let query = match url.query() {
                Some(existing) if !existing.is_empty() => format!("{existing}&{added}"),
                _ => added.to_owned(),
            };
            url.set_query(Some(&query));
        }
        let headers = match request.own_headers() {
            None if self.inner.headers.is_empty() => None,
            None => Some(self.inner.headers.clone()),
            Some(own) if self.inner.headers.is_empty() => Some(own.clone()),
            Some(own) => {
                // A name the request sets replaces the default of that name;
                // every value (the defaults' and the request's) is kept.
                let mut merged = self.inner.headers.clone();
                for name in own.keys() {
                    merged.remove(name);
                }
                for (name, value) in own {
                    merged.append(name, value.clone());
                }
                Some(merged)
            }
        };
        let own_timeout = request.own_timeout();
        Ok(Prepared {
            method: request.method.clone(),
            url,
            headers,
            body: request.body.clone(),
            timeout: own_timeout.unwrap_or(self.inner.timeout),
            own_timeout: own_timeout.is_some(),
        })
    }

    fn resolve(&self, target: &str) -> Result<Url, Error> {
        let Some(base) = &self.inner.base else {
            return absolute_url(target);
        };
        let has_scheme = target
            .split_once("://")
            .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains(['/', '?', '#']));
        let joined = if has_scheme {
            absolute_url(target)?
        } else {
            if ["//", "\\\\", "/\\", "\\/"]
                .iter()
                .any(|p| target.starts_with(p))
            {
                return Err(escape(
                    target,
                    "it starts with `//`, which names another host; write a path like `/x`",
                ));
            }
            let path = target.trim_start_matches('/');
            Url::parse(&format!("{}/{path}", base.prefix)).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidUrl,
                    format!("`{}` is not a valid path: {e}", redact::url_str(target)),
                )
            })?
        };
        match base.check(&joined) {
            Ok(()) => Ok(joined),
            Err(LEAVES_PATH) => Err(escape(target, &format!("{LEAVES_PATH} (a `..` segment?)"))),
            Err(why) => Err(escape(target, why)),
        }
    }

    /// The prepared request and its `batch.request` span. (Made here: a
    /// local that `execute` itself lent out would be kept in its future
    /// for good, even once moved away.)
    #[inline(always)]
    fn prepare_in_span(
        &self,
        request: &Request,
        key: Option<&(dyn fmt::Display + Sync)>,
    ) -> Result<(Prepared, tracing::Span), Error> {
        let prepared = self.prepare(request)?;
        let span = tracing::debug_span!(
            "batch.request",
            key = key.map(tracing::field::display),
            method = %prepared.method,
            url = %Redacted(&prepared.url),
            status = tracing::field::Empty,
            attempt = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        Ok((prepared, span))
    }

    /// Sends a request with its retries, in a tracing span.
    pub(crate) async fn execute(
        &self,
        request: &Request,
        key: Option<&(dyn fmt::Display + Sync)>,
    ) -> Result<Response, Error> {
        let (prepared, span) = self.prepare_in_span(request, key)?;
        let retry = request.retry_policy();
        // The span, its timing and its fields only when a subscriber
        // listens: otherwise the attempts run as they are.
        // Most requests: one attempt, awaited here. The rest (retries, a
        // span someone listens to) are boxed, so that they do not size
        // every request's future (a lane of a batch holds one, and moving
        // it in copies all of it).
        let result = match (retry, span.is_disabled()) {
            (None, true) => self.receive(self.dispatch(prepared)).await,
            (Some(_), true) => Box::pin(self.attempts(prepared, retry)).await.0,
            (_, false) => {
                let started = Instant::now();
                let (result, attempts) =
                    Box::pin(self.attempts(prepared, retry).instrument(span.clone())).await;
                span.record("attempt", attempts);
                span.record("duration_ms", started.elapsed().as_millis() as u64);
                match &result {
                    Ok(response) => span.record("status", response.status().as_u16()),
                    Err(err) => match err.status() {
                        Some(status) => span.record("status", status.as_u16()),
                        None => span.record("status", tracing::field::display(err.kind_name())),
                    },
                };
                result
            }
        };
        result.map_err(|err| {
            // The URL went to the transport: resolved again, for the message
            // (only a failure pays for it).
            let url = self.prepare(request).map_or_else(
                |_| redact::url_str(&request.target),
                |p| redact::url(&p.url),
            );
            err.with_request(&request.method, &url)
        })
    }

    /// Attempts until one is not retried; returns its result and how many
    /// attempts it took. Only a request that may be retried keeps a copy of
    /// what it sends; otherwise its one attempt takes it.
    async fn attempts(
        &self,
        prepared: Prepared,
        retry: Option<&crate::retry::Retry>,
    ) -> (Result<Response, Error>, u32) {
        let Some(retry) = retry else {
            return (self.receive(self.dispatch(prepared)).await, 1);
        };
        let mut attempt = 1u32;
        loop {
            let result = self.receive(self.dispatch(prepared.clone())).await;
            let wait = match &result {
                Err(err) => retry.next_wait(attempt, &prepared.method, err),
                Ok(_) => None,
            };
            let Some(wait) = wait else {
                return (result, attempt);
            };
            tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %ErrMsg(&result), "retrying");
            drop(result);
            // Boxed: a timer is large, and only a retry needs one.
            Box::pin(tokio::time::sleep(wait)).await;
            attempt += 1;
        }
    }

    /// Hands one attempt to the transport. Synchronous, so that the
    /// attempt's future does not hold the prepared request (264 bytes)
    /// while it waits: a request's future is copied whole each time it is
    /// moved (into its batch's lane, for one).
    #[inline(always)]
    fn dispatch(
        &self,
        prepared: Prepared,
    ) -> Dispatched<'_, impl Future<Output = reqwest::Result<reqwest::Response>> + Send> {
        let client = match &self.inner.transport {
            Transport::Http(client) => client,
            // Boxed: the fake's future is nearly twice the HTTP one, and
            // inline it would size (and make every move copy) every
            // request's future, fake or not.
            Transport::Fake(fake) => {
                return Dispatched::Boxed(Box::pin(fake.respond(prepared, self.inner.body_limit)))
            }
        };
        let timeout = prepared.timeout;
        // Built as it is sent, without reqwest's `RequestBuilder` (a copy of
        // the client, and a look for credentials in the URL), unless the URL
        // has credentials: the builder moves them into `Authorization: Basic`.
        let mut request = if prepared.url.username().is_empty() && prepared.url.password().is_none()
        {
            reqwest::Request::new(prepared.method, prepared.url)
        } else {
            match client.request(prepared.method, prepared.url).build() {
                Ok(request) => request,
                Err(e) => {
                    return Dispatched::Boxed(Box::pin(std::future::ready(Err(
                        Error::from_reqwest(e, timeout),
                    ))))
                }
            }
        };
        if let Some(headers) = prepared.headers {
            if request.headers().is_empty() {
                *request.headers_mut() = headers;
            } else {
                // A name set on the request replaces the URL's credentials.
                request.headers_mut().extend(headers);
            }
        }
        if prepared.own_timeout {
            *request.timeout_mut() = Some(timeout);
        }
        if let Some(body) = prepared.body {
            *request.body_mut() = Some(body.into());
        }
        Dispatched::Http(client.execute(request), timeout)
    }

    /// The rest of one attempt: its response, its body read within the
    /// limit, its status checked. (The HTTP part is written here rather
    /// than in a function of its own: each async layer copies its callee's
    /// future into place.)
    async fn receive<P>(&self, dispatched: Dispatched<'_, P>) -> Result<Response, Error>
    where
        P: Future<Output = reqwest::Result<reqwest::Response>>,
    {
        let (pending, timeout) = match dispatched {
            Dispatched::Http(pending, timeout) => (pending, timeout),
            Dispatched::Boxed(respond) => return checked_status(respond.await?),
        };
        let to_error = |e| Error::from_reqwest(e, timeout);
        let mut response = pending.await.map_err(to_error)?;
        let limit = self.inner.body_limit;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large(limit));
        }
        let status = response.status();
        // Most bodies arrive in one chunk: kept as it is until it is packed.
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut rest_head = 0;
        while let Some(chunk) = response.chunk().await.map_err(to_error)? {
            // Once there are several, `rest` holds them all (the first too).
            let so_far = if rest.is_empty() {
                first.as_ref().map_or(0, Bytes::len)
            } else {
                rest.len() - rest_head as usize
            };
            if so_far + chunk.len() > limit {
                return Err(too_large(limit));
            }
            match &first {
                None => first = Some(chunk),
                Some(head) => {
                    if rest.is_empty() {
                        rest_head =
                            pack_head(&mut rest, response.url().as_str(), response.headers());
                        rest.extend_from_slice(head);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        // A single chunk is usually a slice of the connection's read buffer,
        // like the header values: copied, with them and the final URL, into
        // one buffer of the response's own (see `pack`). Several were copied
        // into `rest`, after the URL and headers.
        let (packed, head_len) = if rest.is_empty() {
            pack(
                response.url().as_str(),
                response.headers(),
                first.as_deref().unwrap_or_default(),
            )
        } else {
            (rest.freeze(), rest_head)
        };
        checked_status(Response::from_packed(status, packed, head_len))
    }
}

/// One attempt, handed to its transport.
enum Dispatched<'a, P> {
    /// On the wire: the response's head is awaited, within the timeout.
    Http(P, Duration),
    /// The fake's reply (see `dispatch`), or a failure before sending.
    Boxed(std::pin::Pin<Box<dyn Future<Output = Result<Response, Error>> + Send + 'a>>),
}

/// A response with a status of 400 or more is the request's failure.
fn checked_status(response: Response) -> Result<Response, Error> {
    if response.status().as_u16() >= 400 {
        return Err(Error::status_error(response));
    }
    Ok(response)
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "base_url",
                &self.inner.base.as_ref().map(|b| redact::url(&b.url)),
            )
            .field("headers", &redact::Headers(&self.inner.headers))
            .field("timeout", &self.inner.timeout)
            .field("body_limit", &self.inner.body_limit)
            .field("fake", &matches!(self.inner.transport, Transport::Fake(_)))
            .finish()
    }
}

fn escape(target: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::BaseUrlEscape,
        format!("refused `{}`: {why}", redact::url_str(target)),
    )
}

fn absolute_url(target: &str) -> Result<Url, Error> {
    match Url::parse(target) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(url) => Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("`{}` is not an http(s) URL", redact::url(&url)),
        )),
        Err(url::ParseError::RelativeUrlWithoutBase) => Err(Error::new(
            ErrorKind::InvalidUrl,
            format!(
                "`{}` is a relative path, but the client has no base URL (set one with `ClientBuilder::base_url`)",
                redact::url_str(target)
            ),
        )),
        Err(e) => Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("`{}` is not a valid URL: {e}", redact::url_str(target)),
        )),
    }
}

struct Redacted<'a>(&'a Url);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact::url(self.0))
    }
}

struct ErrMsg<'a, T>(&'a Result<T, Error>);

impl<T> fmt::Display for ErrMsg<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(_) => Ok(()),
            Err(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// Configures a [`Client`].
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    headers: HeaderMap,
    timeout: Duration,
    connect_timeout: Duration,
    body_limit: usize,
    fake: Option<Fake>,
    reqwest: Option<reqwest::ClientBuilder>,
    error: Option<Error>,
}

impl ClientBuilder {
    /// The base URL that request paths are appended to.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A header sent with every request. Calling it again with the same
    /// name adds a value (both are sent). A request that sets a header of
    /// that name itself replaces all the default's values with its own.
    /// Credentials (`Authorization`, `Cookie`, …) are never printed.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: fmt::Display,
    {
        let parsed = HeaderName::try_from(name)
            .map_err(|e| format!("invalid header name: {e}"))
            .and_then(|name| {
                HeaderValue::try_from(value)
                    .map(|value| (name, value))
                    .map_err(|e| format!("invalid header value: {e}"))
            });
        match parsed {
            Ok((name, mut value)) => {
                if redact::is_sensitive(&name) {
                    value.set_sensitive(true);
                }
                self.headers.append(name, value);
            }
            Err(message) => {
                self.error
                    .get_or_insert(Error::new(ErrorKind::Builder, message));
            }
        }
        self
    }

    /// The default total timeout of each request (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body accepted, in bytes (default 10 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Builds the HTTP transport from your own reqwest builder, for what
    /// this builder does not set: a proxy, root certificates, a client
    /// certificate (mTLS), the user agent, pool sizes, HTTP/2 prior
    /// knowledge, a DNS resolver.
    ///
    /// A builder, not a built `reqwest::Client`, because three settings are
    /// installed on it at [`build`](ClientBuilder::build), replacing
    /// whatever it had for them, so the guarantees hold:
    ///
    /// - the redirect policy (see [`Client`]: redirects never leave the
    ///   base URL, no https→http downgrade, at most 10);
    /// - the total timeout, from [`ClientBuilder::timeout`] (default 30 s);
    /// - the connect timeout, from [`ClientBuilder::connect_timeout`]
    ///   (default 10 s).
    ///
    /// reqwest's builder cannot be read back, so a timeout or redirect
    /// policy set on it is always replaced: set timeouts here. Ignored when
    /// [`fake`](ClientBuilder::fake) is set. The builder must come from the
    /// reqwest this crate uses (0.13): add `reqwest = "0.13"` with the
    /// features you need (`socks`, `native-tls`, …).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = batch_runtime::Client::builder()
    ///     .with_reqwest(reqwest::Client::builder().user_agent("shop/1.0").pool_max_idle_per_host(4))
    ///     .base_url("https://api.example.com/v1")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn with_reqwest(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.reqwest = Some(builder);
        self
    }

    /// Sends every request to `fake` instead of the network.
    pub fn fake(mut self, fake: &Fake) -> Self {
        self.fake = Some(fake.clone());
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// An invalid base URL (not http(s), no host, a query or a fragment:
    /// [`ErrorKind::InvalidUrl`]) or default header
    /// ([`ErrorKind::Builder`]), or a reqwest builder that fails to build
    /// (a TLS backend that fails to initialise, a bad certificate).
    pub fn build(self) -> Result<Client, Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let base = match self.base_url {
            None => None,
            Some(raw) => Some(Arc::new(Base::parse(&raw)?)),
        };
        let transport = match self.fake {
            Some(fake) => Transport::Fake(fake),
            None => Transport::Http(
                self.reqwest
                    .unwrap_or_default()
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .redirect(redirect_policy(base.clone()))
                    .build()
                    .map_err(|e| Error::from_reqwest(e, self.timeout))?,
            ),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                base,
                headers: self.headers,
                timeout: self.timeout,
                body_limit: self.body_limit,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::builder().base_url(base).build().unwrap()
    }

    #[test]
    fn paths_append_to_the_base_url() {
        let c = client("http://127.0.0.1:8080/api");
        let url = c.resolve("/users/1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/api/users/1");
        assert_eq!(
            c.resolve("users").unwrap().as_str(),
            "http://127.0.0.1:8080/api/users"
        );
        assert_eq!(
            c.resolve("http://127.0.0.1:8080/api/x").unwrap().as_str(),
            "http://127.0.0.1:8080/api/x"
        );
    }

    #[test]
    fn escapes_from_the_base_url_are_refused() {
        let c = client("http://127.0.0.1:8080/api/");
        for target in [
            "//evil.example/x",
            "/\\evil.example/x",
            "../admin",
            "/a/../../admin",
            "/%2e%2e/admin",
            "http://evil.example/api/x",
            "https://127.0.0.1:8080/api/x",
            "http://127.0.0.1:9090/api/x",
        ] {
            let err = c.resolve(target).expect_err(target);
            assert_eq!(err.kind(), &ErrorKind::BaseUrlEscape, "{target}: {err}");
        }
    }

    #[test]
    fn redirects_never_downgrade_https_to_http() {
        let from = Url::parse("https://shop.test/a").unwrap();
        let down = Url::parse("http://shop.test/b").unwrap();
        let why = redirect_allowed(None, std::slice::from_ref(&from), &down).unwrap_err();
        assert!(why.contains("downgrade https to http"), "{why}");
        let up = Url::parse("https://shop.test/b").unwrap();
        assert!(redirect_allowed(None, std::slice::from_ref(&down), &up).is_ok());
        let base = Base::parse("https://shop.test/").unwrap();
        let why = redirect_allowed(Some(&base), &[from], &down).unwrap_err();
        assert!(why.contains("downgrade"), "{why}");
    }

    #[test]
    fn redirect_messages_hide_secrets() {
        let from = Url::parse("http://shop.test/a").unwrap();
        let next = Url::parse("http://u:hunter2@other.test/x?token=t0k").unwrap();
        let base = Base::parse("http://shop.test/").unwrap();
        let why = redirect_allowed(Some(&base), &[from], &next).unwrap_err();
        assert!(!why.contains("hunter2") && !why.contains("t0k"), "{why}");
        assert!(why.contains("http://***@other.test/x?token=***"), "{why}");
    }

    #[test]
    fn relative_path_without_base_says_how_to_fix_it() {
        let err = Client::new().resolve("/x").unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidUrl);
        assert!(err.to_string().contains("base_url"), "{err}");
    }
}
