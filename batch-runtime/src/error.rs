//! The one error type of the crate.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::response::Response;

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong with a request; see [`Error::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL could not be parsed or joined onto the base URL, or a base
    /// URL has a query or fragment (refused by `ClientBuilder::build`).
    InvalidUrl,
    /// The path would leave the client's base URL (another scheme, host or
    /// port, or a `..` above the base path). Refused before any I/O.
    BaseUrlEscape,
    /// The request could not be built: a header, JSON, query or form value
    /// failed to serialize.
    Builder,
    /// The connection could not be established.
    Connect,
    /// The request or its body took longer than its timeout.
    Timeout,
    /// The batch deadline passed before the request finished.
    Deadline,
    /// Some other transport failure while sending or reading.
    Transport,
    /// The server answered with a status of 400 or above; the response and
    /// its body are kept on the error.
    Status(StatusCode),
    /// The response body was larger than the limit (in bytes).
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body was not valid JSON for the requested type.
    Decode,
    /// The request was cancelled before it finished (by `fail_fast`, or
    /// because the batch was dropped).
    Cancelled,
    /// A request sent to a [`Fake`](crate::fake::Fake) matched no rule.
    UnmatchedFake,
    /// A redirect was refused and not followed: it would leave the base
    /// URL (another origin, or a path outside the base path), downgrade
    /// https to http, loop, or exceed the redirect limit.
    Redirect,
}

/// An error from building, sending, reading or decoding a request.
///
/// It names the key (when the request ran in a batch), the method and the
/// URL, redacted: the userinfo (`user:password@`) and the values of secret
/// query parameters (`access_token`, `api_key`, `signature`, …) print as
/// `***`. For status errors the response is kept:
/// see [`Error::response`].
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
    method: Option<Method>,
    url: Option<String>,
    response: Option<Response>,
    source: Option<Source>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                key: None,
                method: None,
                url: None,
                response: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_request(mut self, method: &Method, redacted_url: &str) -> Self {
        self.inner.method = Some(method.clone());
        self.inner.url = Some(redacted_url.to_owned());
        self
    }

    /// Attaches the batch key this request ran under (kept if already set).
    pub(crate) fn with_key(mut self, key: &dyn fmt::Display) -> Self {
        if self.inner.key.is_none() {
            self.inner.key = Some(key.to_string());
        }
        self
    }

    pub(crate) fn status_error(response: Response) -> Self {
        let status = response.status();
        let reason = status.canonical_reason().unwrap_or("");
        let mut err = Error::new(
            ErrorKind::Status(status),
            format!("server answered {} {reason}", status.as_u16()),
        );
        err.inner.response = Some(response);
        err
    }

    pub(crate) fn timeout(after: Option<Duration>) -> Self {
        match after {
            Some(d) => Error::new(ErrorKind::Timeout, format!("timed out after {d:?}")),
            None => Error::new(ErrorKind::Timeout, "timed out"),
        }
    }

    pub(crate) fn cancelled(why: &str) -> Self {
        Error::new(ErrorKind::Cancelled, format!("cancelled: {why}"))
    }

    pub(crate) fn decode(err: serde_json::Error, type_name: &str) -> Self {
        Error::new(
            ErrorKind::Decode,
            format!("response body is not valid JSON for `{type_name}`: {err}"),
        )
        .with_source(err)
    }

    /// Maps a transport error from reqwest, keeping it as the source.
    pub(crate) fn from_reqwest(err: reqwest::Error, timeout: Duration) -> Self {
        let kind = if err.is_timeout() {
            return Error::timeout(Some(timeout)).with_source(err);
        } else if err.is_redirect() {
            ErrorKind::Redirect
        } else if err.is_connect() {
            ErrorKind::Connect
        } else if err.is_builder() {
            ErrorKind::Builder
        } else {
            ErrorKind::Transport
        };
        // The chain of sources says more than reqwest's top-level message.
        let mut message = match kind {
            ErrorKind::Connect => String::from("could not connect"),
            // The policy's own message says which redirect and why.
            ErrorKind::Redirect => String::new(),
            _ => String::from("transport error"),
        };
        let mut source: Option<&dyn StdError> = StdError::source(&err);
        while let Some(cause) = source {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::new(kind, message).with_source(without_url(err))
    }

    /// A short name of the kind, for logs and tracing fields.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.inner.kind {
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::BaseUrlEscape => "base_url_escape",
            ErrorKind::Builder => "builder",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Transport => "transport",
            ErrorKind::Status(_) => "status",
            ErrorKind::BodyTooLarge { .. } => "body_too_large",
            ErrorKind::Decode => "decode",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::UnmatchedFake => "unmatched_fake",
            ErrorKind::Redirect => "redirect",
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The batch key of the request, as written, if it ran in a batch.
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// The request method, when the error belongs to a request.
    pub fn method(&self) -> Option<&Method> {
        self.inner.method.as_ref()
    }

    /// The request URL, redacted as in [`Display`](fmt::Display): the
    /// userinfo and the values of secret query parameters are `***`.
    pub fn url(&self) -> Option<&str> {
        self.inner.url.as_deref()
    }

    /// The status code, for [`ErrorKind::Status`] errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self.inner.kind {
            ErrorKind::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The response (status, headers and body) of a status error.
    pub fn response(&self) -> Option<&Response> {
        self.inner.response.as_ref()
    }

    /// Takes the response out of a status error.
    pub fn into_response(self) -> Option<Response> {
        self.inner.response
    }

    /// The request or the batch ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout | ErrorKind::Deadline)
    }

    /// No connection could be made.
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }

    /// The server answered with a status ≥ 400.
    pub fn is_status(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Status(_))
    }

    /// The body could not be decoded into the requested type.
    pub fn is_decode(&self) -> bool {
        self.inner.kind == ErrorKind::Decode
    }

    /// The body was over the size limit.
    pub fn is_body_too_large(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::BodyTooLarge { .. })
    }

    /// The request was cancelled (`fail_fast`, or the batch was dropped).
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }

    /// The request was refused before any I/O: a bad URL, a base-URL escape
    /// or a value that could not be serialized.
    pub fn is_builder(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::InvalidUrl | ErrorKind::BaseUrlEscape | ErrorKind::Builder
        )
    }
}

/// The response body was over the client's limit.
pub(crate) fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::BodyTooLarge { limit },
        format!("response body is larger than the {limit}-byte limit (raise it with `ClientBuilder::body_limit`)"),
    )
}

/// reqwest errors carry the URL, which may hold a password; ours is redacted
/// already, so the source is kept without it.
fn without_url(err: reqwest::Error) -> reqwest::Error {
    err.without_url()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.write_str("request")?;
        if let Some(key) = &inner.key {
            write!(f, " `{key}`")?;
        }
        if let Some(method) = &inner.method {
            write!(f, " {method}")?;
        }
        if let Some(url) = &inner.url {
            write!(f, " {url}")?;
        }
        write!(f, " failed: {}", inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut s = f.debug_struct("Error");
        s.field("kind", &inner.kind)
            .field("message", &inner.message);
        if let Some(key) = &inner.key {
            s.field("key", key);
        }
        if let Some(method) = &inner.method {
            s.field("method", method);
        }
        if let Some(url) = &inner.url {
            s.field("url", url);
        }
        if let Some(response) = &inner.response {
            s.field("response", response);
        }
        if let Some(source) = &inner.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_key_method_and_url() {
        let err = Error::new(ErrorKind::Connect, "could not connect")
            .with_request(&Method::POST, "http://127.0.0.1:9/pay")
            .with_key(&"payment");
        assert_eq!(
            err.to_string(),
            "request `payment` POST http://127.0.0.1:9/pay failed: could not connect"
        );
        assert!(err.is_connect());
        assert_eq!(err.key(), Some("payment"));
    }

    #[test]
    fn error_is_small() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
