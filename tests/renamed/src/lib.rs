//! Depends on `batch-runtime` only under the name `batch`: the tests here
//! compile only if `batch!` reaches the runtime through `$crate`.
