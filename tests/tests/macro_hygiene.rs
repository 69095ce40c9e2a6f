//! `batch!` expands to lint-clean code that names nothing from the caller's
//! scope: it works where the prelude's names are shadowed.
#![deny(warnings, unused_qualifications, clippy::pedantic)]

use batch_runtime::fake::{Fake, Reply};
use batch_runtime::Method;

#[derive(Debug, serde::Deserialize)]
pub struct Charge {
    pub id: String,
}

mod shadowed {
    #![allow(dead_code, non_camel_case_types, clippy::pedantic)]
    //! Every name the expansion could accidentally pick up from its caller.

    pub struct Option;
    pub struct Result;
    pub struct Some;
    pub struct Ok;
    pub struct Err;
    pub struct None;
    pub struct Box;
    pub struct Vec;
    pub struct String;
    pub struct Default;
    pub struct Clone;
    pub struct Copy;
    pub struct Debug;
    pub struct Display;
    pub mod core {}
    pub mod std {}
    pub mod __private {}
    pub fn requests() {}
    pub fn request() {}
}

mod caller {
    #[allow(unused_imports)]
    use super::shadowed::*;

    use batch_runtime::Client;

    use super::Charge;

    /// A whole batch with every arm, in a scope where the prelude is
    /// shadowed.
    pub async fn run(client: &Client) -> (::std::string::String, [usize; 5]) {
        let (mut before, mut progress, mut then, mut catch, mut finally) = (0, 0, 0, 0, 0);
        let all = batch_runtime::batch! {
            payment: post("/charge") => Charge,
            warehouse: get("/notify"),

            before |b| before += b.total_requests(),
            progress |_, key, _| progress += usize::from(key == Key::Payment),
            then |_, ok| then += ok.payment.id.len(),
            catch |_, key, _| match key {
                Key::Payment | Key::Warehouse => catch += 1,
            },
            finally |b, _| finally += usize::from(b.finished()),
        }
        .send(client)
        .await;
        let id = all.payment.map(|charge| charge.id).unwrap_or_default();
        (id, [before, progress, then, catch, finally])
    }
}

#[tokio::test]
async fn expansion_is_lint_clean_with_the_prelude_shadowed() {
    let fake = Fake::new();
    fake.stub(
        Method::POST,
        "*/charge",
        Reply::json(serde_json::json!({ "id": "ch_1" })),
    );
    fake.stub(Method::GET, "*/notify", Reply::ok());
    let client = batch_runtime::Client::builder()
        .base_url("http://x.test")
        .fake(&fake)
        .build()
        .expect("client");

    let (id, counts) = caller::run(&client).await;

    assert_eq!(id, "ch_1");
    // before: 2 requests, progress: 1 (payment), then: "ch_1", no catch.
    assert_eq!(counts, [2, 1, 4, 0, 1]);
}
