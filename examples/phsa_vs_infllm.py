"""PHSA vs InfLLM v2 from Python: simulate both at matched sparsity on SmolLM2-135M, build the
comparison table with pandas, and draw information loss per layer with matplotlib.

    python examples/phsa_vs_infllm.py [OUT_DIR] [--len 2048] [--layers all]

Prints the table (per budget: each method's information loss and PHSA's relative reduction,
with the bootstrap 95% interval of `attnscope report`) and writes OUT_DIR/info_loss_per_layer.png.
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import attnscope as ats  # noqa: E402


def comparison_table(run: ats.Bundle) -> pd.DataFrame:
    """Per budget: information loss of PHSA and InfLLM v2 (mean over layers and heads) and
    PHSA's relative reduction, next to the report's own numbers and interval."""
    m = run.table("metrics").to_pandas()
    m = m[m["method"].isin(["phsa", "infllm-v2"])]
    il = m.pivot_table(index="budget_label", columns="method", values="info_loss", aggfunc="mean")
    sp = m.pivot_table(index="budget_label", columns="method", values="sparsity", aggfunc="mean")
    table = pd.DataFrame(
        {
            "IL infllm-v2": il["infllm-v2"],
            "IL phsa": il["phsa"],
            "sparsity infllm-v2": sp["infllm-v2"],
            "sparsity phsa": sp["phsa"],
        }
    )
    table["reduction"] = (table["IL infllm-v2"] - table["IL phsa"]) / table["IL infllm-v2"]
    report = {b["budget"]: b["method_comparison"] for b in run.report()["budgets"]}
    table["report reduction"] = [report[b]["relative_il_reduction"] for b in table.index]
    table["ci95"] = [tuple(report[b]["ci95"] or (None, None)) for b in table.index]
    return table


def figure(run: ats.Bundle, path: str) -> None:
    """Information loss per layer of both methods at each budget."""
    m = run.table("metrics").to_pandas()
    per_layer = (
        m[m["method"].isin(["phsa", "infllm-v2"])]
        .groupby(["budget_label", "method", "layer"])["info_loss"]
        .mean()
        .reset_index()
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    markers = {"phsa": "o", "infllm-v2": "s"}
    for (budget, method), g in per_layer.groupby(["budget_label", "method"]):
        ax.plot(g["layer"], g["info_loss"], marker=markers[method], label=f"{method} {budget}")
    ax.set_xlabel("layer")
    ax.set_ylabel("information loss (1 - recall)")
    ax.set_yscale("log")
    ax.set_title(f"{run.manifest['model']['spec']}, {run.manifest['n_tokens']} tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(out_dir: str, length: int = 2048, layers: str = "all", sparsity=(0.8, 0.9)) -> pd.DataFrame:
    run = ats.simulate(
        model="smollm2-135m",
        text="alice29",
        length=length,
        layers=layers,
        methods=["phsa", "infllm-v2"],
        sparsity=list(sparsity),
        out=os.path.join(out_dir, "run"),
        force=True,
        quiet=True,
    )
    table = comparison_table(run)
    figure(run, os.path.join(out_dir, "info_loss_per_layer.png"))
    return table


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/example")
    p.add_argument("--len", type=int, default=2048)
    p.add_argument("--layers", default="all")
    a = p.parse_args()
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(main(a.out, a.len, a.layers))
    print(f"figure: {os.path.join(a.out, 'info_loss_per_layer.png')}")
