"""Are the stability indicators bounded, or do they grow with training and with scale? (method.md section 6)

For each indicator (attention and router Z-values, branch output RMS, outlier shares) and each run, the
growth rate over the second half of training (averaged over the seeds of each cell, the runs sharing a scale
and LR, whose spread is the reported noise floor): g = (d v / d ln T) / mean(v), the relative change of the
indicator per e-fold of tokens (a value growing like T^p has g close to p; a bounded one has g near 0; it
needs no positivity, so an outlier share of 0 is fine; an outlier share's growth is relative to at least
SHARE_FLOOR_PCT, so a share that stays negligible never counts as growing). Across scales: the slope of ln(final value)
against ln(scale) over the runs' final values.

Verdicts follow method.md section 11: each quantity has an interval, and an indicator is "bounded" only
when every interval lies inside its band, "growing" when one lies wholly beyond it, "inconclusive" otherwise.
- growth of a cell: a Student-t interval over its seeds' g; a cell of one run takes its own regression's
  t-interval (the scatter of the logged points about the trend, a narrower kind of noise than seed to seed):
  it can show growth (a run whose interval lies wholly past the band grew), but it cannot confirm a bound, so an
  indicator with a cell of one run is never "bounded" (method.md section 11: too few seeds must not confirm);
- across scale: the t-interval of the slope of ln(final) on ln(scale) regressed over the runs (seeds
  included), so two scales of one run each have no interval. With one scale it is not tested (said).
The check passes when every indicator present is bounded, fails when one is growing, else is inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import Interval, t_interval
from hyperp.fitting.table import FitInputError, best_rows, fit_rows, require_columns

INDICATORS = ("attn_z", "router_z", "rms_attn", "rms_mlp", "outlier_attn", "outlier_mlp")
GROWTH_TOL = 0.3  # relative growth per e-fold of tokens in the second half of training (v ~ T^0.3)
SCALE_TOL = 0.3  # final value growing faster than scale^0.3 across model sizes
MIN_POINTS = 3  # logged points in the second half a growth rate needs
# Outlier shares are percentages that sit at 0 for most of a healthy run: relative to their own tiny mean, a
# share going from 0 to 0.01% grows "4x per e-fold" (measured on a width-transfer run). Their growth is taken
# relative to at least this share (in %), so only a share that matters can count as growing.
SHARE_FLOOR_PCT = 0.1
LEVEL = 0.95  # confidence of every interval a verdict reads
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
BOUNDED, GROWING = "bounded", "growing"


@dataclass(frozen=True)
class IndicatorTrend:
    name: str
    growth_max: float  # the deciding cell's growth rate g (its seeds' mean)
    growth_run: str  # a run of that cell (its largest g)
    scale_slope: float  # d ln(final) / d ln(scale); NaN with one scale
    verdict: str  # bounded, growing or inconclusive
    growth_sd: float = math.nan  # seed-to-seed SD of g in that cell (NaN with one seed): the noise floor
    growth_interval: Interval = field(default_factory=lambda: Interval(math.nan, math.nan, LEVEL))
    slope_interval: Interval = field(default_factory=lambda: Interval(math.nan, math.nan, LEVEL))
    decided_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"indicator": self.name, "growth_max": self.growth_max, "growth_run": self.growth_run,
                "growth_sd": self.growth_sd, "growth_low": self.growth_interval.low,
                "growth_high": self.growth_interval.high, "scale_slope": self.scale_slope,
                "slope_low": self.slope_interval.low, "slope_high": self.slope_interval.high,
                "verdict": self.verdict, "decided_by": self.decided_by}


@dataclass(frozen=True)
class StabilityCheck:
    scale: str
    x: str
    n_runs: int
    trends: tuple[IndicatorTrend, ...]
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"growth_tol": GROWTH_TOL, "scale_tol": SCALE_TOL,
                                                                  "level": LEVEL})
    warnings: tuple[str, ...] = ()
    decided_by: str = ""
    to_decide: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "x": self.x, "n_runs": self.n_runs, "verdict": self.verdict, "why": self.why,
                "decided_by": self.decided_by, "to_decide": self.to_decide, "thresholds": dict(self.thresholds),
                "indicators": [t.to_dict() for t in self.trends], "warnings": list(self.warnings)}


def best_runs(runs: pd.DataFrame, scale: str = "n_params", by: Sequence[str] = (), loss: str = "val_loss") -> list[str]:
    """The run ids at the best LR of each scale (and group of `by`), every seed of it: an LR sweep's far-off
    LRs grow their indicators by design, so the check reads the runs a user would keep."""
    require_columns(runs, ["run_id"], source="runs")
    keys = [*by, scale, *(["lr"] if "lr" in runs.columns else [])]
    best = best_rows(runs, [*by, scale], loss, source="runs")[keys]
    done = fit_rows(runs, source="runs")
    return done.merge(best, on=keys)["run_id"].astype(str).tolist()


def check_groups(curves: pd.DataFrame, runs: pd.DataFrame, *, scale: str = "n_params", by: Sequence[str] = (),
                 all_runs: bool = False, source: str = "curves") -> list[StabilityCheck]:
    """`check_stability` per group of the `by` columns of `runs`, each on the best-LR runs of every scale
    (`best_runs`; every run with all_runs). `curves` are joined with the runs' settings (a run setting named
    like a curve column arrives as NAME_run: scale tokens_run is the runs' tokens). A group's `why` starts
    with its keys."""
    out = []
    for keys, ids in checked_runs(runs, scale, by, all_runs):
        res = check_stability(curves[curves["run_id"].isin(ids)], scale=scale, source=source)
        out.append(res if not keys else dataclasses.replace(
            res, why=f"{', '.join(f'{k}={v}' for k, v in keys.items())}: {res.why}"))
    return out


def checked_runs(runs: pd.DataFrame, scale: str, by: Sequence[str] = (),
                 all_runs: bool = False) -> list[tuple[dict[str, Any], list[str]]]:
    """(group keys, run ids) of the runs `check_groups` reads in each group of `by`."""
    groups = [({}, runs)] if not by else [(dict(zip(by, k if isinstance(k, tuple) else (k,))), g)
                                          for k, g in runs.groupby(list(by))]
    run_scale = "tokens" if scale == "tokens_run" else scale  # a run's budget, named tokens in the runs table
    return [(keys, g["run_id"].tolist() if all_runs else best_runs(g, run_scale)) for keys, g in groups]


def growth_rate(x: np.ndarray, v: np.ndarray, floor: float = 0.0) -> float:
    """(d v / d ln x) / max(mean |v|, floor) by least squares over the points; NaN with too few points."""
    return growth_fit(x, v, floor)[0]


def growth_fit(x: np.ndarray, v: np.ndarray, floor: float = 0.0) -> tuple[float, float, int]:
    """growth_rate, its standard error from the regression and the residual degrees of freedom."""
    ok = np.isfinite(x) & np.isfinite(v) & (x > 0)
    x, v = x[ok], v[ok]
    if x.size < MIN_POINTS or np.ptp(np.log(x)) == 0:
        return math.nan, math.nan, 0
    mean = max(float(np.mean(np.abs(v))), floor)
    if mean == 0:
        return 0.0, 0.0, x.size - 2
    slope, se = _slope(np.log(x), v)
    return slope / mean, se / mean, x.size - 2


def _slope(u: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on u and its standard error (NaN with no residual degree of freedom)."""
    slope, intercept = np.polyfit(u, y, 1)
    dof = u.size - 2
    if dof <= 0:
        return float(slope), math.nan
    resid = y - (slope * u + intercept)
    se = math.sqrt(float(resid @ resid) / dof / float(((u - u.mean()) ** 2).sum()))
    return float(slope), se


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
    if curves[scale].nunique() < 2:
        warnings.append(f"one {scale} only: growth across {scale} is not tested")
    return _check(scale, x, int(curves["run_id"].nunique()), trends, warnings)


