//! A request description that a batch owns until it runs.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::Serialize;

use crate::redact;
use crate::retry::Retry;

/// What to send: method, URL or path, headers, query, body, timeout and
/// retry. Building never fails; a value that cannot be serialized or a bad
/// header is kept and reported as an [`ErrorKind::Builder`](crate::ErrorKind::Builder) error when the
/// request is sent, before any I/O.
///
/// ```
/// use std::time::Duration;
/// use batch_runtime::Request;
///
/// let request = Request::post("/api/payments/charge")
///     .json(&serde_json::json!({ "amount": 4200 }))
///     .header("idempotency-key", "order-17")
///     .bearer_auth("s3cret")
///     .timeout(Duration::from_secs(2));
/// assert!(!format!("{request:?}").contains("s3cret"));
/// ```
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) target: String,
    pub(crate) body: Option<Bytes>,
    /// Boxed, made by the first setter that needs it: a plain request stays
    /// small (a batch moves its requests into a `Vec`, and a deferred batch
    /// keeps them until it runs) and has nothing to drop there.
    rare: Option<Box<Rare>>,
}

/// What fewer requests set: headers (a `HeaderMap` alone is 96 bytes),
/// query, timeout, retry.
#[derive(Default)]
struct Rare {
    headers: HeaderMap,
    query: String,
    timeout: Option<Duration>,
    retry: Option<Retry>,
    /// The first builder failure, reported when the request is sent.
    error: Option<String>,
}

/// A `GET` request to a path (joined onto the client's base URL) or URL.
pub fn get(url: impl Into<String>) -> Request {
    Request::new(Method::GET, url)
}

/// A `POST` request.
pub fn post(url: impl Into<String>) -> Request {
    Request::new(Method::POST, url)
}

/// A `PUT` request.
pub fn put(url: impl Into<String>) -> Request {
    Request::new(Method::PUT, url)
}

/// A `PATCH` request.
pub fn patch(url: impl Into<String>) -> Request {
    Request::new(Method::PATCH, url)
}

/// A `DELETE` request.
pub fn delete(url: impl Into<String>) -> Request {
    Request::new(Method::DELETE, url)
}

/// A `HEAD` request.
pub fn head(url: impl Into<String>) -> Request {
    Request::new(Method::HEAD, url)
}

