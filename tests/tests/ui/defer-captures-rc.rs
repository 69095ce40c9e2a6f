// The user captures an `Rc` in deferred work: it runs after the response on
// another thread, so everything it captures must be `Send + 'static`.
use std::rc::Rc;

use batch_runtime::defer::Deferred;

fn handler(deferred: &Deferred) {
    let cart = Rc::new(vec!["tea"]);
    deferred.spawn(async move {
        println!("{cart:?}");
    });
}

fn main() {
    let _ = handler;
}
