// The user captures an `Rc` in an arm of a deferred `batch!`: deferred work
// runs after the response on another thread, so the arms must be
// `Send + 'static`; the error names the `Rc` and points at the arm.
use std::rc::Rc;

use batch_runtime::batch;
use batch_runtime::defer::Deferred;
use batch_runtime::Client;

fn handler(client: &Client, deferred: &Deferred) {
    let failures = Rc::new(std::cell::Cell::new(0));
    batch! {
        warehouse: post("/warehouse/notify"),
        catch move |_, _, _| failures.set(failures.get() + 1),
    }
    .defer(client, deferred);
}

fn main() {
    let _ = handler;
}
