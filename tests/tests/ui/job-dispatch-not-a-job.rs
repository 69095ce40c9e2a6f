// The user dispatches a plain struct that does not implement `Job`.
use std::sync::Arc;

use batch_runtime::jobs::Jobs;

struct SendNewsletter {
    list: String,
}

async fn handler(jobs: Jobs<()>) {
    let _ = jobs
        .dispatch(SendNewsletter {
            list: "all".to_owned(),
        })
        .await;
}

fn main() {
    let _ = handler(Jobs::builder(Arc::new(())).build());
}
