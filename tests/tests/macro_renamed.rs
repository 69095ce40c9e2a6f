//! `batch!` reaches the runtime through `$crate`, never through the name
//! `batch_runtime`, so it works under another name.
//!
//! Cargo refuses one package depending on the same crate under two names,
//! so this test reaches it through an alias; a true Cargo.toml rename is
//! built by `benches-compile/macro50` (`batch = { package = "batch-runtime" }`),
//! and batch-macros' unit tests check that the expansion only uses the path
//! it is given.

use batch_runtime as batch_renamed;

use batch_renamed::fake::{Fake, Reply};

#[tokio::test]
async fn the_macro_works_through_another_crate_name() {
    let fake = Fake::new();
    fake.stub(batch_renamed::Method::GET, "*", Reply::json(7));
    let client = fake.client();
    let mut keys = Vec::new();

    let all = batch_renamed::batch! {
        number: get("http://x.test/n") => u32,
        raw: get("http://x.test/raw"),
        progress |_, key, _| keys.push(key.as_str()),
    }
    .send(&client)
    .await;

    assert_eq!(all.number.unwrap(), 7);
    let response: batch_renamed::Response = all.raw.unwrap();
    assert_eq!(response.text(), "7");
    keys.sort_unstable();
    assert_eq!(keys, ["number", "raw"]);
}
