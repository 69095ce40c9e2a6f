// The user gave the `catch` arm twice.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        catch |_, key, _| println!("{key} failed"),
        catch |_, _, error| println!("{error}"),
    };
}
