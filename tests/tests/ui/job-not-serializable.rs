// The user implements `Job` for a struct that serde cannot serialize: a
// job crosses into a child process (or a store) as JSON.
use batch_runtime::jobs::{Job, JobError};

struct RenderInvoice {
    order: u64,
}

impl Job for RenderInvoice {
    const NAME: &'static str = "render-invoice";
    type Context = ();

    async fn handle(&self, _: &()) -> Result<(), JobError> {
        let _ = self.order;
        Ok(())
    }
}

fn main() {}
