//! `Batch::keyed` results keep their keys: looked up by key, iterated as
//! `(key, result)` pairs in definition order. `Batch::new` keeps a `Vec`.

use std::time::Duration;

use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{Batch, Client, ErrorKind, Keyed, Method, Request};

/// `eu` answers last, `us` first, `jp` fails: completion order differs
/// from definition order.
fn regions() -> (Fake, Client) {
    let fake = Fake::new();
    fake.stub(
        Method::GET,
        "*/eu/price",
        Reply::json(120).delay(Duration::from_millis(40)),
    );
    fake.stub(Method::GET, "*/us/price", Reply::json(130));
    fake.stub(
        Method::GET,
        "*/jp/price",
        Reply::status(503).delay(Duration::from_millis(20)),
    );
    let client = Client::builder()
        .base_url("http://prices.test")
        .fake(&fake)
        .build()
        .expect("fake client");
    (fake, client)
}

fn region_requests() -> [(&'static str, Request); 3] {
    [
        ("eu", Request::get("/eu/price")),
        ("us", Request::get("/us/price")),
        ("jp", Request::get("/jp/price")),
    ]
}

async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("the batch finished within 10 s")
}

#[tokio::test]
async fn keyed_results_are_looked_up_by_key() {
    let (fake, client) = regions();

    let prices: Keyed<&str, _> =
        within(Batch::keyed(region_requests()).json::<u32>().send(&client)).await;

    assert_eq!(*prices["eu"].as_ref().expect("eu"), 120);
    assert_eq!(*prices.get("us").expect("us").as_ref().expect("us ok"), 130);
    let jp = prices["jp"].as_ref().expect_err("jp failed");
    assert_eq!(jp.status().map(|s| s.as_u16()), Some(503));
    assert!(prices.get("cn").is_none());
    assert!(!prices.contains_key("cn"));
    assert_eq!(prices.len(), 3);
    fake.assert_sent_count(3);
}

#[tokio::test]
async fn keyed_results_iterate_in_definition_order_whatever_the_completion_order() {
    let (_fake, client) = regions();
    let completed = std::cell::RefCell::new(Vec::new());

    let prices = within(
        Batch::keyed(region_requests())
            .json::<u32>()
            .progress(|_, key, _| completed.borrow_mut().push(key))
            .catch(|_, key, _| completed.borrow_mut().push(key))
            .send(&client),
    )
    .await;

    assert_eq!(
        completed.into_inner(),
        ["us", "jp", "eu"],
        "completion order"
    );
    let order: Vec<(&str, bool)> = prices.iter().map(|(k, r)| (*k, r.is_ok())).collect();
    assert_eq!(order, [("eu", true), ("us", true), ("jp", false)]);
    let keys: Vec<&str> = prices.keys().copied().collect();
    assert_eq!(keys, ["eu", "us", "jp"]);
    let owned: Vec<(&str, Option<u32>)> = prices.into_iter().map(|(k, r)| (k, r.ok())).collect();
    assert_eq!(owned, [("eu", Some(120)), ("us", Some(130)), ("jp", None)]);
}

#[tokio::test]
async fn keyed_try_send_gives_success_values_by_key_or_the_first_error() {
    let (_fake, client) = regions();

    let both = within(
        Batch::keyed([
            ("eu".to_string(), Request::get("/eu/price")),
            ("us".to_string(), Request::get("/us/price")),
        ])
        .json::<u32>()
        .try_send(&client),
    )
    .await
    .expect("eu and us succeed");
    assert_eq!(both["eu"], 120);
    assert_eq!(both["us"], 130);
    let mut both = both;
    assert_eq!(both.remove("eu"), Some(120));
    assert_eq!(both.values().copied().collect::<Vec<_>>(), [130]);

    let err = within(Batch::keyed(region_requests()).try_send(&client))
        .await
        .expect_err("jp fails");
    assert!(matches!(err.kind(), ErrorKind::Status(s) if s.as_u16() == 503));
    assert_eq!(err.key(), Some("jp"));
}

#[tokio::test]
async fn keyed_results_by_numeric_key_debug_print_as_a_map() {
    let (_fake, client) = regions();

    let results = within(
        Batch::keyed([
            (7_u64, Request::get("/us/price")),
            (3, Request::get("/eu/price")),
        ])
        .json::<u32>()
        .send(&client),
    )
    .await;

    assert_eq!(*results[&7].as_ref().expect("7"), 130);
    assert_eq!(*results[&3].as_ref().expect("3"), 120);
    assert_eq!(format!("{results:?}"), "{7: Ok(130), 3: Ok(120)}");
}

#[test]
#[should_panic(expected = "no request in this batch has the key \"cn\"")]
fn indexing_a_missing_key_names_it() {
    let prices: Keyed<&str, u32> = [("eu", 120), ("us", 130)].into_iter().collect();
    let _ = prices["cn"];
}

#[tokio::test]
async fn index_batches_return_a_vec_in_definition_order() {
    let (_fake, client) = regions();

    let prices: Vec<Result<u32, batch_runtime::Error>> = within(
        Batch::new(region_requests().map(|(_, request)| request))
            .json::<u32>()
            .send(&client),
    )
    .await;

    assert_eq!(prices.len(), 3);
    assert_eq!(*prices[0].as_ref().expect("eu"), 120);
    assert_eq!(*prices[1].as_ref().expect("us"), 130);
    assert!(prices[2].is_err());
}
