//! The base-URL join: whatever the path, an accepted request lands under
//! the base URL (same scheme, host, port, path prefix) and a refused one
//! is `BaseUrlEscape` or `InvalidUrl`, with nothing sent.
//!
//! Input: the first byte picks a base URL, the rest is the path (lossy
//! UTF-8).
#![no_main]

use batch_runtime::fake::Fake;
use batch_runtime::{Client, ErrorKind, Request, Url};
use libfuzzer_sys::fuzz_target;

const BASES: &[&str] = &[
    "http://127.0.0.1:8080/api",
    "http://127.0.0.1:8080/api/v1/",
    "https://shop.test/",
    "http://[::1]:9000/a/b",
    "https://user:pw@pay.test/charge%2Fs/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let base = BASES[usize::from(pick) % BASES.len()];
    let target = String::from_utf8_lossy(rest);
    // The fake's replies run under tokio's timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let fake = Fake::new();
    fake.allow_stray_requests();
    let client = Client::builder()
        .base_url(base)
        .fake(&fake)
        .build()
        .expect("base builds");
    let base = Url::parse(base).expect("base parses");
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    match runtime.block_on(client.send(Request::get(target.as_ref()))) {
        Ok(_) => {
            let recorded = fake.recorded();
            assert_eq!(recorded.len(), 1);
            let url = recorded[0].url();
            assert_eq!(url.scheme(), base.scheme(), "{target} -> {url}");
            assert_eq!(url.host_str(), base.host_str(), "{target} -> {url}");
            assert_eq!(
                url.port_or_known_default(),
                base.port_or_known_default(),
                "{target} -> {url}"
            );
            let path = format!("{}/", url.path().trim_end_matches('/'));
            assert!(
                path.starts_with(&prefix),
                "{target} -> {url} is outside {prefix}"
            );
        }
        Err(err) => {
            assert_eq!(fake.sent_count(), 0, "refused after sending: {err}");
            assert!(
                matches!(err.kind(), ErrorKind::BaseUrlEscape | ErrorKind::InvalidUrl),
                "{target}: {err}"
            );
        }
    }
});