impl Request {
    /// A `GET` request to a path (joined onto the client's base URL) or URL.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::GET, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::POST, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Request::new(Method::PUT, url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Request::new(Method::PATCH, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Request::new(Method::DELETE, url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Self {
        Request::new(Method::HEAD, url)
    }

    /// A request with any method.
    #[inline]
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            target: url.into(),
            body: None,
            rare: None,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path or URL as given (before joining onto a base URL).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The headers set on this request (the client's defaults are added
    /// when it is sent).
    pub fn headers(&self) -> &HeaderMap {
        static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        self.rare.as_ref().map_or(&NONE, |rare| &rare.headers)
    }

    /// The headers, when any was set.
    pub(crate) fn own_headers(&self) -> Option<&HeaderMap> {
        self.rare
            .as_ref()
            .map(|rare| &rare.headers)
            .filter(|headers| !headers.is_empty())
    }

    /// The body bytes, if any.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The query pairs added with [`Request::query`], encoded.
    pub(crate) fn added_query(&self) -> &str {
        self.rare.as_ref().map_or("", |rare| &rare.query)
    }

    /// The timeout set on this request, if any.
    pub(crate) fn own_timeout(&self) -> Option<Duration> {
        self.rare.as_ref().and_then(|rare| rare.timeout)
    }

    pub(crate) fn retry_policy(&self) -> Option<&Retry> {
        self.rare.as_ref().and_then(|rare| rare.retry.as_ref())
    }

    /// The first builder failure, if any.
    pub(crate) fn build_error(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|rare| rare.error.as_deref())
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn fail(&mut self, message: String) {
        self.rare().error.get_or_insert(message);
    }

    /// Sets a header, replacing any earlier value of the same name.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: fmt::Display,
    {
        match HeaderName::try_from(name) {
            Ok(name) => match HeaderValue::try_from(value) {
                Ok(mut value) => {
                    if redact::is_sensitive(&name) {
                        value.set_sensitive(true);
                    }
                    self.rare().headers.insert(name, value);
                }
                Err(e) => self.fail(format!("invalid value for header `{name}`: {e}")),
            },
            Err(e) => self.fail(format!("invalid header name: {e}")),
        }
        self
    }

    /// Merges a header map, keeping every value it holds.
    ///
    /// - A name in `headers` replaces the values this request had for that
    ///   name; all of `headers`' values for it are kept, in order (two
    ///   `x-tag` values arrive as two `x-tag` headers).
    /// - `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`
    ///   values are marked sensitive, so `Debug` and tracing never print
    ///   them.
    /// - When the request is sent, a name set here also replaces the
    ///   client's default header of that name (see
    ///   [`ClientBuilder::header`](crate::ClientBuilder::header)).
    pub fn headers_from(mut self, headers: HeaderMap) -> Self {
        let mut current: Option<HeaderName> = None;
        for (name, mut value) in headers {
            // `HeaderMap`'s owning iterator names only the first value of
            // each name; the ones after it belong to the same name.
            if let Some(name) = name {
                self.rare().headers.remove(&name);
                current = Some(name);
            }
            let Some(name) = &current else { continue };
            if redact::is_sensitive(name) {
                value.set_sensitive(true);
            }
            self.rare().headers.append(name.clone(), value);
        }
        self
    }

    /// `Authorization: Bearer <token>`, never printed by `Debug` or tracing.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.header(AUTHORIZATION, format!("Bearer {token}"))
    }

    /// `Authorization: Basic …`, never printed by `Debug` or tracing.
    pub fn basic_auth(self, user: impl fmt::Display, password: Option<impl fmt::Display>) -> Self {
        let raw = match password {
            Some(password) => format!("{user}:{password}"),
            None => format!("{user}:"),
        };
        self.header(AUTHORIZATION, format!("Basic {}", BASE64.encode(raw)))
    }

    /// Appends query parameters, serialized from any `Serialize` value that
    /// URL-encodes as pairs (a struct, a map, a slice of tuples).
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        match serde_urlencoded::to_string(query) {
            Ok(encoded) if encoded.is_empty() => {}
            Ok(encoded) => {
                let query = &mut self.rare().query;
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str(&encoded);
            }
            Err(e) => self.fail(format!("query could not be serialized: {e}")),
        }
        self
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.with_body(bytes.into(), "application/json"),
            Err(e) => {
                self.fail(format!("JSON body could not be serialized: {e}"));
                self
            }
        }
    }

    /// A URL-encoded form body.
    pub fn form<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_urlencoded::to_string(body) {
            Ok(encoded) => self.with_body(encoded.into(), "application/x-www-form-urlencoded"),
            Err(e) => {
                self.fail(format!("form body could not be serialized: {e}"));
                self
            }
        }
    }

    /// A raw body; set `Content-Type` with [`Request::header`] if needed.
    pub fn body_bytes(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    fn with_body(mut self, body: Bytes, content_type: &'static str) -> Self {
        self.body = Some(body);
        self.rare()
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self
    }

    /// A total timeout for this request (connect, send and read the body),
    /// replacing the client's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.rare().timeout = Some(timeout);
        self
    }

    /// Retries this request on transient failures; see [`Retry`].
    pub fn retry(mut self, retry: Retry) -> Self {
        self.rare().retry = Some(retry);
        self
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Request");
        s.field("method", &self.method)
            .field("target", &redact::url_str(&self.target))
            .field("headers", &redact::Headers(self.headers()));
        if !self.added_query().is_empty() {
            let shown = redact::url_str(&format!("?{}", self.added_query()));
            s.field("query", &shown.trim_start_matches('?'));
        }
        if let Some(body) = &self.body {
            s.field("body_len", &body.len());
        }
        if let Some(timeout) = &self.own_timeout() {
            s.field("timeout", timeout);
        }
        if let Some(retry) = self.retry_policy() {
            s.field("retry", retry);
        }
        if let Some(error) = self.build_error() {
            s.field("error", &error);
        }
        s.finish()
    }
}

/// A request resolved against the client: absolute URL, merged headers.
/// What a transport (reqwest or the fake) sends; cloned only for a request
/// that may be retried.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// `None` when neither the client nor the request sets any.
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) body: Option<Bytes>,
    /// The effective timeout: the request's own, or the client's default.
    pub(crate) timeout: Duration,
    /// Whether the request set its own timeout (reqwest already applies
    /// the client's default, so it is passed on only then).
    pub(crate) own_timeout: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_the_rfc_7617_example() {
        let request = get("/x").basic_auth("Aladdin", Some("open sesame"));
        assert_eq!(
            request.headers()[AUTHORIZATION],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn headers_from_replaces_a_name_and_keeps_all_its_values() {
        let mut map = HeaderMap::new();
        map.append("x-tag", HeaderValue::from_static("one"));
        map.append("x-tag", HeaderValue::from_static("two"));
        map.append("x-other", HeaderValue::from_static("o"));
        let request = get("/x")
            .header("x-tag", "earlier")
            .header("x-kept", "k")
            .headers_from(map);
        let tags: Vec<_> = request.headers().get_all("x-tag").iter().collect();
        assert_eq!(tags, ["one", "two"]);
        assert_eq!(request.headers()["x-other"], "o");
        assert_eq!(request.headers()["x-kept"], "k");
    }

    #[test]
    fn invalid_header_is_kept_as_a_builder_error() {
        let request = get("/x").header("bad header", "v");
        let err = request.build_error().expect("error kept");
        assert!(err.contains("invalid header name"), "{err}");
    }

    #[test]
    fn query_pairs_accumulate() {
        let request = get("/x").query(&[("a", "1")]).query(&[("b", "two words")]);
        assert_eq!(request.added_query(), "a=1&b=two+words");
    }
}
