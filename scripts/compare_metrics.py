#!/usr/bin/env python3
"""Compares the `metrics` rows two runs share (same input, layer, head, method and budget): per
method, the rows matched, the knobs that differ, and the largest absolute differences of sparsity,
recall, output error and cosine; the last line says whether every recall agrees to --tol.

    python3 scripts/compare_metrics.py RUN_A RUN_B [--layers 0,1] [--tol 1e-4]

RUN_A and RUN_B are bundle folders or metrics.parquet files. Typical use: a `--device cuda` run of
the first layers of a model (scripts/gpu_truncate_gguf.py) against the `--device cpu` run of the
whole model on the same input: those layers' rows must agree.
"""
import argparse
import os
import sys

import pyarrow.parquet as pq

KEYS = ("input", "layer", "head", "method", "budget")
VALUES = ("sparsity", "recall", "out_rel_err", "cosine")


def rows(path, layers):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.parquet")
    t = pq.read_table(path).to_pylist()
    return {tuple(r[k] for k in KEYS): r for r in t if layers is None or r["layer"] in layers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--layers", help="only these layers, e.g. 0,1")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest recall difference allowed")
    args = ap.parse_args()
    layers = None if args.layers is None else {int(x) for x in args.layers.split(",")}
    a, b = rows(args.a, layers), rows(args.b, layers)
    common = sorted(set(a) & set(b))
    if not common:
        sys.exit("no metrics rows in common (same input, layer, head, method, budget)")
    per = {}
    for key in common:
        m = per.setdefault(key[3], {"rows": 0, "knob": 0, **{v: 0.0 for v in VALUES}})
        m["rows"] += 1
        m["knob"] += a[key]["knob"] != b[key]["knob"]
        for v in VALUES:
            m[v] = max(m[v], abs(a[key][v] - b[key][v]))
    print(f"{len(common)} rows in common ({len(a)} in A, {len(b)} in B)")
    print(f"{'method':<28} {'rows':>5} {'knob differs':>12} " + " ".join(f"{v:>11}" for v in VALUES))
    for name, m in sorted(per.items()):
        print(f"{name:<28} {m['rows']:>5} {m['knob']:>12} " + " ".join(f"{m[v]:>11.2e}" for v in VALUES))
    worst = max(m["recall"] for m in per.values())
    print(f"largest recall difference {worst:.2e}: {'OK' if worst <= args.tol else 'FAIL'} (tol {args.tol:g})")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
