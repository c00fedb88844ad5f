"""Are the stability indicators bounded, or do they grow with training and with scale? (method.md section 6)

For each indicator (attention and router Z-values, branch output RMS, outlier shares) and each run, the
growth rate over the second half of training (averaged over the seeds of each cell, the runs sharing a scale
and LR, whose spread is the reported noise floor): g = (d v / d ln T) / mean(v), the relative change of the
indicator per e-fold of tokens (a value growing like T^p has g close to p; a bounded one has g near 0; it
needs no positivity, so an outlier share of 0 is fine; an outlier share's growth is relative to at least
SHARE_FLOOR_PCT, so a share that stays negligible never counts as growing). Across scales: the slope of ln(final value)
against ln(scale) over the runs' final values.

Verdict per indicator, thresholds stated in the result: "growing" when the largest within-run g exceeds
GROWTH_TOL or the across-scale slope exceeds SCALE_TOL, else "bounded"; the check passes when every
indicator present is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.table import FitInputError, best_rows, fit_rows, require_columns

INDICATORS = ("attn_z", "router_z", "rms_attn", "rms_mlp", "outlier_attn", "outlier_mlp")
GROWTH_TOL = 0.3  # relative growth per e-fold of tokens in the second half of training (v ~ T^0.3)
SCALE_TOL = 0.3  # final value growing faster than scale^0.3 across model sizes
MIN_POINTS = 3  # logged points in the second half a growth rate needs
# Outlier shares are percentages that sit at 0 for most of a healthy run: relative to their own tiny mean, a
# share going from 0 to 0.01% grows "4x per e-fold" (measured on a width-transfer run). Their growth is taken
# relative to at least this share (in %), so only a share that matters can count as growing.
SHARE_FLOOR_PCT = 0.1
PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class IndicatorTrend:
    name: str
    growth_max: float  # largest within-run growth rate g of a cell (its seeds' mean)
    growth_run: str  # a run of that cell (its largest g)
    scale_slope: float  # d ln(final) / d ln(scale); NaN with one scale
    verdict: str  # bounded or growing
    growth_sd: float = math.nan  # seed-to-seed SD of g in that cell (NaN with one seed): the noise floor

    def to_dict(self) -> dict[str, Any]:
        return {"indicator": self.name, "growth_max": self.growth_max, "growth_run": self.growth_run,
                "growth_sd": self.growth_sd, "scale_slope": self.scale_slope, "verdict": self.verdict}


@dataclass(frozen=True)
class StabilityCheck:
    scale: str
    x: str
    n_runs: int
    trends: tuple[IndicatorTrend, ...]
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"growth_tol": GROWTH_TOL, "scale_tol": SCALE_TOL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "x": self.x, "n_runs": self.n_runs, "verdict": self.verdict, "why": self.why,
                "thresholds": dict(self.thresholds), "indicators": [t.to_dict() for t in self.trends],
                "warnings": list(self.warnings)}


def best_runs(runs: pd.DataFrame, scale: str = "n_params", by: Sequence[str] = (), loss: str = "val_loss") -> list[str]:
    """The run ids at the best LR of each scale (and group of `by`), every seed of it: an LR sweep's far-off
    LRs grow their indicators by design, so the check reads the runs a user would keep."""
    require_columns(runs, ["run_id"], source="runs")
    keys = [*by, scale, *(["lr"] if "lr" in runs.columns else [])]
    best = best_rows(runs, [*by, scale], loss, source="runs")[keys]
    done = fit_rows(runs, source="runs")
    return done.merge(best, on=keys)["run_id"].astype(str).tolist()


def growth_rate(x: np.ndarray, v: np.ndarray, floor: float = 0.0) -> float:
    """(d v / d ln x) / max(mean |v|, floor) by least squares over the points; NaN with too few points."""
    ok = np.isfinite(x) & np.isfinite(v) & (x > 0)
    x, v = x[ok], v[ok]
    if x.size < MIN_POINTS or np.ptp(np.log(x)) == 0:
        return math.nan
    mean = max(float(np.mean(np.abs(v))), floor)
    return 0.0 if mean == 0 else float(np.polyfit(np.log(x), v, 1)[0]) / mean


def check_stability(curves: pd.DataFrame, *, scale: str = "n_params", x: str = "tokens",
                    indicators: Sequence[str] = INDICATORS, source: str = "curves") -> StabilityCheck:
    """Trends of each indicator within runs and across `scale` (curves joined with the runs' settings)."""
    require_columns(curves, ["run_id", x, scale], source=source)
    present = [i for i in indicators if i in curves.columns and curves[i].notna().any()]
    if not present:
        raise FitInputError(f"{source}: none of the indicators {list(indicators)} is logged")
    trends, warnings = [], []
    for name in present:
        trend, note = _trend(curves, name, scale, x)
        trends.append(trend)
        warnings += note
    growing = [t for t in trends if t.verdict == "growing"]
    verdict = FAIL if growing else PASS
    why = ("growing: " + ", ".join(f"{t.name} (g={t.growth_max:.2f} in {t.growth_run}, scale slope "
                                   f"{t.scale_slope:.2f})" for t in growing)) if growing else \
        f"every indicator bounded (g <= {GROWTH_TOL} within runs, slope <= {SCALE_TOL} across {scale})"
    return StabilityCheck(scale=scale, x=x, n_runs=int(curves["run_id"].nunique()), trends=tuple(trends),
                          verdict=verdict, why=why, warnings=tuple(warnings))


def _trend(curves: pd.DataFrame, name: str, scale: str, x: str) -> tuple[IndicatorTrend, list[str]]:
    rates, finals = [], []
    cell_keys = [c for c in (scale, "lr") if c in curves.columns]  # runs differing only in seed share a cell
    for rid, run in curves[curves[name].notna()].sort_values(x).groupby("run_id"):
        xs = run[x].to_numpy(dtype=float)
        late = xs >= np.median(xs)  # the second half of training: past the transient of the first steps
        floor = SHARE_FLOOR_PCT if name.startswith("outlier_") else 0.0
        g = growth_rate(xs[late], run[name].to_numpy(dtype=float)[late], floor)
        rates.append({"run": str(rid), "g": g, **{k: run[k].iloc[0] for k in cell_keys}})
        finals.append((float(run[scale].iloc[0]), float(run[name].iloc[-1])))
    table = pd.DataFrame(rates)
    table = table[np.isfinite(table["g"])] if len(table) else table
    slope = _scale_slope(np.array(finals))
    if table.empty:
        note = [f"{name}: fewer than {MIN_POINTS} logged points in the second half of every run; no growth rate"]
        verdict = "growing" if slope > SCALE_TOL else "bounded"
        return IndicatorTrend(name, math.nan, "", slope, verdict), note
    # A cell's growth is the mean over its seeds: the largest single run of a noisy indicator is biased upward.
    cells = table.groupby(cell_keys, dropna=False)["g"]
    stats = pd.DataFrame({"mean": cells.mean(), "sd": cells.std(), "n": cells.size(), "run": cells.idxmax()})
    top = stats.loc[stats["mean"].idxmax()]
    g, sd, n = float(top["mean"]), float(top["sd"]), int(top["n"])
    verdict = "growing" if (g > GROWTH_TOL) or (slope > SCALE_TOL) else "bounded"
    note = []
    if n > 1 and abs(g - GROWTH_TOL) < 2 * sd / math.sqrt(n):
        note.append(f"{name}: growth {g:.3f} is within 2 standard errors of its seeds ({sd:.3f} SD over {n}) of "
                    f"the threshold {GROWTH_TOL}; the verdict is within seed noise")
    return IndicatorTrend(name, g, table.loc[top["run"], "run"], slope, verdict, sd), note


def _scale_slope(finals: np.ndarray) -> float:
    """Slope of ln(mean final value per scale) on ln(scale); NaN with one scale or a non-positive value."""
    if finals.size == 0:
        return math.nan
    df = pd.DataFrame(finals, columns=["scale", "value"]).groupby("scale")["value"].mean()
    if len(df) < 2 or (df.index <= 0).any() or (df <= 0).any():
        return math.nan
    return float(np.polyfit(np.log(df.index.to_numpy()), np.log(df.to_numpy()), 1)[0])
