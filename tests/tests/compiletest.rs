//! Compile-fail tests: each `ui/<mistake>.rs` must fail to compile with
//! exactly the message in `ui/<mistake>.stderr`. Regenerate with
//! `TRYBUILD=overwrite cargo test -p batch-tests --test compiletest` and
//! read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
