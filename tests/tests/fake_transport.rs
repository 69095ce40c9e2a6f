//! The in-process fake: rules, replies, recorded requests, assertions.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use batch_runtime::fake::{Fake, RecordedRequest, Reply, Sequence};
use batch_runtime::{Batch, Client, ErrorKind, Method, Request};
use serde::Deserialize;

fn client(fake: &Fake) -> Client {
    Client::builder()
        .base_url("http://shop.test/api")
        .header("x-app", "batch-tests")
        .fake(fake)
        .build()
        .expect("fake client builds")
}

/// Runs an assertion that must fail and returns its panic message.
fn failure_of(assertion: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(assertion)).expect_err("the assertion must fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("string panic message")
}

async fn send_two(fake: &Fake) {
    let client = client(fake);
    let results = Batch::keyed([
        (
            "inventory",
            Request::post("/inventory/reserve").json(&serde_json::json!({ "sku": "A1" })),
        ),
        (
            "warehouse",
            Request::post("/warehouse/notify").json(&serde_json::json!({ "order": 7 })),
        ),
    ])
    .concurrency(1)
    .send(&client)
    .await;
    assert!(results.values().all(Result::is_ok), "{results:?}");
}

#[tokio::test]
async fn fake_records_method_url_headers_and_body() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    let sent = fake.recorded();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method(), Method::POST);
    assert_eq!(
        sent[0].url().as_str(),
        "http://shop.test/api/inventory/reserve"
    );
    assert_eq!(sent[0].header("x-app"), Some("batch-tests"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(sent[0].json::<serde_json::Value>().unwrap()["sku"], "A1");
}

#[tokio::test]
async fn assert_sent_passes_and_fails_listing_what_was_sent() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    fake.assert_sent(|r| r.url().path() == "/api/warehouse/notify");
    let message = failure_of(|| fake.assert_sent(|r| r.url().path() == "/api/payments/charge"));
    assert!(message.contains("none was sent"), "{message}");
    assert!(
        message.contains("1. POST http://shop.test/api/inventory/reserve"),
        "{message}"
    );
    assert!(
        message.contains("2. POST http://shop.test/api/warehouse/notify"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_not_sent_passes_and_fails_naming_the_offender() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    fake.assert_not_sent(|r| r.method() == Method::DELETE);
    let message = failure_of(|| fake.assert_not_sent(|r| r.url().path().contains("warehouse")));
    assert!(message.contains("but 1 matched"), "{message}");
    assert!(message.contains("warehouse/notify"), "{message}");
    assert!(
        !message.contains("inventory"),
        "only the offender is listed: {message}"
    );
}

#[tokio::test]
async fn assert_sent_count_passes_and_fails_with_the_count() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    fake.assert_sent_count(2);
    let message = failure_of(|| fake.assert_sent_count(3));
    assert!(
        message.contains("expected 3 request(s) to be sent, but 2 were"),
        "{message}"
    );
    assert!(message.contains("inventory/reserve"), "{message}");
}

#[tokio::test]
async fn assert_sent_in_order_passes_and_fails_naming_the_pattern() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    fake.assert_sent_in_order(["POST */inventory/*", "*/warehouse/notify"]);
    let message = failure_of(|| fake.assert_sent_in_order(["*/warehouse/*", "*/inventory/*"]));
    assert!(message.contains("pattern #2 `*/inventory/*`"), "{message}");
    assert!(message.contains("Sent (2)"), "{message}");
    let message = failure_of(|| fake.assert_sent_in_order(["GET */inventory/*"]));
    assert!(message.contains("pattern #1"), "{message}");
}

#[tokio::test]
async fn assert_nothing_sent_passes_and_fails_listing_requests() {
    let fake = Fake::new();
    fake.assert_nothing_sent();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    let message = failure_of(|| fake.assert_nothing_sent());
    assert!(
        message.contains("expected no request to be sent, but 2 were"),
        "{message}"
    );
}

