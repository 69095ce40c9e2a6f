// The user's job holds an `Rc`: a job outlives the handler and may run on
// another thread, so it must be `Send + Sync + 'static`.
use std::marker::PhantomData;
use std::rc::Rc;

use batch_runtime::jobs::{Job, JobError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct RecordDelivery {
    order: u64,
    cache: PhantomData<Rc<String>>,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = ();

    async fn handle(&self, _: &()) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
