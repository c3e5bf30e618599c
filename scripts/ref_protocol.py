#!/usr/bin/env python3
"""Independent numpy check of a `simulate --preset phsa-paper` bundle: phsa and infllm-v2 at
the run's own settings (block, forced blocks, lambda, knob), recomputed from the saved post-RoPE
Q/K/V, and compared with the bundle's metrics.

Written from the method definitions (shared/METHODS.md and the README's method table), not from
the Rust method files. For every simulated layer saved with --save-qkv, every q-head and the
run's scored queries (`queries` in the manifest: `all` or `last:N`):

  phsa       M(B_b) = lambda mean(K_b) + (1 - lambda) mean(K_b over punctuation and, with
             newline_punct, newline tokens); M = mean(K_b) without such tokens. Query i (own block
             o = i // B) scores every block b < o by the group sum over q-heads of
             softmax_b(q_i . M_b / sqrt d) (softmax over the blocks b < o). Forced: blocks
             0..init_blocks-1 and o-local_blocks..o. Kept: forced + the top_k other blocks b < o
             by score (ties to the lower block).
  infllm-v2  K1_j = mean K[16j, 16j + 32) for complete windows; window j is visible to i iff
             16j + 31 <= i; s_ij = sum over q-heads of exp(q_i . K1_j / sqrt d - LSE_i), LSE_i the
             log-sum-exp over i's visible windows; block score r_ib = max of s_ij over visible
             j in [m b - 1, m (b + 1) - 1], m = B / 16 (no score without a visible window).
             Forced as phsa; kept: forced + top_k other blocks b <= o by score (ties to the lower
             block).

Recall R_i = sum of the exact attention softmax_j(q_i . k_j / sqrt d), j <= i, over the kept keys
(j <= i); the bundle's metrics rows hold its mean over the scored queries (`recall`) and per
block of `capture_block` scored queries (`recall_by_query_block`); sparsity is
1 - sum kept / sum (i + 1) over the scored queries. Exact attention in float64.

Usage: python3 scripts/ref_protocol.py BUNDLE [--tol 1e-5]
Exit status 0 when every compared number agrees within the tolerance (printed per method).
Needs numpy and pyarrow.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The f32 tensors of a safetensors file (the format read by hand: no extra dependency)."""
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + lo : base + hi], dtype="<f4").reshape(info["shape"])
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top_blocks(scores: dict[int, float], k: int) -> list[int]:
    """The k best blocks by score, ties to the lower block."""
    order = sorted(scores, key=lambda b: (-scores[b], b))
    return order[:k]


def forced(own: int, init: int, local: int) -> set[int]:
    return set(range(min(init, own + 1))) | set(range(max(own - local, 0), own + 1))


def phsa_blocks(q, p, i, reps):
    """Kept blocks of query i for phsa (q: [G, n, d] of the group)."""
    B = int(p["block"])
    own = i // B
    score = np.zeros(own)
    if own > 0:
        for h in range(q.shape[0]):
            score += softmax(reps[:own] @ q[h, i].astype(np.float64) / np.sqrt(q.shape[2]))
    f = forced(own, int(p["init_blocks"]), int(p["local_blocks"]))
    cand = {b: score[b] for b in range(own) if b not in f}
    return f | set(top_blocks(cand, int(p["top_k"])))


