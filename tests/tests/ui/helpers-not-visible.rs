// The user reached for the expansion's internals: the slots type and the
// request list are not in scope, and neither is `Key` outside the macro.
use batch_runtime::batch;

fn main() {
    let _batch = batch! {
        user: get("/users/7"),
        then |_, _| {
            let _slots: Option<Slots> = None;
            let _requests = requests.len();
        },
    };
    let _key = Key::User;
    let _verb = post("/users");
}
