//! An in-process fake transport for tests: stubbed replies, recorded
//! requests and assertions. No socket is opened.
//!
//! **How patterns match**, in the manner of Laravel's `Http::fake`: a
//! pattern that starts with `/` matches the URL's path on any host
//! (`/api/payments/*` matches `http://shop.test/api/payments/charge`; the
//! path as sent, so a base URL's path is part of it); a pattern with a host
//! matches that host and port (`shop.test/api/*`, or with a scheme,
//! `http://shop.test/*`; a host with no path, `shop.test`, matches every
//! path on it); a pattern that starts with `*` matches the whole URL
//! (`*/payments/*`); `*` alone matches anything, and a `*` anywhere matches
//! any run of characters, `/` included. Everything else is literal, but
//! schemes and hosts compare without regard to case. The
//! query string is ignored unless the pattern contains a `?` (then
//! `/search?q=*` matches the path and query); the fragment is never
//! matched. Rules are tried in the order they were added and the first
//! match answers. When no rule matches, the error names the closest rule:
//! among the rules for the request's method (or for any method), the one
//! fewest character edits away from what it would have to match, where `*`
//! costs nothing.
//!
//! ```
//! use batch_runtime::fake::{Fake, Reply};
//! use batch_runtime::{Client, Method, Request};
//!
//! # tokio_test_block(async {
//! let fake = Fake::new();
//! fake.stub(Method::GET, "*/users/*", Reply::json(serde_json::json!({ "id": 7 })));
//! let client = Client::builder().base_url("http://api.test").fake(&fake).build()?;
//!
//! let user = client.send(Request::get("/users/7")).await?;
//! assert_eq!(user.json::<serde_json::Value>()?["id"], 7);
//! fake.assert_sent(|r| r.method() == Method::GET && r.url().path() == "/users/7");
//! # Ok::<(), batch_runtime::Error>(()) });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{too_large, Error, ErrorKind};
use crate::redact;
use crate::request::Prepared;
use crate::response::Response;
use crate::sync::lock;

/// The fake: rules matched in the order they were added, and the requests
/// it received. Clones share state, so keep one in the test and give
/// clients to the code under test with [`ClientBuilder::fake`](crate::ClientBuilder::fake).
///
/// A request that no rule matches fails with [`ErrorKind::UnmatchedFake`]
/// naming it and the rules, unless [`Fake::allow_stray_requests`] was called
/// (then it gets an empty `200`).
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    rules: Mutex<Vec<Rule>>,
    sent: Mutex<Vec<RecordedRequest>>,
    allow_stray: AtomicBool,
}

struct Rule {
    method: Option<Method>,
    pattern: Pattern,
    responder: Responder,
}

/// What a rule answers with: a fixed [`Reply`], a [`Sequence`], or a
/// closure (see [`Fake::stub_with`]).
pub enum Responder {
    /// The same reply every time.
    Reply(Reply),
    /// Replies in turn.
    Sequence(Mutex<Sequence>),
    /// A reply computed from the request.
    Closure(Box<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>),
}

impl From<Reply> for Responder {
    fn from(reply: Reply) -> Self {
        Responder::Reply(reply)
    }
}

impl From<Sequence> for Responder {
    fn from(sequence: Sequence) -> Self {
        Responder::Sequence(Mutex::new(sequence))
    }
}

/// A stubbed reply: status, headers, body, an optional delay, or a
/// simulated failure.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    delay: Option<Duration>,
    failure: Option<Failure>,
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Connect,
    Timeout,
}

