#!/usr/bin/env bash
# One attnscope sweep over many hosts with a Slurm job array: array task K of N runs
# `attnscope simulate ... --shard K/N` (one GPU each) into its own bundle, and a job that waits
# for the whole array (`--dependency=afterok`) joins the parts with `attnscope merge` and writes
# the report. Slurm does the scheduling; attnscope only splits the sweep and merges it back.
#
#   docs/recipes/slurm.sh                 # submits the array and the merge job
#   N=8 RUNS=/shared/runs/qwen docs/recipes/slurm.sh
#
# RUNS must be on storage every node sees (the merge job reads every part). Edit SIMULATE for
# the sweep; every part must run the same options (merge refuses parts that differ). Each part
# is a plain bundle: a task that was preempted and requeued resumes its part (`--resume`), and
# a finished part is kept. The parts' tables can be queried before the merge (README, "Many
# hosts").
set -euo pipefail

N=${N:-4}                               # parts (array tasks)
RUNS=${RUNS:-runs/sweep}                # parts in $RUNS/part-K, the merged run in $RUNS/merged
ATTNSCOPE=${ATTNSCOPE:-attnscope}       # the binary, on every node
DEVICE=${DEVICE:-cuda}                  # cuda: the task's GPU (Slurm sets CUDA_VISIBLE_DEVICES)
SIMULATE=(
  --model qwen2.5-coder-0.5b --texts alice29,plrabn12,asyoulik,lcet10 --seeds 0,1
  --len 8192 --methods phsa,infllm-v2,quest,oracle-topk --sparsity 0.9,0.95
  --run-id sweep
)

part() {
  local k=$SLURM_ARRAY_TASK_ID out="$RUNS/part-$SLURM_ARRAY_TASK_ID" again=()
  if [ -f "$out/manifest.json" ]; then
    echo "part $k/$N already finished: $out"
    return
  fi
  [ -d "$out/.partial" ] && again=(--resume)
  "$ATTNSCOPE" simulate "${SIMULATE[@]}" --device "$DEVICE" --shard "$k/$N" --out "$out" \
    --quiet "${again[@]}"
}

merge() {
  local parts=()
  for k in $(seq 1 "$N"); do parts+=("$RUNS/part-$k"); done
  "$ATTNSCOPE" merge "${parts[@]}" --out "$RUNS/merged" --run-id sweep --force
  "$ATTNSCOPE" report "$RUNS/merged" | tee "$RUNS/report.txt"
  "$ATTNSCOPE" report "$RUNS/merged" --json > "$RUNS/report.json"
}

case "${1:-submit}" in
  submit)
    mkdir -p "$RUNS/logs"
    export N RUNS ATTNSCOPE DEVICE
    array=$(sbatch --parsable --job-name=attnscope-part --array="1-$N" --gres=gpu:1 \
      --cpus-per-task=8 --mem=32G --time=04:00:00 --requeue \
      --output="$RUNS/logs/part-%a.out" "$0" part)
    sbatch --job-name=attnscope-merge --dependency="afterok:${array%%;*}" --cpus-per-task=2 \
      --mem=16G --time=00:30:00 --output="$RUNS/logs/merge.out" "$0" merge
    ;;
  part) part ;;
  merge) merge ;;
  *)
    echo "usage: $0 [submit|part|merge]" >&2
    exit 2
    ;;
esac
