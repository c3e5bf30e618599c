#!/usr/bin/env bash
# The 16-core simulator benchmark on the device machine (no network, 64 MiB per call), in the
# third of three calls: carry/m1/p1 and carry/m2/p2 (the first 2 x 46.5 MB of the SmolLM2 GGUF)
# were copied to /tmp/parts by the two calls before; this call carries carry/m3 with the rest
# (p3), the release binary (attnscope.xz), a baseline binary (attnscope_base.xz, optional), the
# texts, and a saved layer (l3.safetensors) for the one-layer replay A/B.
# Usage: bash scripts/simulate16_run.sh   (writes logs to $OUT)
set -euo pipefail
M=carry/m3
H=/tmp/h
mkdir -p $H/models/smollm2-135m $H/corpora/canterbury
cat /tmp/parts/p1 /tmp/parts/p2 $M/p3 > $H/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum $H/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
cp $M/alice29.txt $M/plrabn12.txt $H/corpora/canterbury/
xz -dc $M/attnscope.xz > /tmp/attnscope && chmod +x /tmp/attnscope
if [ -f $M/attnscope_base.xz ]; then
  xz -dc $M/attnscope_base.xz > /tmp/attnscope_base && chmod +x /tmp/attnscope_base
  for b in base new; do
    bin=/tmp/attnscope; [ $b = base ] && bin=/tmp/attnscope_base
    $bin bench --simulate --lens 8192 --layers 3 --qkv-cache $M/l3.safetensors \
      --summary $OUT/replay_$b.json 2>&1 | sed -n 3p
  done
fi
export ATTNSCOPE_HOME=$H
# The full run: the new binary with the default layer jobs, then (when given) the baseline
# binary and the new one with JOBS layer jobs, all on this lease.
full() { # name binary extra-args...
  local name=$1 bin=$2; shift 2
  /usr/bin/time -f "wall %e s, user %U s, sys %S s, maxrss %M KB" $bin simulate \
    --model smollm2-135m --text alice29 --len 8192 --methods all --sparsity 0.9 \
    --out /tmp/run_$name "$@" > $OUT/simulate16_$name.log 2>&1
  echo "$name: $(tail -1 $OUT/simulate16_$name.log)"; grep "^method time" $OUT/simulate16_$name.log > $OUT/method_time_$name.txt; rm $OUT/simulate16_$name.log
  $bin report /tmp/run_$name --json > $OUT/report16_$name.json
}
full new /tmp/attnscope
[ -f /tmp/attnscope_base ] && full base /tmp/attnscope_base
[ -n "${JOBS:-}" ] && full jobs$JOBS /tmp/attnscope --layer-jobs $JOBS
/tmp/attnscope report /tmp/run_new | tail -28