impl Reply {
    /// An empty reply with this status.
    ///
    /// # Panics
    ///
    /// If `status` is not in 100..=999.
    pub fn status(status: u16) -> Self {
        let status = match StatusCode::from_u16(status) {
            Ok(status) => status,
            Err(_) => panic!("{status} is not a valid HTTP status code"),
        };
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            delay: None,
            failure: None,
        }
    }

    /// `200` with an empty body.
    pub fn ok() -> Self {
        Reply::status(200)
    }

    /// `200` with a JSON body.
    ///
    /// # Panics
    ///
    /// If `body` cannot be serialized as JSON (a test bug).
    pub fn json<T: Serialize>(body: T) -> Self {
        let bytes = match serde_json::to_vec(&body) {
            Ok(bytes) => bytes,
            Err(e) => panic!("fake reply body could not be serialized: {e}"),
        };
        Reply::ok()
            .header(CONTENT_TYPE, "application/json")
            .body(bytes)
    }

    /// `200` with a text body.
    pub fn text(body: impl Into<String>) -> Self {
        Reply::ok()
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// The connection fails ([`ErrorKind::Connect`]).
    pub fn connection_failed() -> Self {
        Reply {
            failure: Some(Failure::Connect),
            ..Reply::ok()
        }
    }

    /// The request times out ([`ErrorKind::Timeout`]) without waiting for
    /// the real timeout.
    pub fn timeout() -> Self {
        Reply {
            failure: Some(Failure::Timeout),
            ..Reply::ok()
        }
    }

    /// Replaces the status.
    ///
    /// # Panics
    ///
    /// If `status` is not in 100..=999.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Reply::status(status).status;
        self
    }

    /// Adds a header.
    ///
    /// # Panics
    ///
    /// On an invalid header name or value (a test bug).
    #[must_use]
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: fmt::Debug,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: fmt::Debug,
    {
        let name = HeaderName::try_from(name).expect("valid header name in a fake reply");
        let value = HeaderValue::try_from(value).expect("valid header value in a fake reply");
        self.headers.append(name, value);
        self
    }

    /// Replaces the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits this long before answering (a request timeout still applies).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// Replies handed out in turn; once they run out, the `when_empty` reply
/// (or, without one, an [`ErrorKind::UnmatchedFake`] error).
#[derive(Debug, Default)]
pub struct Sequence {
    replies: VecDeque<Reply>,
    when_empty: Option<Reply>,
}

impl Sequence {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequence::default()
    }

    /// Appends a reply.
    #[must_use]
    pub fn push(mut self, reply: Reply) -> Self {
        self.replies.push_back(reply);
        self
    }

    /// The reply once the sequence is exhausted.
    #[must_use]
    pub fn when_empty(mut self, reply: Reply) -> Self {
        self.when_empty = Some(reply);
        self
    }
}

/// A request the fake received: method, URL, headers (the client's defaults
/// included) and body.
#[derive(Clone)]
pub struct RecordedRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
}

impl RecordedRequest {
    /// The method.
    pub fn method(&self) -> Method {
        self.method.clone()
    }

    /// The full URL, query included.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON, or `None` when it is not valid for `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether this request matches `pattern`, optionally prefixed by a
    /// method (`"POST /api/payments/*"`); patterns match as described in
    /// the [module docs](self).
    pub fn matches(&self, pattern: &str) -> bool {
        let (method, glob) = split_method(pattern);
        method.is_none_or(|m| m == self.method) && Pattern::parse(glob).matches(&self.url)
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("url", &redact::url(&self.url))
            .field("headers", &redact::Headers(&self.headers))
            .field("body", &self.text())
            .finish()
    }
}

impl fmt::Display for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, redact::url(&self.url))?;
        if !self.body.is_empty() {
            let text = self.text();
            let shown: String = text.chars().take(200).collect();
            write!(f, " {shown}")?;
            if shown.len() < text.len() {
                f.write_str("…")?;
            }
        }
        Ok(())
    }
}

impl Fake {
    /// A fake with no rules.
    pub fn new() -> Self {
        Fake::default()
    }

    /// A client with no base URL whose requests all go to this fake.
    ///
    /// # Panics
    ///
    /// Never in practice: a fake client has nothing that can fail to build.
    pub fn client(&self) -> crate::Client {
        crate::Client::builder()
            .fake(self)
            .build()
            .expect("a fake client without base URL always builds")
    }

