// The user left out the batch-state parameter of `catch` and `progress`.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        progress |key, response| println!("{key}: {}", response.status()),
        catch |key, error| println!("{key}: {error}"),
    };
}
