// The user captures an `Rc` in an arm of a deferred batch: the batch runs
// after the response on another thread, so its arms must be `Send + 'static`.
use std::rc::Rc;

use batch_runtime::defer::Deferred;
use batch_runtime::{Batch, Client, Request};

fn handler(client: &Client, deferred: &Deferred) {
    let seen = Rc::new(std::cell::Cell::new(0));
    Batch::keyed([("crm", Request::post("http://crm.test/event"))])
        .progress(move |_, _, _| seen.set(seen.get() + 1))
        .defer(client, deferred);
}

fn main() {
    let _ = handler;
}
