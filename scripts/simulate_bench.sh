#!/usr/bin/env bash
# The simulator benchmark of BENCHMARKS.md ("Simulator"): all methods, all 30 layers of SmolLM2 at
# 8k tokens on the CPU, timed run by run, with an optional baseline binary run between the runs of
# the binary under test on the same machine.
#
#   scripts/simulate_bench.sh [--bin PATH] [--baseline PATH] [--runs N] [--out DIR]
#                             [--thread-states] [-- EXTRA SIMULATE ARGS]
#
# --bin       the binary under test (default target/release/attnscope)
# --baseline  a second binary, run between the runs of --bin (A/B on the same machine)
# --runs      runs of --bin (default 2); the baseline runs RUNS - 1 times (once when RUNS is 1)
# --out       logs and the summary (default simulate-bench-out/)
# --thread-states  during the first run, sample the state and wait channel of every thread of
#             the process 5 times a second (threads.txt) and print the mean count of threads per
#             (state, wait channel): shows how many workers wait instead of working
# Arguments after -- go to every `attnscope simulate` call (e.g. --layer-jobs 6).
#
# The model and texts come from the attnscope cache ($ATTNSCOPE_HOME, default ~/.cache/attnscope;
# `attnscope fetch smollm2-135m canterbury` fills it). Each run's `report --json` is checksummed: the
# runs of one binary must print the same checksum (the report of a run holds its folder name, so all
# runs use the same folder).
set -uo pipefail

BIN=target/release/attnscope
BASE=""
RUNS=2
OUT=simulate-bench-out
STATES=0
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=$2; shift 2 ;;
        --baseline) BASE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --thread-states) STATES=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "simulate_bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "simulate_bench.sh: no binary at $BIN" >&2; exit 1; }
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "simulate_bench.sh: no binary at $BASE" >&2; exit 1; }
command -v /usr/bin/time >/dev/null \
    || { echo "simulate_bench.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RUN_DIR=$WORK/run
: > "$OUT/runs.tsv"

# Thread states of process $1 until it exits, 5 samples a second.
sample_threads() {
    local pid=$1 n=0 t st wc
    while kill -0 "$pid" 2>/dev/null; do
        for t in /proc/"$pid"/task/*; do
            st=$(awk '{print $3}' "$t/stat" 2>/dev/null)
            wc=$(cat "$t/wchan" 2>/dev/null)
            echo "$n ${t##*/} ${st:-?} ${wc:-0}"
        done
        n=$((n + 1))
        sleep 0.2
    done
}

# One full run: name, binary.
run() {
    local name=$1 bin=$2 log="$OUT/simulate_$1.log" tpid pid
    rm -rf "$RUN_DIR"
    /usr/bin/time -f "time %e %U %S %M" "$bin" simulate --model smollm2-135m --text alice29 \
        --len 8192 --methods all --sparsity 0.9 --out "$RUN_DIR" "${EXTRA[@]}" > "$log" 2>&1 &
    tpid=$!
    if [ "$STATES" = 1 ]; then
        STATES=0
        sleep 0.5
        pid=$(pgrep -P "$tpid" | head -1)
        if [ -n "$pid" ]; then
            sample_threads "$pid" > "$OUT/threads.txt"
            echo "== mean threads per (state, wait channel), first run"
            awk '{c[$3" "$4]++; s[$1]=1} END {for (k in c) printf "%8.2f %s\n", c[k]/length(s), k}' \
                "$OUT/threads.txt" | sort -rn | head -20
        fi
    fi
    if ! wait "$tpid"; then
        echo "$name: simulate failed (see $log)"; tail -5 "$log"; return 1
    fi
    local wall user sys kb sum
    read -r _ wall user sys kb < <(grep '^time ' "$log" | tail -1)
    "$bin" report "$RUN_DIR" --json > "$WORK/report.json"
    sum=$(sha256sum < "$WORK/report.json" | cut -c1-16)
    [ "$name" = "${NAMES[0]}" ] && cp "$WORK/report.json" "$OUT/report.json"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$bin" "$wall" "$user" "$sys" \
        "$(awk -v k="$kb" 'BEGIN {printf "%.2f", k / 1048576}')" "$sum" | tee -a "$OUT/runs.tsv"
}

NAMES=(test1)
for ((i = 2; i <= RUNS; i++)); do
    [ -n "$BASE" ] && NAMES+=("base$((i - 1))")
    NAMES+=("test$i")
done
[ -n "$BASE" ] && [ "$RUNS" -le 1 ] && NAMES+=(base1)

echo "== $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "name	binary	wall s	user s	sys s	peak GiB	report sha256"
status=0
for name in "${NAMES[@]}"; do
    if [[ $name == base* ]]; then run "$name" "$BASE" || status=1; else run "$name" "$BIN" || status=1; fi
done

# Median and range of each binary's wall times; the report checksums of each binary.
echo "== summary"
python3 - "$OUT/runs.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
for kind, label in (("test", "binary under test"), ("base", "baseline")):
    r = [x for x in rows if x[0].startswith(kind)]
    if not r:
        continue
    w = sorted(float(x[2]) for x in r)
    sums = sorted({x[6] for x in r})
    print(f"{label} ({r[0][1]}): median of {len(w)} runs {statistics.median(w):.1f} s, "
          f"{w[0]:.1f}-{w[-1]:.1f} s; user {min(float(x[3]) for x in r):.0f}-"
          f"{max(float(x[3]) for x in r):.0f} s; peak {min(float(x[5]) for x in r):.1f}-"
          f"{max(float(x[5]) for x in r):.1f} GiB; report checksums: {', '.join(sums)}"
          + (" (all equal)" if len(sums) == 1 else " (DIFFER)"))
PY
exit $status
