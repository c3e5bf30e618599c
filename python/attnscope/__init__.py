"""attnscope: exact sparse-attention simulation from Python.

The same library as the ``attnscope`` command line, in this process::

    import attnscope as ats

    ats.methods()                                   # the method registry (pyarrow.Table)
    run = ats.simulate(model="smollm2-135m", text="alice29", length=2048,
                       methods=["phsa", "infllm-v2"], sparsity=[0.9], out="runs/py")
    df = run.table("metrics").to_pandas()
    run.report()                                    # the numbers of `attnscope report --json`

    cap = ats.capture(model="smollm2-135m", text="alice29", length=2048, layers=[3, 7])
    cap[3].q, cap[3].k, cap[3].lse, cap.punct_mask  # numpy arrays (torch on device="cuda")

    @ats.block_method(name="max-key", knob="top_k")
    def max_key(q, k, ctx):                         # q [q heads, n, d], k [n, d]
        ...                                         # scores [heads, query blocks, key blocks]

    ev = ats.evaluate(model="smollm2-135m", text="alice29", length=2048, ppl_last=256,
                      methods=["max-key", "phsa"], sparsity=[0.9], out="runs/ev")
    ev.table("eval").to_pandas()                    # perplexity, KL to dense, per method

Errors are raised as :class:`BadInput`, :class:`ModelError`, :class:`BundleError`,
:class:`DeviceError` or :class:`RuleError` (all :class:`AttnscopeError`). Ctrl-C stops a
simulation before its next layer; ``simulate(..., resume=True)`` finishes it.
"""

from __future__ import annotations

from . import _native
from ._bundle import Bundle
from ._capture import Capture, CapturedLayer, capture
from ._cli import evaluate, main, simulate
from ._rules import RuleContext, block_method, token_method
from ._native import (
    AttnscopeError,
    BadInput,
    BundleError,
    DeviceError,
    ModelError,
    RuleError,
)

__version__ = _native.__version__

__all__ = [
    "AttnscopeError",
    "BadInput",
    "Bundle",
    "BundleError",
    "Capture",
    "CapturedLayer",
    "DeviceError",
    "ModelError",
    "RuleContext",
    "RuleError",
    "block_method",
    "capture",
    "evaluate",
    "main",
    "methods",
    "simulate",
    "token_method",
]


def methods():
    """The method registry as a ``pyarrow.Table``: ``name``, ``family`` (published, proxy,
    oracle, ours, or user for rules registered from Python), ``paper``, ``rule``, ``knob`` (the
    budget knob calibration sets), ``devices`` and ``params`` (defaults, as JSON text)."""
    import json

    import pyarrow as pa

    rows = _native.methods()
    for r in rows:
        r["params"] = json.dumps(r["params"])
    return pa.Table.from_pylist(rows)
