//! Bad input gets a clear error, before any I/O when it can be.

use batch_runtime::{Batch, Client, ErrorKind, Request};
use batch_tests::Upstream;
use serde::Deserialize;

fn client(upstream: &Upstream) -> Client {
    Client::builder()
        .base_url(upstream.base_url())
        .build()
        .unwrap()
}

#[tokio::test]
async fn status_error_keeps_the_response_and_its_body() {
    let upstream = Upstream::start().await;
    let results = Batch::keyed([
        ("missing", Request::get("/status/404")),
        ("broken", Request::get("/status/502")),
    ])
    .send(&client(&upstream))
    .await;
    for (result, code) in results.values().zip([404u16, 502]) {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_status());
        assert_eq!(err.status().unwrap().as_u16(), code);
        let response = err.response().expect("response kept");
        assert_eq!(response.text(), format!("status {code}"));
        assert!(
            err.to_string().contains(&format!("server answered {code}")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let upstream = Upstream::start().await;
    let small = Client::builder()
        .base_url(upstream.base_url())
        .body_limit(1_000)
        .build()
        .unwrap();
    let results = Batch::new([
        Request::get("/bytes/1000"),
        Request::get("/bytes/1001"),
        Request::get("/bytes/200000"),
    ])
    .send(&small)
    .await;
    assert_eq!(results[0].as_ref().unwrap().bytes().len(), 1000);
    for result in &results[1..] {
        let err = result.as_ref().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::BodyTooLarge { limit: 1_000 });
        assert!(
            err.to_string().contains("body_limit"),
            "says how to fix: {err}"
        );
    }
    assert_eq!(batch_runtime::DEFAULT_BODY_LIMIT, 10 * 1024 * 1024);
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Reservation {
    id: u64,
}

#[tokio::test]
async fn invalid_json_for_a_typed_slot_is_a_decode_failure() {
    let upstream = Upstream::start().await;
    let results = Batch::keyed([
        ("reservation", Request::get("/invalid-json")),
        ("shape", Request::get("/json/1")),
    ])
    .json::<Reservation>()
    .send(&client(&upstream))
    .await;
    for result in results.values() {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_decode(), "{err}");
        assert!(err.to_string().contains("Reservation"), "{err}");
        assert!(err.to_string().contains(&upstream.base_url()), "{err}");
    }
}

#[tokio::test]
async fn malformed_urls_are_refused_before_any_io() {
    let no_base = Client::new();
    for (target, needle) in [
        ("http://", "not a valid URL"),
        ("ftp://files.test/x", "not an http(s) URL"),
        ("/relative", "no base URL"),
        ("not a url", "no base URL"),
    ] {
        let err = no_base.send(Request::get(target)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidUrl, "{target}: {err}");
        assert!(err.to_string().contains(needle), "{target}: {err}");
    }
    let err = Client::builder().base_url("nope").build().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidUrl);
}

#[tokio::test]
async fn base_url_escape_is_refused_before_io_against_a_real_server() {
    let upstream = Upstream::start().await;
    let c = Client::builder()
        .base_url(upstream.url("/api"))
        .build()
        .unwrap();
    let other = Upstream::start().await;
    for target in [
        format!(
            "//{}/json/1",
            other.base_url().trim_start_matches("http://")
        ),
        "/../json/1".into(),
        other.url("/json/1"),
    ] {
        let err = c.send(Request::get(&target)).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::BaseUrlEscape, "{target}: {err}");
    }
    assert_eq!(
        upstream.hits() + other.hits(),
        0,
        "nothing reached either server"
    );
}

#[tokio::test]
async fn unserializable_values_and_bad_headers_are_builder_errors() {
    let upstream = Upstream::start().await;
    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 2);
    let results = Batch::keyed([
        ("body", Request::post("/echo").json(&map)),
        (
            "header",
            Request::get("/echo").header("x-bad", "line\nbreak"),
        ),
    ])
    .send(&client(&upstream))
    .await;
    for result in results.values() {
        assert!(result.as_ref().unwrap_err().is_builder());
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn refusals_before_io_print_no_secret_from_the_target() {
    let based = Client::builder()
        .base_url("http://api.test/v1")
        .build()
        .unwrap();
    for (client, target) in [
        (Client::new(), "/relative?access_token=tok_1"),
        (Client::new(), "ftp://ghp_TOKEN2@files.test/x"),
        (based.clone(), "//evil.test/x?api_key=key_3"),
        (based.clone(), "http://sk_live_KEY4:@evil.test/x"),
        (based, "/../admin?signature=sig_5"),
    ] {
        let err = client.send(Request::get(target)).await.unwrap_err();
        assert!(err.is_builder(), "{target}: {err}");
        for text in [err.to_string(), format!("{err:?}")] {
            for secret in ["tok_1", "ghp_TOKEN2", "key_3", "sk_live_KEY4", "sig_5"] {
                assert!(!text.contains(secret), "`{secret}` leaked: {text}");
            }
        }
    }
    let err = Client::builder()
        .base_url("http://ghp_TOKEN6@api.test/v1?key=key_7")
        .build()
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        !shown.contains("ghp_TOKEN6") && !shown.contains("key_7"),
        "{shown}"
    );
    assert!(shown.contains("http://***@api.test/v1?key=***"), "{shown}");
}

mod redaction_properties {
    use batch_runtime::fake::Fake;
    use batch_runtime::Request;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    /// Where a token can sit in a URL: the user name, the password, or the
    /// value of a secret query parameter (any case, in the query or added
    /// with `Request::query`).
    fn url_with_token() -> impl Strategy<Value = (String, String, bool)> {
        let token = "tkn[A-Za-z0-9_-]{6,24}";
        let param = prop::sample::select(vec![
            "access_token",
            "ACCESS_TOKEN",
            "api_key",
            "apikey",
            "Token",
            "key",
            "signature",
            "sig",
            "password",
            "secret",
            "client_secret",
            "code",
            "github_token",
            "private_key",
        ]);
        (token, param, 0..5usize, any::<bool>()).prop_map(|(token, param, place, via_query)| {
            let url = match place {
                0 => format!("http://{token}@api.test/x"),
                1 => format!("http://{token}:@api.test/x"),
                2 => format!("http://user:{token}@api.test/x"),
                3 => format!("http://api.test/x?page=1&{param}={token}"),
                _ => format!("http://api.test/cb#state=s&{param}={token}"),
            };
            (url, token, via_query && place < 3)
        })
    }

    proptest! {
        #![proptest_config(Config { cases: 128, failure_persistence: None, ..Config::default() })]

        #[test]
        fn a_token_anywhere_in_the_url_is_never_printed((url, token, also_query) in url_with_token()) {
            let mut request = Request::get(&url);
            if also_query {
                request = request.query(&[("access_token", token.as_str())]);
            }
            let shown_request = format!("{request:?}");
            // A fake with no rule refuses the request with an error naming it.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let err = runtime.block_on(Fake::new().client().send(request)).unwrap_err();
            for text in [shown_request, err.to_string(), format!("{err:?}"), err.url().unwrap_or("").to_owned()] {
                prop_assert!(!text.contains(&token), "`{}` printed in: {}", token, text);
            }
            prop_assert!(err.url().is_some_and(|u| u.contains("api.test")), "{}", err);
        }
    }
}
