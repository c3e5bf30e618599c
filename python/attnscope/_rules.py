"""Selection rules written in Python: ``@block_method`` and ``@token_method``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from . import _native


@dataclass
class RuleContext:
    """What a rule sees besides ``q`` and ``k``: one layer and one KV group."""

    layer: int
    kv_head: int
    #: The group's query heads (rows of ``q``), e.g. ``[3, 4, 5]``.
    q_heads: List[int]
    #: Tokens.
    n: int
    head_dim: int
    #: Softmax scale ``1 / sqrt(head_dim)``.
    scale: float
    #: Key block of a block rule (its ``block`` parameter).
    block_size: int
    #: Forced blocks at the start, and before each query's own block.
    init_blocks: int
    local_blocks: int
    #: Key block of the captured statistics (``capture_block``).
    capture_block: int
    #: Per-token punctuation flags (PHSA's mask, newline-only tokens excluded).
    punct_mask: np.ndarray
    #: Per-token flags of newline-only tokens.
    newline_mask: np.ndarray
    #: Every parameter value of the rule (defaults, then ``param=`` overrides).
    params: Dict[str, float] = field(default_factory=dict)
    #: Where the simulation runs (``"cpu"``: ``q`` and ``k`` are numpy arrays; ``"cuda"`` or
    #: ``"cuda:N"``: torch tensors on that GPU, and the rule may return torch tensors).
    device: str = "cpu"

    @property
    def positions(self) -> np.ndarray:
        """Token positions ``0..n``."""
        return np.arange(self.n)

    @property
    def n_blocks(self) -> int:
        """Key blocks of ``block_size`` tokens (the last may be shorter)."""
        return -(-self.n // self.block_size)


#: The device of the simulation running now (set by :func:`attnscope.simulate`).
_run_device = "cpu"


def _to_device(q: np.ndarray, k: np.ndarray, device: str):
    """``q`` and ``k`` as torch tensors on ``device`` for a GPU run, else as they are."""
    if not device.startswith("cuda"):
        return q, k
    from ._capture import _torch

    torch = _torch()
    return torch.from_numpy(q).to(device), torch.from_numpy(k).to(device)


def _to_numpy(out) -> np.ndarray:
    """A rule's result as a numpy array (a torch tensor on any device is copied back)."""
    if hasattr(out, "detach") and hasattr(out, "cpu"):
        return out.detach().float().cpu().numpy()
    return np.asarray(out)


def _invoker(func: Callable, name: str) -> Callable:
    """Calls the user's function and hands back a C-contiguous float32 array; the Rust side
    checks the shape and values and names the layer and head of any fault. On a GPU run the
    function gets torch tensors on that GPU."""

    def invoke(q, k, ctx):
        device = _run_device
        q, k = _to_device(q, k, device)
        out = func(q, k, RuleContext(**ctx, device=device))
        arr = _to_numpy(out)
        if arr.ndim == 2:
            arr = arr[None]  # one row set shared by the group
        if arr.ndim != 3:
            raise ValueError(
                f"scores of shape {tuple(arr.shape)}: expected 3 dimensions "
                "[heads, query rows, key blocks or keys]"
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    invoke.__name__ = f"invoke[{name}]"
    return invoke


def _source(func: Callable):
    try:
        code = inspect.getsource(func)
    except (OSError, TypeError):
        code = ""
    try:
        where = f"{inspect.getsourcefile(func)}:{inspect.getsourcelines(func)[1]}"
    except (OSError, TypeError):
        where = "unknown file"
    origin = f"{func.__module__}.{func.__qualname__} ({where})"
    return origin, code


def _register(func, name, kind, knob, block, init_blocks, local_blocks, params, summary):
    name = name or func.__name__.replace("_", "-")
    origin, code = _source(func)
    if summary is None:
        doc = inspect.getdoc(func)
        summary = doc.splitlines()[0] if doc else None
    if summary is None:
        what = "blocks" if kind == "block" else "keys"
        summary = f"forced blocks + top-k {what} by the scores of Python {func.__qualname__}"
    if kind == "block":
        summary = f"init + local blocks + {summary}" if not summary.startswith("init") else summary
    pairs = [(str(k), float(v)) for k, v in (params or {}).items()]
    _native.register_rule(
        name,
        kind,
        _invoker(func, name),
        knob,
        block,
        init_blocks,
        local_blocks,
        pairs,
        summary,
        origin,
        code,
    )
    func.attnscope_name = name
    return func


def block_method(
    name: Optional[str] = None,
    *,
    knob: str = "top_k",
    block: int = 64,
    init_blocks: int = 1,
    local_blocks: int = 2,
    params: Optional[Dict[str, float]] = None,
    summary: Optional[str] = None,
):
    """Registers a block selection rule: ``func(q, k, ctx)`` gets one KV group of one layer,
    ``q`` ``[q heads, n, d]`` and ``k`` ``[n, d]`` (post-RoPE float32 numpy arrays), and a
    :class:`RuleContext`, and returns block scores ``[heads, rows, key blocks]`` where heads is
    the group's q-head count (one selection per head) or 1 (one shared by the group), and rows
    is ``n`` (a score row per query) or the number of query blocks of ``block`` tokens.

    The shared block top-k of the built-in block methods does the rest: every query keeps the
    first ``init_blocks`` blocks, its own block and the ``local_blocks`` before it, plus the
    ``top_k`` best-scored other blocks at or before its own (causal); ``-inf`` marks a block as
    not a candidate, NaN is an error. ``top_k`` (the knob, named by ``knob``) is calibrated per
    layer and KV group to each budget, and every metric is computed as for the built-in
    methods. ``params`` adds numeric parameters (``ctx.params``, set with
    ``simulate(param={"name.x": 1})``). The function's source is recorded in the manifest.

    A rule that raises, returns the wrong shape or NaN makes ``simulate`` raise
    :class:`RuleError` naming the method, layer and head; the bundle is not marked complete.
    """

    def deco(func):
        return _register(func, name, "block", knob, block, init_blocks, local_blocks, params, summary)

    return deco


def token_method(
    name: Optional[str] = None,
    *,
    knob: str = "top_k",
    params: Optional[Dict[str, float]] = None,
    summary: Optional[str] = None,
):
    """Registers a token selection rule: ``func(q, k, ctx)`` returns key scores
    ``[heads, n, n]`` (heads: the group's q-head count or 1); each query ``i`` keeps its
    ``top_k`` best keys among ``0..i`` (every key when ``top_k > i``; ties to the lower index,
    as ``oracle-topk``). The scores of every pair are held, so this fits inputs of a few
    thousand tokens. Otherwise as :func:`block_method`."""

    def deco(func):
        return _register(func, name, "token", knob, 1, 0, 0, params, summary)

    return deco