    /// Answers requests with `method` whose URL matches `pattern`: a path
    /// (`/api/payments/*`), a host (`shop.test/api/*`), a whole URL
    /// (`http://shop.test/*`, `*/payments/*`) or `*`, where `*` matches any
    /// run of characters (see the [module docs](self)). Rules are tried in
    /// the order they were added; the first match answers.
    pub fn stub(&self, method: Method, pattern: &str, responder: impl Into<Responder>) -> &Self {
        self.add(Some(method), pattern, responder.into())
    }

    /// Like [`Fake::stub`] for every method.
    pub fn stub_any(&self, pattern: &str, responder: impl Into<Responder>) -> &Self {
        self.add(None, pattern, responder.into())
    }

    /// Answers with a reply computed from the request.
    pub fn stub_with(
        &self,
        method: Method,
        pattern: &str,
        respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> &Self {
        self.add(Some(method), pattern, Responder::Closure(Box::new(respond)))
    }

    fn add(&self, method: Option<Method>, pattern: &str, responder: Responder) -> &Self {
        lock(&self.inner.rules).push(Rule {
            method,
            pattern: Pattern::parse(pattern),
            responder,
        });
        self
    }

    /// Lets requests that match no rule through with an empty `200`.
    pub fn allow_stray_requests(&self) -> &Self {
        self.inner.allow_stray.store(true, Ordering::Relaxed);
        self
    }

    /// Every request received so far, in the order they were sent.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.sent).clone()
    }

    /// How many requests were received.
    pub fn sent_count(&self) -> usize {
        lock(&self.inner.sent).len()
    }

    /// Forgets the recorded requests (the rules stay).
    pub fn clear_recorded(&self) {
        lock(&self.inner.sent).clear();
    }

    /// Asserts that at least one recorded request satisfies `predicate`.
    ///
    /// # Panics
    ///
    /// When none does, listing what was sent.
    #[track_caller]
    pub fn assert_sent(&self, predicate: impl Fn(&RecordedRequest) -> bool) {
        let sent = lock(&self.inner.sent);
        if !sent.iter().any(&predicate) {
            panic!(
                "expected a request matching the predicate, but none was sent.\n{}",
                listing(&sent)
            );
        }
    }

    /// Asserts that no recorded request satisfies `predicate`.
    ///
    /// # Panics
    ///
    /// When one does, listing the offending requests.
    #[track_caller]
    pub fn assert_not_sent(&self, predicate: impl Fn(&RecordedRequest) -> bool) {
        let sent = lock(&self.inner.sent);
        let offending: Vec<RecordedRequest> =
            sent.iter().filter(|r| predicate(r)).cloned().collect();
        if !offending.is_empty() {
            panic!(
                "expected no request matching the predicate, but {} matched.\n{}",
                offending.len(),
                listing(&offending)
            );
        }
    }

    /// Asserts the number of recorded requests.
    ///
    /// # Panics
    ///
    /// When the count differs, listing what was sent.
    #[track_caller]
    pub fn assert_sent_count(&self, expected: usize) {
        let sent = lock(&self.inner.sent);
        if sent.len() != expected {
            panic!(
                "expected {expected} request(s) to be sent, but {} were.\n{}",
                sent.len(),
                listing(&sent)
            );
        }
    }

