// The user tries to use a deferred job's outcome in the response: the
// dispatch returns the job's id, not its outcome, so this cannot compile.
use batch_runtime::defer::Deferred;
use batch_runtime::jobs::{Job, JobError, Jobs};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct RecordDelivery {
    order: u64,
}

impl Job for RecordDelivery {
    const NAME: &'static str = "record-delivery";
    type Context = ();

    async fn handle(&self, _: &()) -> Result<(), JobError> {
        Ok(())
    }
}

async fn handler(jobs: Jobs<()>, deferred: Deferred) -> &'static str {
    let outcome: Result<(), JobError> = jobs
        .dispatch(RecordDelivery { order: 17 })
        .after(&deferred)
        .await;
    if outcome.is_ok() {
        "delivered"
    } else {
        "failed"
    }
}

fn main() {
    let _ = handler;
}
