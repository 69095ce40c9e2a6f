// The user made four mistakes at once; each is reported, in one build.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        user: get("/users/8"),
        befor |b| println!("{}", b.total_requests()),
        then |ok| drop(ok),
        finally |_, all| println!("{}", all.usr.is_ok()),
    };
}
