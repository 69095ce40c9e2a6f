// The user's `catch` forgot one of the keys.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        inventory: post("/api/inventory/reserve"),
        payment: post("/api/payments/charge"),
        warehouse: post("/api/warehouse/notify"),
        catch |_, key, _| match key {
            Key::Inventory => println!("release the reservation"),
            Key::Payment => println!("refund"),
        },
    };
}