def phsa_reps(k, mask, B, lam):
    n, d = k.shape
    nb = -(-n // B)
    reps = np.zeros((nb, d))
    for b in range(nb):
        kb = k[b * B : (b + 1) * B].astype(np.float64)
        m = kb.mean(0)
        sel = mask[b * B : (b + 1) * B]
        reps[b] = m if not sel.any() else lam * m + (1 - lam) * kb[sel].mean(0)
    return reps


def infllm_blocks(q, k1, p, i):
    B = int(p["block"])
    m = B // 16
    own = i // B
    vis = min((i + 1 - 32) // 16 + 1, k1.shape[0]) if i + 1 >= 32 else 0
    s = np.zeros(vis)
    if vis > 0:
        for h in range(q.shape[0]):
            x = k1[:vis] @ q[h, i].astype(np.float64) / np.sqrt(q.shape[2])
            lse = x.max() + np.log(np.exp(x - x.max()).sum())
            s += np.exp(x - lse)
    f = forced(own, int(p["init_blocks"]), int(p["local_blocks"]))
    cand = {}
    for b in range(own + 1):
        lo, hi = max(m * b - 1, 0), min(m * (b + 1) - 1, vis - 1)
        if b in f or vis == 0 or lo > hi:
            continue
        cand[b] = s[lo : hi + 1].max()
    return f | set(top_blocks(cand, int(p["top_k"])))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    man = json.loads((a.bundle / "manifest.json").read_text())
    n = man["n_tokens"]
    queries = man.get("queries") or "all"
    first = 0 if queries == "all" else n - min(int(queries.split(":")[1]), n)
    qb = man["capture_block"]
    params = {m["name"]: m["params"] for m in man["methods"]}
    toks = pq.read_table(a.bundle / "tokens.parquet").to_pandas()
    toks = toks[toks["input"] == 0].sort_values("position")
    punct = toks["is_punct"].to_numpy()
    newline = toks["is_newline"].to_numpy()
    metrics = pq.read_table(a.bundle / "metrics.parquet").to_pandas()
    metrics = metrics[(metrics["input"] == 0) & (metrics["budget"] == 0)]
    qkv = read_safetensors(a.bundle / "qkv-input0.safetensors")
    worst = {}
    failures = 0
    for layer in sorted({int(x.split(".")[0][5:]) for x in qkv}):
        q, k, v = (qkv[f"layer{layer}.{t}"] for t in "qkv")
        nh, nkv, d = q.shape[0], k.shape[0], q.shape[2]
        gs = nh // nkv
        for g in range(nkv):
            kg = k[g].astype(np.float64)
            qg = q[g * gs : (g + 1) * gs]
            for name in ("phsa", "infllm-v2"):
                if name not in params:
                    continue
                p = dict(params[name])
                row0 = metrics[(metrics["method"] == name) & (metrics["layer"] == layer)]
                p["top_k"] = float(row0["knob"].iloc[0])
                B = int(p["block"])
                if name == "phsa":
                    mask = punct | (newline if p.get("newline_punct", 1) else False)
                    reps = phsa_reps(k[g], mask, B, p["lambda"])
                    kept = [phsa_blocks(qg, p, i, reps) for i in range(first, n)]
                else:
                    nw = (n - 32) // 16 + 1 if n >= 32 else 0
                    k1 = np.stack([kg[16 * j : 16 * j + 32].mean(0) for j in range(nw)])
                    kept = [infllm_blocks(qg, k1, p, i) for i in range(first, n)]
                for hi in range(gs):
                    h = g * gs + hi
                    rec, keys = [], []
                    for i, blocks in zip(range(first, n), kept):
                        x = kg[: i + 1] @ q[h, i].astype(np.float64) / np.sqrt(d)
                        a_i = softmax(x)
                        idx = sorted(j for b in blocks for j in range(b * B, min((b + 1) * B, i + 1)))
                        rec.append(a_i[idx].sum())
                        keys.append(len(idx))
                    rec = np.array(rec)
                    row = metrics[
                        (metrics["method"] == name) & (metrics["layer"] == layer) & (metrics["head"] == h)
                    ].iloc[0]
                    by_block = np.array([rec[s : s + qb].mean() for s in range(0, len(rec), qb)])
                    got = np.asarray(row["recall_by_query_block"], dtype=np.float64)
                    sp = 1 - sum(keys) / sum(i + 1 for i in range(first, n))
                    errs = {
                        "recall": abs(row["recall"] - rec.mean()),
                        "recall_by_query_block": np.abs(got - by_block).max(),
                        "sparsity": abs(row["sparsity"] - sp),
                    }
                    for key, e in errs.items():
                        w = worst.setdefault((name, key), 0.0)
                        worst[(name, key)] = max(w, e)
                        if e > a.tol:
                            failures += 1
                            print(f"FAIL {name} layer {layer} head {h} {key}: differs by {e:.3g}")
    for (name, key), e in sorted(worst.items()):
        print(f"{name:10} {key:22} largest difference {e:.2e}")
    print(f"queries {queries}, {n} tokens: {'OK' if failures == 0 else f'{failures} FAILED'}")
    return 0 if failures == 0 and worst else 1


if __name__ == "__main__":
    sys.exit(main())
