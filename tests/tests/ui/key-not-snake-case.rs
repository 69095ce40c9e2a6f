// The user wrote a key in CamelCase.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        UserProfile: get("/users/7"),
    };
}
