#!/bin/sh
# Compile cost of 50 `batch!` invocations vs the same 50 batches by hand.
# Per crate, after one warm-up build, 3 runs each of:
#   touch:  `touch src/lib.rs; cargo build` (incremental; proc macros re-run)
#   clean:  `cargo clean -p <crate>; cargo build` (the crate from scratch,
#           dependencies already built)
# Not part of CI. Uses its own target dir so other builds' locks do not
# distort the figures.
set -e
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target/compile-bench}"
timed() {
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
for crate in macro50 hand50; do
  cp ../Cargo.lock "$crate/Cargo.lock"
  (cd "$crate" && cargo build -q)
  for run in 1 2 3; do
    touch "$crate/src/lib.rs"
    echo "$crate touch run $run: $(cd "$crate" && timed cargo build -q) s"
  done
  for run in 1 2 3; do
    (cd "$crate" && cargo clean -q -p "$crate")
    echo "$crate clean run $run: $(cd "$crate" && timed cargo build -q) s"
  done
done
