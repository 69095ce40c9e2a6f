//! `batch!` reserves no names in what the caller writes: a user type named
//! like anything the expansion generates (`Key`, `Succeeded`, `Results`,
//! `Slots`) is the user's type in `=> T` and in the request expressions.
//! Inside the arms, `Key` is the batch's key enum, as documented.

use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{batch, Client, Method};
use serde::{Deserialize, Serialize};

fn client(fake: &Fake) -> Client {
    Client::builder()
        .base_url("http://shop.test")
        .fake(fake)
        .build()
        .expect("fake client")
}

/// A fake whose `/echo` answers with the JSON body it was sent.
fn echo() -> Fake {
    let fake = Fake::new();
    fake.stub_with(Method::POST, "*/echo", |request| {
        let body: serde_json::Value = request.json().unwrap_or(serde_json::Value::Null);
        Reply::json(body)
    });
    fake
}

mod named_results {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Results {
        pub id: String,
    }
}

mod named_succeeded {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Succeeded {
        pub id: String,
    }
}

mod named_key {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Key {
        pub id: String,
    }
}

mod named_slots {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Slots {
        pub id: String,
    }
}

#[tokio::test]
async fn a_user_type_named_results_is_the_users_type() {
    use named_results::Results;
    let fake = echo();
    let mut then_saw = String::new();
    let mut built_in_finally = None;

    let all = batch! {
        payment: post("/echo").json(&Results { id: "ch_1".into() }) => Results,
        then |_, ok| then_saw = ok.payment.id.clone(),
        // The arms may name the user's `Results` too.
        finally |_, all| {
            built_in_finally = all.payment.as_ref().ok().map(|r| Results { id: r.id.to_uppercase() });
        },
    }
    .send(&client(&fake))
    .await;

    assert_eq!(all.payment.expect("decoded"), Results { id: "ch_1".into() });
    assert_eq!(then_saw, "ch_1");
    assert_eq!(built_in_finally, Some(Results { id: "CH_1".into() }));
}

#[tokio::test]
async fn a_user_type_named_succeeded_is_the_users_type() {
    use named_succeeded::Succeeded;
    let fake = echo();

    let ok = batch! {
        payment: post("/echo").json(&Succeeded { id: "ch_2".into() }) => Succeeded,
        warehouse: post("/echo").json(&1),
    }
    .try_send(&client(&fake))
    .await
    .expect("both succeed");

    assert_eq!(ok.payment, Succeeded { id: "ch_2".into() });
    assert_eq!(ok.warehouse.status().as_u16(), 200);
}

#[tokio::test]
async fn a_user_type_named_key_is_the_users_type_outside_the_arms() {
    use named_key::Key as UserKey;
    #[allow(unused_imports)]
    use named_key::Key;
    let fake = echo();
    let mut progressed = Vec::new();

    let all = batch! {
        payment: post("/echo").json(&Key { id: "k_1".into() }) => Key,
        inventory: post("/echo").json(&Key { id: "k_2".into() }) => Key,
        // In the arms, `Key` is the batch's key enum.
        progress |_, key, _| progressed.push(match key {
            Key::Payment => "payment",
            Key::Inventory => "inventory",
        }),
    }
    .send(&client(&fake))
    .await;

    assert_eq!(all.payment.expect("payment"), UserKey { id: "k_1".into() });
    assert_eq!(
        all.inventory.expect("inventory"),
        UserKey { id: "k_2".into() }
    );
    progressed.sort_unstable();
    assert_eq!(progressed, ["inventory", "payment"]);
}

#[tokio::test]
async fn a_user_type_named_slots_is_the_users_type() {
    use named_slots::Slots;
    let fake = echo();

    let all = batch! {
        inventory: post("/echo").json(&Slots { id: "s_1".into() }) => Slots,
    }
    .send(&client(&fake))
    .await;

    assert_eq!(all.inventory.expect("decoded"), Slots { id: "s_1".into() });
}

/// Every generated name at once, and a type generic over one of them.
#[tokio::test]
async fn user_types_named_like_every_generated_item_coexist() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Results {
        n: u32,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Succeeded {
        n: u32,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Slots {
        n: u32,
    }
    let fake = echo();

    let ok = batch! {
        a: post("/echo").json(&Results { n: 1 }) => Results,
        b: post("/echo").json(&Succeeded { n: 2 }) => Succeeded,
        c: post("/echo").json(&Slots { n: 3 }) => Slots,
        d: post("/echo").json(&vec![Results { n: 4 }]) => Vec<Results>,
    }
    .try_send(&client(&fake))
    .await
    .expect("every request succeeds");

    assert_eq!(ok.a, Results { n: 1 });
    assert_eq!(ok.b, Succeeded { n: 2 });
    assert_eq!(ok.c, Slots { n: 3 });
    assert_eq!(ok.d, [Results { n: 4 }]);
}
