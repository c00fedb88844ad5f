"""`hyperp quickstart`: the main job on embedded defaults: a small sweep, the fits, the plots.

The sweep trains a tiny model on the stdlib corpus under `muonh` (no token scaling) and `hyperp` (LR scaled
by (T/T0)^-0.32) at three token budgets, with a bracketing LR search per cell (a log grid of five base LRs, extended
outward while a cell's best LR sits on its edge). The fit locates the optimal LR of each
(scheme, budget) and fits eta*(T) = a T^b per scheme: under `muonh` b measures the data exponent of the
optimal LR (the paper reports about -0.32); under `hyperp` the base LR is already token-scaled, so b near 0
means the transfer holds at this scale. Whatever the runs give is what is reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from hyperp import io
from hyperp.fitting import FitInputError, fit_law, fit_optimal_lr
from hyperp.plots.fits import plot_law, plot_lr
from hyperp.plots.style import save_figure
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.spec import loads_spec

SPEC = """
name = "quickstart"
description = "optimal LR versus token budget, muonh and hyperp, tiny model on the stdlib corpus"

[base]
depth = 2
aspect_ratio = 32
head_dim = 16
seq_len = 64
batch_tokens = 1024
val_tokens = 8192
base_depth = 2
base_tokens = 131072

[axes]
param = ["muonh", "hyperp"]
tokens = [65536, 131072, 262144]
lr = { search = "bracket", grid = [0.01, 0.02, 0.04, 0.08, 0.16], max_extend = 3 }

[resources]
cpus = 1
"""


def run_quickstart(out: Path, console: Console, spec_text: str = SPEC) -> dict:
    spec = loads_spec(spec_text, source="hyperp quickstart")
    outcome = run_sweep(spec, out / "sweeps", console=console)
    runs = io.read_parquet(outcome.sweep_dir / "runs.parquet")
    optima = fit_optimal_lr(runs, by=["param", "tokens"])
    save_figure(plot_lr(optima, title="quickstart: loss vs base LR"), out / "lr.png")
    summary: dict = {"sweep_dir": str(outcome.sweep_dir), "counts": outcome.counts, "optima": optima.to_dict()}
    try:
        laws = fit_law(runs, x="tokens", y="lr_opt", by=["param"])
        save_figure(plot_law(laws, title="quickstart: optimal base LR vs tokens"), out / "law.png")
        summary["laws"] = [law.to_dict() for law in laws]
    except FitInputError as e:  # e.g. too few bracketed optima: report it, keep the rest
        summary["laws_error"] = str(e)
    io.write_json(out / "summary.json", summary)
    print_summary(summary, optima.to_frame(), out, console)
    return summary


def print_summary(summary: dict, optima: pd.DataFrame, out: Path, console: Console) -> None:
    table = Table(title="optimal base LR per (scheme, tokens)")
    for col in ("param", "tokens", "lr_opt", "loss_opt", "bracketed"):
        table.add_column(col, justify="right")
    for _, r in optima.iterrows():
        table.add_row(str(r["param"]), f"{r['tokens']:,}", f"{r['lr_opt']:.4g}", f"{r['loss_opt']:.4f}",
                      str(r["bracketed"]))
    console.print(table)
    for law in summary.get("laws", []):
        console.print(f"{law['param']}: lr_opt = {law['a']:.3g} * T^{law['b']:.3f}  (r2 {law['r2']:.3f})")
    if "laws_error" in summary:
        console.print(f"[yellow]power law not fitted:[/yellow] {summary['laws_error']}")
    console.print(f"outputs in {out}/ (summary.json, lr.png, law.png, sweeps/)")
    console.print(", ".join(f"{n} {s}" for s, n in summary["counts"].items()))
