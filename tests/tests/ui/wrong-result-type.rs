// The user treated a typed result as a `String`.
use batch_runtime::batch;

#[derive(serde::Deserialize)]
struct Charge {
    id: String,
}

fn main() {
    let _batch = batch! {
        payment: post("/api/payments/charge") => Charge,
        then |_, ok| {
            let confirmation: &String = &ok.payment;
            println!("{confirmation}");
        },
    };
}
