// The user reads a result of a deferred batch: `defer` returns a
// registration, not the results (they do not exist until after the response).
use batch_runtime::batch;
use batch_runtime::defer::Deferred;
use batch_runtime::Client;

fn handler(client: &Client, deferred: &Deferred) -> bool {
    let deferred_batch = batch! {
        user: get("/users/7"),
    }
    .defer(client, deferred);
    deferred_batch.user.is_ok()
}

fn main() {
    let _ = handler;
}
