#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, with carry/ holding
# bins.tar.xz (the attnscope binary and the GPU test binaries built here), smollm2-4l.gguf
# (scripts/gpu_truncate_gguf.py) and alice29.txt. Logs go to $OUT.
#   scripts/gpu_device_run.sh tests     # GPU tests, then a short bench
#   scripts/gpu_device_run.sh bench     # scripts/gpu_bench.py (attnscope vs PyTorch)
#   scripts/gpu_device_run.sh all       # both
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/bins
tar xJf carry/bins.tar.xz -C /tmp/bins
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
export ATTNSCOPE_BIN=/tmp/bins/attnscope ATTNSCOPE_GPU_MODEL=carry/smollm2-4l.gguf \
       ATTNSCOPE_GPU_TEXT=carry/alice29.txt RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
MODE=${1:-tests}
if [ "$MODE" = tests ] || [ "$MODE" = all ]; then
    for t in gpu_kernels gpu_forward gpu_sim; do
        echo "=== $t"
        /tmp/bins/$t --test-threads=1 --nocapture 2>&1 | tee "$OUT/$t.log"
    done
    echo "=== short bench"
    /tmp/bins/attnscope bench --random-config qwen2.5-0.5b --device cuda --precision bf16 \
        --lens 4096,8192 --capture --kernels --repeat 3 2>&1 | tee "$OUT/bench_short.log"
fi
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    for s in qwen2.5-0.5b qwen2.5-1.5b; do
        ATTNSCOPE_GPU_PROFILE=1 /tmp/bins/attnscope bench --random-config $s --device cuda \
            --precision bf16 --lens 32768 --capture --repeat 1 > /dev/null 2> "$OUT/profile_$s.log"
        echo "== stage profile $s (forward, then forward + capture)"
        awk '/GPU stage profile/{c++} c>=3' "$OUT/profile_$s.log"
    done
    python3 scripts/gpu_bench.py --bin /tmp/bins/attnscope --out "$OUT/gpu_bench.json" 2>&1 \
        | tee "$OUT/gpu_bench.log"
fi
echo "=== summary"; grep -H "test result\|panicked\|FAILED" "$OUT"/gpu_*.log 2>/dev/null; tail -n 14 "$OUT/gpu_bench.log" 2>/dev/null
