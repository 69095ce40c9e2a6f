// The user wrote `=` instead of `:` after a key.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user = get("/users/7"),
    };
}
