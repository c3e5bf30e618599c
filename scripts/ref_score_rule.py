#!/usr/bin/env python3
"""Independent numpy reference of the exact attention, recall and sparsity of a layer with a
non-plain score rule: a query scale other than 1/sqrt(d), logit soft-capping c * tanh(x / c)
after the scale (Gemma 2) and a sliding window where query i sees keys (i - window, i] (Mistral,
the local layers of Gemma 2/3). Written from shared/METHODS.md and the README's description of
the rule, without reading the Rust code.

Writes analysis/tests/fixtures/score_rule/case.json, which analysis/tests/score_rule.rs replays
through the simulator (SimHook on one layer) and through the exact attention of one KV group.

Inputs: one KV group of G = 2 q-heads, n = 40 tokens, head dim d = 8, scale 0.5 (a
query_pre_attn_scalar of 4), soft-cap 3.0, window 12. A sink key at 0 and two heavy keys make
attention far from uniform; the sink falls out of the window from query 12 on.

Expected values (f64 here, f32 in Rust; compared to 1e-6):
  probs [G][n][n]            A_ij = exp(logit_ij - LSE_i) over the visible keys, 0 elsewhere
  methods.<m>.recall [G]     mean over queries of the true mass of the kept visible keys
  methods.<m>.sparsity [G]   1 - kept visible pairs / visible pairs
  methods.<m>.target         sparsity of the budget (tokens per query, capped at the visible keys)
Methods, at a budget of `tokens` keys per query (SPEC: a method's selection is intersected with
the visible keys; keys outside the window are neither attended nor counted):
  streaming     the first 4 tokens + the (tokens - 4) most recent keys, the query included
  oracle-topk   the `tokens` keys of largest A_ij (ties to the lower index; all keys when fewer)
  oracle-dense  oracle-topk with tokens = n: every visible key (recall 1, sparsity 0)

Usage: python3 scripts/ref_score_rule.py [--out analysis/tests/fixtures/score_rule]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

G, N, D = 2, 40, 8
SCALE, SOFTCAP, WINDOW = 0.5, 3.0, 12
TOKENS, SINKS = 8, 4
SEED = 20250301


def make_inputs(seed: int = SEED):
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(D)
    direction /= np.linalg.norm(direction)
    q = 1.5 * rng.standard_normal((G, N, D)) + 2.0 * direction[None, None, :]
    k = rng.standard_normal((N, D))
    v = rng.standard_normal((N, D))
    k[0] += 3.0 * direction
    for j in (9, 27):
        k[j] += 2.0 * direction
    # The simulator runs in f32: round the inputs to f32 and compute from those.
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)


def visible_mask(n: int, window: int) -> np.ndarray:
    """vis[i, j]: query i sees key j, i.e. i - window < j <= i."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return (j <= i) & (j > i - window)


def exact_probs(q, k):
    """A [G, n, n] in f64 under the rule: scale, then soft-cap, softmax over the visible keys."""
    s = np.einsum("gid,jd->gij", q.astype(np.float64), k.astype(np.float64)) * SCALE
    s = SOFTCAP * np.tanh(s / SOFTCAP)
    vis = visible_mask(N, WINDOW)[None]
    s = np.where(vis, s, -np.inf)
    m = s.max(axis=2, keepdims=True)
    e = np.exp(s - m)
    return e / e.sum(axis=2, keepdims=True)


def streaming_kept(tokens: int) -> np.ndarray:
    """kept[i, j] before the window: sinks + the (tokens - sinks) most recent keys."""
    recent = max(tokens - SINKS, 1)
    i = np.arange(N)[:, None]
    j = np.arange(N)[None, :]
    return (j <= i) & ((j < SINKS) | (j > i - recent))


def oracle_kept(a_head: np.ndarray, tokens: int):
    """kept[i, j] of exact top-`tokens` of A (ties to the lower index), and the smallest relative
    gap between the last kept and the first dropped probability (a tie check)."""
    kept = np.zeros((N, N), dtype=bool)
    margin = np.inf
    for i in range(N):
        if tokens > i:
            kept[i, : i + 1] = True
            continue
        row = a_head[i, : i + 1]
        order = np.lexsort((np.arange(i + 1), -row))
        kept[i, order[:tokens]] = True
        last, nxt = row[order[tokens - 1]], row[order[tokens]]
        if nxt > 0:
            margin = min(margin, (last - nxt) / last)
    return kept, margin


def measure(a: np.ndarray, kept: np.ndarray):
    """Per-head recall (mean over queries) and sparsity over the visible pairs; kept [G, n, n]."""
    vis = visible_mask(N, WINDOW)
    seen = kept & vis[None]
    recall = (a * seen).sum(axis=2).mean(axis=1)
    sparsity = 1.0 - seen.sum(axis=(1, 2)) / vis.sum()
    return recall, sparsity


def target_sparsity(tokens: int) -> float:
    vis = visible_mask(N, WINDOW).sum(axis=1)
    return float(1.0 - np.minimum(tokens, vis).sum() / vis.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="analysis/tests/fixtures/score_rule")
    args = ap.parse_args()
    q, k, v = make_inputs()
    a = exact_probs(q, k)
    methods = {}
    r, s = measure(a, np.broadcast_to(streaming_kept(TOKENS), (G, N, N)))
    methods["streaming"] = {"tokens": TOKENS, "recall": r, "sparsity": s}
    for name, tokens in (("oracle-topk", TOKENS), ("oracle-dense", N)):
        kept = []
        for h in range(G):
            kh, margin = oracle_kept(a[h], tokens)
            assert margin > 1e-4, f"{name}: near tie ({margin})"
            kept.append(kh)
        r, s = measure(a, np.stack(kept))
        methods[name] = {"tokens": tokens, "recall": r, "sparsity": s}
    for m in methods.values():
        m["target"] = target_sparsity(m["tokens"])
        m["recall"] = [float(x) for x in m["recall"]]
        m["sparsity"] = [float(x) for x in m["sparsity"]]
    case = {
        "n": N, "d": D, "group": G, "scale": SCALE, "softcap": SOFTCAP, "window": WINDOW,
        "sinks": SINKS,
        "q": [float(x) for x in q.reshape(-1)],
        "k": [float(x) for x in k.reshape(-1)],
        "v": [float(x) for x in v.reshape(-1)],
        "probs": [float(x) for x in a.reshape(-1)],
        "methods": methods,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    for name, m in methods.items():
        print(f"{name:13} tokens {m['tokens']:3} target {m['target']:.6f} "
              f"recall {m['recall']} sparsity {m['sparsity']}")


if __name__ == "__main__":
    main()
