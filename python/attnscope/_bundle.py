"""Run bundles as Arrow tables."""

from __future__ import annotations

import json
import os
from typing import List, Union

from . import _native


class Bundle:
    """A run bundle written by ``simulate`` (or ``attnscope simulate``), read and verified on
    opening: the format version, the manifest's required parts, every table file's SHA-256 and
    row count, and every row against the manifest's methods and budgets. A damaged or
    unfinished bundle raises :class:`attnscope.BundleError` naming the file at fault.

    ``manifest`` is the manifest as a dict, ``tables()`` the table names, ``table(name)`` one
    table as a ``pyarrow.Table`` (handed over through the Arrow C data interface, no copy; use
    ``.to_pandas()`` or ``polars.from_arrow``), ``report()`` the numbers of
    ``attnscope report RUN --json``.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"]):
        self._native = _native.NativeBundle(os.fspath(path))
        self.path = os.fspath(path)
        self.manifest = json.loads(self._native.manifest_json())

    def tables(self) -> List[str]:
        """The names of the bundle's tables (metrics, iou, heads, tokens, maps, selections)."""
        return self._native.tables()

    def table(self, name: str):
        """Table ``name`` as a ``pyarrow.Table``."""
        return self._native.table(name)

    def report(self) -> dict:
        """The report of ``attnscope report RUN --json``: the method table of each budget, the
        IoU matrix and PHSA vs InfLLM v2 with its bootstrap interval."""
        return json.loads(self._native.report_json())

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Bundle({self.path!r}: {m['model']['spec']}, {m['n_tokens']} tokens, "
            f"{len(m['methods'])} methods, {len(m['budgets'])} budgets)"
        )
