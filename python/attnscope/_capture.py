"""``capture(...)``: post-RoPE queries and keys, exact log-sum-exp, tokens and punctuation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np

from . import _native
from ._cli import options_to_argv


@dataclass
class CapturedLayer:
    """One layer: ``q`` ``[q heads, n, d]`` and ``k`` ``[KV heads, n, d]`` after RoPE, and
    ``lse`` ``[q heads, n]``, the log-sum-exp of each query's scaled causal scores
    ``q_i . k_j / sqrt(d)`` over ``j <= i`` (so ``exp(q_i . k_j / sqrt(d) - lse_i)`` is the
    exact attention). float32 numpy arrays, or float32 torch tensors on the GPU when the capture
    ran there (``device="cuda"``), handed over through DLPack without a copy to the host."""

    layer: int
    q: np.ndarray
    k: np.ndarray
    lse: np.ndarray


class Capture:
    """What :func:`capture` returns: ``cap[layer]`` (:class:`CapturedLayer`), ``ids`` (token
    ids), ``pieces`` (their text), ``punct_mask`` (PHSA's punctuation flags, newline-only
    tokens excluded) and ``newline_mask``."""

    def __init__(self, raw: Any):
        layers, ids, pieces, punct, newline = raw
        self.layers: Dict[int, CapturedLayer] = {
            layer: CapturedLayer(layer, _tensor(q), _tensor(k), _tensor(lse))
            for layer, q, k, lse in layers
        }
        self.ids: np.ndarray = ids
        self.pieces: List[str] = pieces
        self.punct_mask: np.ndarray = punct
        self.newline_mask: np.ndarray = newline

    def __getitem__(self, layer: int) -> CapturedLayer:
        try:
            return self.layers[layer]
        except KeyError:
            raise KeyError(f"layer {layer} was not captured; captured: {sorted(self.layers)}")

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"Capture({len(self.ids)} tokens, layers {sorted(self.layers)})"


def _torch() -> Any:
    """The torch module, which GPU captures and GPU rules hand tensors to (a clear error
    without it)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("device='cuda' hands over torch tensors: install torch") from e
    return torch


def _tensor(x: Any) -> Any:
    """A numpy array as it is; a DLPack capsule of a device tensor as a torch tensor."""
    if isinstance(x, np.ndarray):
        return x
    return _torch().from_dlpack(x)


def capture(**options: Any) -> Capture:
    """Runs the model's forward pass and keeps, for the layers asked, what a rule sees. Options
    are those of ``simulate`` for the model and input (``model``, ``text``, ``length``,
    ``dataset``, ``seed``, ``offset``, ...), ``layers`` (a list of layer numbers, or ``"all"``,
    the default), and ``device`` (``"cpu"``, the default: numpy arrays; ``"cuda"`` or
    ``"cuda:N"``: the forward pass on that GPU and torch tensors left on it, through DLPack)
    with ``precision`` (``"f32"`` or ``"bf16"`` storage on the GPU; the tensors are float32)."""
    if str(options.get("device", "cpu")).startswith("cuda"):
        _torch()  # fail before the forward pass, not after it
    return Capture(_native.capture(["capture"] + options_to_argv(options)))
