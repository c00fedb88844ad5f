"""Runs a design may add: what the sweep's own axes can express, each with its FLOP cost from hyperp's
accounting, and each written as the spec settings that `sweep run` resolves to exactly that run.

Per cell (one group's runs at one scale; for `ab`, the cells at the scale it reads):
- `seeds`: two more seeds at the cell's best measured LR (narrows the optimum where noise limits it), offered
  SEED_BATCHES times with fresh seeds, so a design can keep adding seeds where they pay most;
- `replicate`: one more seed at every LR of the cell's fitted window (the parabola's points: the vertex's
  standard error falls as 1/sqrt(replicates) while the window keeps its span, where LR points between the
  window's would narrow its span and seeds at one LR leave the curvature to the single runs), offered
  SEED_BATCHES times;
- `lr`: one run at each geometric midpoint beside the best LR, or one grid step beyond an edge where the best
  LR is the lowest or highest tried (places the optimum where the window is sparse or unbracketed);
Along the scale (not for `ab`, which reads one scale):
- `scale`: a new scale beyond the largest (the ratio of the last two), an LR sweep of 5 points at the grid's
  spacing around the optimum the model predicts there (lengthens the lever arm of a slope or a law).

Settings come from each template run's own config (runs/<id>/config.json), reduced to the fields that differ
from the spec's resolved [base]; a new scale changes the axis (and, where the spec co-scales tokens with
tokens_per_param, keeps that rule instead of the template's tokens) and is resolved by the sweep's plan,
whose accounting gives its FLOPs. In-cell runs cost what their cell's runs cost (the ledger's `flops`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hyperp.design.model import ResponseModel, cell_key
from hyperp.design.questions import Question
from hyperp.fitting.table import FitInputError, status_masks

SEED_BATCHES = 3  # batches of 2 seeds offered per cell
NEW_SCALE_LRS = 5  # LRs of a new scale's sweep: the parabola's window (hyperp.fitting.lr: 2 LR_WINDOW + 1)
DERIVED = ("lr", "seed", "checkpoint_every")  # set per run, or recomputed by the plan from the spec


@dataclass
class Candidate:
    """A batch of runs added together; `rows` are runs-table rows with the loss unknown (NaN)."""

    kind: str  # seeds, replicate, lr, scale, run (an existing run, in a backtest), pool
    label: str
    rows: pd.DataFrame
    flops: float
    settings: list[dict[str, Any]] = field(default_factory=list)  # one spec table per row (DESIGN.toml)
    queue: str = ""  # candidates of one queue are offered in order (the next seeds of a cell after the last)


@dataclass(frozen=True)
class SweepContext:
    """What candidates need from the sweep directory: its spec, the resolved [base], run configs."""

    sweep_dir: Path
    spec: Any  # hyperp.sweeps.spec.SweepSpec
    base: dict[str, Any]

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepContext:
        from hyperp.sweeps.plan import resolve  # noqa: PLC0415
        from hyperp.sweeps.spec import load_spec  # noqa: PLC0415

        path = Path(sweep_dir) / "spec.toml"
        if not path.is_file():
            raise FitInputError(f"{sweep_dir}: not a sweep directory (no spec.toml); a design needs the sweep's spec")
        spec = load_spec(path)
        return cls(Path(sweep_dir), spec, resolve(spec, dict(spec.base))[0].to_dict())

    def settings(self, row: pd.Series) -> dict[str, Any]:
        """A ledger row's run as spec settings: its config (the ledger's config_json, else the run's
        config.json) minus what the resolved [base] already gives."""
        text = row.get("config_json")
        path = self.sweep_dir / "runs" / str(row["run_id"]) / "config.json"
        try:
            cfg = json.loads(text if isinstance(text, str) and text else path.read_text())
        except (OSError, ValueError) as exc:
            raise FitInputError(f"run {row['run_id']}: cannot read its config ({exc})") from None
        return {k: v for k, v in cfg.items() if k not in DERIVED and v != self.base.get(k)}

    def tokens_rule(self) -> Any | None:
        """The spec's tokens_per_param when it sets one value (its co-scaling rule), else None."""
        values = {str(v) for v in self._values("tokens_per_param")}
        return next(iter(self._values("tokens_per_param"))) if len(values) == 1 else None

    def _values(self, name: str) -> list[Any]:
        s = self.spec
        out = [s.base[name]] if name in s.base else []
        out += list(s.axes.get(name, []))
        out += [v for z in s.zips for v in z.get(name, [])]
        return out

    def resolve(self, settings: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """(the run's settings, its planned FLOPs) as the sweep's plan resolves them."""
        from hyperp.sweeps.plan import explicit_point, resolve  # noqa: PLC0415
        from hyperp.sweeps.spec import SpecError  # noqa: PLC0415

        try:
            _, _, info = resolve(self.spec, explicit_point(self.spec, settings))
        except SpecError as exc:
            raise FitInputError(f"a candidate at {settings}: {exc}") from None
        return settings, float(info["flops_planned"])


def auto_candidates(df: pd.DataFrame, question: Question, model: ResponseModel, ctx: SweepContext,
                    next_seed: int | None = None) -> list[Candidate]:
    """Every candidate the sweep's axes express for this group (see the module doc)."""
    ok, _ = status_masks(df)
    done = df[ok & np.isfinite(pd.to_numeric(df[question.loss_col], errors="coerce"))]
    seed = int(pd.to_numeric(df["seed"], errors="coerce").max()) + 1 if next_seed is None else next_seed
    out: list[Candidate] = []
    for key, cell in question.read_rows(done).groupby(list(question.cell_cols), sort=True):
        out += _in_cell(cell_key(key), cell, question, ctx, seed)
        out += _replicates(cell_key(key), cell, question, model, ctx, seed)
    if question.name != "ab":  # ab reads one scale: a new one cannot narrow it
        for group, cell in _largest_cells(done, question):
            out.append(_new_scale(group, cell, question, model, ctx, seed))
    return [c for c in out if c is not None]


def _in_cell(key: Hashable, cell: pd.DataFrame, q: Question, ctx: SweepContext, seed: int) -> list[Candidate]:
    means = cell.groupby(q.lr_col)[q.loss_col].mean().sort_index()
    lrs = means.index.to_numpy(float)
    best = float(means.idxmin())
    step = _grid_step(lrs)
    template = cell.iloc[0]
    flops = run_cost(template)
    name = _label(q.cell_cols, key)
    out = [_at(template, ctx, q, [(best, s), (best, s + 1)], 2 * flops, "seeds",
               f"{name}: seeds {s} and {s + 1} at lr {best:.4g}")
           for s in range(seed, seed + 2 * SEED_BATCHES, 2)]
    for c in out:
        c.queue = f"seeds {name}"
    if best <= lrs.min() or best >= lrs.max():
        edge = best / step if best <= lrs.min() else best * step
        new = [edge]
    else:
        new = [best / math.sqrt(step), best * math.sqrt(step)]
    for lr in new:
        if not np.any(np.isclose(lrs, lr, rtol=0.01)):
            out.append(_at(template, ctx, q, [(lr, int(template["seed"]))], flops, "lr", f"{name}: lr {lr:.4g}"))
    return out


def _replicates(key: Hashable, cell: pd.DataFrame, q: Question, model: ResponseModel, ctx: SweepContext,
                seed: int) -> list[Candidate]:
    """SEED_BATCHES batches of one new seed at each LR of the cell's fitted window (none for a cell whose curve
    is borrowed: it has no window of its own yet)."""
    curve = model.curve(key)
    if not curve.fitted:
        return []
    lo, hi = np.exp(curve.window)
    lrs = [lr for lr in np.unique(cell[q.lr_col].to_numpy(float)) if lo * (1 - 1e-9) <= lr <= hi * (1 + 1e-9)]
    template = cell.iloc[0]
    name = _label(q.cell_cols, key)
    out = []
    for s in range(seed + 2 * SEED_BATCHES, seed + 3 * SEED_BATCHES):  # seeds apart from the `seeds` batches'
        c = _at(template, ctx, q, [(lr, s) for lr in lrs], len(lrs) * run_cost(template), "replicate",
                f"{name}: seed {s} at the window's {len(lrs)} LRs ({lrs[0]:.4g}-{lrs[-1]:.4g})")
        c.queue = f"replicate {name}"
        out.append(c)
    return out


def _at(template: pd.Series, ctx: SweepContext, q: Question, points: list[tuple[float, int]], flops: float,
        kind: str, label: str, settings: dict[str, Any] | None = None) -> Candidate:
    base = ctx.settings(template) if settings is None else settings
    rows = pd.DataFrame([{**template.to_dict(), q.lr_col: lr, "seed": s, q.loss_col: math.nan,
                          "status": "completed"} for lr, s in points])
    return Candidate(kind, label, rows, flops, [{**base, "lr": float(lr), "seed": int(s)} for lr, s in points])


def _largest_cells(done: pd.DataFrame, q: Question):
    for group, sub in (done.groupby(list(q.group_cols), sort=True) if q.group_cols else [((), done)]):
        top = pd.to_numeric(sub[q.scale]).max()
        yield cell_key(group) if q.group_cols else (), sub[pd.to_numeric(sub[q.scale]) == top]


def _new_scale(group: tuple, cell: pd.DataFrame, q: Question, model: ResponseModel, ctx: SweepContext,
               seed: int) -> Candidate | None:
    scales = np.unique(pd.to_numeric(model_scales(model, group), errors="coerce"))
    if scales.size < 2:
        return None
    value = scales[-1] * (scales[-1] / scales[-2])
    value = int(round(value)) if isinstance(cell[q.scale].iloc[0], (int, np.integer)) else float(value)
    template = cell.iloc[0]
    settings = {**ctx.settings(template), q.scale: value}
    rule = ctx.tokens_rule()
    if rule is not None and q.scale != "tokens":
        settings.pop("tokens", None)
        settings["tokens_per_param"] = rule
    settings, flops = ctx.resolve({**settings, "lr": 0.01, "seed": int(template["seed"])})
    eta = model.optimum_lr((*group, value))
    step = _grid_step(np.unique(cell[q.lr_col].to_numpy(float)))
    lrs = [eta * step ** (i - NEW_SCALE_LRS // 2) for i in range(NEW_SCALE_LRS)]
    new = template.copy()
    new[q.scale] = value
    if "flops" in new.index:
        new["flops"] = flops
    name = _label(q.group_cols, group)
    label = f"{name + ': ' if name else ''}new {q.scale}={value}: {NEW_SCALE_LRS} LRs around {eta:.4g}"
    return _at(new, ctx, q, [(lr, int(template["seed"])) for lr in lrs], NEW_SCALE_LRS * flops, "scale", label,
               settings={k: v for k, v in settings.items() if k not in DERIVED})


def _label(cols: tuple[str, ...], values: tuple) -> str:
    """A cell's or group's name in candidate labels: "col=value, ..."."""
    return ", ".join(f"{c}={v}" for c, v in zip(cols, values))


def run_cost(row: pd.Series) -> float:
    """A run's FLOPs: measured (`flops`), else planned (`flops_planned`, the accounting's)."""
    for col in ("flops", "flops_planned"):
        v = pd.to_numeric(pd.Series([row.get(col)]), errors="coerce").iloc[0]
        if np.isfinite(v) and v > 0:
            return float(v)
    raise FitInputError(f"run {row.get('run_id')}: no FLOP count (flops, flops_planned) to cost it")


def model_scales(model: ResponseModel, group: tuple) -> list[float]:
    return sorted(float(k[-1]) for k in model.curves if tuple(k[:-1]) == tuple(group))


def _grid_step(lrs: np.ndarray) -> float:
    """The LR grid's ratio between neighbours (median), 2 when it cannot be read."""
    lrs = np.unique(lrs)
    if lrs.size < 2:
        return 2.0
    return float(np.exp(np.median(np.diff(np.log(lrs)))))
