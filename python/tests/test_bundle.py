"""Bundles as Arrow tables, the report, and the command line in this process."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import attnscope as ats


def test_every_table_equals_pyarrow_parquet(smol_2k):
    names = smol_2k.tables()
    assert sorted(names) == sorted(["metrics", "iou", "heads", "tokens", "maps", "selections", "eval"])
    files = {t["name"]: t["file"] for t in smol_2k.manifest["tables"]}
    for name in names:
        mine = smol_2k.table(name)
        theirs = pq.read_table(os.path.join(smol_2k.path, files[name]))
        # A simulation writes no evaluation rows (the eval table is attnscope eval's).
        assert mine.num_rows == theirs.num_rows, name
        assert (mine.num_rows == 0) == (name == "eval"), f"{name}: {mine.num_rows} rows"
        assert mine.schema.equals(theirs.schema), f"{name}: {mine.schema} vs {theirs.schema}"
        assert mine.equals(theirs), name


def test_a_table_is_decoded_once_and_shared(smol_2k):
    # The second table() hands over the first one's Arrow buffers (no copy, no second decode).
    first = smol_2k.table("selections")
    again = smol_2k.table("selections")
    assert again.equals(first)
    for a, b in zip(first.columns, again.columns):
        bufs_a = [x for chunk in a.chunks for x in chunk.buffers() if x is not None]
        bufs_b = [x for chunk in b.chunks for x in chunk.buffers() if x is not None]
        assert [x.address for x in bufs_a] == [x.address for x in bufs_b]


def test_report_is_the_command_lines(smol_2k, capfd):
    mine = smol_2k.report()
    assert ats.main(["report", smol_2k.path, "--json"]) == 0
    theirs = json.loads(capfd.readouterr().out)
    assert mine == theirs
    names = [m["name"] for m in mine["methods"]]
    assert names == ["infllm-v2", "np-infllm-v2"]


def test_manifest_and_repr(smol_2k):
    m = smol_2k.manifest
    assert m["model"]["spec"] == "smollm2-135m"
    assert m["n_tokens"] == 2048
    assert m["command"][:2] == ["attnscope", "simulate"]
    assert "--len" in m["command"]
    assert "2048 tokens" in repr(smol_2k)


def test_damaged_table_is_refused(smol_2k, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(smol_2k.path, copy)
    with open(copy / "iou.parquet", "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ats.BundleError, match="iou.parquet.*SHA-256"):
        ats.Bundle(copy)


def test_missing_bundle_and_unknown_table(smol_2k, tmp_path):
    with pytest.raises(ats.BundleError, match="no manifest.json"):
        ats.Bundle(tmp_path / "nothing-here")
    with pytest.raises(ats.BadInput, match="no table 'nope'"):
        smol_2k.table("nope")


def test_python_dash_m_runs_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "attnscope", "methods"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "phsa"
    bad = subprocess.run(
        [sys.executable, "-m", "attnscope", "simulate", "--no-such-option"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "--no-such-option" in bad.stderr


def test_progress_reaches_sys_stderr_when_it_is_no_terminal(tmp_path):
    """As in Jupyter: stderr is a pipe, and the progress lines go through sys.stderr."""
    code = (
        "import io, sys, attnscope as ats\n"
        "buf = io.StringIO(); real = sys.stderr; sys.stderr = buf\n"
        f"ats.simulate(model='smollm2-135m', length=256, layers='3', methods=['phsa'],\n"
        f"             sparsity=[0.5], out={str(tmp_path / 'p')!r})\n"
        "real.write(repr(buf.getvalue()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "\\rsimulating 1 layers" in out.stderr
