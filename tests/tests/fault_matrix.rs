//! Upstreams that misbehave on purpose: each fault ends classified (the
//! right `ErrorKind`), with `catch` called once, `finally` once, and no hang.
//!
//! Where axum cannot misbehave, the upstream is a raw `TcpListener` that
//! reads the request head and then answers badly by hand.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_runtime::{batch, Batch, Client, Error, ErrorKind, Request, Response};
use batch_tests::{refused_url, serve, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// No fault may take longer than this to be classified.
const NO_HANG: Duration = Duration::from_secs(10);

#[derive(Debug, serde::Deserialize)]
struct Numbered {
    n: u64,
}

/// Serves every connection on `127.0.0.1:0` with `answer`, after reading the
/// request head, so the client has sent its request before the fault.
async fn raw_server<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if read_head(&mut stream).await {
                    answer(stream).await;
                }
            });
        }
    });
    addr
}

/// Reads up to the blank line that ends a request head (the requests here
/// have no body); false if the client went away first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A client of `addr` whose body limit is `limit` bytes.
fn limited_client(addr: SocketAddr, limit: usize) -> Client {
    Client::builder()
        .base_url(format!("http://{addr}"))
        .body_limit(limit)
        .build()
        .expect("client builds")
}

fn client(addr: SocketAddr, timeout: Duration) -> Client {
    Client::builder()
        .base_url(format!("http://{addr}"))
        .timeout(timeout)
        .build()
        .expect("client builds")
}

/// What one single-request keyed batch ended with, and how often the arms ran.
struct Classified {
    result: Result<Response, Error>,
    progress: usize,
    catch: usize,
    finally: usize,
    took: Duration,
}

/// Runs `request` alone in a `Batch::keyed` under [`NO_HANG`].
async fn classify(client: &Client, request: Request) -> Classified {
    let (mut progress, mut catch, mut finally) = (0, 0, 0);
    let started = Instant::now();
    let mut results = tokio::time::timeout(
        NO_HANG,
        Batch::keyed([("fault", request)])
            .progress(|_, _, _| progress += 1)
            .catch(|_, key, err| {
                assert_eq!(key, "fault");
                assert_eq!(err.key(), Some("fault"), "{err}");
                catch += 1;
            })
            .finally(|b, all| {
                assert!(b.finished() && all.len() == 1);
                finally += 1;
            })
            .send(client),
    )
    .await
    .expect("the fault must be classified, not hang");
    Classified {
        result: results.remove("fault").expect("the batch keeps its key"),
        progress,
        catch,
        finally,
        took: started.elapsed(),
    }
}

/// Asserts a failure of `kind`, seen by `catch` once and `finally` once.
fn assert_failed_as(outcome: &Classified, kind: &ErrorKind) -> String {
    let err = outcome.result.as_ref().expect_err("the fault is a failure");
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(
        (outcome.progress, outcome.catch, outcome.finally),
        (0, 1, 1),
        "progress, catch, finally calls for {err}"
    );
    err.to_string()
}

#[tokio::test]
async fn connection_refused_is_a_connect_failure() {
    let url = refused_url().await;
    let mut calls = (0, 0);
    let all = tokio::time::timeout(
        NO_HANG,
        batch! {
            down: get(format!("{url}/x")),
            catch |_, key, err| {
                assert_eq!(key.to_string(), "down");
                assert_eq!(err.kind(), &ErrorKind::Connect, "{err}");
                calls.0 += 1;
            },
            finally |b, _| {
                assert_eq!(b.failed_requests(), 1);
                calls.1 += 1;
            },
        }
        .send(&Client::new()),
    )
    .await
    .expect("no hang");
    assert!(all.down.expect_err("refused").is_connect());
    assert_eq!(calls, (1, 1));
}

