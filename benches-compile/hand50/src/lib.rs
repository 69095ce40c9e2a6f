//! The same 50 batches by hand against the runtime API, for compile-time measurement.
use batch_runtime::{Batch, Client, Request};

#[derive(serde::Deserialize)]
pub struct Reservation {
    pub id: u64,
}

#[derive(serde::Deserialize)]
pub struct Charge {
    pub confirmation: String,
}


pub async fn checkout_0(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/0/reserve").json(&order)),
        ("payment", Request::post("/api/payments/0/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/0/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_1(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/1/reserve").json(&order)),
        ("payment", Request::post("/api/payments/1/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/1/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_2(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/2/reserve").json(&order)),
        ("payment", Request::post("/api/payments/2/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/2/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_3(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/3/reserve").json(&order)),
        ("payment", Request::post("/api/payments/3/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/3/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_4(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/4/reserve").json(&order)),
        ("payment", Request::post("/api/payments/4/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/4/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_5(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/5/reserve").json(&order)),
        ("payment", Request::post("/api/payments/5/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/5/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_6(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/6/reserve").json(&order)),
        ("payment", Request::post("/api/payments/6/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/6/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_7(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/7/reserve").json(&order)),
        ("payment", Request::post("/api/payments/7/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/7/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_8(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/8/reserve").json(&order)),
        ("payment", Request::post("/api/payments/8/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/8/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_9(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/9/reserve").json(&order)),
        ("payment", Request::post("/api/payments/9/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/9/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_10(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/10/reserve").json(&order)),
        ("payment", Request::post("/api/payments/10/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/10/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_11(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/11/reserve").json(&order)),
        ("payment", Request::post("/api/payments/11/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/11/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_12(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/12/reserve").json(&order)),
        ("payment", Request::post("/api/payments/12/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/12/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_13(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/13/reserve").json(&order)),
        ("payment", Request::post("/api/payments/13/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/13/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_14(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/14/reserve").json(&order)),
        ("payment", Request::post("/api/payments/14/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/14/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_15(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/15/reserve").json(&order)),
        ("payment", Request::post("/api/payments/15/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/15/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_16(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/16/reserve").json(&order)),
        ("payment", Request::post("/api/payments/16/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/16/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_17(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/17/reserve").json(&order)),
        ("payment", Request::post("/api/payments/17/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/17/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_18(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/18/reserve").json(&order)),
        ("payment", Request::post("/api/payments/18/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/18/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_19(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/19/reserve").json(&order)),
        ("payment", Request::post("/api/payments/19/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/19/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_20(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/20/reserve").json(&order)),
        ("payment", Request::post("/api/payments/20/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/20/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_21(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/21/reserve").json(&order)),
        ("payment", Request::post("/api/payments/21/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/21/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_22(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/22/reserve").json(&order)),
        ("payment", Request::post("/api/payments/22/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/22/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_23(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/23/reserve").json(&order)),
        ("payment", Request::post("/api/payments/23/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/23/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_24(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/24/reserve").json(&order)),
        ("payment", Request::post("/api/payments/24/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/24/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_25(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/25/reserve").json(&order)),
        ("payment", Request::post("/api/payments/25/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/25/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_26(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/26/reserve").json(&order)),
        ("payment", Request::post("/api/payments/26/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/26/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_27(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/27/reserve").json(&order)),
        ("payment", Request::post("/api/payments/27/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/27/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_28(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/28/reserve").json(&order)),
        ("payment", Request::post("/api/payments/28/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/28/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_29(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/29/reserve").json(&order)),
        ("payment", Request::post("/api/payments/29/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/29/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_30(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/30/reserve").json(&order)),
        ("payment", Request::post("/api/payments/30/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/30/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_31(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/31/reserve").json(&order)),
        ("payment", Request::post("/api/payments/31/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/31/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_32(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/32/reserve").json(&order)),
        ("payment", Request::post("/api/payments/32/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/32/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_33(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/33/reserve").json(&order)),
        ("payment", Request::post("/api/payments/33/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/33/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_34(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/34/reserve").json(&order)),
        ("payment", Request::post("/api/payments/34/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/34/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_35(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/35/reserve").json(&order)),
        ("payment", Request::post("/api/payments/35/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/35/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_36(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/36/reserve").json(&order)),
        ("payment", Request::post("/api/payments/36/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/36/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_37(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/37/reserve").json(&order)),
        ("payment", Request::post("/api/payments/37/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/37/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_38(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/38/reserve").json(&order)),
        ("payment", Request::post("/api/payments/38/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/38/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_39(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/39/reserve").json(&order)),
        ("payment", Request::post("/api/payments/39/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/39/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_40(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/40/reserve").json(&order)),
        ("payment", Request::post("/api/payments/40/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/40/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_41(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/41/reserve").json(&order)),
        ("payment", Request::post("/api/payments/41/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/41/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_42(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/42/reserve").json(&order)),
        ("payment", Request::post("/api/payments/42/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/42/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_43(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/43/reserve").json(&order)),
        ("payment", Request::post("/api/payments/43/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/43/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_44(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/44/reserve").json(&order)),
        ("payment", Request::post("/api/payments/44/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/44/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_45(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/45/reserve").json(&order)),
        ("payment", Request::post("/api/payments/45/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/45/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_46(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/46/reserve").json(&order)),
        ("payment", Request::post("/api/payments/46/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/46/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_47(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/47/reserve").json(&order)),
        ("payment", Request::post("/api/payments/47/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/47/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_48(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/48/reserve").json(&order)),
        ("payment", Request::post("/api/payments/48/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/48/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}

pub async fn checkout_49(client: &Client, order: u64) -> Option<String> {
    let mut failures = 0;
    let all = Batch::keyed([
        ("inventory", Request::post("/api/inventory/49/reserve").json(&order)),
        ("payment", Request::post("/api/payments/49/charge").json(&order)),
        ("warehouse", Request::post("/api/warehouse/49/notify").json(&order)),
    ])
    .progress(|b, key, res| println!("{key} {} {}", res.status(), b.pending_requests()))
    .catch(|_, key, err| match key {
        "inventory" | "payment" => failures += 1,
        _ => println!("{err}"),
    })
    .finally(|b, _| println!("{}", b.failed_requests()))
    .send(client)
    .await;
    let mut all = all.into_values();
    let reserved = all.next()?.ok()?.json::<Reservation>().ok()?.id;
    let charge = all.next()?.ok()?.json::<Charge>().ok()?;
    all.next()?.ok()?;
    Some(format!("{reserved} {} {failures}", charge.confirmation))
}
