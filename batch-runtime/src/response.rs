//! A buffered response: status, headers, final URL and the whole body.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::redact;

/// A response whose body has been read completely (within the client's size
/// limit). Cloning is cheap: headers, URL and body are shared.
#[derive(Clone)]
pub struct Response {
    status: StatusCode,
    head: Arc<Head>,
    body: Bytes,
}

struct Head {
    headers: HeaderMap,
    url: Url,
}

impl Response {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, url: Url, body: Bytes) -> Self {
        Response {
            status,
            head: Arc::new(Head { headers, url }),
            body,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The URL the response came from.
    pub fn url(&self) -> &Url {
        &self.head.url
    }

    /// The body bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Decodes the body as JSON into `T`.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Decode`](crate::ErrorKind::Decode) error naming `T` and
    /// the serde message when the body is not valid JSON for `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::decode(e, std::any::type_name::<T>()))
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &redact::url(self.url()))
            .field("headers", &redact::Headers(self.headers()))
            .field("body_len", &self.body.len())
            .finish()
    }
}