    /// Asserts that requests matching `patterns` were sent in this order
    /// (other requests may come between). Each pattern is a rule's pattern
    /// (see the [module docs](self)), optionally prefixed by a method:
    /// `"POST /api/inventory/*"`.
    ///
    /// # Panics
    ///
    /// Naming the first pattern not found in order, listing what was sent.
    #[track_caller]
    pub fn assert_sent_in_order<'a>(&self, patterns: impl IntoIterator<Item = &'a str>) {
        let sent = lock(&self.inner.sent);
        let mut rest = sent.iter();
        for (position, pattern) in patterns.into_iter().enumerate() {
            if !rest.any(|r| r.matches(pattern)) {
                panic!(
                    "expected requests in order, but pattern #{} `{pattern}` was not sent after the ones before it.\n{}",
                    position + 1,
                    listing(&sent)
                );
            }
        }
    }

    /// Asserts that no request was sent.
    ///
    /// # Panics
    ///
    /// When any was, listing them.
    #[track_caller]
    pub fn assert_nothing_sent(&self) {
        let sent = lock(&self.inner.sent);
        if !sent.is_empty() {
            panic!(
                "expected no request to be sent, but {} were.\n{}",
                sent.len(),
                listing(&sent)
            );
        }
    }

    /// Records the request, finds the rule, and plays its reply.
    pub(crate) async fn respond(
        &self,
        prepared: Prepared,
        body_limit: usize,
    ) -> Result<Response, Error> {
        let Prepared {
            method,
            mut url,
            headers,
            body,
            timeout,
            ..
        } = prepared;
        // A fragment never goes over the wire: the fake sees what a server would.
        url.set_fragment(None);
        let recorded = RecordedRequest {
            method,
            url,
            headers: headers.unwrap_or_default(),
            body: body.unwrap_or_default(),
        };
        lock(&self.inner.sent).push(recorded.clone());
        let reply = self.reply_for(&recorded)?;
        let play = async {
            if let Some(delay) = reply.delay {
                tokio::time::sleep(delay).await;
            }
            match reply.failure {
                Some(Failure::Connect) => Err(Error::new(
                    ErrorKind::Connect,
                    "could not connect (fake: connection failed)",
                )),
                Some(Failure::Timeout) => Err(Error::new(ErrorKind::Timeout, "timed out (fake)")),
                None => Ok(()),
            }
        };
        match tokio::time::timeout(timeout, play).await {
            Err(_) => return Err(Error::timeout(Some(timeout))),
            Ok(result) => result?,
        }
        if reply.body.len() > body_limit {
            return Err(too_large(body_limit));
        }
        Ok(Response::new(
            reply.status,
            reply.headers,
            recorded.url,
            &reply.body,
        ))
    }

    fn reply_for(&self, request: &RecordedRequest) -> Result<Reply, Error> {
        let rules = lock(&self.inner.rules);
        let rule = rules.iter().find(|rule| {
            rule.method.as_ref().is_none_or(|m| *m == request.method)
                && rule.pattern.matches(&request.url)
        });
        let Some(rule) = rule else {
            if self.inner.allow_stray.load(Ordering::Relaxed) {
                return Ok(Reply::ok());
            }
            let listed: Vec<String> = rules.iter().map(Rule::describe).collect();
            let listed = if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            };
            let closest = closest_rule(&rules, request)
                .map(|hint| format!("; {hint}"))
                .unwrap_or_default();
            return Err(Error::new(
                ErrorKind::UnmatchedFake,
                format!(
                    "no fake rule matches {} {}{closest}; rules: {listed} (add a rule with `Fake::stub`, or call `Fake::allow_stray_requests`)",
                    request.method,
                    redact::url(&request.url)
                ),
            ));
        };
        match &rule.responder {
            Responder::Reply(reply) => Ok(reply.clone()),
            Responder::Closure(respond) => Ok(respond(request)),
            Responder::Sequence(sequence) => {
                let mut sequence = lock(sequence);
                match sequence.replies.pop_front().or_else(|| sequence.when_empty.clone()) {
                    Some(reply) => Ok(reply),
                    None => Err(Error::new(
                        ErrorKind::UnmatchedFake,
                        format!(
                            "the fake sequence for `{}` is exhausted (give it a `when_empty` reply)",
                            rule.describe()
                        ),
                    )),
                }
            }
        }
    }
}

impl fmt::Debug for Fake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = lock(&self.inner.rules).iter().map(Rule::describe).collect();
        f.debug_struct("Fake")
            .field("rules", &rules)
            .field("sent", &self.sent_count())
            .finish()
    }
}

impl Rule {
    fn describe(&self) -> String {
        match &self.method {
            Some(method) => format!("{method} {}", self.pattern.text),
            None => format!("* {}", self.pattern.text),
        }
    }
}

