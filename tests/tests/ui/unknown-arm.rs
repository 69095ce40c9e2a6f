// The user misspelled the `then` arm.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        thn |_, ok| drop(ok),
    };
}
