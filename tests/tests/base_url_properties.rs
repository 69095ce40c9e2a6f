//! Property tests of the base-URL join, through `Client` and the fake (the
//! join itself is private): every path that is accepted lands under the
//! base URL, with its scheme, host and port, and every refusal says why
//! before anything is sent.

use batch_runtime::fake::Fake;
use batch_runtime::{Client, ErrorKind, Request, Url};
use proptest::prelude::*;
use proptest::test_runner::Config;

const BASES: &[&str] = &[
    "http://127.0.0.1:8080/api",
    "http://127.0.0.1:8080/api/v1/",
    "https://shop.test/",
    "http://[::1]:9000/a/b",
    "https://user:pw@pay.test/charge%2Fs/",
];

/// Path pieces chosen to find escapes: dot segments plain and encoded,
/// encoded and raw separators, `;` parameters, `@`, empty segments (`//`),
/// unicode and a NUL.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,8}",
        Just(".".into()),
        Just("..".into()),
        Just("%2e".into()),
        Just("%2E".into()),
        Just("%2e%2e".into()),
        Just("%2E%2e".into()),
        Just(".%2e".into()),
        Just("%2f".into()),
        Just("%2F".into()),
        Just("%5c".into()),
        Just("%5C".into()),
        Just(";".into()),
        Just(";x=..".into()),
        Just("@".into()),
        Just("a@b".into()),
        Just("\\".into()),
        Just("..\\..".into()),
        Just(String::new()),
        Just("é".into()),
        Just("日本".into()),
        Just("%00".into()),
        Just(":9090".into()),
        Just("?q=..".into()),
        Just("#..".into()),
    ]
}

/// A target: segments joined by `/`, after a prefix that is empty, a slash,
/// a double slash, a backslash, or an absolute origin (the base's or
/// another).
fn target(base: &'static str) -> impl Strategy<Value = String> {
    let origin = Url::parse(base)
        .expect("base parses")
        .origin()
        .ascii_serialization();
    let prefix = prop_oneof![
        Just(String::new()),
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just("\\".to_owned()),
        Just("/\\".to_owned()),
        Just("./".to_owned()),
        Just(format!("{origin}/")),
        Just("http://evil.test/".to_owned()),
        Just("https://127.0.0.1:8080/".to_owned()),
    ];
    (prefix, prop::collection::vec(segment(), 0..6))
        .prop_map(|(p, s)| format!("{p}{}", s.join("/")))
}

fn case() -> impl Strategy<Value = (&'static str, String)> {
    prop::sample::select(BASES).prop_flat_map(|base| (Just(base), target(base)))
}

/// The base's path with a trailing slash: accepted paths start with it.
fn base_path(base: &Url) -> String {
    format!("{}/", base.path().trim_end_matches('/'))
}

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    #[test]
    fn an_accepted_path_stays_under_the_base_and_a_refusal_says_why((base, target) in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let fake = Fake::new();
        fake.allow_stray_requests();
        let client = Client::builder().base_url(base).fake(&fake).build().expect("base builds");
        let base = Url::parse(base).expect("base parses");
        match runtime.block_on(client.send(Request::get(&target))) {
            Ok(_) => {
                let recorded = fake.recorded();
                prop_assert_eq!(recorded.len(), 1);
                let url = recorded[0].url();
                prop_assert_eq!(url.scheme(), base.scheme(), "{} -> {}", target, url);
                prop_assert_eq!(url.host_str(), base.host_str(), "{} -> {}", target, url);
                prop_assert_eq!(url.port_or_known_default(), base.port_or_known_default(), "{} -> {}", target, url);
                let prefix = base_path(&base);
                let path = format!("{}/", url.path().trim_end_matches('/'));
                prop_assert!(path.starts_with(&prefix), "{} -> {} is outside {}", target, url, prefix);
            }
            Err(err) => {
                prop_assert_eq!(fake.sent_count(), 0, "refused before sending: {}", err);
                let message = err.to_string();
                match err.kind() {
                    ErrorKind::BaseUrlEscape => prop_assert!(
                        message.contains("refused `")
                            && (message.contains("names another host")
                                || message.contains("scheme, host or port")
                                || message.contains("outside the base URL's path")),
                        "{}", message
                    ),
                    ErrorKind::InvalidUrl => prop_assert!(
                        message.contains("is not a valid") || message.contains("is not an http(s) URL"),
                        "{}", message
                    ),
                    other => prop_assert!(false, "{:?} is not a refusal kind: {}", other, message),
                }
            }
        }
    }
}

#[test]
fn the_strategy_reaches_both_outcomes() {
    // Guards the property above against a strategy that only ever takes
    // one branch: known cases of each kind go through the same client.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = Fake::new();
    fake.allow_stray_requests();
    let client = Client::builder()
        .base_url(BASES[0])
        .fake(&fake)
        .build()
        .unwrap();
    for (target, kind) in [
        ("/%2e%2e/admin", Some(ErrorKind::BaseUrlEscape)),
        ("//evil.test/x", Some(ErrorKind::BaseUrlEscape)),
        ("/a/../../x", Some(ErrorKind::BaseUrlEscape)),
        ("/日本/%2f;x=..", None),
        ("users/@/a@b", None),
    ] {
        let result = runtime.block_on(client.send(Request::get(target)));
        assert_eq!(
            result.as_ref().err().map(|e| e.kind().clone()),
            kind,
            "{target}: {result:?}"
        );
    }
    assert_eq!(fake.sent_count(), 2);
}
