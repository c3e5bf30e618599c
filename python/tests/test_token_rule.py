"""A token rule written in numpy: the exact attention's top-k, against the built-in oracle."""

import numpy as np

import attnscope as ats


@ats.token_method(name="np-oracle-topk", knob="k")
def np_oracle_topk(q, k, ctx):
    """Keys by exact attention probability (the causal softmax of q . k / sqrt(d))."""
    n = k.shape[0]
    out = np.empty((q.shape[0], n, n), dtype=np.float32)
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    for h, qh in enumerate(q):
        logits = (qh @ k.T) * np.float32(ctx.scale)
        logits[future] = -np.inf
        top = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - top)
        out[h] = e / e.sum(axis=1, keepdims=True)
    return out


def test_numpy_oracle_topk_matches_the_built_in(tmp_path):
    run = ats.simulate(model="smollm2-135m", text="alice29", length=1024, layers="0,9,19,29",
                       methods=["oracle-topk", "np-oracle-topk"], sparsity=[0.9],
                       selections="all", out=str(tmp_path / "tok"), quiet=True)
    m = run.table("metrics").to_pandas()
    key = ["input", "layer", "head", "budget"]
    a = m[m["method"] == "oracle-topk"].sort_values(key).reset_index(drop=True)
    b = m[m["method"] == "np-oracle-topk"].sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 4 * 9
    assert (a["knob"] == b["knob"]).all()
    for col in ["sparsity", "recall", "info_loss", "kl", "out_rel_err", "cosine"]:
        worst = np.max(np.abs(a[col].to_numpy() - b[col].to_numpy()))
        assert worst <= 1e-6, f"{col}: largest difference {worst}"
    s = run.table("selections").to_pandas()
    sk = ["layer", "head", "query_block"]
    sa = s[s["method"] == "oracle-topk"].sort_values(sk).reset_index(drop=True)
    sb = s[s["method"] == "np-oracle-topk"].sort_values(sk).reset_index(drop=True)
    differ = sum(
        list(x) != list(y) or list(fx) != list(fy)
        for x, y, fx, fy in zip(sa["kept_blocks"], sb["kept_blocks"], sa["kept_fraction"], sb["kept_fraction"])
    )
    assert differ == 0, f"{differ} of {len(sa)} selection rows differ"


def test_numpy_oracle_topk_in_evaluate_matches_the_built_in(tmp_path):
    # End to end: the same selections make the same sparse prefill, so the same perplexity
    # and KL to the dense model as the built-in oracle.
    run = ats.evaluate(model="smollm2-135m", text="alice29", length=512, ppl_last=64,
                       layers="0,9,19,29", methods=["oracle-topk", "np-oracle-topk"],
                       sparsity=[0.9], out=str(tmp_path / "ev"), quiet=True)
    e = run.table("eval").to_pandas()
    a = e[e["method"] == "oracle-topk"].reset_index(drop=True)
    b = e[e["method"] == "np-oracle-topk"].reset_index(drop=True)
    assert len(a) == len(b) >= 1
    for col in ["ppl", "kl"]:
        worst = np.max(np.abs(a[col].to_numpy() - b[col].to_numpy()))
        assert worst <= 1e-6 * max(1.0, float(np.abs(a[col]).max())), f"{col}: {worst}"
    assert (a["sparsity"] > 0.5).all() and (a["sparsity"] == b["sparsity"]).all()
