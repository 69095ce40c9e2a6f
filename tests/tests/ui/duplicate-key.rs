// The user gave two requests the same key.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        orders: get("/users/7/orders"),
        user: get("/users/8"),
    };
}
