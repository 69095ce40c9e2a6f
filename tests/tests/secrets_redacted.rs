//! Secrets never reach Debug output, error messages or traces.
//!
//! Alone in its test binary: tracing caches per-callsite interest globally,
//! so a scoped subscriber shares poorly with tests running on other threads.

use std::io::Write;
use std::sync::{Arc, Mutex};

use batch_runtime::{Batch, Client, Request};
use batch_tests::Upstream;

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn secrets_are_absent_from_debug_display_and_traces() {
    let upstream = Upstream::start().await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret_base = upstream
        .base_url()
        .replace("http://", "http://admin:hunter2@");
    let client = Client::builder()
        .base_url(&secret_base)
        .header("authorization", "Bearer client-s3cret")
        .header("cookie", "session=cookie-s3cret")
        .build()
        .unwrap();
    let request = Request::get("/status/500")
        .bearer_auth("request-s3cret")
        .header("proxy-authorization", "Basic proxy-s3cret");
    let shown_request = format!("{request:?}");
    let results = Batch::keyed([("leaky", request), ("echo", Request::get("/echo"))])
        .send(&client)
        .await;
    let err = results["leaky"].as_ref().unwrap_err();

    // Tokens in the URL's user name (with and without an empty password)
    // and in well-known query parameters.
    let token_user = Client::builder()
        .base_url(
            upstream
                .base_url()
                .replace("http://", "http://ghp_TOKEN123@"),
        )
        .build()
        .unwrap();
    let token_user_request = Request::get("/status/500?access_token=tok_q1&page=2")
        .query(&[("api_key", "k_q2"), ("sort", "asc")]);
    let shown_token_request = format!("{token_user_request:?}");
    let token_err = token_user.send(token_user_request).await.unwrap_err();
    let key_url = upstream
        .url("/status/404?signature=sig_q3&Client_Secret=cs_q5")
        .replace("http://", "http://sk_live_KEY9:@");
    let key_request = Request::get(&key_url);
    let shown_key_request = format!("{key_request:?}");
    let key_err = Client::new().send(key_request).await.unwrap_err();
    let refused = Client::new()
        .send(Request::get(
            "http://sk_live_KEY9:@127.0.0.1:1/x?token=tok_q4#access_token=frag_q6",
        ))
        .await
        .unwrap_err();
    let mut more = Vec::new();
    for err in [&token_err, &key_err, &refused] {
        more.push(err.to_string());
        more.push(format!("{err:?}"));
        more.push(err.url().expect("the error names its URL").to_owned());
    }
    more.extend([
        shown_token_request,
        shown_key_request,
        format!("{token_user:?}"),
    ]);
    // Printed with the secrets in place of their values, the rest intact.
    assert!(
        token_err.url().unwrap().contains("access_token=***&page=2"),
        "{token_err}"
    );
    assert!(
        token_err.url().unwrap().contains("api_key=***&sort=asc"),
        "{token_err}"
    );
    assert!(
        token_err.url().unwrap().starts_with("http://***@127.0.0.1"),
        "{token_err}"
    );

    let texts = [
        shown_request,
        format!("{client:?}"),
        format!("{err:?}"),
        err.to_string(),
        format!("{results:?}"),
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap(),
    ];
    for text in texts.iter().chain(&more) {
        for secret in [
            "ghp_TOKEN123",
            "sk_live_KEY9",
            "tok_q1",
            "k_q2",
            "sig_q3",
            "tok_q4",
            "cs_q5",
            "frag_q6",
            "admin",
            "hunter2",
            "client-s3cret",
            "cookie-s3cret",
            "request-s3cret",
            "proxy-s3cret",
        ] {
            assert!(!text.contains(secret), "`{secret}` leaked into: {text}");
        }
    }
    // The trace is there, with the redacted URL, the key and the status.
    let trace = &texts[5];
    assert!(trace.contains("batch.request"), "{trace}");
    assert!(trace.contains("key=leaky"), "{trace}");
    assert!(trace.contains("status=500"), "{trace}");
    assert!(trace.contains("http://***@127.0.0.1"), "{trace}");
    assert!(trace.contains("access_token=***&page=2"), "{trace}");
    // The secrets were still sent: redaction is for output only.
    let echo = results["echo"]
        .as_ref()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(echo["headers"]["authorization"], "Bearer client-s3cret");
}
