#!/usr/bin/env bash
# The checks of a whole real model on the GPU (the `full` step of scripts/gpu_check.sh):
#
#   scripts/gpu_full_model.sh BIN MODEL TEXT OUT METHODS
#
# BIN: the attnscope binary; MODEL: a whole GGUF (e.g. Qwen2.5-Coder-0.5B-Instruct); TEXT: the
# haystack and simulation text (lcet10.txt); OUT: where logs and tables go; METHODS: the methods
# with a device path (comma-separated).
#
#  1. The dense needle-in-a-haystack anchor: `eval --methods none --dataset niah-multikey`, 20
#     seeds x depths 0.1, 0.5, 0.9, at each length of ATTNSCOPE_GPU_NIAH_LENS (default 4k-32k),
#     bf16 on the device (ATTNSCOPE_GPU_NIAH_PRECISION). `report` of each run goes to OUT.
#  2. Every device method over every layer and every query of 32,768 tokens of TEXT, three
#     budgets, f32 (`simulate --device cuda`): wall time and the report.
# ATTNSCOPE_GPU_FULL_PARTS picks some of them: `niah`, `methods` (default both).
# Prints one line per run; the exit status is 1 when a run failed.
set -uo pipefail
[ $# -eq 5 ] || { sed -n '2,15p' "$0"; exit 2; }
B=$1 MODEL=$2 TEXT=$3 OUT=$4 METHODS=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

PARTS=" ${ATTNSCOPE_GPU_FULL_PARTS:-niah methods} "
[[ $PARTS == *" niah "* ]] || ATTNSCOPE_GPU_NIAH_LENS=" "
for len in ${ATTNSCOPE_GPU_NIAH_LENS:-4096 8192 16384 32768}; do
    t0=$(date +%s.%N)
    log=$OUT/niah_$len.log
    if "$B" eval --model "$MODEL" --text "$TEXT" --dataset niah-multikey --methods none \
            --len "$len" --seeds 0-19 --depths 0.1,0.5,0.9 --device cuda \
            --precision "${ATTNSCOPE_GPU_NIAH_PRECISION:-bf16}" --out "$WORK/niah_$len" \
            --quiet --force > "$log" 2>&1 && "$B" report "$WORK/niah_$len" >> "$log" 2>&1; then
        cp "$WORK/niah_$len/eval.parquet" "$OUT/niah_${len}_eval.parquet"
        acc=$(awk '$1 == "dense" && NF >= 11 { print $(NF - 1); exit }' "$log")
        echo "niah-multikey dense, $len tokens, 60 inputs: exact match $acc, $(secs "$t0") s"
    else
        tail -20 "$log"; FAILED=1; echo "niah-multikey dense, $len tokens: FAILED"
    fi
done

[[ $PARTS == *" methods "* ]] || exit $FAILED
t0=$(date +%s.%N)
log=$OUT/full32k.log
if timeout "${ATTNSCOPE_GPU_FULL_TIMEOUT:-420}" "$B" simulate --model "$MODEL" --text "$TEXT" \
        --len 32768 --methods "$METHODS" --sparsity 0.9,0.95,0.973 --device cuda --precision f32 \
        --out "$WORK/full32k" --quiet --force > "$log" 2>&1; then
    wall=$(secs "$t0")
    "$B" report "$WORK/full32k" >> "$log" 2>&1
    cp "$WORK/full32k/metrics.parquet" "$OUT/full32k_metrics.parquet"
    cp "$WORK/full32k/manifest.json" "$OUT/full32k_manifest.json"
    echo "every device method, every layer and query of 32k tokens, 3 budgets: $wall s"
else
    tail -20 "$log"; FAILED=1; echo "every device method at 32k: FAILED after $(secs "$t0") s"
fi
exit $FAILED
