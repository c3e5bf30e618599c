"""Errors: refused options, failing rules, a model that is not there."""

import os

import numpy as np
import pytest

import attnscope as ats


def small(out, **kw):
    """One layer of SmolLM2 at 256 tokens."""
    opts = dict(model="smollm2-135m", text="alice29", length=256, layers="3",
                sparsity=[0.5], out=str(out), quiet=True)
    opts.update(kw)
    return ats.simulate(**opts)


def test_option_validation_is_the_command_lines(tmp_path):
    with pytest.raises(ats.BadInput, match=r"--sparsity 1.5 is outside \[0, 1\)"):
        small(tmp_path / "a", sparsity=[1.5])
    with pytest.raises(ats.BadInput, match="unknown method 'nope'"):
        small(tmp_path / "b", methods=["nope"])
    with pytest.raises(ats.BadInput, match="--layers: '99' is out of range"):
        small(tmp_path / "c", layers="99")
    with pytest.raises(ats.BadInput, match="unexpected argument '--no-such'"):
        small(tmp_path / "d", no_such=3)
    with pytest.raises(ats.BadInput, match="out= .* is required"):
        ats.simulate(model="smollm2-135m")
    assert not (tmp_path / "a").exists()


def test_model_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(ats.ModelError):
        small(tmp_path / "m", model=str(bad))


def test_device_error(tmp_path):
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("a GPU is present")
    with pytest.raises(ats.DeviceError):
        small(tmp_path / "g", device="cuda")


@ats.block_method(name="raises", block=64)
def raises(q, k, ctx):
    if ctx.kv_head == 1:
        raise ValueError("no scores for this head")
    return np.zeros((1, ctx.n_blocks, ctx.n_blocks))


@ats.block_method(name="wrong-shape", block=64)
def wrong_shape(q, k, ctx):
    return np.zeros((q.shape[0], 3, 3))


@ats.block_method(name="nan", block=64)
def nan(q, k, ctx):
    s = np.zeros((q.shape[0], ctx.n, ctx.n_blocks), dtype=np.float32)
    s[2, 100, 1] = np.nan
    return s


def _incomplete(path):
    assert not (path / "manifest.json").exists()
    with pytest.raises(ats.BundleError, match="did not finish|interrupted"):
        ats.Bundle(path)


def test_rule_that_raises(tmp_path):
    with pytest.raises(ats.RuleError) as e:
        small(tmp_path / "r", methods=["phsa", "raises"])
    msg = str(e.value)
    assert "method 'raises'" in msg and "layer 3, KV head 1 (q heads 3-5)" in msg
    assert "ValueError: no scores for this head" in msg
    assert isinstance(e.value.__cause__, ValueError)
    _incomplete(tmp_path / "r")


def test_rule_with_the_wrong_shape(tmp_path):
    with pytest.raises(ats.RuleError, match=r"method 'wrong-shape': layer 3, KV head 0 .*shape \[3, 3, 3\]; expected"):
        small(tmp_path / "w", methods=["wrong-shape"])
    _incomplete(tmp_path / "w")


def test_rule_that_returns_nan(tmp_path):
    with pytest.raises(ats.RuleError, match=r"method 'nan': layer 3, q head 2: score \[2, 100, 1\] is NaN"):
        small(tmp_path / "n", methods=["nan"])
    _incomplete(tmp_path / "n")


def test_rule_name_of_a_built_in_is_refused():
    with pytest.raises(ats.BadInput, match="built-in method has this name"):
        ats.block_method(name="phsa")(lambda q, k, ctx: None)