#[tokio::test]
async fn stray_request_is_refused_naming_it_and_the_rules() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*/users/*", Reply::ok());
    let err = client(&fake)
        .send(Request::post("/payments/charge"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UnmatchedFake);
    let text = err.to_string();
    assert!(
        text.contains("POST http://shop.test/api/payments/charge"),
        "{text}"
    );
    assert!(text.contains("rules: GET */users/*"), "{text}");
    assert!(text.contains("allow_stray_requests"), "{text}");
    // It was still recorded: assertions see what the code tried to send.
    fake.assert_sent_count(1);
}

#[tokio::test]
async fn allowed_stray_requests_get_an_empty_ok() {
    let fake = Fake::new();
    fake.allow_stray_requests();
    let response = client(&fake).send(Request::get("/anything")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.bytes().is_empty());
}

#[tokio::test]
async fn rules_match_in_order_by_method_and_glob() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*/users/1", Reply::text("first"));
    fake.stub(Method::GET, "*/users/*", Reply::text("any user"));
    fake.stub(
        Method::POST,
        "*/users/*",
        Reply::text("created").with_status(201),
    );
    let c = client(&fake);
    assert_eq!(
        c.send(Request::get("/users/1")).await.unwrap().text(),
        "first"
    );
    assert_eq!(
        c.send(Request::get("/users/2?x=1")).await.unwrap().text(),
        "any user"
    );
    let created = c.send(Request::post("/users/3")).await.unwrap();
    assert_eq!(
        (created.status().as_u16(), created.text()),
        (201, "created".to_owned())
    );
}

#[tokio::test]
async fn sequences_reply_in_turn_then_when_empty() {
    let fake = Fake::new();
    fake.stub(
        Method::GET,
        "*",
        Sequence::new()
            .push(Reply::status(503))
            .push(Reply::json(serde_json::json!({ "ok": true })))
            .when_empty(Reply::status(410)),
    );
    let c = client(&fake);
    assert_eq!(
        c.send(Request::get("/a"))
            .await
            .unwrap_err()
            .status()
            .unwrap()
            .as_u16(),
        503
    );
    assert!(c.send(Request::get("/a")).await.is_ok());
    assert_eq!(
        c.send(Request::get("/a"))
            .await
            .unwrap_err()
            .status()
            .unwrap()
            .as_u16(),
        410
    );
    assert_eq!(
        c.send(Request::get("/a"))
            .await
            .unwrap_err()
            .status()
            .unwrap()
            .as_u16(),
        410
    );
}

#[tokio::test]
async fn exhausted_sequence_without_when_empty_is_an_error() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Sequence::new().push(Reply::ok()));
    let c = client(&fake);
    assert!(c.send(Request::get("/a")).await.is_ok());
    let err = c.send(Request::get("/a")).await.unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
}

#[tokio::test]
async fn closure_replies_see_the_request() {
    let fake = Fake::new();
    fake.stub_with(Method::POST, "*/echo", |request: &RecordedRequest| {
        Reply::json(serde_json::json!({ "got": request.json::<serde_json::Value>() }))
    });
    let response = client(&fake)
        .send(Request::post("/echo").json(&serde_json::json!({ "n": 5 })))
        .await
        .unwrap();
    assert_eq!(response.json::<serde_json::Value>().unwrap()["got"]["n"], 5);
}

#[tokio::test]
async fn failed_connection_and_timeout_replies_are_real_errors() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*/down", Reply::connection_failed());
    fake.stub(Method::GET, "*/slow", Reply::timeout());
    fake.stub(
        Method::GET,
        "*/late",
        Reply::ok().delay(Duration::from_secs(60)),
    );
    let c = client(&fake);
    assert!(c
        .send(Request::get("/down"))
        .await
        .unwrap_err()
        .is_connect());
    assert!(c
        .send(Request::get("/slow"))
        .await
        .unwrap_err()
        .is_timeout());
    let late = c
        .send(Request::get("/late").timeout(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert!(
        late.is_timeout(),
        "a delay past the request timeout times out: {late}"
    );
}

#[tokio::test]
async fn delayed_replies_run_concurrently_in_a_batch() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok().delay(Duration::from_millis(200)));
    let started = std::time::Instant::now();
    let results = Batch::new((0..3).map(|i| Request::get(format!("/item/{i}"))))
        .send(&client(&fake))
        .await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[derive(Debug, Deserialize, PartialEq)]
