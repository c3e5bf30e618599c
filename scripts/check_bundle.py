#!/usr/bin/env python3
"""Reads an attnscope run bundle with pyarrow and pandas, independently of the Rust code, and
checks it: every table listed in manifest.json exists with the listed row count, columns and
Arrow types match the documented schema (README, "Run bundles"), values are consistent (recall +
info_loss = 1, pooled-map rows sum to 1, causal sorted selections, ...), captured Q/K/V headers
match the manifest, and optionally values match what the Rust side read (--expect JSON).

    python3 scripts/check_bundle.py runs/quickstart [--expect expected.json]

Exit status 0 when every check passes; otherwise the problems are listed and the status is 1.
"""

import argparse
import json
import math
import struct
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

U32, F64, STR, BOOL = pa.uint32(), pa.float64(), pa.string(), pa.bool_()
LF32 = pa.list_(pa.field("item", pa.float32(), nullable=False))
LU32 = pa.list_(pa.field("item", pa.uint32(), nullable=False))

# (name, type, nullable), in file order: an independent statement of the documented schema.
SCHEMA = {
    "metrics": [("run", STR, False), ("input", U32, False), ("layer", U32, False),
                ("head", U32, False), ("kv_head", U32, False), ("method", STR, False),
                ("params", STR, False), ("budget", U32, False), ("budget_label", STR, False),
                ("knob", F64, False), ("target_sparsity", F64, False), ("sparsity", F64, False),
                ("recall", F64, False), ("info_loss", F64, False), ("kl", F64, False),
                ("out_rel_err", F64, False), ("cosine", F64, False),
                ("needle_recall", F64, True), ("reached", BOOL, False),
                ("recall_by_query_block", LF32, False)],
    "iou": [("input", U32, False), ("layer", U32, False), ("kv_head", U32, False),
            ("budget", U32, False), ("budget_label", STR, False), ("method_a", STR, False),
            ("method_b", STR, False), ("iou", F64, False)],
    "heads": [("input", U32, False), ("layer", U32, False), ("head", U32, False),
              ("kv_head", U32, False), ("sink_mass", F64, False), ("energy_share", LF32, False),
              ("agreement", LF32, False)],
    "tokens": [("input", U32, False), ("position", U32, False), ("id", U32, False),
               ("piece", STR, False), ("is_punct", BOOL, False), ("is_newline", BOOL, False),
               ("char_start", U32, True), ("char_end", U32, True), ("is_needle", BOOL, False),
               ("is_needle_query", BOOL, False)],
    "maps": [("input", U32, False), ("layer", U32, False), ("head", U32, False),
             ("block", U32, False), ("n_blocks", U32, False), ("map", LF32, False)],
    "selections": [("input", U32, False), ("layer", U32, False), ("head", U32, False),
                   ("kv_head", U32, False), ("method", STR, False), ("budget", U32, False),
                   ("budget_label", STR, False), ("query_block", U32, False),
                   ("kept_blocks", LU32, False), ("kept_fraction", LF32, False)],
    "eval": [("input", U32, False), ("method", STR, False), ("budget", U32, True),
             ("budget_label", STR, False), ("tokens", U32, False), ("depth", F64, True),
             ("sparsity", F64, False), ("sparsity_by_layer", LF32, False),
             ("reached", BOOL, False), ("recall", F64, True), ("out_rel_err", F64, True),
             ("cosine", F64, True), ("scored", U32, False), ("nll", F64, False),
             ("ppl", F64, False), ("delta_ppl", F64, False), ("kl", F64, False),
             ("token_accuracy", F64, False), ("exact_match", BOOL, True)],
}


class Checker:
    def __init__(self):
        self.problems = []
        self.checks = 0

    def ok(self, cond, msg):
        self.checks += 1
        if not cond:
            self.problems.append(msg)
        return cond


