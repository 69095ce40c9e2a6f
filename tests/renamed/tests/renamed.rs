//! `batch!` reaches the runtime through `$crate`, never through the name
//! `batch_runtime`, which does not exist in this crate.

use batch::fake::{Fake, Reply};

#[tokio::test]
async fn the_macro_works_through_another_crate_name() {
    let fake = Fake::new();
    fake.stub(batch::Method::GET, "*", Reply::json(7));
    let client = fake.client();
    let mut keys = Vec::new();

    let all = batch::batch! {
        number: get("http://x.test/n") => u32,
        raw: get("http://x.test/raw"),
        progress |_, key, _| keys.push(key.as_str()),
    }
    .send(&client)
    .await;

    assert_eq!(all.number.unwrap(), 7);
    let response: batch::Response = all.raw.unwrap();
    assert_eq!(response.text(), "7");
    keys.sort_unstable();
    assert_eq!(keys, ["number", "raw"]);
}