struct Charge {
    id: String,
    amount: u64,
}

#[tokio::test]
async fn typed_slots_decode_and_invalid_json_is_a_decode_failure() {
    let fake = Fake::new();
    fake.stub(
        Method::POST,
        "*/good",
        Reply::json(serde_json::json!({ "id": "ch_1", "amount": 4200 })),
    );
    fake.stub(Method::POST, "*/bad", Reply::text("<html>oops</html>"));
    let mut caught = Vec::new();
    let results = Batch::keyed([
        ("good", Request::post("/good")),
        ("bad", Request::post("/bad")),
    ])
    .json::<Charge>()
    .catch(|_, key, err| caught.push((key, err.is_decode())))
    .send(&client(&fake))
    .await;
    assert_eq!(
        results["good"].as_ref().unwrap(),
        &Charge {
            id: "ch_1".into(),
            amount: 4200
        }
    );
    let err = results["bad"].as_ref().unwrap_err();
    assert!(err.is_decode());
    let text = err.to_string();
    assert!(
        text.contains("request `bad` POST http://shop.test/api/bad"),
        "{text}"
    );
    assert!(text.contains("Charge"), "the error names the type: {text}");
    assert_eq!(caught, vec![("bad", true)]);
}

#[tokio::test]
async fn body_limit_applies_to_fake_replies() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::text("x".repeat(2048)));
    let c = Client::builder()
        .fake(&fake)
        .body_limit(1024)
        .build()
        .unwrap();
    let err = c.send(Request::get("http://big.test/")).await.unwrap_err();
    assert!(err.is_body_too_large(), "{err}");
}

#[tokio::test]
async fn base_url_escape_is_refused_before_anything_is_sent() {
    let fake = Fake::new();
    fake.allow_stray_requests();
    let c = client(&fake);
    for target in [
        "//evil.example/steal",
        "/../admin",
        "http://evil.example/api/x",
    ] {
        let err = c.send(Request::get(target)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::BaseUrlEscape, "{target}: {err}");
        assert!(err.to_string().contains("refused"), "{err}");
    }
    fake.assert_nothing_sent();
}

// Pattern shapes, in the manner of Laravel's `Http::fake`.

/// Sends `GET`s to each URL through a fake with one rule and returns which
/// ones the rule answered (the others are unmatched).
async fn answered_by(pattern: &str, urls: &[&str]) -> Vec<String> {
    let fake = Fake::new();
    fake.stub_any(pattern, Reply::ok());
    let c = fake.client();
    let mut answered = Vec::new();
    for url in urls {
        match c.send(Request::get(*url)).await {
            Ok(_) => answered.push((*url).to_owned()),
            Err(e) => assert_eq!(e.kind(), &ErrorKind::UnmatchedFake, "{url}: {e}"),
        }
    }
    answered
}

#[tokio::test]
async fn a_pattern_starting_with_a_slash_matches_the_path_on_any_host() {
    let answered = answered_by(
        "/api/payments/*",
        &[
            "http://shop.test/api/payments/charge",
            "https://pay.example:8443/api/payments/refund/7",
            "http://shop.test/api/inventory/reserve",
            "http://shop.test/v2/api/payments/charge",
        ],
    )
    .await;
    assert_eq!(
        answered,
        [
            "http://shop.test/api/payments/charge",
            "https://pay.example:8443/api/payments/refund/7"
        ]
    );
}

#[tokio::test]
async fn a_pattern_with_a_host_matches_only_that_host() {
    let urls = [
        "http://shop.test/api/orders",
        "https://shop.test/api/orders/7",
        "http://other.test/api/orders",
        "http://shop.test:8080/api/orders",
        "http://shop.test/web/orders",
    ];
    assert_eq!(
        answered_by("shop.test/api/*", &urls).await,
        [
            "http://shop.test/api/orders",
            "https://shop.test/api/orders/7"
        ]
    );
    // With a scheme, the scheme must match too.
    assert_eq!(
        answered_by("http://shop.test/*", &urls).await,
        ["http://shop.test/api/orders", "http://shop.test/web/orders"]
    );
    // A port is part of the host; a host with no path matches every path.
    assert_eq!(
        answered_by("shop.test:8080", &urls).await,
        ["http://shop.test:8080/api/orders"]
    );
}