def read_table(path, fmt):
    if fmt == "parquet":
        return pq.read_table(path), pd.read_parquet(path)
    with pa.ipc.open_file(path) as f:
        t = f.read_all()
    return t, t.to_pandas()


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def check(bundle, expect):
    c = Checker()
    man = json.loads((bundle / "manifest.json").read_text())
    c.ok(man.get("format_version") == 2, f"manifest format_version {man.get('format_version')} != 2")
    fmt = man.get("format", "parquet")
    listed = {t["name"]: t for t in man.get("tables", [])}
    c.ok(set(listed) == set(SCHEMA), f"manifest tables {sorted(listed)} != {sorted(SCHEMA)}")
    dfs = {}
    for name, cols in SCHEMA.items():
        info = listed.get(name)
        if info is None:
            continue
        path = bundle / info["file"]
        if not c.ok(path.is_file(), f"{path}: missing"):
            continue
        table, df = read_table(path, fmt)
        dfs[name] = df
        c.ok(table.num_rows == info["rows"], f"{path}: {table.num_rows} rows, manifest says {info['rows']}")
        got = [(f.name, f.type, f.nullable) for f in table.schema]
        c.ok(got == cols, f"{path}: schema\n  got      {got}\n  expected {cols}")
        c.ok(len(df) == table.num_rows, f"{path}: pandas read {len(df)} rows")

    n_inputs = len(man["data"]["inputs"])
    # The input indices: 0..n, or some of a sweep's for a part of it (`simulate --shard`).
    indices = {i["index"] for i in man["data"]["inputs"]} or set(range(n_inputs))
    n_tok = man["n_tokens"]
    block = man["capture_block"]
    n_qb = math.ceil(n_tok / block)
    methods = [m["name"] for m in man["methods"]]
    labels = [b["label"] for b in man["budgets"]]

    m = dfs.get("metrics")
    if m is not None and len(m):
        c.ok(((m.recall + m.info_loss - 1).abs() < 1e-9).all(), "metrics: recall + info_loss != 1")
        c.ok(m.recall.between(0, 1 + 1e-9).all(), "metrics: recall outside [0, 1]")
        c.ok(m.sparsity.between(0, 1).all(), "metrics: sparsity outside [0, 1]")
        c.ok(set(m.method) == set(methods), f"metrics: methods {set(m.method)} != manifest {methods}")
        c.ok((m.budget_label == m.budget.map(lambda b: labels[b])).all(), "metrics: budget_label != manifest")
        c.ok(set(m.input) == indices, f"metrics: inputs {set(m.input)} != manifest {sorted(indices)}")
        c.ok((m.run == man["run_id"]).all(), "metrics: run != manifest run_id")
        params = {x["name"]: x["params"] for x in man["methods"]}
        c.ok(all(json.loads(p) == params[mm] for p, mm in zip(m.params, m.method)),
             "metrics: params differ from the manifest")
        c.ok(m.recall_by_query_block.map(len).eq(n_qb).all(),
             f"metrics: recall_by_query_block lengths != {n_qb}")
    h = dfs.get("heads")
    if h is not None and len(h):
        sums = h.energy_share.map(lambda v: float(sum(v)))
        c.ok(((sums - 1).abs() < 1e-3).all(), "heads: energy shares do not sum to 1")
        c.ok(h.energy_share.map(len).eq(man["model"]["head_dim"] // 2).all(), "heads: chunks != head_dim / 2")
        c.ok(h.sink_mass.between(0, 1 + 1e-6).all(), "heads: sink_mass outside [0, 1]")
    t = dfs.get("tokens")
    if t is not None:
        c.ok(len(t) == n_inputs * n_tok, f"tokens: {len(t)} rows != {n_inputs} x {n_tok}")
        for i, g in t.groupby("input"):
            c.ok(list(g.position) == list(range(n_tok)), f"tokens: positions of input {i} not 0..n")
        have = t.char_start.notna()
        c.ok((t.char_start[have] <= t.char_end[have]).all(), "tokens: char_start > char_end")
    mp = dfs.get("maps")
    if mp is not None and len(mp):
        c.ok((mp["map"].map(len) == mp.n_blocks ** 2).all(), "maps: map length != n_blocks^2")
        row = mp.iloc[0]
        nb = int(row.n_blocks)
        rows = [sum(row["map"][q * nb:(q + 1) * nb]) for q in range(nb)]
        c.ok(all(abs(r - 1) < 1e-3 for r in rows), f"maps: pooled rows do not sum to 1: {rows[:4]}")
    s = dfs.get("selections")
    if s is not None and len(s):
        c.ok(set(s.budget) <= set(man["selection_budgets"]), "selections: budget not in selection_budgets")
        c.ok(all(list(k) == sorted(k) and (len(k) == 0 or k[-1] <= q)
                 for k, q in zip(s.kept_blocks, s.query_block)),
             "selections: kept blocks not sorted or not causal")
        c.ok((s.kept_blocks.map(len) == s.kept_fraction.map(len)).all(), "selections: list lengths differ")
        c.ok(all(all(0 < f <= 1 + 1e-6 for f in fr) for fr in s.kept_fraction),
             "selections: kept_fraction outside (0, 1]")
    for q in man.get("qkv", []):
        p = bundle / q["file"]
        if not c.ok(p.is_file(), f"{p}: missing"):
            continue
        raw = p.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = header.pop("__metadata__", {})
        c.ok(meta.get("format") == "attnscope-qkv", f"{p}: metadata format {meta.get('format')}")
        mo = man["model"]
        for layer in q["layers"]:
            for name, heads in (("q", mo["n_heads"]), ("k", mo["n_kv_heads"]), ("v", mo["n_kv_heads"])):
                tinfo = header.get(f"layer{layer}.{name}")
                if c.ok(tinfo is not None, f"{p}: no tensor layer{layer}.{name}"):
                    c.ok(tinfo["dtype"] == "F32" and tinfo["shape"] == [heads, n_tok, mo["head_dim"]],
                         f"{p}: layer{layer}.{name} is {tinfo['dtype']} {tinfo['shape']}")

    if expect is not None and m is not None:
        for key, v in expect.get("mean_info_loss", {}).items():
            method, budget = key.rsplit("|", 1)
            sel = m[(m.method == method) & (m.budget == int(budget))]
            c.ok(len(sel) and close(float(sel.info_loss.mean()), v),
                 f"mean info_loss of {key}: pandas {float(sel.info_loss.mean()) if len(sel) else None} vs rust {v}")
        if "sink_mass_sum" in expect and h is not None:
            c.ok(close(float(h.sink_mass.sum()), expect["sink_mass_sum"]), "heads: sink_mass sum differs")
        if "pieces" in expect and t is not None:
            got = list(t[t.input == 0].piece[: len(expect["pieces"])])
            c.ok(got == expect["pieces"], f"tokens: pieces {got} vs rust {expect['pieces']}")
        if "kept_blocks_total" in expect and s is not None:
            c.ok(int(s.kept_blocks.map(len).sum()) == expect["kept_blocks_total"], "selections: kept block count differs")
        if "rows" in expect:
            for name, rows in expect["rows"].items():
                c.ok(name in dfs and len(dfs[name]) == rows, f"{name}: {len(dfs.get(name, []))} rows vs rust {rows}")
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--expect", type=Path, help="JSON of values the Rust side read")
    a = ap.parse_args()
    expect = json.loads(a.expect.read_text()) if a.expect else None
    c = check(a.bundle, expect)
    if c.problems:
        print(f"check_bundle: {len(c.problems)} of {c.checks} checks failed in {a.bundle}:")
        for p in c.problems:
            print(f"  - {p}")
        return 1
    print(f"check_bundle: all {c.checks} checks passed for {a.bundle} (pyarrow {pa.__version__}, pandas {pd.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
