"""The command line in this process: ``python -m attnscope ...`` and ``simulate(**options)``."""

from __future__ import annotations

import sys
from typing import Any, Iterable, List, Optional

from . import _native

# Options that may be given several times (`--param a.b=1 --param c.d=2`).
_REPEATED = {"param", "sweep"}
# Keyword spellings that differ from the option (`len` is also accepted).
_ALIASES = {"length": "len", "params": "param"}


def options_to_argv(options: dict) -> List[str]:
    """``dict(model="m", length=2048, sparsity=[0.9, 0.95], force=True)`` as
    ``["--model", "m", "--len", "2048", "--sparsity", "0.9,0.95", "--force"]``. ``None`` and
    ``False`` leave an option out; lists are joined with commas; ``param`` takes a dict
    (``{"phsa.lambda": 0.3}``) or a list of ``"method.name=value"``; Python rules may be given
    as the decorated functions."""
    argv: List[str] = []
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
            continue
        if name in _REPEATED:
            items = value.items() if isinstance(value, dict) else None
            values = [f"{k}={v}" for k, v in items] if items is not None else _as_list(value)
            for v in values:
                argv += [flag, str(v)]
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(_name_of(v) for v in value)
        else:
            value = _name_of(value)
        argv += [flag, value]
    return argv


def _as_list(value: Any) -> List[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _name_of(v: Any) -> str:
    """A rule function stands for its registered name; numbers and paths as text."""
    name = getattr(v, "attnscope_name", None)
    return name if name is not None else str(v)


def simulate(**options: Any):
    """Runs ``attnscope simulate`` with ``options`` as its command-line options and returns the
    bundle (:class:`attnscope.Bundle`).

    Keyword names are the option names with ``_`` for ``-`` (``budget_tokens``,
    ``calibration_text``, ...); ``length`` stands for ``--len``. Defaults, validation and
    messages are the command line's (``attnscope simulate --help``); ``out`` is required.
    Rules registered with :func:`attnscope.block_method` or :func:`attnscope.token_method` are
    methods like the built-in ones (with ``device="cuda"`` they get torch tensors on the GPU). The GIL is released while the simulation runs, progress is
    drawn on stderr (in Jupyter, through ``sys.stderr``), and Ctrl-C stops it before the next
    layer: the inputs already finished are kept, and ``resume=True`` with the same options runs
    the rest.

    Raises :class:`BadInput` for a refused option, :class:`ModelError`, :class:`BundleError`,
    :class:`DeviceError`, or :class:`RuleError` when a Python rule fails (the bundle is then not
    marked complete).
    """
    if "out" not in options or options["out"] is None:
        raise _native.BadInput("simulate: out= (the run folder) is required")
    return _run("simulate", options)


def evaluate(**options: Any):
    """Runs ``attnscope eval`` (what each method's selection does to the model's own output:
    sparse prefill, perplexity of the last tokens, KL to dense, needle accuracy) with
    ``options`` as its command-line options, and returns the bundle (its ``eval`` table). Named
    and validated as :func:`simulate` (``ppl_last``, ``seeds``, ``depths``, ...); rules
    registered in Python are methods here too (torch tensors on the GPU with ``device="cuda"``).
    """
    if "out" not in options or options["out"] is None:
        raise _native.BadInput("evaluate: out= (the run folder) is required")
    return _run("eval", options)


def _run(command: str, options: Any):
    """``attnscope COMMAND`` with ``options``, Python rules told the run's device; the bundle."""
    from . import _rules
    from ._bundle import Bundle

    _rules._run_device = str(options.get("device") or "cpu")
    try:
        _native.run_cli(["attnscope", command] + options_to_argv(options))
    finally:
        _rules._run_device = "cpu"
    return Bundle(options["out"])


simulate.__doc__ = (simulate.__doc__ or "") + "\n\nOptions (from the command line):\n\n" + (
    _native.cli_help("simulate")
)
evaluate.__doc__ = (evaluate.__doc__ or "") + "\n\nOptions (from the command line):\n\n" + (
    _native.cli_help("eval")
)


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``python -m attnscope ARGS``: the ``attnscope`` command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _native.run_cli(["attnscope"] + args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _native.AttnscopeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2 if isinstance(e, _native.BadInput) and str(e).startswith("error:") else 1
    return 0
