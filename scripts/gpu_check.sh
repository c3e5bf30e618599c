#!/usr/bin/env bash
# Every GPU check and benchmark in one go, on any Linux host with a CUDA GPU (driver, cuBLAS and
# NVRTC libraries installed), run from the repository root of a checkout of the same commit (the
# GPU tests read their fixtures from core/tests/fixtures):
#
#   scripts/gpu_check.sh [DIR]
#
# DIR: the inputs folder made by scripts/gpu_pack.sh on the build machine, default
# $ATTNSCOPE_GPU_DIR, else gpu-inputs/. It holds bins.tar.xz (the release attnscope binary and the
# test binaries gpu_kernels, gpu_sparse, gpu_forward, gpu_sim, gpu_block_methods), smollm2-4l.gguf (a
# truncated real SmolLM2 GGUF, scripts/gpu_truncate_gguf.py) and alice29.txt; with
# SmolLM2-135M-Instruct.Q4_1.gguf and plrabn12.txt as well (gpu_pack.sh --full-model) the CPU
# simulator benchmark runs on this host's cores too.
#
# Steps, in order (ATTNSCOPE_GPU_STEPS, a space-separated list, picks some; default all):
#   tests     the GPU test binaries against the CPU reference (outputs poisoned with NaN)
#   simulate  `attnscope simulate` on the truncated model with --device cpu and --device cuda
#             (every query, then --queries last:256):
#             `report --json` compared number by number (largest difference printed, recalls must
#             agree to 1e-3), the manifest's method_devices, and the sha256 of every bundle file
#             of both runs
#   baseline  with another attnscope binary in DIR/baseline/attnscope (an earlier commit):
#             `simulate --device cuda --methods all` with both binaries, every bundle table's
#             sha256 and `report --json` compared (a change that must not change results); the
#             binary compared with it is the packed one, or ATTNSCOPE_GPU_COMPARE_BIN
#   blocks    `attnscope bench --block-methods` (device block methods, ms per layer, 4k-32k tokens)
#   sparse    `attnscope bench --sparse-kernel`: eval's sparse attention kernels (sparse_rows; in
#             bf16 also the block-sparse flash kernel) against the dense kernel (qwen2.5-0.5b
#             layer shape, 8k-32k tokens, sparsity 0.9, 0.95, 0.973, f32 and bf16)
#   eval      `attnscope eval` with --device cpu and --device cuda, the eval tables compared
#   python    scripts/gpu_python.py: capture(device="cuda") as torch tensors against the CPU capture
#             (needs the extension module in bins.tar.xz, python3 with torch and numpy)
#   real32k   with qwen-2l.gguf.xz and lcet10.txt in DIR: 32k tokens of real Qwen2.5-Coder-0.5B
#             layers, the PHSA paper protocol and every device method (see the step)
#   full      with ATTNSCOPE_GPU_FULL_MODEL (a whole real GGUF) and lcet10.txt in DIR:
#             scripts/gpu_full_model.sh (dense NIAH accuracy at 4k-32k, every device method over
#             every layer at 32k)
#   bigfwd    random Llama-3.1-8B and Qwen2.5-7B shapes: forward and capture against SDPA
#   bigmethods  the same shapes: the block methods per layer on the device
#   profile   the GPU stage profile of one forward pass at 32k tokens (ATTNSCOPE_GPU_PROFILE=1)
#   torch     scripts/gpu_bench.py: attnscope against PyTorch SDPA and the device's ceilings
#             (needs python3 with torch and transformers; skipped otherwise)
#   cpu       scripts/simulate_bench.sh on this host's CPU (only with the full model in DIR)
# Logs and JSON go to $OUT (default gpu-check-out/); a summary table is printed last. The exit
# status is 1 when a check failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
# DIR and OUT are taken relative to the current folder, then the script works from the root.
DIR=${1:-${ATTNSCOPE_GPU_DIR:-gpu-inputs}}
OUT=${OUT:-gpu-check-out}
[ -d "$DIR" ] || { echo "gpu_check.sh: no inputs folder $DIR (run scripts/gpu_pack.sh)" >&2; exit 1; }
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
DIR=$(cd "$DIR" && pwd)
cd "$ROOT" || exit 1
STEPS=${ATTNSCOPE_GPU_STEPS:-tests simulate baseline eval python blocks sparse real32k profile torch cpu}
BLOCK_LENS=${ATTNSCOPE_GPU_BLOCK_LENS:-4096,8192,16384,32768}
TESTS=(gpu_kernels gpu_sparse gpu_forward gpu_sim gpu_block_methods)

