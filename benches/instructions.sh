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
# One run of a side varies (loopback timing changes how often the client
# wakes): by about ±0.7 % for the fan-out, by up to ±1 % for the small
# batches on a loaded machine. RUNS=n (default 1) runs each side n times;
# the ratios use each side's smallest count, and with n >= 3 the script
# also prints them from each side's median count (`*_median=`), the
# steadier of the two on a busy machine.
set -eu
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }

bin=$(cargo bench -p batch-runtime --bench fanout --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*/fanout-[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -x "$bin" ] || { echo "could not find the fanout bench executable (cargo bench --no-run failed?)" >&2; exit 1; }

out=target/callgrind
mkdir -p "$out"

runs=${RUNS:-1}

# Runs one side under callgrind `runs` times and prints its smallest and
# its median total instruction count; the last run's profile stays in
# $out/<side>.out.
count() {
    all=
    i=0
    while [ "$i" -lt "$runs" ]; do
        BATCH_BENCH_ONLY="$1" valgrind --tool=callgrind --trace-children=no \
            --callgrind-out-file="$out/$1.out" "$bin" >"$out/$1.stdout" 2>"$out/$1.stderr" || {
            echo "side $1 failed; see $out/$1.stderr" >&2
            exit 1
        }
        n=$(awk '/^(summary|totals):/ { print $2; exit }' "$out/$1.out")
        all="$all $n"
        i=$((i + 1))
    done
    echo "$all" | tr ' ' '\n' | sed '/^$/d' | sort -n \
        | awk '{ v[NR] = $1 } END { print v[1], v[int((NR + 1) / 2)] }'
}

none=$(count none)
raw=$(count raw)
batch=$(count batch)
small_raw=$(count small-raw)
small_batch=$(count small-batch)
macro=$(count macro)

awk -v none="$none" -v raw="$raw" -v batch="$batch" -v small_raw="$small_raw" \
    -v small_batch="$small_batch" -v macro="$macro" -v runs="$runs" 'BEGIN {
    # Each side is "smallest median".
    split(none, n); split(raw, r); split(batch, b); split(small_raw, sr)
    split(small_batch, sb); split(macro, m)
    none = n[1]; raw = r[1]; batch = b[1]; small_raw = sr[1]; small_batch = sb[1]; macro = m[1]
    fanout = 5000; small = 2000 * 3
    printf "baseline (start-up and teardown, subtracted): %d instructions\n", none
    printf "per request, fan-out of 5000 at 64:   raw %.0f   batch %.0f\n", (raw - none) / fanout, (batch - none) / fanout
    printf "per request, 2000 batches of 3:       join! %.0f   Batch::new %.0f   batch! %.0f\n", \
        (small_raw - none) / small, (small_batch - none) / small, (macro - none) / small
    printf "instr_ratio=%.4f\n", (batch - none) / (raw - none)
    printf "small_instr_ratio=%.4f\n", (small_batch - none) / (small_raw - none)
    printf "macro_instr_ratio=%.4f\n", (macro - none) / (small_batch - none)
    if (runs >= 3) {
        printf "instr_ratio_median=%.4f\n", (b[2] - n[2]) / (r[2] - n[2])
        printf "small_instr_ratio_median=%.4f\n", (sb[2] - n[2]) / (sr[2] - n[2])
        printf "macro_instr_ratio_median=%.4f\n", (m[2] - n[2]) / (sb[2] - n[2])
    }
}'
