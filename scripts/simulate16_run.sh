#!/usr/bin/env bash
# The 16-core simulator benchmark on the device machine (no network, 64 MiB per call), in the
# third of three calls: carry/m1/p1 and carry/m2/p2 (the first 2 x 40 MB of the SmolLM2 GGUF)
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
fi
if [ -f $M/attnscope_base.xz ] && [ -f $M/l3.safetensors ]; then
  for b in base new; do
    bin=/tmp/attnscope; [ $b = base ] && bin=/tmp/attnscope_base
    $bin bench --simulate --lens 8192 --layers 3 --qkv-cache $M/l3.safetensors \
      --summary $OUT/replay_$b.json 2>&1 | sed -n 3p
  done
fi
export ATTNSCOPE_HOME=$H
# CPU use of the whole machine every half second during a full run (from /proc/stat).
sample_cpu() {
  local prev="" t0; t0=$(date +%s.%N)
  while :; do
    read -r _ u n s i w x y z _ < /proc/stat
    local busy=$((u + n + s + x + y + z)) all=$((u + n + s + i + w + x + y + z))
    if [ -n "$prev" ]; then
      set -- $prev
      awk -v t="$(date +%s.%N)" -v t0="$t0" -v b=$((busy - $1)) -v a=$((all - $2)) -v c="$(nproc)" \
        'BEGIN { if (a > 0) printf "%.1f %.2f\n", t - t0, c * b / a }'
    fi
    prev="$busy $all"; sleep 0.5
  done
}
# The full run: the new binary with the default layer jobs, then (when given) the baseline
# binary, an alternative one, the new one with each of JOBS (a list) layer jobs and each of
# THREADS (a list) rayon threads, all on this lease.
full() { # name binary extra-args...
  local name=$1 bin=$2; shift 2
  sample_cpu > $OUT/cpu_$name.txt & local sampler=$!
  /usr/bin/time -f "wall %e s, user %U s, sys %S s, maxrss %M KB" $bin simulate \
    --model smollm2-135m --text alice29 --len 8192 --methods all --sparsity 0.9 \
    --out /tmp/run_$name "$@" > $OUT/simulate16_$name.log 2>&1
  echo "$name: $(tail -1 $OUT/simulate16_$name.log)" | tee -a $OUT/times.txt
  grep "^method time\|^pipeline" $OUT/simulate16_$name.log | sed "s/^/$name: /" >> $OUT/times.txt
  rm $OUT/simulate16_$name.log
  [ $name = new ] && cp /tmp/run_$name/manifest.json $OUT/manifest_$name.json
  kill $sampler
  $bin report /tmp/run_$name --json > /tmp/report16_$name.json
  echo "$name: report md5 $(md5sum < /tmp/report16_$name.json)" >> $OUT/times.txt
  [ $name = new ] && cp /tmp/report16_$name.json $OUT/
  rm -rf /tmp/run_$name
}
full new /tmp/attnscope
[ -f /tmp/attnscope_base ] && full base /tmp/attnscope_base
if [ -f $M/attnscope_alt.xz ]; then
  xz -dc $M/attnscope_alt.xz > /tmp/attnscope_alt && chmod +x /tmp/attnscope_alt
  full alt /tmp/attnscope_alt
fi
for j in ${JOBS:-}; do full jobs$j /tmp/attnscope --layer-jobs $j; done
# THREADS (a list): the new binary with each rayon pool size.
for t in ${THREADS:-}; do RAYON_NUM_THREADS=$t full threads$t /tmp/attnscope; done
# REPEAT=1: the new binary once more, after the others (the lease's speed drifts).
[ -n "${REPEAT:-}" ] && full again /tmp/attnscope
/tmp/attnscope report /tmp/run_new | tail -28