# The truncated model's file name in DIR (ATTNSCOPE_GPU_MODEL_FILE, e.g. a 1-layer truncation,
# or smollm2-1l-alice.gguf.xz: one layer with only alice29's vocabulary rows, 3 MB).
MODEL_FILE=${ATTNSCOPE_GPU_MODEL_FILE:-smollm2-4l.gguf}
# The truncated SmolLM2 and alice29.txt are needed by the steps that run on them.
inputs=(bins.tar.xz)
for step in tests simulate baseline eval python; do
    [[ " $STEPS " == *" $step "* ]] && inputs=(bins.tar.xz "$MODEL_FILE" alice29.txt)
done
for f in "${inputs[@]}"; do
    [ -f "$DIR/$f" ] || { echo "gpu_check.sh: $DIR/$f is missing (run scripts/gpu_pack.sh)" >&2; exit 1; }
done
[ -d core/tests/fixtures ] || { echo "gpu_check.sh: run it from a repository checkout" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bins"
tar -xJf "$DIR/bins.tar.xz" -C "$WORK/bins"
B=$WORK/bins/attnscope

for lib in /usr/local/cuda/lib64 /usr/local/nvidia/lib64; do
    [ -d "$lib" ] && export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
# Every method whose devices column lists cuda (the registry's own declaration).
METHODS=$("$B" methods --markdown | awk -F'|' '$6 ~ /cuda/ { gsub(/[ `]/, "", $2); printf "%s%s", sep, $2; sep = "," }')
# A model file ending in .xz is decompressed first (gpu_truncate_gguf.py --keep-ids files).
GPU_MODEL=$DIR/$MODEL_FILE
if [[ $MODEL_FILE == *.xz ]] && [ -f "$DIR/$MODEL_FILE" ]; then
    GPU_MODEL=$WORK/${MODEL_FILE%.xz}
    xz -dc "$DIR/$MODEL_FILE" > "$GPU_MODEL" || exit 1
fi
export ATTNSCOPE_BIN=$B ATTNSCOPE_GPU_MODEL=$GPU_MODEL ATTNSCOPE_GPU_TEXT=$DIR/alice29.txt
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1

SUMMARY=$WORK/summary.tsv
FAILED=0
# summary CHECK RESULT LOG
summary() { printf '%s\t%s\t%s\n' "$1" "$2" "${3##*/}" >> "$SUMMARY"; }
printf 'check\tresult\tlog (in %s)\n' "$OUT" > "$SUMMARY"
want() { [[ " $STEPS " == *" $1 "* ]]; }

{
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
    else
        echo "no nvidia-smi"
    fi
    echo "CPU: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    [ -f "$DIR/inputs.txt" ] && cat "$DIR/inputs.txt"
} | tee "$OUT/device.txt"
if ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_check.sh: nvidia-smi finds no GPU; the GPU tests will only print SKIPPED" >&2
fi

if want tests; then
    for t in "${TESTS[@]}"; do
        echo "=== $t"
        log=$OUT/$t.log
        timeout 900 "$WORK/bins/$t" --test-threads=1 --nocapture > "$log" 2>&1
        rc=$?
        grep -E '^test |differ \(|rel err|abs err|recalls|SKIPPED' "$log" | head -60
        res=$(grep -h '^test result' "$log" | tail -1 | sed 's/^test result: //; s/; 0 ignored.*//')
        skipped=$(grep -c 'SKIPPED' "$log")
        if [ "$rc" -ne 0 ]; then
            FAILED=1; summary "$t" "FAILED (exit $rc) ${res}" "$log"
        elif [ "$skipped" -gt 0 ]; then
            summary "$t" "${res}, $skipped SKIPPED" "$log"
        else
            summary "$t" "$res" "$log"
        fi
    done
fi

# One --queries setting: the same run with --device cpu and --device cuda, compared.
simulate_compare() {
    local q=$1 tag=${1/:/}
    echo "=== simulate --device cpu vs --device cuda ($METHODS, 2048 tokens, --queries $q)"
    log=$OUT/simulate_$tag.log
    : > "$log"
    ok=1
    for d in cpu cuda; do
        # Both runs use the folder name `run`: the report names the run's folder.
        rm -rf "${WORK:?}/$d"; mkdir -p "$WORK/$d"
        t0=$(date +%s.%N)
        if ! "$B" simulate --model "$ATTNSCOPE_GPU_MODEL" --text "$ATTNSCOPE_GPU_TEXT" --len 2048 \
                --methods "$METHODS" --sparsity 0.9 --queries "$q" --device "$d" --precision f32 \
                --out "$WORK/$d/run" --quiet --force >> "$log" 2>&1; then
            ok=0; echo "simulate --device $d failed" | tee -a "$log"; continue
        fi
        echo "simulate --device $d: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') s wall" \
            | tee -a "$log"
        "$B" report "$WORK/$d/run" --json > "$OUT/report_${d}_$tag.json" 2>> "$log" || ok=0
        cp "$WORK/$d/run/manifest.json" "$OUT/manifest_${d}_$tag.json"
    done
    if [ "$ok" = 1 ]; then
        python3 - "$OUT/report_cpu_$tag.json" "$OUT/report_cuda_$tag.json" "$OUT/manifest_cuda_$tag.json" \
            > "$WORK/compare.txt" 2>&1 <<'PY'
import json, sys

def leaves(v, path, out):
    """Every number of the report, keyed by its path (list items named by their "name")."""
    if isinstance(v, dict):
        for k, x in v.items():
            leaves(x, f"{path}/{k}", out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            name = x.get("name") if isinstance(x, dict) else None
            leaves(x, f"{path}[{name if isinstance(name, str) else i}]", out)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out[path] = float(v)

skip = ("seconds", "time", "timing", "wall")
a, b = {}, {}
leaves(json.load(open(sys.argv[1])), "", a)
leaves(json.load(open(sys.argv[2])), "", b)
a = {k: x for k, x in a.items() if not any(s in k.lower() for s in skip)}
b = {k: x for k, x in b.items() if not any(s in k.lower() for s in skip)}
if not a or set(a) != set(b):
    print(f"FAIL: the reports differ in shape ({len(set(a) ^ set(b))} paths in one only)")
    sys.exit(1)
diffs = sorted(((abs(a[k] - b[k]), k) for k in a), reverse=True)
rec = [d for d in diffs if d[1].endswith("/recall")]
worst_rec = rec[0][0] if rec else float("nan")
ok = bool(rec) and worst_rec <= 1e-3
print(f"{len(a)} numbers compared, {len(rec)} recalls; largest recall difference {worst_rec:.2e}; "
      f"largest difference of any number {diffs[0][0]:.2e} ({diffs[0][1]})")
for d, k in diffs[:5]:
    print(f"  {d:.2e}  {k}")
devices = json.load(open(sys.argv[3])).get("method_devices")
print(f"manifest method_devices (cuda run): {devices}")
print("OK" if ok else "FAIL: a recall differs by more than 1e-3")
sys.exit(0 if ok else 1)
PY
        rc=$?
        tee -a "$log" < "$WORK/compare.txt"
        line=$(head -1 "$WORK/compare.txt" | sed 's/^[0-9]* numbers compared, //; s/ ([^()]*)$//')
        {
            echo "== sha256 of the bundle files (cpu | cuda)"
            (cd "$WORK" && find cpu/run cuda/run -type f | sed 's|^[a-z]*/run/||' | sort -u) |
            while read -r f; do
                c=""; [ -f "$WORK/cpu/run/$f" ] && c=$(sha256sum < "$WORK/cpu/run/$f" | cut -d" " -f1)
                g=""; [ -f "$WORK/cuda/run/$f" ] && g=$(sha256sum < "$WORK/cuda/run/$f" | cut -d" " -f1)
                same=differ; [ -n "$c" ] && [ "$c" = "$g" ] && same=same
                printf '%-28s %-64s %-64s %s\n' "$f" "${c:--}" "${g:--}" "$same"
            done
        } | tee -a "$log"
        if [ "$rc" -eq 0 ]; then summary "simulate cpu vs cuda ($q)" "$line" "$log"
        else FAILED=1; summary "simulate cpu vs cuda ($q)" "FAILED: $line" "$log"; fi
    else
        FAILED=1; summary "simulate cpu vs cuda ($q)" "FAILED (a run failed)" "$log"
    fi
}

if want simulate; then
    simulate_compare all
    simulate_compare last:256
fi

if want baseline && [ -x "$DIR/baseline/attnscope" ]; then
    echo "=== simulate --device cuda --methods all: this binary against $DIR/baseline/attnscope"
    log=$OUT/baseline.log
    : > "$log"
    ok=1
    for which in base new; do
        bin=${ATTNSCOPE_GPU_COMPARE_BIN:-$B}; [ "$which" = base ] && bin=$DIR/baseline/attnscope
        # Both runs write the same path (the report names the run's folder), then it is moved.
        rm -rf "$WORK/cmp"
        if ! "$bin" simulate --model "$ATTNSCOPE_GPU_MODEL" --text "$ATTNSCOPE_GPU_TEXT" --len 2048 \
                --methods all --sparsity 0.9,0.95 --selections all --device cuda --precision f32 \
                --out "$WORK/cmp/run" --quiet --force >> "$log" 2>&1; then
            ok=0; echo "the $which binary failed" | tee -a "$log"; continue
        fi
        "$bin" report "$WORK/cmp/run" --json > "$OUT/report_cuda_$which.json" 2>> "$log" || ok=0
        (cd "$WORK/cmp/run" && sha256sum ./*.parquet) > "$OUT/tables_cuda_$which.sha256"
        mv "$WORK/cmp" "$WORK/cmp_$which"
    done
    if [ "$ok" = 1 ]; then
        same=$(join <(sort -k2 "$OUT/tables_cuda_base.sha256" | awk '{print $2, $1}') \
                    <(sort -k2 "$OUT/tables_cuda_new.sha256" | awk '{print $2, $1}') |
               awk '$2 == $3 {s++} $2 != $3 {d = d " " $1} END {printf "%d identical;%s", s, d ? " differ:" d : " none differ"}')
        cmp -s "$OUT/report_cuda_base.json" "$OUT/report_cuda_new.json" && rj="report --json identical" \
            || rj="report --json differs"
        echo "tables: $same; $rj" | tee -a "$log"
        paste "$OUT/tables_cuda_base.sha256" "$OUT/tables_cuda_new.sha256" | tee -a "$log"
        case "$same" in *"none differ"*) summary "cuda bundle vs baseline" "$same; $rj" "$log" ;;
            *) FAILED=1; summary "cuda bundle vs baseline" "FAILED: $same; $rj" "$log" ;; esac
    else
        FAILED=1; summary "cuda bundle vs baseline" "FAILED (a run failed)" "$log"
    fi
fi

if want blocks; then
    echo "=== bench --block-methods (qwen2.5-0.5b shape, $BLOCK_LENS tokens)"
    log=$OUT/bench_blocks.log
    if "$B" bench --random-config qwen2.5-0.5b --device cuda --precision bf16 --lens "$BLOCK_LENS" \
            --block-methods --block-sparsity 0.9 > "$log" 2>&1; then
        cat "$log"
        # The last length's "all" row: ms per layer of all device block methods together.
        res=$(awk '/tokens, .* layers/ {n = $0} $1 == "all" {a = $2} END {
                   split(n, p, "|"); printf "all methods %s ms/layer at%s", a, p[4]}' "$log")
        summary "block methods bench" "$res" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "block methods bench" "FAILED" "$log"
    fi
fi

if want sparse; then
    echo "=== bench --sparse-kernel (qwen2.5-0.5b layer shape, 8k-32k tokens, f32 and bf16)"
    log=$OUT/bench_sparse.log
    : > "$log"
    ok=1
    for p in f32 bf16; do
        "$B" bench --random-config qwen2.5-0.5b --device cuda --precision $p \
            --lens 8192,16384,32768 --sparse-kernel 0.9,0.95,0.973 >> "$log" 2>&1 || ok=0
    done
    if [ "$ok" = 1 ]; then
        cat "$log"
        # bf16, the longest length at the highest sparsity: each sparse kernel over dense and
        # against density (columns: tokens sparsity dense rows rows/dense vs flash flash/dense vs).
        res=$(awk '$1 ~ /^[0-9]+$/ && NF == 9 {r = $0} END {split(r, f, " ");
                   printf "%s tokens, sparsity %s: rows/dense %s (vs density %s), flash/dense %s (vs density %s)",
                   f[1], f[2], f[5], f[6], f[8], f[9]}' "$log")
        summary "sparse kernel bench" "$res" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "sparse kernel bench" "FAILED" "$log"
    fi
fi

if want eval; then
    # `attnscope eval` (sparse prefill, perplexity, KL to dense) with --device cpu and cuda: the
    # device runs the selections' attention with `sparse_rows` in f32; then bf16 on the device
    # with `sparse_rows` and with the block-sparse flash kernel.
    echo "=== eval --device cpu vs --device cuda (1,024 tokens, the last 128 scored)"
    log=$OUT/eval.log
    : > "$log"
    ok=1
    for d in cpu cuda; do
        "$B" eval --model "$ATTNSCOPE_GPU_MODEL" --text "$ATTNSCOPE_GPU_TEXT" --len 1024 \
            --ppl-last 128 --methods phsa,infllm-v2,streaming,oracle-topk --sparsity 0.9,0.95 \
            --device "$d" --precision f32 --out "$WORK/eval_$d" --quiet --force >> "$log" 2>&1 || ok=0
    done
    if [ "$ok" = 1 ] && python3 -c "import pyarrow" 2> /dev/null; then
        python3 - "$WORK/eval_cpu/eval.parquet" "$WORK/eval_cuda/eval.parquet" >> "$log" 2>&1 <<'PY' || ok=0
import sys
import pyarrow.parquet as pq
a, b = (pq.read_table(p).to_pylist() for p in sys.argv[1:3])
key = lambda r: (r["input"], r["method"], r["budget_label"])
a, b = {key(r): r for r in a}, {key(r): r for r in b}
assert a.keys() == b.keys() and a, "the eval tables hold different rows"
worst = {c: max(abs(a[k][c] - b[k][c]) for k in a) for c in ("ppl", "kl", "nll")}
print(f"{len(a)} eval rows; largest |cpu - cuda|: " + ", ".join(f"{c} {v:.2e}" for c, v in worst.items()))
for k in sorted(a):
    print(f"  {k[1]:<12} {k[2]:<16} ppl {a[k]['ppl']:.5f} / {b[k]['ppl']:.5f}  kl {a[k]['kl']:.2e} / {b[k]['kl']:.2e}")
sys.exit(0 if worst["nll"] <= 1e-4 and worst["kl"] <= 1e-4 else 1)
PY
    fi
    # bf16 on the device: the block-sparse flash kernel against sparse_rows (same selections).
    for k in rows flash; do
        ATTNSCOPE_GPU_SPARSE=$k "$B" eval --model "$ATTNSCOPE_GPU_MODEL" --text "$ATTNSCOPE_GPU_TEXT" \
            --len 1024 --ppl-last 128 --methods phsa,infllm-v2,streaming,oracle-topk \
            --sparsity 0.9,0.95 --device cuda --precision bf16 --out "$WORK/eval_bf16_$k" --quiet \
            --force >> "$log" 2>&1 || ok=0
    done
    if [ "$ok" = 1 ] && python3 -c "import pyarrow" 2> /dev/null; then
        python3 - "$WORK/eval_bf16_rows/eval.parquet" "$WORK/eval_bf16_flash/eval.parquet" >> "$log" 2>&1 <<'PY' || ok=0
import sys
import pyarrow.parquet as pq
a, b = (pq.read_table(p).to_pylist() for p in sys.argv[1:3])
key = lambda r: (r["input"], r["method"], r["budget_label"])
a, b = {key(r): r for r in a}, {key(r): r for r in b}
assert a.keys() == b.keys() and a, "the eval tables hold different rows"
worst = max(abs(a[k]["nll"] - b[k]["nll"]) for k in a)
print(f"bf16 sparse_rows vs flash_sparse: {len(a)} eval rows; largest |nll difference| {worst:.2e}")
sys.exit(0 if worst <= 2e-2 else 1)
PY
    fi
    tail -12 "$log"
    if [ "$ok" = 1 ]; then summary "eval cpu vs cuda" "ok" "$log"
    else FAILED=1; summary "eval cpu vs cuda" "FAILED" "$log"; fi
fi

if want python; then
    echo "=== the Python package on the GPU (scripts/gpu_python.py)"
    log=$OUT/python.log
    if [ ! -f "$WORK/bins/_native.abi3.so" ] || ! python3 -c "import torch, numpy" 2> /dev/null; then
        echo "skipped: no extension module in bins.tar.xz, or no torch and numpy" | tee "$log"
        summary "python capture on cuda" "SKIPPED" "$log"
    else
        mkdir -p "$WORK/py/attnscope"
        cp python/attnscope/*.py "$WORK/py/attnscope/"
        cp "$WORK/bins/_native.abi3.so" "$WORK/py/attnscope/"
        if PYTHONPATH=$WORK/py python3 scripts/gpu_python.py "$ATTNSCOPE_GPU_MODEL" \
                "$ATTNSCOPE_GPU_TEXT" > "$log" 2>&1; then
            cat "$log"; summary "python capture on cuda" "ok" "$log"
        else
            tail -20 "$log"; FAILED=1; summary "python capture on cuda" "FAILED" "$log"
        fi
    fi
fi

if want real32k && [ -f "$DIR/qwen-2l.gguf.xz" ] && [ -f "$DIR/lcet10.txt" ]; then
    # The first layers of real Qwen2.5-Coder-0.5B (gpu_truncate_gguf.py --keep-ids: only the
    # input's vocabulary rows) over 32,768 tokens of lcet10: the paper-protocol run of
    # scripts/results_32k.sh on the device (its layers' rows compare with the CPU bundle's), then
    # every device method over every query at three budgets.
    echo "=== real Qwen2.5-Coder-0.5B (first layers), 32k tokens of lcet10"
    log=$OUT/real32k.log
    xz -dc "$DIR/qwen-2l.gguf.xz" > "$WORK/qwen.gguf"
    t0=$(date +%s.%N)
    if "$B" simulate --model "$WORK/qwen.gguf" --text "$DIR/lcet10.txt" --len 32768 \
            --preset phsa-paper --sparsity 0.9,0.95,0.973,0.99 \
            --methods phsa,infllm-v2,nsa,oracle-topk-block --sweep phsa.lambda=0,0.25,0.75,1 \
            --sweep phsa.softmax_over=1 --sweep infllm-v2.coarse_lse=1 --device cuda \
            --precision f32 --out "$WORK/paper" --quiet --force > "$log" 2>&1; then
        wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
        cp "$WORK/paper/metrics.parquet" "$OUT/real32k_paper_metrics.parquet"
        cp "$WORK/paper/manifest.json" "$OUT/real32k_paper_manifest.json"
        echo "paper protocol on cuda: $wall s wall" | tee -a "$log"
        summary "real 32k paper protocol" "ok, $wall s" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "real 32k paper protocol" "FAILED" "$log"
    fi
    t0=$(date +%s.%N)
    if timeout 300 "$B" simulate --model "$WORK/qwen.gguf" --text "$DIR/lcet10.txt" --len 32768 \
            --methods "$METHODS" --sparsity 0.9,0.95,0.973 --device cuda --precision f32 \
            --out "$WORK/all" --quiet --force >> "$log" 2>&1; then
        wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
        cp "$WORK/all/metrics.parquet" "$OUT/real32k_all_metrics.parquet"
        cp "$WORK/all/manifest.json" "$OUT/real32k_all_manifest.json"
        echo "device methods, every query, 3 budgets: $wall s wall" | tee -a "$log"
        summary "real 32k device methods" "ok, $wall s" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "real 32k device methods" "FAILED" "$log"
    fi
fi

if want full && [ -n "${ATTNSCOPE_GPU_FULL_MODEL:-}" ] && [ -f "$DIR/lcet10.txt" ]; then
    echo "=== the whole model $(basename "$ATTNSCOPE_GPU_FULL_MODEL"): NIAH anchor, 32k methods"
    log=$OUT/full.log
    if scripts/gpu_full_model.sh "$B" "$ATTNSCOPE_GPU_FULL_MODEL" "$DIR/lcet10.txt" "$OUT" \
            "$METHODS" 2>&1 | tee "$log"; then
        summary "whole model: NIAH, 32k methods" "ok" "$log"
    else
        FAILED=1; summary "whole model: NIAH, 32k methods" "FAILED" "$log"
    fi
fi

if want bigfwd; then
    # Random weights of the Llama-3.1-8B and Qwen2.5-7B shapes: forward and full capture
    # against PyTorch SDPA on the same GPU (gpu_bench.py), with peak memory.
    log=$OUT/bigfwd.log
    if python3 scripts/gpu_bench.py --bin "$B" --shapes llama3.1-8b,qwen2.5-7b \
            --lens 8192,16384,32768 --eager-lens 8192 --repeat 2 \
            --out "$OUT/gpu_bench_big.json" > "$log" 2>&1; then
        tail -14 "$log"; summary "8B shapes: forward, capture, SDPA" "ok" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "8B shapes: forward, capture, SDPA" "FAILED" "$log"
    fi
fi

if want bigmethods; then
    # The same shapes: the block methods per layer on the device (`bench --block-methods`).
    log=$OUT/bigmethods.log
    : > "$log"
    ok=1
    for s in llama3.1-8b qwen2.5-7b; do
        "$B" bench --random-config "$s" --device cuda --precision bf16 --lens 8192,32768 \
            --block-methods phsa,infllm-v2,nsa,moba,quest,oracle-topk-block \
            --block-sparsity 0.9 >> "$log" 2>&1 || ok=0
    done
    cat "$log"
    if [ "$ok" = 1 ]; then summary "8B shapes: block methods" "ok" "$log"
    else FAILED=1; summary "8B shapes: block methods" "FAILED" "$log"; fi
fi

if want profile; then
    for s in qwen2.5-0.5b qwen2.5-1.5b; do
        echo "=== stage profile $s, 32k tokens (forward, then forward + capture)"
        log=$OUT/profile_$s.log
        if ATTNSCOPE_GPU_PROFILE=1 "$B" bench --random-config "$s" --device cuda --precision bf16 \
                --lens 32768 --capture --repeat 1 > "$OUT/profile_$s.out" 2> "$log"; then
            # The first profiles are the warm-up passes.
            awk '/GPU stage profile/ {c++} c >= 3' "$log"
            summary "stage profile $s" "ok" "$log"
        else
            tail -20 "$log"; FAILED=1; summary "stage profile $s" "FAILED" "$log"
        fi
    done
fi

if want torch; then
    echo "=== scripts/gpu_bench.py (attnscope vs PyTorch SDPA)"
    log=$OUT/gpu_bench.log
    if ! python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2> /dev/null; then
        echo "python3 with torch (CUDA) and transformers is missing: skipped"
        summary "attnscope vs PyTorch" "skipped (no torch with CUDA, or no transformers)" ""
    elif python3 scripts/gpu_bench.py --bin "$B" --out "$OUT/gpu_bench.json" > "$log" 2>&1; then
        sed -n '/^# /,$p' "$log"
        res=$(python3 - "$OUT/gpu_bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
parts = []
for shape, x in r["shapes"].items():
    ours = {row["tokens"]: row["ms"] for row in x["attnscope"] if row.get("mode") == "forward"}
    sd = {row["tokens"]: row["ms"] for row in x["sdpa"] if "ms" in row}
    n = max(set(ours) & set(sd), default=None)
    if n:
        parts.append(f"{shape} {n}: fwd/sdpa {ours[n] / sd[n]:.2f}")
print("; ".join(parts) or "no rows")
PY
)
        summary "attnscope vs PyTorch" "$res" "$log"
    else
        tail -20 "$log"; FAILED=1; summary "attnscope vs PyTorch" "FAILED" "$log"
    fi
fi

if want cpu; then
    if [ -f "$DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ -f "$DIR/plrabn12.txt" ]; then
        echo "=== simulator on the CPU: all methods, SmolLM2, 8k tokens ($(nproc) cores)"
        home=$WORK/home
        mkdir -p "$home/models/smollm2-135m" "$home/corpora/canterbury"
        cp "$DIR/SmolLM2-135M-Instruct.Q4_1.gguf" "$home/models/smollm2-135m/"
        cp "$DIR/alice29.txt" "$DIR/plrabn12.txt" "$home/corpora/canterbury/"
        log=$OUT/simulate_cpu.log
        if ATTNSCOPE_HOME=$home scripts/simulate_bench.sh --bin "$B" --runs "${ATTNSCOPE_CPU_RUNS:-2}" \
                --out "$OUT/simulate_cpu" 2>&1 | tee "$log"; then
            summary "simulator CPU, 8k, all methods" "$(grep '^binary under test' "$log" | sed 's/^[^:]*: //')" "$log"
        else
            FAILED=1; summary "simulator CPU, 8k, all methods" "FAILED" "$log"
        fi
    else
        summary "simulator CPU, 8k, all methods" "skipped (no full model in $DIR: gpu_pack.sh --full-model)" ""
    fi
fi

echo
echo "=== summary ($(head -1 "$OUT/device.txt"))"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
cp "$SUMMARY" "$OUT/summary.tsv"
exit $FAILED
