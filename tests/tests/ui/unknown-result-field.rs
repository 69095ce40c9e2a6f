// The user misspelled a key when reading the results in `then`.
use batch_runtime::batch;

#[derive(serde::Deserialize)]
struct Charge {
    id: String,
}

fn main() {
    let _batch = batch! {
        inventory: post("/api/inventory/reserve"),
        payment: post("/api/payments/charge") => Charge,
        then |_, ok| println!("{}", ok.paymnt.id),
    };
}
