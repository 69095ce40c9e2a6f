//! The fake's URL glob (`RecordedRequest::matches`): never panics, `*`
//! matches every request, and a URL without `*` matches itself.
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
    let runtime = tokio::runtime::Builder::new_current_thread()
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
    if !own.contains('*') {
        assert!(request.matches(own), "{own} must match itself");
    }
});
