// The user returned an `async` block from an arm instead of writing an async closure.
use batch_runtime::batch;

async fn audit(_: &str) {}

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        catch |_, key, _| async move { audit(key.as_str()).await },
    };
}
