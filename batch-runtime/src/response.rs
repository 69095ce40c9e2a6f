//! A buffered response: status, headers, final URL and the whole body.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::redact;

/// A response whose body has been read completely (within the client's size
/// limit). Cloning is cheap: the URL, headers and body are shared.
///
/// The body, headers and final URL are copied out of the connection's read
/// buffer, so a kept response never pins it. A response whose body is at
/// most 1 KiB shares a 4 KiB buffer with the responses received just before
/// and after it on the same thread: one kept after the rest are dropped
/// keeps at most that buffer alive.
#[derive(Clone)]
pub struct Response {
    status: StatusCode,
    /// The final URL's serialization and the headers, packed (see [`pack`]),
    /// then the body, from `head_len` on. Most batches read neither the URL
    /// nor the headers: they are parsed the first time they are asked for,
    /// so a response kept until its batch ends holds no `Url` or
    /// `HeaderMap` of its own, only this share of a buffer.
    packed: Bytes,
    head_len: u32,
    /// What was parsed from `packed`, made on the first read; clones made
    /// after it share it.
    parsed: OnceLock<Arc<Parsed>>,
}

#[derive(Default)]
struct Parsed {
    url: OnceLock<Url>,
    headers: OnceLock<HeaderMap>,
}

impl Response {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, url: Url, body: &[u8]) -> Self {
        let (packed, head_len) = pack(url.as_str(), &headers, body);
        Response {
            status,
            packed,
            head_len,
            parsed: OnceLock::from(Arc::new(Parsed {
                url: OnceLock::from(url),
                headers: OnceLock::from(headers),
            })),
        }
    }

    /// A response packed by [`pack`] (or [`pack_head`], then its body).
    pub(crate) fn from_packed(status: StatusCode, packed: Bytes, head_len: u32) -> Self {
        Response {
            status,
            packed,
            head_len,
            parsed: OnceLock::new(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers, read from where they are kept beside the body
    /// the first time they are asked for.
    pub fn headers(&self) -> &HeaderMap {
        self.parsed()
            .headers
            .get_or_init(|| unpack_headers(&self.packed, self.head_len as usize))
    }

    /// The URL the response came from (after redirects), parsed from where
    /// it is kept beside the body the first time it is asked for.
    pub fn url(&self) -> &Url {
        self.parsed().url.get_or_init(|| {
            Url::parse(unpacked_url(&self.packed)).expect("the serialization of a URL parses")
        })
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(Arc::default)
    }

    /// The body bytes: a handle on the response's buffer (cloning it
    /// copies nothing).
    pub fn bytes(&self) -> Bytes {
        self.packed.slice(self.head_len as usize..)
    }

    /// The body, borrowed.
    fn body(&self) -> &[u8] {
        &self.packed[self.head_len as usize..]
    }

    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    /// Decodes the body as JSON into `T`.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Decode`](crate::ErrorKind::Decode) error naming `T` and
    /// the serde message when the body is not valid JSON for `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.body())
            .map_err(|e| Error::decode(e, std::any::type_name::<T>()))
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &redact::url(self.url()))
            .field("headers", &redact::Headers(self.headers()))
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Fixed bytes before a packed URL (its length) and before each header.
const URL_FIXED: usize = 4;
const HEADER_FIXED: usize = 1 + 4 + 4;

/// Copies `url`, `headers` (every value, in order, with its sensitive flag)
/// and `body` one after another into a buffer (this thread's [`PACKING`]
/// chunk when small); returns it, for [`Response::from_packed`], with the
/// length of the URL and headers before the body.
///
/// hyper parses header values and a body that arrives in one chunk as
/// slices of the connection's read buffer. Kept as they are (a batch keeps
/// every response), each response would pin a whole read buffer, and the
/// connection would allocate a new one for the next response (about 4 KiB
/// a response). The layout is `[url length: u32][url]`, then per header
/// `[sensitive: u8][name length: u32][value length: u32][name][value]`,
/// lengths little-endian.
pub(crate) fn pack(url: &str, headers: &HeaderMap, body: &[u8]) -> (Bytes, u32) {
    // Room for the URL, the body and a typical head; more is reserved as
    // it is written.
    let guess = URL_FIXED + url.len() + headers.len() * (HEADER_FIXED + 32) + body.len();
    let small = body.len() <= SHARED_UP_TO && headers.len() <= SHARED_HEADERS;
    let shared = small.then(|| {
        // `try_with`: a thread tearing down its thread-locals packs into a
        // buffer of its own instead.
        PACKING.try_with(|chunk| {
            let mut chunk = chunk.borrow_mut();
            // Reuses the chunk from its start once every response that
            // shared it is gone; otherwise, if this does not fit, starts a
            // new one (the old one lives on in the responses sharing it).
            chunk.reserve(guess);
            let head_len = pack_head(&mut chunk, url, headers);
            chunk.extend_from_slice(body);
            (chunk.split().freeze(), head_len)
        })
    });
    match shared {
        Some(Ok(packed)) => packed,
        _ => {
            let mut own = BytesMut::with_capacity(guess);
            let head_len = pack_head(&mut own, url, headers);
            own.extend_from_slice(body);
            (own.freeze(), head_len)
        }
    }
}

/// Writes the packed URL and headers at the start of the empty `out`;
/// returns their length, where the body starts.
pub(crate) fn pack_head(out: &mut BytesMut, url: &str, headers: &HeaderMap) -> u32 {
    debug_assert!(out.is_empty());
    out.extend_from_slice(&packed_len(url.len()));
    out.extend_from_slice(url.as_bytes());
    for (name, value) in headers {
        let name = name.as_str().as_bytes();
        let mut fixed = [0; HEADER_FIXED];
        fixed[0] = u8::from(value.is_sensitive());
        fixed[1..5].copy_from_slice(&packed_len(name.len()));
        fixed[5..].copy_from_slice(&packed_len(value.len()));
        out.extend_from_slice(&fixed);
        out.extend_from_slice(name);
        out.extend_from_slice(value.as_bytes());
    }
    u32::try_from(out.len()).expect("a response head over 4 GiB")
}

/// The URL [`pack`] packed.
fn unpacked_url(packed: &[u8]) -> &str {
    let len = unpacked_len(&packed[..URL_FIXED]);
    std::str::from_utf8(&packed[URL_FIXED..URL_FIXED + len]).expect("packed from a URL's text")
}

/// The headers [`pack`] packed, before `head_len`.
fn unpack_headers(packed: &Bytes, head_len: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut at = URL_FIXED + unpacked_url(packed).len();
    while at < head_len {
        let sensitive = packed[at] != 0;
        let name_len = unpacked_len(&packed[at + 1..at + 5]);
        let value_len = unpacked_len(&packed[at + 5..at + 9]);
        at += HEADER_FIXED;
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

/// Responses whose body is at most this long, with at most
/// `SHARED_HEADERS` header values, share [`PACKING`]'s chunks; others get
/// a buffer of their own.
const SHARED_UP_TO: usize = 1024;
const SHARED_HEADERS: usize = 32;
/// The size of a shared chunk: a response kept long after the others
/// pins at most about this much (raw reqwest pins a connection's whole
/// read buffer, 8 KiB or more, per kept body).
const CHUNK: usize = 4 * 1024;

thread_local! {
    /// The rest of the chunk this thread packs small responses into, one
    /// after another. A response holds a share of its chunk instead of an
    /// allocation of its own: a batch keeps every response until it ends,
    /// and an allocation kept that long costs several times one that is
    /// freed and reused soon.
    static PACKING: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(CHUNK));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_responses_hold_exactly_what_was_written_at_every_size() {
        // Bodies of every length up to past the shared size, then large
        // ones; all kept, so later responses are written into the chunks
        // that earlier ones share, and chunks roll over many times.
        let lengths: Vec<usize> = (0..=SHARED_UP_TO + 100).chain([CHUNK, 100_000]).collect();
        let content =
            |len: usize| -> Vec<u8> { (0..len).map(|i| ((i + len) % 251) as u8).collect() };
        let mut headers = HeaderMap::new();
        headers.insert("x-n", HeaderValue::from_static("value"));
        let mut kept = Vec::new();
        for &len in &lengths {
            let url = format!("http://x.test/{len}");
            let (packed, head_len) = pack(&url, &headers, &content(len));
            kept.push((len, Response::from_packed(StatusCode::OK, packed, head_len)));
        }
        for (len, response) in kept {
            assert_eq!(
                &response.bytes()[..],
                &content(len)[..],
                "body of length {len}"
            );
            assert_eq!(response.url().as_str(), format!("http://x.test/{len}"));
            assert_eq!(response.headers(), &headers);
        }
    }

    #[test]
    fn a_chunk_is_reused_once_its_responses_are_gone() {
        // Each response is dropped before the next is packed: when the
        // chunk is full, it starts again from its start, not in a new one.
        let body = [7; 100];
        let (packed, _) = pack("http://x.test/", &HeaderMap::new(), &body);
        let start = packed.as_ptr();
        drop(packed);
        let wrapped = (0..2 * CHUNK / body.len()).any(|_| {
            let (packed, head_len) = pack("http://x.test/", &HeaderMap::new(), &body);
            assert_eq!(&packed[head_len as usize..], &body[..]);
            packed.as_ptr() == start
        });
        assert!(wrapped, "the chunk was never reused from its start");
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

        let (packed, head_len) = pack("http://x.test/a?b=c", &headers, &chunk);
        let response = Response::from_packed(StatusCode::OK, packed, head_len);
        let expected = headers.clone();
        drop((chunk, headers));

        assert_eq!(&response.bytes()[..], b"{\"id\":1}");
        assert_eq!(response.url().as_str(), "http://x.test/a?b=c");
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
    fn a_response_without_headers_or_body_packs_only_its_url() {
        let (packed, head_len) = pack("http://x.test/", &HeaderMap::new(), &[]);
        assert_eq!(packed.len(), URL_FIXED + "http://x.test/".len());
        assert_eq!(head_len as usize, packed.len());
        let response = Response::from_packed(StatusCode::NO_CONTENT, packed, head_len);
        assert!(response.bytes().is_empty());
        assert!(response.headers().is_empty());
        assert_eq!(response.url().as_str(), "http://x.test/");
    }

    #[test]
    fn a_clone_shares_the_bytes_and_reads_the_same_url_and_headers() {
        let mut headers = HeaderMap::new();
        let mut secret = HeaderValue::from_static("token");
        secret.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, secret);
        let url = Url::parse("http://u:p@x.test:8080/p?q=1").unwrap();
        let response = Response::new(StatusCode::OK, headers.clone(), url.clone(), b"b");
        let clone = response.clone();
        assert_eq!(clone.url(), &url);
        assert_eq!(clone.headers(), &headers);
        assert!(clone.headers()["authorization"].is_sensitive());
        assert_eq!(clone.bytes().as_ptr(), response.bytes().as_ptr());
    }
}
