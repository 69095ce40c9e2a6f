// The user used an arm name from another library, far from every real arm.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        on_error |_, _, _| {},
    };
}
