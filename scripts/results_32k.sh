#!/usr/bin/env bash
# docs/RESULTS.md, "PHSA against InfLLM v2 at 32k tokens": the run, its tables and its figures.
#
#   scripts/results_32k.sh [TEXT] [RUN]        (defaults: lcet10, runs/q32-lcet10)
#
# ATTNSCOPE_LEN sets another input length (default 32768; the run folder then defaults to
# runs/q<LEN/1024>-TEXT), ATTNSCOPE_MODEL another model (default qwen2.5-coder-0.5b).
# Runs on the CPU (about 20-40 minutes on 2 cores, 10.5 GiB peak) or, with ATTNSCOPE_DEVICE=cuda,
# on a GPU. Writes the bundle to RUN, the comparison table to RUN/comparisons.md and the figures
# of docs/results/ to RUN/figures. ATTNSCOPE_REPORT_ONLY=1 skips the run (tables and figures of
# an existing RUN).
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT=${1:-lcet10}
LEN=${ATTNSCOPE_LEN:-32768}
RUN=${2:-runs/q$((LEN / 1024))-$TEXT}
BIN=${ATTNSCOPE_BIN:-target/release/attnscope}
[ -x "$BIN" ] || cargo build --release --bin attnscope

[ -n "${ATTNSCOPE_REPORT_ONLY:-}" ] || "$BIN" simulate --model "${ATTNSCOPE_MODEL:-qwen2.5-coder-0.5b}" --text "$TEXT" --len "$LEN" \
    --preset phsa-paper --sparsity 0.9,0.95,0.973,0.99 \
    --methods phsa,infllm-v2,nsa,oracle-topk-block \
    --sweep phsa.lambda=0,0.25,0.75,1 --sweep phsa.softmax_over=1 --sweep infllm-v2.coarse_lse=1 \
    --layer-jobs 1 --device "${ATTNSCOPE_DEVICE:-cpu}" --out "$RUN"

# One line per (pair, budget): information loss of A and B, the relative reduction of A over B
# and its bootstrap 95% interval (2000 resamples by head, seed 0), from `report --json`.
{
    echo "| A | B | budget | IL A | IL B | reduction | 95% interval |"
    echo "|---|---|---|---:|---:|---:|---|"
    for pair in "phsa,infllm-v2" "phsa[lambda=1],infllm-v2" "phsa,phsa[lambda=1]" \
        "phsa[lambda=0],infllm-v2" "phsa[softmax_over=1],infllm-v2" \
        "phsa,infllm-v2[coarse_lse=1]" "nsa,infllm-v2"; do
        "$BIN" report "$RUN" --json --compare "$pair" | python3 -c '
import json, sys
pair = sys.argv[1].split(",")
for b in json.load(sys.stdin)["budgets"]:
    c = b["method_comparison"]
    if c is None:
        continue
    lo, hi = c["ci95"] or (float("nan"), float("nan"))
    ila, ilb, red, label = c["info_loss_a"], c["info_loss_b"], c["relative_il_reduction"], b["budget"]
    print(f"| `{pair[0]}` | `{pair[1]}` | {label} | {ila:.4f} | {ilb:.4f} | {100 * red:+.1f}% "
          f"| [{100 * lo:+.1f}%, {100 * hi:+.1f}%] |")
' "$pair"
    done
} > "$RUN/comparisons.md"
cat "$RUN/comparisons.md"
"$BIN" report "$RUN" --markdown > "$RUN/report.md"
"$BIN" figures "$RUN" --out "$RUN/figures" --format png --budget sparsity=0.973
