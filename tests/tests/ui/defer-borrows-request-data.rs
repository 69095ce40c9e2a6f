// The user borrows request data in deferred work: the work outlives the
// handler, so it must own what it uses (`'static`).
use batch_runtime::defer::Deferred;

fn handler(deferred: &Deferred, body: String) {
    let name: &str = &body;
    deferred.spawn(async move {
        println!("{name}");
    });
}

fn main() {
    let _ = handler;
}
