// The user wrote a batch without any request.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        finally |_, _| {},
    };
}
