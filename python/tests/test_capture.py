"""capture(): what a rule sees, checked against numpy and against a simulation's tokens."""

import os

import numpy as np
import pytest

import attnscope as ats


@pytest.fixture(scope="module")
def cap():
    return ats.capture(model="smollm2-135m", text="alice29", length=512, layers=[3, 7], quiet=True)


def test_shapes_and_types(cap):
    assert sorted(cap.layers) == [3, 7]
    layer = cap[3]
    assert layer.q.shape == (9, 512, 64) and layer.q.dtype == np.float32
    assert layer.k.shape == (3, 512, 64) and layer.k.dtype == np.float32
    assert layer.lse.shape == (9, 512) and layer.lse.dtype == np.float32
    assert cap.ids.shape == (512,) and cap.punct_mask.dtype == np.bool_
    assert len(cap.pieces) == 512
    with pytest.raises(KeyError, match="layer 5 was not captured"):
        cap[5]


def test_lse_is_the_exact_log_sum_exp_of_q_and_k(cap):
    layer = cap[7]
    for h in [0, 4, 8]:
        q, k = layer.q[h].astype(np.float64), layer.k[h // 3].astype(np.float64)
        logits = q @ k.T / np.sqrt(64)
        logits[np.triu_indices(512, 1)] = -np.inf
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        np.testing.assert_allclose(layer.lse[h], lse, rtol=1e-5, atol=1e-4)


def test_tokens_and_punctuation_are_the_simulations(cap, smol_2k):
    tokens = smol_2k.table("tokens").to_pandas()
    first = tokens[tokens["position"] < 500]
    assert (first["id"].to_numpy() == cap.ids[:500]).all()
    assert (first["is_punct"].to_numpy() == cap.punct_mask[:500]).all()
    assert cap.punct_mask.sum() > 20
    assert "".join(cap.pieces).startswith(first["piece"].iloc[0])


def test_capture_refuses_bad_layers():
    with pytest.raises(ats.BadInput, match="--layers: '40' is out of range"):
        ats.capture(model="smollm2-135m", length=64, layers=[40], quiet=True)


def _cuda_torch():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_torch(), reason="needs torch with a CUDA GPU")
def test_capture_on_cuda_is_torch_on_the_gpu_and_matches_the_cpu():
    import torch

    model = os.environ.get("ATTNSCOPE_GPU_MODEL", "smollm2-135m")
    text = os.environ.get("ATTNSCOPE_GPU_TEXT", "alice29")
    opts = dict(model=model, text=text, length=512, layers=[0], quiet=True)
    cpu = ats.capture(**opts)
    gpu = ats.capture(device="cuda", **opts)
    for name in ("q", "k", "lse"):
        g, c = getattr(gpu[0], name), getattr(cpu[0], name)
        assert isinstance(g, torch.Tensor) and g.is_cuda and g.dtype == torch.float32, name
        assert tuple(g.shape) == c.shape, name
        np.testing.assert_allclose(g.cpu().numpy(), c, rtol=1e-4, atol=1e-4, err_msg=name)
    assert np.array_equal(gpu.ids, cpu.ids)
