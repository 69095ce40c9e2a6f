// The user sends the same batch twice; `send` consumes it, so the second is refused.
use batch_runtime::{Batch, Client, Request};

async fn twice(client: Client) {
    let users = Batch::new([Request::get("http://users.test/7")]);
    let _first = users.send(&client).await;
    let _second = users.send(&client).await;
}

fn main() {
    let _ = twice;
}
