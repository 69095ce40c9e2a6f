// The user called an async fn from an arm without making the arm async.
use batch_runtime::batch;

async fn audit(_: String) {}

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        catch |_, key, _| audit(key.to_string()),
    };
}