def _check(scale: str, x: str, n_runs: int, trends: list[IndicatorTrend], warnings: list[str]) -> StabilityCheck:
    """The check's verdict from its indicators': fail on one growing, pass when all are bounded."""
    growing = [t for t in trends if t.verdict == GROWING]
    open_ = [t for t in trends if t.verdict == INCONCLUSIVE]
    if growing:
        verdict, why = FAIL, "growing: " + "; ".join(f"{t.name} ({t.decided_by})" for t in growing)
        decided_by, to_decide = growing[0].decided_by, ""
    elif open_:
        verdict = INCONCLUSIVE
        why = "cannot tell: " + "; ".join(f"{t.name} ({t.decided_by})" for t in open_)
        decided_by = open_[0].decided_by
        to_decide = (f"more seeds at the cells named (each narrows its growth interval), and more scales or "
                     f"seeds per {scale} for a slope's interval")
    else:
        verdict, decided_by, to_decide = PASS, "; ".join(f"{t.name}: {t.decided_by}" for t in trends), ""
        why = (f"every indicator's intervals lie within the bands (growth <= {GROWTH_TOL} per e-fold of {x}, "
               f"slope <= {SCALE_TOL} across {scale})")
    return StabilityCheck(scale=scale, x=x, n_runs=n_runs, trends=tuple(trends), verdict=verdict, why=why,
                          warnings=tuple(warnings), decided_by=decided_by, to_decide=to_decide)


