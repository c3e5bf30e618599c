#!/usr/bin/env python3
"""The Python package's benchmark (BENCHMARKS.md, "Python"):

1. A numpy block rule against the built-in rule of the same kind, in one run: the test suite's
   numpy InfLLM v2 (python/tests/rules.py, `@ats.block_method`) beside `infllm-v2` on SmolLM2-135M
   and alice29; each method's seconds (scoring and calibration, summed over layers and KV groups,
   `manifest.timings.method_s`) and their ratio; the selections of the two compared row by row.
2. `Bundle.table(name)` for every table of that bundle against `pyarrow.parquet.read_table` of
   the same file (median of repeats): rows, milliseconds, ratio.

    python3 scripts/bench_python.py [--length 8192] [--layers 0,10,20] [--out DIR]

The extension module must be importable (`pip install .`, or PYTHONPATH as scripts/test.sh sets
it). The last lines printed are the tables for BENCHMARKS.md.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python", "tests"))

import attnscope as ats  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rules import np_infllm_v2  # noqa: E402,F401  (registers np-infllm-v2)


def median_ms(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def selections_differ(run):
    """Rows of the selections table where the numpy rule and the built-in one disagree."""
    t = run.table("selections")
    keys = [c for c in t.column_names if c not in ("method",)]
    a = t.filter(pc.equal(t["method"], "infllm-v2")).select(keys)
    b = t.filter(pc.equal(t["method"], "np-infllm-v2")).select(keys)
    if a.num_rows != b.num_rows:
        return abs(a.num_rows - b.num_rows), a.num_rows
    sa = sorted(a.to_pylist(), key=repr)
    sb = sorted(b.to_pylist(), key=repr)
    differ = sum(0 if x == y else 1 for x, y in zip(sa, sb))
    return differ, a.num_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--layers", default="0,10,20")
    ap.add_argument("--out", default="runs/bench-python")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="read the bundle in --out, run nothing")
    a = ap.parse_args()

    t0 = time.perf_counter()
    run = ats.Bundle(a.out) if a.reuse else ats.simulate(
        model="smollm2-135m",
        text="alice29",
        length=a.length,
        layers=a.layers,
        methods=["infllm-v2", "np-infllm-v2"],
        sparsity=[0.9],
        selections="all",
        out=a.out,
        force=True,
        quiet=True,
    )
    wall = run.manifest["timings"]["total_s"] if a.reuse else time.perf_counter() - t0
    secs = run.manifest["timings"]["method_s"]
    built_in, numpy_rule = secs["infllm-v2"], secs["np-infllm-v2"]
    differ, rows = selections_differ(run)

    table_rows = []
    for name in run.tables():
        path = os.path.join(a.out, f"{name}.parquet")
        if not os.path.exists(path):
            continue
        n = run.table(name).num_rows
        ms = median_ms(lambda: run.table(name), a.repeats)
        base = median_ms(lambda: pq.read_table(path), a.repeats)
        table_rows.append((name, n, ms, base))

    print()
    print(f"run: {a.length} tokens, layers {a.layers}, {wall:.0f} s wall")
    print(f"selections rows per method: {rows}; rows that differ: {differ}")
    print()
    print("| length | layers | `infllm-v2` | `np-infllm-v2` | ratio |")
    print("|---:|---|---:|---:|---:|")
    print(
        f"| {a.length} | {a.layers} | {built_in:.2f} s | {numpy_rule:.2f} s "
        f"| {numpy_rule / built_in:.2f}x |"
    )
    print()
    print("| table | rows | `Bundle.table` | `pyarrow.parquet.read_table` | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, n, ms, base in table_rows:
        print(f"| {name} | {n:,} | {ms:.1f} ms | {base:.1f} ms | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
