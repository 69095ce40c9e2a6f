#!/bin/sh
# Client-side instruction counts of batch versus raw reqwest, under callgrind.
#
#   sh benches/instructions.sh
#
# Builds the fanout bench, runs each side once (BATCH_BENCH_ONLY=<side>)
# under `valgrind --tool=callgrind`. The upstream is a child process that
# callgrind does not follow, so only the client is counted; the start-up and
# teardown share (`none`: runtime, clients, upstream process, no request) is
# subtracted from every side. Prints:
#   instr_ratio=        5,000-request batch / raw reqwest buffer_unordered(64)
#   small_instr_ratio=  2,000 sequential 3-request batches / tokio::join! of 3
#   macro_instr_ratio=  the same small batch with batch! / with Batch::new
# and instructions per request for each side. The callgrind files stay in
# target/callgrind/ for `callgrind_annotate target/callgrind/<side>.out`.
#
# One run of a side varies by about ±0.7 % (loopback timing changes how
# often the client wakes); RUNS=n (default 1) runs each side n times and
# keeps its smallest count.
set -eu
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }

bin=$(cargo bench -p batch-runtime --bench fanout --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*/fanout-[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -x "$bin" ] || { echo "could not find the fanout bench executable (cargo bench --no-run failed?)" >&2; exit 1; }

out=target/callgrind
mkdir -p "$out"

runs=${RUNS:-1}

# Runs one side under callgrind `runs` times and prints its smallest total
# instruction count; the last run's profile stays in $out/<side>.out.
count() {
    best=
    i=0
    while [ "$i" -lt "$runs" ]; do
        BATCH_BENCH_ONLY="$1" valgrind --tool=callgrind --trace-children=no \
            --callgrind-out-file="$out/$1.out" "$bin" >"$out/$1.stdout" 2>"$out/$1.stderr" || {
            echo "side $1 failed; see $out/$1.stderr" >&2
            exit 1
        }
        n=$(awk '/^(summary|totals):/ { print $2; exit }' "$out/$1.out")
        if [ -z "$best" ] || [ "$n" -lt "$best" ]; then best=$n; fi
        i=$((i + 1))
    done
    echo "$best"
}

none=$(count none)
raw=$(count raw)
batch=$(count batch)
small_raw=$(count small-raw)
small_batch=$(count small-batch)
macro=$(count macro)

awk -v none="$none" -v raw="$raw" -v batch="$batch" -v small_raw="$small_raw" \
    -v small_batch="$small_batch" -v macro="$macro" 'BEGIN {
    fanout = 5000; small = 2000 * 3
    printf "baseline (start-up and teardown, subtracted): %d instructions\n", none
    printf "per request, fan-out of 5000 at 64:   raw %.0f   batch %.0f\n", (raw - none) / fanout, (batch - none) / fanout
    printf "per request, 2000 batches of 3:       join! %.0f   Batch::new %.0f   batch! %.0f\n", \
        (small_raw - none) / small, (small_batch - none) / small, (macro - none) / small
    printf "instr_ratio=%.4f\n", (batch - none) / (raw - none)
    printf "small_instr_ratio=%.4f\n", (small_batch - none) / (small_raw - none)
    printf "macro_instr_ratio=%.4f\n", (macro - none) / (small_batch - none)
}'