def _trend(curves: pd.DataFrame, name: str, scale: str, x: str) -> tuple[IndicatorTrend, list[str]]:
    cells, finals = _cell_growths(curves, name, scale, x)
    note: list[str] = []
    slope, slope_iv = _scale_slope(finals)
    slope_text = (f"slope across {scale} {slope:.3f} {_fmt(slope_iv)}" if math.isfinite(slope)
                  else f"slope across {scale} not tested")
    if cells.empty:
        note.append(f"{name}: fewer than {MIN_POINTS} logged points in the second half of every run; no growth rate")
        verdict = _judge([], slope_iv, math.isfinite(slope))
        return IndicatorTrend(name, math.nan, "", slope, verdict, slope_interval=slope_iv, decided_by=slope_text), note
    top = cells.loc[_deciding(cells)]
    g_iv = Interval(float(top["low"]), float(top["high"]), LEVEL)
    verdict = _judge([Interval(r.low, r.high, LEVEL) for r in cells.itertuples()], slope_iv, math.isfinite(slope))
    growth_text = f"growth {top['mean']:.3f} {_fmt(g_iv)} in {top['label']} ({int(top['n'])} seeds)"
    single = cells[cells["n"] == 1]
    if len(single):
        note.append(f"{name}: a cell of one run has an interval from its own regression over the logged points "
                    f"only (no seed-to-seed noise): it can show growth, not confirm a bound; seeds give the "
                    f"honest interval")
    if verdict == BOUNDED and len(single):  # inside the band, but on intervals without seed noise
        verdict = INCONCLUSIVE
        growth_text += f"; one run in {single['label'].iloc[0]}" + (f" and {len(single) - 1} more cells"
                                                                    if len(single) > 1 else "")
    return IndicatorTrend(name, float(top["mean"]), str(top["run"]), slope, verdict,
                          float(top["sd"]) if int(top["n"]) > 1 else math.nan, g_iv, slope_iv,
                          f"{growth_text}; {slope_text}"), note


def _cell_growths(curves: pd.DataFrame, name: str, scale: str, x: str):
    """Per cell (the runs sharing a scale and LR: its seeds), the mean growth and its interval; and every
    run's (scale, final value)."""
    rates, finals = [], []
    cell_keys = [c for c in (scale, "lr") if c in curves.columns]
    for rid, run in curves[curves[name].notna()].sort_values(x).groupby("run_id"):
        xs = run[x].to_numpy(dtype=float)
        late = xs >= np.median(xs)  # the second half of training: past the transient of the first steps
        floor = SHARE_FLOOR_PCT if name.startswith("outlier_") else 0.0
        g, se, dof = growth_fit(xs[late], run[name].to_numpy(dtype=float)[late], floor)
        rates.append({"run": str(rid), "g": g, "se": se, "dof": dof, **{k: run[k].iloc[0] for k in cell_keys}})
        finals.append((float(run[scale].iloc[0]), float(run[name].iloc[-1])))
    table = pd.DataFrame(rates)
    table = table[np.isfinite(table["g"])] if len(table) else table
    if table.empty:
        return table, np.array(finals)
    out = []
    for key, cell in table.groupby(cell_keys, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        n, g = len(cell), float(cell["g"].mean())
        sd = float(cell["g"].std()) if n > 1 else math.nan
        iv = (t_interval(g, sd / math.sqrt(n), n - 1, LEVEL) if n > 1 else
              t_interval(g, float(cell["se"].iloc[0]), int(cell["dof"].iloc[0]), LEVEL))
        out.append({"label": ", ".join(f"{k}={v:g}" for k, v in zip(cell_keys, key)), "mean": g, "sd": sd, "n": n,
                    "low": iv.low, "high": iv.high, "run": cell.loc[cell["g"].idxmax(), "run"]})
    return pd.DataFrame(out), np.array(finals)


def _deciding(cells: pd.DataFrame):
    """The cell that decides: the one furthest past the band if any is, else the one nearest its edge."""
    low = cells["low"].fillna(-math.inf)
    if (low > GROWTH_TOL).any():
        return low.idxmax()
    return cells["high"].fillna(math.inf).idxmax()


def _judge(growths: list[Interval], slope: Interval, slope_tested: bool) -> str:
    """growing when an interval lies wholly past its band, bounded when every one lies inside, else open."""
    if any(iv.low > GROWTH_TOL for iv in growths) or (slope_tested and slope.low > SCALE_TOL):
        return GROWING
    inside = all(iv.high <= GROWTH_TOL for iv in growths) and (not slope_tested or slope.high <= SCALE_TOL)
    return BOUNDED if inside else INCONCLUSIVE  # NaN bounds compare False: no interval never passes


def _fmt(iv: Interval) -> str:
    return f"[{iv.low:.3f}, {iv.high:.3f}]" if math.isfinite(iv.low) else "[no interval]"


def _scale_slope(finals: np.ndarray) -> tuple[float, Interval]:
    """Slope of ln(final value) on ln(scale) over the runs and its t-interval; NaN with one scale or a
    non-positive value (an outlier share at 0)."""
    none = Interval(math.nan, math.nan, LEVEL)
    if finals.size == 0:
        return math.nan, none
    scale, value = finals[:, 0], finals[:, 1]
    if np.unique(scale).size < 2 or (scale <= 0).any() or (value <= 0).any():
        return math.nan, none
    slope, se = _slope(np.log(scale), np.log(value))
    return slope, t_interval(slope, se, scale.size - 2, LEVEL)
