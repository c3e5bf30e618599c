#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, with carry/blk/bins.tar.xz
# (the release attnscope binary and the debug test binaries gpu_block_methods, gpu_sim,
# gpu_kernels built here), carry/smollm2-4l.gguf (scripts/gpu_truncate_gguf.py) and
# carry/alice29.txt. Block methods on the device: tests, simulate cpu vs cuda, bench. Logs: $OUT.
#   scripts/gpu_block_run.sh [tests|bench|all] [lens]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/bins
tar xJf carry/blk/bins.tar.xz -C /tmp/bins
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
export ATTNSCOPE_BIN=/tmp/bins/attnscope ATTNSCOPE_GPU_MODEL=carry/smollm2-4l.gguf \
       ATTNSCOPE_GPU_TEXT=carry/alice29.txt RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/device.txt"
MODE=${1:-all}
LENS=${2:-4096,8192,16384,32768}
B=/tmp/bins/attnscope
if [ "$MODE" = tests ] || [ "$MODE" = all ]; then
    for t in gpu_block_methods gpu_kernels gpu_sim; do
        echo "=== $t"
        timeout 300 /tmp/bins/$t --test-threads=1 --nocapture 2>&1 | tee "$OUT/$t.log"
    done
    M=phsa,infllm-v2,nsa,moba,quest,seer-oracle,oracle-topk-block
    for d in cpu cuda; do
        /usr/bin/time -f "simulate --device $d: %e s wall" $B simulate --model carry/smollm2-4l.gguf \
            --text carry/alice29.txt --len 2048 --methods $M --sparsity 0.9 --device $d \
            --precision f32 --out /tmp/sim_$d --quiet --force 2>&1 | tee -a "$OUT/simulate.log"
        $B report /tmp/sim_$d --json > "$OUT/report_$d.json"
    done
    python3 - "$OUT/report_cpu.json" "$OUT/report_cuda.json" <<'PY' 2>&1 | tee -a "$OUT/simulate.log"
import json, sys
def walk(v, path, out):
    if isinstance(v, dict):
        key = path + "/" + str(v.get("name", ""))
        for k, x in v.items():
            if isinstance(x, (int, float)) and not isinstance(x, bool) and "recall" in v and k != "seconds":
                out.append((key + "." + k, float(x)))
            else:
                walk(x, key + "/" + k, out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(x, f"{path}[{i}]", out)
a, b = [], []
walk(json.load(open(sys.argv[1])), "", a)
walk(json.load(open(sys.argv[2])), "", b)
assert len(a) == len(b) and a, "report shapes differ"
worst = max(abs(x[1] - y[1]) for x, y in zip(a, b) if x[0].endswith(".recall"))
nrec = sum(1 for x in a if x[0].endswith(".recall"))
allw = max((abs(x[1] - y[1]), x[0]) for x, y in zip(a, b))
print(f"simulate cpu vs cuda: {nrec} recalls, largest recall difference {worst:.2e} "
      f"({'OK' if worst <= 1e-3 else 'FAIL'}); largest of any number {allw[0]:.2e} ({allw[1]})")
PY
    python3 -c "import json;m=json.load(open('/tmp/sim_cuda/manifest.json'));print('manifest method_devices:',m.get('method_devices'))" 2>&1 | tee -a "$OUT/simulate.log"
fi
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    for s in qwen2.5-0.5b; do
        echo "=== bench --block-methods $s"
        $B bench --random-config $s --device cuda --precision bf16 --lens "$LENS" \
            --block-methods --block-sparsity 0.9 2>&1 | tee "$OUT/bench_blocks_$s.log"
    done
fi
echo "=== summary"
grep -H "test result\|panicked\|FAILED" "$OUT"/gpu_*.log 2>/dev/null
grep -h "differ (" "$OUT"/gpu_block_methods.log 2>/dev/null | head -20
grep -h "simulate" "$OUT/simulate.log" 2>/dev/null
cat "$OUT"/bench_blocks_*.log 2>/dev/null | tail -40
