#!/usr/bin/env python3
"""Compares every table two bundles share, row for row: per table whether it is bit-equal, else
the columns that differ, with the largest relative difference of each float column (over
max(|a|, |b|, 1e-30)) and whether every other column is identical. Columns of wall-clock time
are skipped. The exit status is 1 when a table differs by more than --rtol (0: bit-equal only),
has other rows, or is missing from one side.

    python3 scripts/compare_bundles.py RUN_A RUN_B [--rtol 1e-9] [--tables metrics,iou]

Typical use: a change that must not change results (the same command with two binaries).
"""
import argparse
import math
import os
import sys

import pyarrow.parquet as pq
import pyarrow.ipc as ipc

# Wall-clock columns, and `run` (the folder name).
SKIP = {"run", "seconds", "wall_s", "cpu_s", "ms", "elapsed_s"}


def read(path):
    if path.endswith(".parquet"):
        return pq.read_table(path)
    with ipc.open_file(path) as f:
        return f.read_all()


def tables(run):
    out = {}
    for f in sorted(os.listdir(run)):
        stem, ext = os.path.splitext(f)
        if ext in (".parquet", ".arrow"):
            out[stem] = os.path.join(run, f)
    return out


def flat(values):
    """Leaves of a column's Python values (lists unrolled)."""
    for v in values:
        if isinstance(v, list):
            yield from flat(v)
        else:
            yield v


def compare_column(a, b):
    """(identical, largest relative difference or None when not numeric, count mismatch)."""
    if a.equals(b):
        return True, 0.0, False
    la, lb = list(flat(a.to_pylist())), list(flat(b.to_pylist()))
    if len(la) != len(lb):
        return False, None, True
    worst, numeric = 0.0, True
    for x, y in zip(la, lb):
        if x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
            continue
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-30))
        else:
            numeric = False
    return False, worst if numeric else None, False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=0.0, help="largest relative float difference allowed")
    ap.add_argument("--tables", help="only these tables, comma-separated")
    args = ap.parse_args()
    ta, tb = tables(args.a), tables(args.b)
    names = sorted(set(ta) | set(tb))
    if args.tables:
        names = [n for n in names if n in args.tables.split(",")]
    failed = False
    for name in names:
        if name not in ta or name not in tb:
            print(f"{name:12} only in {'the first' if name in ta else 'the second'} run")
            failed = True
            continue
        a, b = read(ta[name]), read(tb[name])
        cols = [c for c in a.column_names if c not in SKIP]
        if a.num_rows != b.num_rows or cols != [c for c in b.column_names if c not in SKIP]:
            print(f"{name:12} {a.num_rows} vs {b.num_rows} rows, columns {a.column_names} vs {b.column_names}")
            failed = True
            continue
        diffs = []
        for c in cols:
            same, rel, shape = compare_column(a.column(c), b.column(c))
            if same:
                continue
            if shape or rel is None or rel > args.rtol:
                failed = True
            diffs.append(f"{c} ({'shape' if shape else 'not numeric' if rel is None else f'rel {rel:.2e}'})")
        verdict = "bit-equal" if not diffs else "differs: " + ", ".join(diffs)
        print(f"{name:12} {a.num_rows:8} rows  {verdict}")
    print("FAIL" if failed else "OK: every table " + ("bit-equal" if args.rtol == 0 else f"within {args.rtol:g}"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
