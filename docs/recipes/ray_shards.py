#!/usr/bin/env python3
"""One attnscope sweep over a Ray cluster: part K of N of the sweep runs as one Ray task with one
GPU (`attnscope simulate ... --shard K/N`, the binary on every node), then the driver joins the
parts with `attnscope merge` and prints the report. Ray does the scheduling (GPU placement,
retries of a lost node); attnscope only splits the sweep and merges it back.

    python3 docs/recipes/ray_shards.py --parts 8 --runs /shared/runs/qwen -- \\
        --model qwen2.5-coder-0.5b --texts alice29,lcet10 --seeds 0,1,2,3 --len 8192 \\
        --methods phsa,infllm-v2,quest,oracle-topk --sparsity 0.9,0.95

The options after `--` go to every `attnscope simulate`; --runs must be on storage every node
sees. A retried task resumes its part (`--resume`), and a finished part is kept, so running the
driver again finishes an interrupted sweep.
"""

import argparse
import os
import subprocess
import sys

import ray


@ray.remote(num_gpus=1, max_retries=2)
def run_part(k, n, out, attnscope, device, options):
    """Runs part k of n into `out` on this task's GPU (Ray sets CUDA_VISIBLE_DEVICES: cuda:0)."""
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return out
    cmd = [attnscope, "simulate", *options, "--device", device, "--shard", f"{k}/{n}",
           "--out", out, "--quiet"]
    if os.path.isdir(os.path.join(out, ".partial")):
        cmd.append("--resume")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=4, help="N: parts of the sweep (Ray tasks)")
    ap.add_argument("--runs", default="runs/sweep",
                    help="parts go to RUNS/part-K, the merged run to RUNS/merged")
    ap.add_argument("--attnscope", default="attnscope", help="the binary, on every node")
    ap.add_argument("--device", default="cuda", help="device of each part (cuda, or cpu)")
    ap.add_argument("--gpus", type=float, default=1.0, help="GPUs per task (0 for cpu)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: auto/local)")
    ap.add_argument("--run-id", default="sweep")
    ap.add_argument("options", nargs=argparse.REMAINDER,
                    help="-- then the options of `attnscope simulate` (without --out/--shard)")
    a = ap.parse_args()
    options = a.options[1:] if a.options[:1] == ["--"] else a.options
    if a.parts < 1:
        sys.exit("--parts must be at least 1")

    ray.init(address=a.address)
    runs = os.path.abspath(a.runs)
    os.makedirs(runs, exist_ok=True)
    task = run_part.options(num_gpus=a.gpus)
    pending = [
        task.remote(k, a.parts, os.path.join(runs, f"part-{k}"), a.attnscope, a.device,
                    [*options, "--run-id", a.run_id])
        for k in range(1, a.parts + 1)
    ]
    parts = ray.get(pending)

    merged = os.path.join(runs, "merged")
    subprocess.run([a.attnscope, "merge", *parts, "--out", merged, "--run-id", a.run_id,
                    "--force"], check=True)
    subprocess.run([a.attnscope, "report", merged], check=True)


if __name__ == "__main__":
    main()
