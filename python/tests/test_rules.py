"""Rules written in Python against the built-in methods, on the real SmolLM2 at 2k tokens."""

import numpy as np
import pyarrow.compute as pc


def _rows(bundle, method):
    t = bundle.table("selections").to_pandas()
    t = t[t["method"] == method].drop(columns=["method"])
    key = ["input", "layer", "head", "budget", "query_block"]
    return t.sort_values(key).reset_index(drop=True), key


def test_numpy_infllm_v2_selects_as_the_built_in(smol_2k):
    a, key = _rows(smol_2k, "infllm-v2")
    b, _ = _rows(smol_2k, "np-infllm-v2")
    assert len(a) == len(b) > 0
    assert (a[key] == b[key]).all().all()
    same_blocks = [list(x) == list(y) for x, y in zip(a["kept_blocks"], b["kept_blocks"])]
    same_frac = [list(x) == list(y) for x, y in zip(a["kept_fraction"], b["kept_fraction"])]
    differ = sum(not (x and y) for x, y in zip(same_blocks, same_frac))
    assert differ == 0, f"{differ} of {len(a)} selection rows differ"


def test_numpy_infllm_v2_metrics_match(smol_2k):
    m = smol_2k.table("metrics").to_pandas()
    key = ["input", "layer", "head", "budget"]
    a = m[m["method"] == "infllm-v2"].sort_values(key).reset_index(drop=True)
    b = m[m["method"] == "np-infllm-v2"].sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 30 * 9
    for col in ["sparsity", "recall", "info_loss", "kl", "out_rel_err", "cosine", "knob"]:
        worst = np.max(np.abs(a[col].to_numpy() - b[col].to_numpy()))
        assert worst <= 1e-6, f"{col}: largest difference {worst}"


def test_rule_is_listed_and_recorded(smol_2k):
    import attnscope as ats

    reg = ats.methods().to_pandas().set_index("name")
    assert reg.loc["np-infllm-v2", "family"] == "user"
    assert reg.loc["np-infllm-v2", "knob"] == "top_k"
    assert reg.loc["infllm-v2", "family"] == "published"
    src = smol_2k.manifest["method_sources"]["np-infllm-v2"]
    assert src["language"] == "python"
    assert "def np_infllm_v2(q, k, ctx):" in src["code"]
    assert "infllm-v2" not in smol_2k.manifest["method_sources"]
    kinds = {m["name"]: m["kind"] for m in smol_2k.manifest["methods"]}
    assert kinds == {"infllm-v2": "published", "np-infllm-v2": "user"}


def test_rule_time_is_reported(smol_2k):
    t = smol_2k.manifest["timings"]["method_s"]
    assert t["np-infllm-v2"] > 0 and t["infllm-v2"] > 0
    m = smol_2k.table("metrics")
    assert pc.sum(pc.equal(m["method"], "np-infllm-v2")).as_py() == 30 * 9
