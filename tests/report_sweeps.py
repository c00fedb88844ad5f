"""Small sweep directories for the report tests, written directly (no training) in the layout `hyperp sweep
run` leaves: spec.toml, plan.json, state.json, runs.parquet and runs/<run_id>/curves.parquet.

Two schemes, each with an LR sweep of 5 LRs (its best LR repeated with seeds 1 and 2) at each value of one
axis; the optimum is each scheme's own LR at every value (a transfer), one run diverged above the grid, one
failed with a two-line error, and plan.json may hold runs not yet recorded (a sweep still running)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

OPTIMA = {"hyperp": 0.02, "muon": 0.03}
ERROR = "RuntimeError: out of memory at step 3\n  File \"loop.py\", line 1, in train"
STEPS = 16
TOKENS_PER_STEP = 4096


def settings(axis: str, value) -> dict:
    """A run's shape and budget at one value of the axis (width, tokens or head_init_std)."""
    width = value if axis == "width" else 32
    tokens = value if axis == "tokens" else STEPS * TOKENS_PER_STEP
    n = 24 * width * width
    return {"depth": 2, "width": width, "tokens": tokens, "n_params": n, "flops": 6.0 * n * tokens,
            "head_init_std": value if axis == "head_init_std" else 0.3}


def run_rows(name: str, axis: str, values) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for param, opt in OPTIMA.items():
        for value in values:
            s = settings(axis, value)
            base = 1.5 + 60 * (s["n_params"] * s["tokens"]) ** -0.15 * (1.0 if param == "hyperp" else 1.06)
            for lr in opt * 2.0 ** np.arange(-2, 3):
                for seed in (0, 1, 2) if lr == opt else (0,):
                    loss = base + 0.05 * np.log(lr / opt) ** 2 + rng.normal(0, 0.002)
                    rows.append(_row(name, param, axis, value, s, lr, seed, "completed", loss))
    rows.append(_row(name, "hyperp", axis, values[-1], settings(axis, values[-1]), 16 * OPTIMA["hyperp"], 0,
                     "diverged", np.nan))
    rows.append(_row(name, "muon", axis, values[1], settings(axis, values[1]), 8 * OPTIMA["muon"], 0, "failed",
                     np.nan, error=ERROR))
    return rows


def _row(name, param, axis, value, s, lr, seed, status, loss, error=None) -> dict:
    rid = f"{param}-{axis}{value:g}-lr{lr:.4g}-s{seed}"
    gain = 1.0 + 0.3 / s["head_init_std"] if param == "hyperp" else 1.0
    return {"run_id": rid, "sweep": name, "param": param, **s, "lr": float(lr), "seed": seed, "status": status,
            "val_loss": loss, "cell_id": f"{param}-{value:g}", "error": error, "batch_tokens": TOKENS_PER_STEP,
            "final_norm_gain_max": gain}


def curves(row: dict, rng) -> pd.DataFrame:
    steps = np.arange(1, STEPS + 1 if row["status"] == "completed" else 6)
    final = row["val_loss"] if np.isfinite(row["val_loss"]) else 3.0
    return pd.DataFrame({"step": steps, "tokens": steps * TOKENS_PER_STEP, "train_loss": final + 2.0 / steps,
                         "val_loss": np.where(steps % 4 == 0, final + 1.0 / steps, np.nan),
                         "attn_z": 5 + 0.05 * np.log(steps) + rng.normal(0, 0.01, steps.size),
                         "rms_mlp": 1 + rng.normal(0, 0.01, steps.size)})


def tiny_sweep(root: Path, name: str = "tiny", axis: str = "width", values=(32, 64, 128), pending: int = 0,
               with_curves: bool = True) -> Path:
    """The sweep directory root/name; `pending` planned runs are left out of the ledger (not yet run)."""
    d = root / name
    rows = run_rows(name, axis, tuple(values))
    rng = np.random.default_rng(1)
    for row in rows:
        (d / "runs" / row["run_id"]).mkdir(parents=True)
        if with_curves and row["status"] != "failed":
            curves(row, rng).to_parquet(d / "runs" / row["run_id"] / "curves.parquet")
    pd.DataFrame(rows).to_parquet(d / "runs.parquet")
    (d / "spec.toml").write_text(f'name = "{name}"\ndescription = "a tiny {axis} study for the report tests"\n\n'
                                 f'[axes]\nparam = ["hyperp", "muon"]\n{axis} = {list(values)}\n')
    plan_runs = [{"run_id": r["run_id"], "cell_id": r["cell_id"], "fields": {"param": r["param"], axis: r[axis],
                                                                             "lr": r["lr"]}} for r in rows]
    plan_runs += [{"run_id": f"pending-{i}", "cell_id": rows[0]["cell_id"], "fields": {}} for i in range(pending)]
    cells = [{"cell_id": c, "fields": {}, "search": {"search": "bracket", "grid": [0.01, 0.02], "seeds": 3}}
             for c in dict.fromkeys(r["cell_id"] for r in rows)]
    (d / "plan.json").write_text(json.dumps({"sweep": name, "varying": ["param", axis, "lr"], "cells": cells,
                                             "runs": plan_runs}))
    (d / "state.json").write_text(json.dumps({"active": False, "running": []}))
    return d


CHINCHILLA = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def chinchilla_grid(root: Path, name: str = "grid") -> Path:
    """A bare ledger (runs.parquet only) of one scheme on 4 widths x 3 token budgets, 3 LRs each, whose best
    losses follow L(N, D) = CHINCHILLA."""
    c = CHINCHILLA
    rng = np.random.default_rng(0)
    rows = []
    for width in (32, 64, 128, 256):
        for tokens in (65536, 262144, 1048576):
            n = 24 * width * width
            law = c["E"] + c["A"] / n ** c["alpha"] + c["B"] / tokens ** c["beta"]
            rows += [{"run_id": f"w{width}-t{tokens}-lr{lr}", "param": "hyperp", "width": width, "tokens": tokens,
                      "n_params": n, "flops": 6.0 * n * tokens, "lr": lr, "seed": 0, "status": "completed",
                      "val_loss": law + 0.05 * np.log(lr / 0.02) ** 2 + rng.normal(0, 0.002)}
                     for lr in (0.01, 0.02, 0.04)]
    (root / name).mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / name / "runs.parquet")
    return root / name


def snapshot(d: Path) -> dict[str, tuple[int, int, bytes] | str]:
    """Every file under d: (size, mtime in ns, contents), and every directory ("dir", so that a new empty
    directory shows too): equal before and after means nothing was written."""
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else "dir"
            for p in sorted(d.rglob("*")) if p.is_file() or p.is_dir()}