#[tokio::test]
async fn a_lone_star_matches_every_request() {
    let urls = [
        "http://a.test/",
        "https://b.test:9/x/y?z=1",
        "http://127.0.0.1:1/",
    ];
    assert_eq!(answered_by("*", &urls).await, urls);
}

#[tokio::test]
async fn a_star_inside_a_pattern_matches_any_run_of_characters_slashes_included() {
    let answered = answered_by(
        "/api/*/charge",
        &[
            "http://shop.test/api/payments/charge",
            "http://shop.test/api/eu/payments/charge",
            "http://shop.test/api/charge",
            "http://shop.test/api/payments/refund",
        ],
    )
    .await;
    assert_eq!(
        answered,
        [
            "http://shop.test/api/payments/charge",
            "http://shop.test/api/eu/payments/charge"
        ]
    );
}

#[tokio::test]
async fn the_query_string_is_ignored_unless_the_pattern_has_a_question_mark() {
    let urls = [
        "http://shop.test/search",
        "http://shop.test/search?q=tea",
        "http://shop.test/search?q=mug",
    ];
    assert_eq!(answered_by("/search", &urls).await, urls);
    assert_eq!(
        answered_by("/search?q=tea", &urls).await,
        ["http://shop.test/search?q=tea"]
    );
    assert_eq!(
        answered_by("shop.test/search?*", &urls).await,
        [
            "http://shop.test/search?q=tea",
            "http://shop.test/search?q=mug"
        ]
    );
}

#[tokio::test]
async fn star_prefixed_whole_url_patterns_keep_working() {
    let answered = answered_by(
        "*/payments/*",
        &[
            "http://shop.test/api/payments/charge",
            "http://pay.test/payments/1",
            "http://shop.test/api/inventory/reserve",
        ],
    )
    .await;
    assert_eq!(
        answered,
        [
            "http://shop.test/api/payments/charge",
            "http://pay.test/payments/1"
        ]
    );
}

#[tokio::test]
async fn an_unmatched_request_names_the_closest_rule_of_the_same_method() {
    let fake = Fake::new();
    fake.stub(Method::GET, "/api/payments/*", Reply::ok());
    fake.stub(Method::POST, "/api/inventory/*", Reply::ok());
    fake.stub(Method::POST, "/api/payment/*", Reply::ok());
    let c = Client::builder()
        .base_url("http://shop.test")
        .fake(&fake)
        .build()
        .expect("fake client builds");
    let err = c
        .send(Request::post("/api/payments/charge"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UnmatchedFake);
    let text = err.to_string();
    // The GET rule would match the path, but the method differs: the
    // closest POST rule is one character away.
    assert!(
        text.contains(
            "closest rule: `POST /api/payment/*`, 1 character edit from `/api/payments/charge`"
        ),
        "{text}"
    );
    assert!(
        text.contains("rules: GET /api/payments/*, POST /api/inventory/*, POST /api/payment/*"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unmatched_request_with_no_rule_of_its_method_names_the_method_mismatch() {
    let fake = Fake::new();
    fake.stub(Method::GET, "/api/payments/*", Reply::ok());
    let err = fake
        .client()
        .send(Request::post("http://shop.test/api/payments/charge"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "closest rule: `GET /api/payments/*` (matches the URL, but not the method POST)"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn assert_sent_in_order_takes_the_same_pattern_shapes() {
    let fake = Fake::new();
    fake.stub_any("*", Reply::ok());
    send_two(&fake).await;
    fake.assert_sent_in_order(["POST /api/inventory/*", "shop.test/api/warehouse/notify"]);
    fake.assert_sent_in_order(["http://shop.test/*", "*"]);
    let message = failure_of(|| fake.assert_sent_in_order(["/inventory/*"]));
    assert!(message.contains("pattern #1 `/inventory/*`"), "{message}");
    let message = failure_of(|| fake.assert_sent_in_order(["other.test/*"]));
    assert!(message.contains("pattern #1"), "{message}");
}
