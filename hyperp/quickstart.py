"""`hyperp quickstart`: the main job on embedded defaults: HyperP's central claim as a check, in minutes.

The claim: a base LR tuned on a small proxy transfers to larger models. The quickstart sweeps a tiny model
(depth 2) at widths 32, 64 and 128 on the stdlib corpus under `hyperp` and under `adamw` (the standard
parameterization, whose optimum is expected to move with width), each (scheme, width) cell with a
bracketing LR search, then runs `hyperp check transfer --axis width`: the optimal LR per width with its
interval, the drift slope of ln eta* against ln width (the fitted law) and the regret of reusing the proxy's
(width 32) LR at each width, with a verdict. The LM head's init std is the one `examples/study/head_radius.toml`
chose so that the head's sphere does not bind (method.md section 10). The runs are short (128 steps): the
study in results/width_transfer/ runs the same check at 512 steps with seeds. Whatever the runs give is
what is reported.
"""

from __future__ import annotations

from pathlib import Path

from hyperp import io
from hyperp.checks.transfer import check_transfer
from hyperp.fitting import fit_optimal_lr
from hyperp.plots.fits import plot_lr
from hyperp.plots.style import save_figure
from hyperp.plots.transfer import plot_transfer
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.spec import loads_spec

AXIS = "width"
SPEC = """
name = "quickstart"
description = "does the base LR tuned at width 32 transfer to widths 64 and 128? hyperp vs adamw, stdlib corpus"

[base]
depth = 2
head_dim = 16
seq_len = 128
batch_tokens = 1024
tokens = 131072
val_tokens = 32768
eval_every = 128         # validate once, at the end, on 32k tokens: the LR curves' noise is the runs', not the eval's
base_depth = 2
base_width = 32
base_tokens = 131072
head_init_std = 0.3

[axes]
param = ["hyperp", "adamw"]
width = [32, 64, 128]
lr = { search = "bracket", grid = [0.01, 0.02, 0.04, 0.08, 0.16], max_extend = 3 }

[[override]]
where = { param = "adamw" }
set = { lr = { search = "bracket", grid = [0.001, 0.002, 0.004, 0.008, 0.016], max_extend = 3 } }

[resources]
cpus = 1
"""


def sweep_dir(out: Path, spec_text: str | None = None) -> Path:
    """Where the quickstart's sweep lives under `out`."""
    return out / "sweeps" / loads_spec(spec_text or SPEC, source="hyperp quickstart").name


def run_quickstart(out: Path, spec_text: str | None = None, on_progress=None) -> tuple[dict, list]:
    """The sweep (SPEC unless `spec_text`; `on_progress` gets the sweep's progress, as `run_sweep`'s), the
    transfer checks, the plots and summary.json. Returns the summary and the checks (TransferCheck)."""
    spec = loads_spec(spec_text or SPEC, source="hyperp quickstart")
    outcome = run_sweep(spec, out / "sweeps", on_progress=on_progress)
    runs = io.read_parquet(outcome.sweep_dir / "runs.parquet")
    checks = check_transfer(runs, AXIS, by=["param"], source=str(outcome.sweep_dir))
    save_figure(plot_transfer(checks, title="quickstart: does the width-32 LR transfer?"), out / "transfer.png")
    optima = fit_optimal_lr(runs, by=["param", AXIS], n_boot=0)
    save_figure(plot_lr(optima, title="quickstart: loss vs base LR per (scheme, width)"), out / "lr.png")
    summary = {"sweep_dir": str(outcome.sweep_dir), "counts": outcome.counts,
               "transfer": [c.to_dict() for c in checks]}
    io.write_json(out / "summary.json", io.jsonable(summary))
    return summary, checks
