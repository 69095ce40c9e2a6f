// The user's async arm keeps a borrow of captured state inside its future.
use batch_runtime::batch;

async fn audit(_: &str) {}

fn main() {
    let mut failed = Vec::new();
    let _batch = batch! {
        user: get("/users/7"),
        catch async |_, key, _| {
            audit(key.as_str()).await;
            failed.push(key);
        },
    };
}