#[tokio::test]
async fn reset_after_the_headers_is_a_transport_failure() {
    let addr = raw_server(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial";
        if stream.write_all(head).await.is_ok() && stream.flush().await.is_ok() {
            // Linger 0: closing sends a RST instead of a FIN.
            let _ = stream.set_zero_linger();
        }
        drop(stream);
    })
    .await;
    let outcome = classify(&client(addr, Duration::from_secs(5)), Request::get("/x")).await;
    assert_failed_as(&outcome, &ErrorKind::Transport);
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_off_by_the_timeout() {
    let addr = raw_server(|stream| async move {
        // Hold the connection open and say nothing.
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let outcome = classify(
        &client(addr, Duration::from_millis(200)),
        Request::get("/silent"),
    )
    .await;
    let message = assert_failed_as(&outcome, &ErrorKind::Timeout);
    assert!(message.contains("/silent"), "{message}");
    assert!(outcome.took < Duration::from_secs(5), "{:?}", outcome.took);
}

#[tokio::test]
async fn a_slow_drip_body_past_the_timeout_is_a_timeout() {
    let addr = raw_server(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        // One byte every 50 ms: 5 s for the body, against a 300 ms timeout.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let outcome = classify(
        &client(addr, Duration::from_millis(300)),
        Request::get("/drip"),
    )
    .await;
    assert_failed_as(&outcome, &ErrorKind::Timeout);
    assert!(outcome.took < Duration::from_secs(3), "{:?}", outcome.took);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_without_content_length_is_too_large() {
    let addr = raw_server(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        // An endless body: only the client's limit can end it.
        let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let client = limited_client(addr, 4096);
    let outcome = classify(&client, Request::get("/endless")).await;
    let message = assert_failed_as(&outcome, &ErrorKind::BodyTooLarge { limit: 4096 });
    assert!(
        message.contains("body_limit"),
        "says how to fix it: {message}"
    );
}

#[tokio::test]
async fn a_chunked_body_exactly_at_the_limit_arrives_whole() {
    // Four chunks of 1 KiB under a 4 KiB limit: every byte counted once,
    // whichever chunk it came in.
    let addr = raw_server(|mut stream| async move {
        let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for part in ["a", "b", "c", "d"] {
            response.extend_from_slice(format!("400\r\n{}\r\n", part.repeat(0x400)).as_bytes());
        }
        response.extend_from_slice(b"0\r\n\r\n");
        let _ = stream.write_all(&response).await;
    })
    .await;
    let client = limited_client(addr, 4096);
    let response = client
        .send(Request::get("/four-chunks"))
        .await
        .expect("a body of exactly the limit is not too large");
    let expected: String = ["a", "b", "c", "d"].map(|part| part.repeat(0x400)).concat();
    assert_eq!(response.text(), expected);
    assert_eq!(response.url().path(), "/four-chunks");
}

/// Answers `body` under a `content-length` of `declared`, then closes.
async fn lying_server(declared: usize, body: &'static str) -> SocketAddr {
    raw_server(move |mut stream| async move {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\nconnection: close\r\n\r\n{body}"
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_content_length_shorter_than_the_body_truncates_it_to_the_declared_length() {
    // The client cannot know the length lies: it reads 4 bytes. A typed slot
    // then fails to decode them; a raw slot keeps exactly 4.
    let addr = lying_server(4, r#"{"n":1}"#).await;
    let client = client(addr, Duration::from_secs(5));
    let mut calls = (0, 0);
    let all = tokio::time::timeout(
        NO_HANG,
        batch! {
            typed: get("/short") => Numbered,
            catch |_, key, err| {
                assert_eq!(key.to_string(), "typed");
                assert_eq!(err.kind(), &ErrorKind::Decode, "{err}");
                calls.0 += 1;
            },
            finally |_, _| calls.1 += 1,
        }
        .send(&client),
    )
    .await
    .expect("no hang");
    assert!(all.typed.expect_err("truncated JSON").is_decode());
    assert_eq!(calls, (1, 1));

    let raw = classify(&client, Request::get("/short")).await;
    let response = raw.result.as_ref().expect("a short body is still a body");
    assert_eq!(response.bytes().as_ref(), br#"{"n""#);
    assert_eq!((raw.progress, raw.catch, raw.finally), (1, 0, 1));
}

#[tokio::test]
async fn a_content_length_longer_than_the_body_is_a_transport_failure() {
    let addr = lying_server(100, r#"{"n":1}"#).await;
    let outcome = classify(&client(addr, Duration::from_secs(5)), Request::get("/long")).await;
    assert_failed_as(&outcome, &ErrorKind::Transport);
    assert!(outcome.took < Duration::from_secs(3), "{:?}", outcome.took);
}

#[tokio::test]
async fn invalid_json_for_a_typed_slot_is_a_decode_failure() {
    let upstream = Upstream::start().await;
    let client = Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client builds");
    let mut calls = (0, 0, 0);
    let all = tokio::time::timeout(
        NO_HANG,
        batch! {
            broken: get("/invalid-json") => Numbered,
            fine: get("/json/3") => Numbered,
            progress |_, _, _| calls.0 += 1,
            catch |_, _, err| {
                assert_eq!(err.kind(), &ErrorKind::Decode, "{err}");
                calls.1 += 1;
            },
            finally |_, _| calls.2 += 1,
        }
        .send(&client),
    )
    .await
    .expect("no hang");
    let err = all.broken.expect_err("not JSON");
    assert!(
        err.to_string().contains("Numbered"),
        "names the type: {err}"
    );
    assert_eq!(all.fine.expect("valid JSON").n, 3);
    assert_eq!(calls, (1, 1, 1));
}

#[tokio::test]
async fn a_redirect_loop_ends_as_a_redirect_error_naming_the_loop() {
    let app = axum::Router::new().route(
        "/loop",
        axum::routing::get(|| async { axum::response::Redirect::temporary("/loop") }),
    );
    let addr = serve(app).await;
    let outcome = classify(&client(addr, Duration::from_secs(5)), Request::get("/loop")).await;
    let message = assert_failed_as(&outcome, &ErrorKind::Redirect);
    assert!(message.contains("loop"), "names the loop: {message}");
}

#[tokio::test]
async fn an_http1_0_upstream_that_ends_the_body_by_closing_succeeds() {
    let addr = raw_server(|mut stream| async move {
        // HTTP/1.0, no content-length: the body ends when the connection does.
        let response = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"n\":7}";
        let _ = stream.write_all(response).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let client = client(addr, Duration::from_secs(5));
    let outcome = classify(&client, Request::get("/old")).await;
    let response = outcome.result.as_ref().expect("HTTP/1.0 works");
    assert_eq!(response.json::<serde_json::Value>().expect("json")["n"], 7);
    assert_eq!(
        (outcome.progress, outcome.catch, outcome.finally),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn an_http1_1_upstream_serves_a_whole_batch_on_kept_alive_connections() {
    let upstream = Upstream::start().await;
    let client = Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client builds");
    let (mut progress, mut catch, mut finally) = (0, 0, 0);
    let results = tokio::time::timeout(
        NO_HANG,
        Batch::keyed((0..20).map(|n| (n, Request::get(format!("/json/{n}")))))
            .json::<Numbered>()
            .concurrency(4)
            .progress(|_, _, _| progress += 1)
            .catch(|_, _, _| catch += 1)
            .finally(|_, _| finally += 1)
            .send(&client),
    )
    .await
    .expect("no hang");
    let ns: Vec<u64> = results
        .into_values()
        .map(|r| r.expect("HTTP/1.1 works").n)
        .collect();
    assert_eq!(ns, (0..20).collect::<Vec<u64>>());
    assert_eq!((progress, catch, finally), (20, 0, 1));
    assert_eq!(upstream.hits(), 20);
}

#[tokio::test]
async fn an_http2_upstream_serves_a_whole_batch() {
    // axum answers HTTP/2 with prior knowledge (h2c); the handler reports
    // the version it saw, so the test knows HTTP/2 was really spoken.
    let app = axum::Router::new().route(
        "/version/{n}",
        axum::routing::get(|version: axum::http::Version| async move { format!("{version:?}") }),
    );
    let addr = serve(app).await;
    let client = Client::builder()
        .base_url(format!("http://{addr}"))
        .with_reqwest(batch_runtime::reqwest::Client::builder().http2_prior_knowledge())
        .build()
        .expect("client builds");
    let (mut progress, mut catch, mut finally) = (0, 0, 0);
    let results = tokio::time::timeout(
        NO_HANG,
        Batch::new((0..20).map(|n| Request::get(format!("/version/{n}"))))
            .progress(|_, _, _| progress += 1)
            .catch(|_, _, _| catch += 1)
            .finally(|_, _| finally += 1)
            .send(&client),
    )
    .await
    .expect("no hang");
    for result in &results {
        let response = result.as_ref().expect("HTTP/2 works");
        assert_eq!(response.text(), "HTTP/2.0");
    }
    assert_eq!((progress, catch, finally), (20, 0, 1));
}
