"""The worked example under examples/ runs and agrees with the report."""

import os

import pytest

phsa_vs_infllm = pytest.importorskip("phsa_vs_infllm")


def test_example_table_and_figure(tmp_path):
    table = phsa_vs_infllm.main(str(tmp_path), length=1024, layers="2,8,14", sparsity=(0.8,))
    assert list(table.index) == ["sparsity=0.8"]
    row = table.loc["sparsity=0.8"]
    assert 0 < row["IL phsa"] < 1 and 0 < row["IL infllm-v2"] < 1
    # The pandas reduction of means is the report's statistic (sums over the same units).
    assert abs(row["reduction"] - row["report reduction"]) < 1e-9
    png = tmp_path / "info_loss_per_layer.png"
    assert png.stat().st_size > 10_000
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
