// The user tries to use the results of a deferred batch in the response:
// `defer` returns a registration, not the results, so this cannot compile.
use batch_runtime::defer::{self, DeferRuntime};
use batch_runtime::{Batch, Client, Request};

async fn handler(runtime: DeferRuntime, client: Client) -> usize {
    defer::scope(&runtime, |deferred| async move {
        let results = Batch::new([Request::get("http://users.test/1")])
            .defer(&client, &deferred)
            .await;
        results.len()
    })
    .await
}

fn main() {
    let _ = handler;
}
