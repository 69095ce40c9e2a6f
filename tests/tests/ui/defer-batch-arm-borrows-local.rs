// The user's deferred batch has an arm that borrows a local: the batch runs
// after the handler has returned, so its arms must own what they use (`move`).
use batch_runtime::batch;
use batch_runtime::defer::Deferred;
use batch_runtime::Client;

fn handler(client: &Client, deferred: &Deferred) {
    let order_id = String::from("o-17");
    batch! {
        warehouse: post("/warehouse/notify"),
        catch |_, key, err| eprintln!("order {order_id}: {key} failed: {err}"),
    }
    .defer(client, deferred);
}

fn main() {
    let _ = handler;
}
