// The user passed a function name where an arm closure is expected.
use batch_runtime::batch;

fn log_failure() {}

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        catch log_failure,
    };
}
