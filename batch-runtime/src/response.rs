//! A buffered response: status, headers, final URL and the whole body.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
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
    url: Url,
    headers: OnceLock<HeaderMap>,
    /// The headers as they arrived over HTTP, packed (see [`pack`]); read
    /// into `headers` the first time they are asked for. Most batches never
    /// read them, and a `HeaderMap` kept per response costs two allocations
    /// that hyper would otherwise reuse for the next response.
    packed: Bytes,
}

impl Response {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, url: Url, body: Bytes) -> Self {
        Response {
            status,
            head: Arc::new(Head {
                url,
                headers: OnceLock::from(headers),
                packed: Bytes::new(),
            }),
            body,
        }
    }

    /// A response whose headers were packed by [`pack`].
    pub(crate) fn from_packed(status: StatusCode, packed: Bytes, url: Url, body: Bytes) -> Self {
        Response {
            status,
            head: Arc::new(Head {
                url,
                headers: OnceLock::new(),
                packed,
            }),
            body,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers. Over HTTP they are kept packed beside the body
    /// and read into this map the first time it is asked for (clones share
    /// it).
    pub fn headers(&self) -> &HeaderMap {
        self.head.headers.get_or_init(|| unpack(&self.head.packed))
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

/// Copies `headers` (every value, in order, with its sensitive flag) and
/// `body` into one buffer of their own; returns the packed headers, for
/// [`Response::from_packed`], and the body's copy.
///
/// hyper parses header values and a body that arrives in one chunk as
/// slices of the connection's read buffer. Kept as they are (a batch keeps
/// every response), each response would pin a whole read buffer, and the
/// connection would allocate a new one for the next response (about 4 KiB
/// a response). Each header is `[sensitive: u8][name length: u32][value
/// length: u32][name][value]`, lengths little-endian.
pub(crate) fn pack(headers: &HeaderMap, body: &[u8]) -> (Bytes, Bytes) {
    const FIXED: usize = 1 + 4 + 4;
    let head_len: usize = headers
        .iter()
        .map(|(name, value)| FIXED + name.as_str().len() + value.len())
        .sum();
    let buffer = one_buffer(head_len + body.len(), |out| {
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            out(&[u8::from(value.is_sensitive())]);
            out(&packed_len(name.len()));
            out(&packed_len(value.len()));
            out(name);
            out(value.as_bytes());
        }
        out(body);
    });
    (buffer.slice(..head_len), buffer.slice(head_len..))
}

/// The headers [`pack`] packed.
fn unpack(packed: &Bytes) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut at = 0;
    while at < packed.len() {
        let sensitive = packed[at] != 0;
        let name_len = unpacked_len(&packed[at + 1..at + 5]);
        let value_len = unpacked_len(&packed[at + 5..at + 9]);
        at += 9;
        let name = HeaderName::from_bytes(&packed[at..at + name_len])
            .expect("packed from a valid header name");
        at += name_len;
        // SAFETY: the bytes of a valid header value, copied unchanged;
        // checking them again would cost a pass per byte.
        let mut value =
            unsafe { HeaderValue::from_maybe_shared_unchecked(packed.slice(at..at + value_len)) };
        value.set_sensitive(sensitive);
        at += value_len;
        headers.append(name, value);
    }
    headers
}

/// A header name's or value's length as packed. Both are far below 4 GiB:
/// hyper refuses a head larger than its read buffer limit.
fn packed_len(len: usize) -> [u8; 4] {
    u32::try_from(len)
        .expect("a header name or value over 4 GiB")
        .to_le_bytes()
}

fn unpacked_len(bytes: &[u8]) -> usize {
    let bytes: [u8; 4] = bytes.try_into().expect("four bytes");
    u32::from_le_bytes(bytes) as usize
}

/// `len` bytes written by `fill` (through the `out` it is given), as one
/// shareable buffer. A small one (most responses) is a single allocation
/// holding its reference count and its bytes; a `Vec` turned into `Bytes`
/// would take a second one, for its count, on the first slice.
fn one_buffer(len: usize, fill: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Bytes {
    macro_rules! by_size {
        ($($size:literal)*) => {
            $(if len <= $size {
                return inline_buffer::<$size>(len, fill);
            })*
        };
    }
    by_size!(32 48 64 80 96 112 128 160 192 224 256 384 512 768 1024);
    let mut copy = BytesMut::with_capacity(len);
    fill(&mut |part| copy.extend_from_slice(part));
    copy.freeze()
}

fn inline_buffer<const N: usize>(len: usize, fill: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Bytes {
    /// At most `N` bytes, the first `len` of them written.
    struct Inline<const N: usize> {
        len: usize,
        bytes: [u8; N],
    }
    impl<const N: usize> AsRef<[u8]> for Inline<N> {
        fn as_ref(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
    }
    let mut inline = Inline { len, bytes: [0; N] };
    let mut at = 0;
    fill(&mut |part| {
        inline.bytes[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    });
    debug_assert_eq!(at, len);
    Bytes::from_owner(inline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_exactly_what_was_written_at_every_size() {
        // Across each size class's edges and past the largest (a `Vec`).
        for len in (0..=1100).chain([4096, 100_000]) {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (head, tail) = data.split_at(len / 3);
            let buffer = one_buffer(len, |out| {
                out(head);
                out(&[]);
                out(tail);
            });
            assert_eq!(&buffer[..], &data[..], "length {len}");
            let slice = buffer.slice(len / 2..);
            drop(buffer);
            assert_eq!(
                &slice[..],
                &data[len / 2..],
                "a slice outlives its buffer, length {len}"
            );
        }
    }

    #[test]
    fn kept_responses_do_not_pin_the_connections_read_buffer() {
        // As hyper hands them over: values and body sliced from one buffer.
        let read_buffer = Bytes::from(b"application/jsonsecretone{\"id\":1}".to_vec());
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_maybe_shared(read_buffer.slice(0..16)).unwrap();
        let mut cookie = HeaderValue::from_maybe_shared(read_buffer.slice(16..22)).unwrap();
        cookie.set_sensitive(true);
        let one = HeaderValue::from_maybe_shared(read_buffer.slice(22..25)).unwrap();
        headers.insert(reqwest::header::CONTENT_TYPE, content_type);
        headers.append(reqwest::header::SET_COOKIE, cookie);
        headers.append(reqwest::header::SET_COOKIE, one);
        headers.append("x-empty", HeaderValue::from_static(""));
        let chunk = read_buffer.slice(25..);

        let (packed, body) = pack(&headers, &chunk);
        let response = Response::from_packed(
            StatusCode::OK,
            packed,
            Url::parse("http://x.test/").unwrap(),
            body,
        );
        let expected = headers.clone();
        drop((chunk, headers));

        assert_eq!(&response.bytes()[..], b"{\"id\":1}");
        assert_eq!(response.headers(), &expected);
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["secret", "one"]);
        assert!(cookies[0].is_sensitive() && !cookies[1].is_sensitive());
        drop((cookies, expected));
        assert!(
            read_buffer.is_unique(),
            "the headers or the body still hold a slice of the read buffer"
        );
    }

    #[test]
    fn a_response_without_headers_or_body_packs_to_nothing() {
        let (packed, body) = pack(&HeaderMap::new(), &[]);
        assert!(packed.is_empty() && body.is_empty());
        let response = Response::from_packed(
            StatusCode::NO_CONTENT,
            packed,
            Url::parse("http://x.test/").unwrap(),
            Bytes::new(),
        );
        assert!(response.headers().is_empty());
    }
}
