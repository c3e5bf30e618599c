#!/usr/bin/env bash
# Samples the state and wait channel of every thread of a 16-core simulate run, 5 times a second
# (device machine, after the model parts of scripts/simulate16_run.sh are in /tmp/h). Logs: $OUT.
export ATTNSCOPE_HOME=/tmp/h
/tmp/attnscope simulate --model smollm2-135m --text alice29 --len 8192 --methods all --sparsity 0.9 --out /tmp/run_diag --force > $OUT/log_diag.txt 2>&1 &
sleep 0.5
pid=$(pgrep -f "run_diag" | head -1)
echo "pid $pid"
n=0
while kill -0 $pid 2>/dev/null; do
  for t in /proc/$pid/task/*; do
    st=$(awk '{print $3}' $t/stat 2>/dev/null)
    wc=$(cat $t/wchan 2>/dev/null)
    echo "$n ${t##*/} $st ${wc:-0}"
  done
  n=$((n+1))
  sleep 0.2
done > $OUT/threads.txt
wait
tail -2 $OUT/log_diag.txt | cut -c1-300
awk '{c[$3" "$4]++; s[$1]=1} END {for (k in c) printf "%8.2f %s\n", c[k]/length(s), k}' $OUT/threads.txt | sort -rn | head -20
