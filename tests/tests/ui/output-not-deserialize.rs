// The user asked to decode into a type that does not implement Deserialize.
use batch_runtime::batch;

struct User {
    name: String,
}

async fn run(client: &batch_runtime::Client) {
    let all = batch! {
        user: get("/users/7") => User,
    }
    .send(client)
    .await;
    if let Ok(user) = all.user {
        println!("{}", user.name);
    }
}

fn main() {
    let _ = run;
}
