//! A batch's future is `Send + 'static` when what it owns is, so it can be
//! handed to `tokio::spawn` like any other task.

use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{batch, Batch, Method, Request};

#[tokio::test]
async fn a_runtime_batch_can_be_spawned() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let client = fake.client();
    let task = tokio::spawn(async move {
        Batch::keyed([
            ("a", Request::get("http://a.test/")),
            ("b", Request::get("http://b.test/")),
        ])
        .send(&client)
        .await
    });
    let results = task.await.expect("the task ran");
    assert!(results["a"].is_ok() && results["b"].is_ok());
}

#[tokio::test]
async fn a_runtime_batch_with_arms_can_be_spawned() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let client = fake.client();
    let task = tokio::spawn(async move {
        let mut seen = 0;
        let results = Batch::new([
            Request::get("http://a.test/"),
            Request::get("http://b.test/"),
        ])
        .progress(|_, _, _| seen += 1)
        .send(&client)
        .await;
        (results.len(), seen)
    });
    assert_eq!(task.await.expect("the task ran"), (2, 2));
}

#[tokio::test]
async fn a_macro_batch_can_be_spawned() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let client = fake.client();
    let task = tokio::spawn(async move {
        let mut seen = 0;
        let all = batch! {
            a: get("http://a.test/"),
            progress |_, _, _| seen += 1,
        }
        .send(&client)
        .await;
        (all.a.is_ok(), seen)
    });
    assert_eq!(task.await.expect("the task ran"), (true, 1));
}

/// An axum handler's future must be `Send`: one that awaits a batch keyed
/// by string literals is a handler (this failed to compile while `Key` had
/// to be `'static`: "implementation of `Clone` is not general enough").
async fn regions(
    axum::extract::State(client): axum::extract::State<batch_runtime::Client>,
) -> String {
    let results = Batch::keyed([
        ("eu", Request::get("http://eu.test/")),
        ("us", Request::get("http://us.test/")),
    ])
    .send(&client)
    .await;
    results
        .iter()
        .map(|(region, result)| format!("{region}={}", result.is_ok()))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn an_axum_handler_can_await_a_batch_keyed_by_string_literals() {
    use tower::ServiceExt;
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let app = axum::Router::new()
        .route("/regions", axum::routing::get(regions))
        .with_state(fake.client());
    let response = app
        .oneshot(
            axum::http::Request::get("/regions")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"eu=true,us=true");
}
