"""Ctrl-C stops a simulation before its next layer; the finished inputs are kept and
resume=True runs the rest."""

import os
import signal

import numpy as np
import pytest

import attnscope as ats

CALLS = {"n": 0}


@ats.block_method(name="interrupts-input-2", block=64)
def interrupts(q, k, ctx):
    """Sends SIGINT to this process on its first call of the second input (3 KV groups x 2
    layers per input)."""
    CALLS["n"] += 1
    if CALLS["n"] == 7:
        os.kill(os.getpid(), signal.SIGINT)
    return np.zeros((1, ctx.n_blocks, ctx.n_blocks), dtype=np.float32)


def test_ctrl_c_stops_and_resume_finishes(tmp_path):
    opts = dict(model="smollm2-135m", text="alice29", length=256, layers="2,5", seeds=[0, 1],
                methods=["phsa", "interrupts-input-2"], sparsity=[0.5], out=str(tmp_path / "r"),
                quiet=True)
    with pytest.raises(KeyboardInterrupt):
        ats.simulate(**opts)
    assert not (tmp_path / "r" / "manifest.json").exists()
    with pytest.raises(ats.BundleError, match="1 of 2"):
        ats.Bundle(tmp_path / "r")
    run = ats.simulate(resume=True, **opts)
    assert len(run.manifest["data"]["inputs"]) == 2
    m = run.table("metrics").to_pandas()
    assert sorted(m["input"].unique()) == [0, 1]
    assert CALLS["n"] >= 12  # input 2 ran again in full