fn listing(sent: &[RecordedRequest]) -> String {
    if sent.is_empty() {
        return "Sent: nothing.".to_owned();
    }
    let mut out = format!("Sent ({}):", sent.len());
    for (i, request) in sent.iter().enumerate() {
        out.push_str(&format!("\n  {}. {request}", i + 1));
    }
    out
}

fn split_method(pattern: &str) -> (Option<Method>, &str) {
    match pattern.split_once(' ') {
        Some((method, glob))
            if !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()) =>
        {
            (
                Method::from_bytes(method.as_bytes()).ok(),
                glob.trim_start(),
            )
        }
        _ => (None, pattern),
    }
}

/// A rule's URL pattern and the part of the URL it is matched against.
#[derive(Debug)]
struct Pattern {
    /// As written, for messages.
    text: String,
    /// The glob matched against [`Pattern::subject`].
    glob: String,
    scope: Scope,
    /// Whether the query string is part of the subject (the pattern has a `?`).
    with_query: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// `/api/*`: the path.
    Path,
    /// `shop.test/api/*`: host, port and path.
    Host,
    /// `http://shop.test/*`, `*/api/*`, `*`: the whole URL.
    Url,
}

impl Pattern {
    fn parse(text: &str) -> Pattern {
        let scope = if text.starts_with('/') {
            Scope::Path
        } else if text.starts_with('*') || text.contains("://") {
            Scope::Url
        } else {
            Scope::Host
        };
        // Where the host starts, when the pattern names one.
        let host_start = match scope {
            Scope::Url => text.find("://").map(|at| at + 3),
            Scope::Host => Some(0),
            Scope::Path => None,
        };
        let mut glob = text.to_owned();
        if let Some(start) = host_start {
            let end = text[start..]
                .find(['/', '?'])
                .map_or(text.len(), |at| start + at);
            // Parsed URLs have lowercase schemes and hosts.
            glob.replace_range(..end, &text[..end].to_ascii_lowercase());
            // A host with no path (`shop.test`, `http://shop.test`) stands
            // for every path on it; parsed URLs always have one.
            if end == text.len() && !text[start..].contains('*') {
                glob.push_str("/*");
            }
        }
        Pattern {
            text: text.to_owned(),
            with_query: text.contains('?'),
            glob,
            scope,
        }
    }

    fn matches(&self, url: &Url) -> bool {
        glob_matches(&self.glob, &self.subject(url))
    }

    /// The part of `url` this pattern is matched against (passwords
    /// redacted, so it can be shown in messages).
    fn subject(&self, url: &Url) -> String {
        let mut subject = match self.scope {
            Scope::Path => url.path().to_owned(),
            Scope::Host => {
                let mut host = url.host_str().unwrap_or_default().to_owned();
                if let Some(port) = url.port() {
                    host.push_str(&format!(":{port}"));
                }
                host + url.path()
            }
            Scope::Url => {
                let full = redact::url(url);
                let end = full.find(['?', '#']).unwrap_or(full.len());
                full[..end].to_owned()
            }
        };
        if let (true, Some(query)) = (self.with_query, url.query()) {
            subject.push('?');
            subject.push_str(query);
        }
        subject
    }
}

/// "closest rule: …": among the rules for the request's method (or any
/// method), the fewest character edits from what it would have to match;
/// without such a rule, the closest rule of another method.
fn closest_rule(rules: &[Rule], request: &RecordedRequest) -> Option<String> {
    fn nearest<'r>(
        candidates: impl Iterator<Item = &'r Rule>,
        url: &Url,
    ) -> Option<(usize, &'r Rule, String)> {
        candidates
            .map(|rule| {
                let subject = rule.pattern.subject(url);
                (glob_distance(&rule.pattern.glob, &subject), rule, subject)
            })
            .min_by_key(|(distance, _, _)| *distance)
    }
    let same_method = |rule: &&Rule| rule.method.as_ref().is_none_or(|m| *m == request.method);
    if let Some((distance, rule, subject)) = nearest(rules.iter().filter(same_method), &request.url)
    {
        return Some(format!(
            "closest rule: `{}`, {distance} character edit{} from `{subject}`",
            rule.describe(),
            if distance == 1 { "" } else { "s" },
        ));
    }
    let (distance, rule, subject) = nearest(rules.iter(), &request.url)?;
    Some(if distance == 0 {
        format!(
            "closest rule: `{}` (matches the URL, but not the method {})",
            rule.describe(),
            request.method
        )
    } else {
        format!(
            "closest rule: `{}`, {distance} character edit{} from `{subject}`, and for another method than {}",
            rule.describe(),
            if distance == 1 { "" } else { "s" },
            request.method
        )
    })
}

