//! The client's guarantees, each against real loopback servers: redirects
//! never leave the base URL, base URLs with a query are refused, repeated
//! header values all arrive, non-idempotent requests are not re-sent after
//! they may have reached the server, the default timeout cuts off a silent
//! server, a user's own reqwest builder is honoured, and response headers
//! read back exactly as the server sent them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get};
use axum::{Json, Router};
use batch_runtime::header::{HeaderValue, AUTHORIZATION};
use batch_runtime::{Client, ErrorKind, Request, Retry};
use batch_tests::{refused_url, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Every test ends within this, or fails.
const LIMIT: Duration = Duration::from_secs(10);

/// A server that counts every request it receives and answers `200 hit`.
async fn counting_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(any(|State(hits): State<Arc<AtomicUsize>>| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "hit"
        }))
        .with_state(hits.clone());
    (format!("http://{}", serve(app).await), hits)
}

/// A server whose routes redirect: `/api/go` to `target`, `/api/old` to
/// `/api/new`, `/api/out` to `/admin` (same origin, outside `/api`),
/// `/api/loop` to itself, `/api/hop/{n}` to `/api/hop/{n-1}` down to 0.
async fn redirecting_server(target: String) -> (String, Arc<AtomicUsize>) {
    let admin = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/api/go", get(move || async move { Redirect::to(&target) }))
        .route("/api/old", get(|| async { Redirect::to("/api/new") }))
        .route("/api/new", get(|| async { "new" }))
        .route("/api/out", get(|| async { Redirect::to("/admin") }))
        .route("/api/loop", get(|| async { Redirect::to("/api/loop") }))
        .route(
            "/api/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "landed".into_response()
                } else {
                    Redirect::to(&format!("/api/hop/{}", n - 1)).into_response()
                }
            }),
        )
        .route(
            "/admin",
            get(|State(admin): State<Arc<AtomicUsize>>| async move {
                admin.fetch_add(1, Ordering::SeqCst);
                "admin"
            }),
        )
        .with_state(admin.clone());
    (format!("http://{}", serve(app).await), admin)
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed_under_a_base_url() {
    timeout(LIMIT, async {
        let (b, b_hits) = counting_server().await;
        let (a, _) = redirecting_server(format!("{b}/secret")).await;
        let client = Client::builder()
            .base_url(format!("{a}/api/"))
            .build()
            .unwrap();
        let err = client.send(Request::get("/go")).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Redirect, "{err}");
        let message = err.to_string();
        assert!(message.contains("not followed"), "{message}");
        assert!(
            message.contains(&format!("{b}/secret")),
            "names the target: {message}"
        );
        assert_eq!(b_hits.load(Ordering::SeqCst), 0, "B was never hit");
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_same_origin_redirect_is_followed_only_under_the_base_path() {
    timeout(LIMIT, async {
        let (a, admin_hits) = redirecting_server("/api/new".into()).await;
        let client = Client::builder()
            .base_url(format!("{a}/api"))
            .build()
            .unwrap();
        let followed = client.send(Request::get("/old")).await.unwrap();
        assert_eq!(followed.text(), "new");
        assert_eq!(followed.url().path(), "/api/new");

        let err = client.send(Request::get("/out")).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Redirect, "{err}");
        assert!(
            err.to_string().contains("outside the base URL's path"),
            "{err}"
        );
        assert_eq!(admin_hits.load(Ordering::SeqCst), 0, "/admin was never hit");
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_redirect_loop_ends_with_a_clear_error() {
    timeout(LIMIT, async {
        let (a, _) = redirecting_server(String::new()).await;
        for client in [
            Client::builder().base_url(&a).build().unwrap(),
            Client::new(),
        ] {
            let err = client
                .send(Request::get(format!("{a}/api/loop")))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Redirect, "{err}");
            assert!(err.to_string().contains("redirect loop"), "{err}");
        }
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn at_most_ten_redirects_are_followed_without_a_base_url() {
    timeout(LIMIT, async {
        let (a, _) = redirecting_server(String::new()).await;
        let client = Client::new();
        let ten = client
            .send(Request::get(format!("{a}/api/hop/10")))
            .await
            .unwrap();
        assert_eq!(ten.text(), "landed");
        let err = client
            .send(Request::get(format!("{a}/api/hop/11")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Redirect, "{err}");
        assert!(err.to_string().contains("more than 10 redirects"), "{err}");
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_base_url_with_a_query_or_fragment_is_refused_at_build() {
    for base in [
        "http://h.test/api?key=k",
        "http://h.test/api?",
        "http://h.test/api#top",
    ] {
        let err = Client::builder().base_url(base).build().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidUrl, "{base}: {err}");
        assert!(
            err.to_string().contains("Request::query"),
            "says how to fix: {err}"
        );
    }
}

/// A server that answers with every value of `x-tag` and `authorization`
/// it received, in order.
async fn header_echo() -> String {
    let app = Router::new().fallback(any(|headers: HeaderMap| async move {
        let all = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .collect()
        };
        Json(serde_json::json!({ "x-tag": all("x-tag"), "authorization": all("authorization") }))
    }));
    format!("http://{}", serve(app).await)
}

#[tokio::test]
async fn repeated_header_values_all_reach_the_server() {
    timeout(LIMIT, async {
        let server = header_echo().await;
        let client = Client::builder()
            .base_url(&server)
            .header("x-tag", "client-default")
            .build()
            .unwrap();
        let mut map = HeaderMap::new();
        map.append("x-tag", HeaderValue::from_static("one"));
        map.append("x-tag", HeaderValue::from_static("two"));
        let sent = client
            .send(Request::get("/").headers_from(map))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap();
        // The request's name replaces the client default; all its values arrive.
        assert_eq!(sent["x-tag"], serde_json::json!(["one", "two"]));

        let defaults = Client::builder()
            .base_url(&server)
            .header("x-tag", "a")
            .header("x-tag", "b")
            .build()
            .unwrap();
        let sent = defaults
            .send(Request::get("/"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap();
        assert_eq!(sent["x-tag"], serde_json::json!(["a", "b"]));
    })
    .await
    .expect("no hang");
}

#[test]
fn headers_from_marks_credentials_sensitive() {
    let mut map = HeaderMap::new();
    map.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
    map.insert("cookie", HeaderValue::from_static("session=s3cret"));
    map.insert(
        "proxy-authorization",
        HeaderValue::from_static("Basic s3cret"),
    );
    map.insert("x-visible", HeaderValue::from_static("shown"));
    let request = Request::get("/").headers_from(map);
    for name in ["authorization", "cookie", "proxy-authorization"] {
        assert!(request.headers()[name].is_sensitive(), "{name}");
    }
    assert!(!request.headers()["x-visible"].is_sensitive());
    let shown = format!("{request:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("shown"), "{shown}");
}

/// Credentials written in a URL go out as `Authorization: Basic`, decoded
/// from their percent-encoding, and never on the wire in the URL; a
/// request without them sends no `Authorization`, and headers, a body and
/// a timeout set on either kind all arrive.
#[tokio::test]
async fn credentials_in_a_url_are_sent_as_basic_auth_and_nothing_else_is() {
    let app = Router::new().fallback(any(|headers: HeaderMap, body: String| async move {
        let authorization = headers
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned());
        let tag = headers
            .get("x-tag")
            .map(|value| value.to_str().unwrap().to_owned());
        Json(serde_json::json!({ "authorization": authorization, "tag": tag, "body": body }))
    }));
    let addr = serve(app).await;
    let client = Client::builder().build().expect("client");
    let with = Request::post(format!("http://us%20er:p%40ss@{addr}/with"))
        .header("x-tag", "one")
        .timeout(Duration::from_secs(5))
        .body_bytes("b1");
    let without = Request::post(format!("http://{addr}/without"))
        .header("x-tag", "two")
        .timeout(Duration::from_secs(5))
        .body_bytes("b2");
    let overridden =
        Request::get(format!("http://user:pass@{addr}/overridden")).bearer_auth("t0ken");
    let [with, without, overridden] = timeout(
        LIMIT,
        batch_runtime::Batch::new([with, without, overridden]).try_send(&client),
    )
    .await
    .expect("within the limit")
    .expect("both succeed")
    .try_into()
    .expect("two responses");

    let seen: serde_json::Value = with.json().unwrap();
    // base64("us er:p@ss")
    assert_eq!(seen["authorization"], "Basic dXMgZXI6cEBzcw==");
    assert_eq!(seen["tag"], "one");
    assert_eq!(seen["body"], "b1");
    assert_eq!(with.url().username(), "", "{}", with.url());
    assert_eq!(with.url().password(), None);

    let seen: serde_json::Value = without.json().unwrap();
    assert_eq!(seen["authorization"], serde_json::Value::Null);
    assert_eq!(seen["tag"], "two");
    assert_eq!(seen["body"], "b2");

    // A header the request sets replaces the URL's credentials.
    let seen: serde_json::Value = overridden.json().unwrap();
    assert_eq!(seen["authorization"], "Bearer t0ken");
}

/// A server that counts requests and never answers them.
async fn silent_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(any(|State(hits): State<Arc<AtomicUsize>>| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }))
        .with_state(hits.clone());
    (format!("http://{}", serve(app).await), hits)
}

#[tokio::test]
async fn a_post_that_timed_out_is_sent_once_by_default() {
    timeout(LIMIT, async {
        let (server, hits) = silent_server().await;
        let client = Client::builder().base_url(&server).build().unwrap();
        let err = client
            .send(
                Request::post("/charge")
                    .timeout(Duration::from_millis(100))
                    .retry(Retry::times(2).backoff(Duration::from_millis(1))),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Timeout, "{err}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the POST reached the upstream once"
        );

        // The same request as a GET is idempotent, so it is retried.
        let err = client
            .send(
                Request::get("/charge")
                    .timeout(Duration::from_millis(100))
                    .retry(Retry::times(2).backoff(Duration::from_millis(1))),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Timeout, "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1 + 3);
    })
    .await
    .expect("no hang");
}

/// A server that answers `503` to the first `failures` requests, then `200`.
async fn failing_then_ok(failures: usize) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(any(
            move |State(hits): State<Arc<AtomicUsize>>| async move {
                if hits.fetch_add(1, Ordering::SeqCst) < failures {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    "ok".into_response()
                }
            },
        ))
        .with_state(hits.clone());
    (format!("http://{}", serve(app).await), hits)
}

#[tokio::test]
async fn a_post_is_retried_after_a_server_error_only_when_asked() {
    timeout(LIMIT, async {
        let (server, hits) = failing_then_ok(1).await;
        let client = Client::builder().base_url(&server).build().unwrap();
        let quick = || Retry::times(2).backoff(Duration::from_millis(1));
        let err = client
            .send(Request::post("/").retry(quick()))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let ok = client
            .send(Request::post("/").retry(quick().non_idempotent()))
            .await
            .unwrap();
        assert_eq!(ok.text(), "ok");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_post_whose_connection_was_refused_is_retried() {
    timeout(LIMIT, async {
        let refused = refused_url().await;
        let client = Client::new();
        let started = tokio::time::Instant::now();
        let err = client
            .send(
                Request::post(format!("{refused}/charge"))
                    .retry(Retry::times(2).backoff(Duration::from_millis(200))),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Connect, "{err}");
        // Two waits of at least half the 200 ms and 400 ms backoffs (jitter
        // takes off at most half): the retries happened.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );

        // Counted at the fake, which records every attempt.
        let fake = batch_runtime::fake::Fake::new();
        fake.stub(
            batch_runtime::Method::POST,
            "*",
            batch_runtime::fake::Sequence::new()
                .push(batch_runtime::fake::Reply::connection_failed())
                .push(batch_runtime::fake::Reply::text("charged")),
        );
        let ok = fake
            .client()
            .send(
                Request::post("http://pay.test/charge")
                    .retry(Retry::times(2).backoff(Duration::from_millis(1))),
            )
            .await
            .unwrap();
        assert_eq!(ok.text(), "charged");
        assert_eq!(fake.sent_count(), 2);
    })
    .await
    .expect("no hang");
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_cuts_off_a_server_that_never_answers() {
    // Accepts, reads the request, and never answers. The paused clock
    // advances by itself while everything waits on I/O, so the 30 s
    // default passes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let n = socket.read(&mut buf).await.unwrap_or(0);
        seen.fetch_add(n, Ordering::SeqCst);
        std::future::pending::<()>().await;
        drop(socket);
    });
    let started = tokio::time::Instant::now();
    let err = timeout(
        Duration::from_secs(120),
        Client::new().send(Request::get(format!("http://{addr}/never"))),
    )
    .await
    .expect("the default timeout fired before the test's own limit")
    .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), &ErrorKind::Timeout, "{err}");
    assert!(
        received.load(Ordering::SeqCst) > 0,
        "the request reached the server"
    );
    assert!(
        waited >= batch_runtime::DEFAULT_TIMEOUT
            && waited < batch_runtime::DEFAULT_TIMEOUT + Duration::from_secs(1),
        "cut off after {waited:?}"
    );
    assert!(err.to_string().contains("30s"), "{err}");
}

/// A loopback HTTP proxy: reads each request's line (absolute form, as
/// clients send to a proxy), records it, and answers by the path: `/api/go`
/// redirects to another origin, `/api/hang` never answers, anything else is
/// `200 via proxy`.
async fn loopback_proxy() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or("").to_owned();
                record.lock().unwrap().push(line.clone());
                let answer: &[u8] = if line.contains("/api/go ") {
                    b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else if line.contains("/api/hang ") {
                    std::future::pending::<()>().await;
                    b""
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nvia proxy"
                };
                let _ = socket.write_all(answer).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_users_own_reqwest_builder_is_used_and_the_guarantees_still_hold() {
    timeout(LIMIT, async {
        let (proxy, seen) = loopback_proxy().await;
        let own = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(&proxy).unwrap())
            .user_agent("shop/1.0")
            // Replaced by the client's own timeout, as documented.
            .timeout(Duration::from_secs(3600));
        // `.invalid` never resolves: only the proxy can have answered.
        let client = Client::builder()
            .with_reqwest(own)
            .base_url("http://upstream.invalid/api")
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();

        let ok = client.send(Request::get("/users/1")).await.unwrap();
        assert_eq!(ok.text(), "via proxy");
        assert_eq!(
            *seen.lock().unwrap(),
            ["GET http://upstream.invalid/api/users/1 HTTP/1.1"]
        );

        let err = client.send(Request::get("/go")).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Redirect, "{err}");
        let err = client.send(Request::get("/hang")).await.unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Timeout,
            "our timeout applies: {err}"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "the redirect was not followed: {seen:?}");
        assert!(
            !seen.iter().any(|line| line.contains("elsewhere")),
            "{seen:?}"
        );
    })
    .await
    .expect("no hang");
}

/// A batch keeps each response's headers packed beside its body and reads
/// them into a `HeaderMap` on first use: what a real server sent comes back
/// whole, repeated values in order, whether the body arrived in one chunk
/// or in several, and `Set-Cookie` stays hidden from `Debug`.
#[tokio::test]
async fn response_headers_read_back_exactly_as_the_server_sent_them() {
    let app = Router::new()
        .route(
            "/one-chunk",
            get(|| async {
                (
                    // Appended: a plain array would keep only the last cookie.
                    axum::response::AppendHeaders([
                        ("set-cookie", "a=1"),
                        ("set-cookie", "b=2"),
                        ("x-trace", "t-1"),
                        ("x-empty", ""),
                    ]),
                    "small body",
                )
            }),
        )
        .route(
            "/chunks",
            get(|| async {
                let parts = (0..64).map(|i| Ok::<_, std::io::Error>(format!("part {i:02};")));
                (
                    [("x-trace", "t-2"), ("content-type", "text/plain")],
                    axum::body::Body::from_stream(futures::stream::iter(parts)),
                )
            }),
        );
    let base = format!("http://{}", serve(app).await);
    let client = Client::builder().base_url(&base).build().expect("client");
    let all = timeout(
        LIMIT,
        batch_runtime::Batch::new([Request::get("/one-chunk"), Request::get("/chunks")])
            .send(&client),
    )
    .await
    .expect("within the limit");

    let one = all[0].as_ref().expect("one chunk");
    let cookies: Vec<_> = one.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(one.headers()["x-trace"], "t-1");
    assert_eq!(one.headers()["x-empty"], "");
    assert_eq!(one.text(), "small body");
    assert!(!format!("{one:?}").contains("a=1"), "{one:?}");

    let chunks = all[1].as_ref().expect("several chunks");
    assert_eq!(chunks.headers()["x-trace"], "t-2");
    assert_eq!(chunks.headers()["content-type"], "text/plain");
    let expected: String = (0..64).map(|i| format!("part {i:02};")).collect();
    assert_eq!(chunks.text(), expected);
    assert_eq!(chunks.url().path(), "/chunks");
    assert_eq!(one.url().path(), "/one-chunk");
    // A clone made after the headers were read shares them.
    let clone = one.clone();
    assert!(std::ptr::eq(clone.headers(), one.headers()));
}
