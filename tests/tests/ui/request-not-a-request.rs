// The user gave a URL string where a request is expected.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: "/users/7",
        orders: get("/users/7/orders"),
    };
}