/// The fewest single-character insertions, deletions or substitutions in
/// `text` for `glob` to match it; a `*` absorbs any run at no cost.
fn glob_distance(glob: &str, text: &str) -> usize {
    let text: Vec<char> = text.chars().collect();
    // previous[j]: the distance between the glob so far and text[..j].
    let mut previous: Vec<usize> = (0..=text.len()).collect();
    for g in glob.chars() {
        let mut current = Vec::with_capacity(previous.len());
        if g == '*' {
            // Either the star is empty (previous[j]) or it absorbs text[j-1].
            current.push(previous[0]);
            for j in 1..=text.len() {
                let absorbed = current[j - 1];
                current.push(previous[j].min(absorbed));
            }
        } else {
            current.push(previous[0] + 1);
            for j in 1..=text.len() {
                let substitute = previous[j - 1] + usize::from(text[j - 1] != g);
                current.push(substitute.min(previous[j] + 1).min(current[j - 1] + 1));
            }
        }
        previous = current;
    }
    previous[text.len()]
}

/// `*` matches any run of characters; everything else literally.
fn glob_matches(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_stars_match_any_run() {
        assert!(glob_matches("*", "http://a/b"));
        assert!(glob_matches("http://a/*", "http://a/b/c"));
        assert!(glob_matches("*/b/*/d", "http://a/b/c/d"));
        assert!(!glob_matches("*/b/*/d", "http://a/b/c/e"));
        assert!(glob_matches("http://a/b", "http://a/b"));
        assert!(!glob_matches("http://a/b", "http://a/bc"));
        assert!(glob_matches("*ab*ab", "xabab"));
    }

    #[test]
    fn glob_distance_counts_edits_and_stars_are_free() {
        assert_eq!(glob_distance("/api/payments/*", "/api/payments/charge"), 0);
        assert_eq!(glob_distance("/api/payment/*", "/api/payments/charge"), 1);
        assert_eq!(glob_distance("/a", "/b"), 1);
        assert_eq!(glob_distance("*", ""), 0);
        assert_eq!(glob_distance("", "abc"), 3);
        assert_eq!(glob_distance("x*y", "zzz"), 2);
    }

    #[test]
    fn patterns_pick_their_subject() {
        let url = Url::parse("http://user:secret@shop.test:81/api/x?q=1#top").unwrap();
        let subject = |p: &str| Pattern::parse(p).subject(&url);
        assert_eq!(subject("/api/*"), "/api/x");
        assert_eq!(subject("/api/*?q=*"), "/api/x?q=1");
        assert_eq!(subject("shop.test:81/*"), "shop.test:81/api/x");
        assert_eq!(subject("*/x"), "http://***@shop.test:81/api/x");
        assert_eq!(Pattern::parse("shop.test").glob, "shop.test/*");
        assert_eq!(
            Pattern::parse("http://shop.test").glob,
            "http://shop.test/*"
        );
        assert_eq!(Pattern::parse("*").glob, "*");
        assert_eq!(
            Pattern::parse("HTTP://Shop.Test/A/*").glob,
            "http://shop.test/A/*"
        );
        assert_eq!(Pattern::parse("Shop.Test:81?Q=1").glob, "shop.test:81?Q=1");
        assert!(Pattern::parse("Shop.Test:81/api/*").matches(&url));
    }

    #[test]
    fn method_prefix_is_split_off() {
        assert_eq!(split_method("POST */x"), (Some(Method::POST), "*/x"));
        assert_eq!(split_method("*/x"), (None, "*/x"));
    }
}
