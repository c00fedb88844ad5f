"""Loss versus compute and the compute efficiency leverage (CEL) of one method over another.

Per method: L(C) = A C^(-b) + E with A, b >= 0 and 0 <= E <= min(L) (method.md section 7), by least squares.
For each b the best (A, E) under those bounds has a closed form (a convex problem in two variables: the
unconstrained optimum if feasible, else the best point on the boundary), so the fit is a bounded 1-D
profile over b (`profile.py`), global over [0, B_MAX].

CEL of a method over a baseline at a baseline run (C_base, L_base): C_m = ((L_base - E_m) / A_m)^(-1/b_m) is
the compute the method needs for that loss, CEL = C_base / C_m. Fit-to-fit at compute C:
CEL(C) = C / C_m(L_base_fit(C)). A loss at or below the method's floor E_m is out of its reach (C_m = inf,
CEL = 0). Intervals come from residual-bootstrap replicates of each fit (replicate i of the method paired
with replicate i of the baseline; the two are independent resamples).

Optional per-point weights (inverse variances over seeds, say) weight the least squares; the result follows
`hyperp.fitting.result.FitResult` (success, message, refits that did not converge, band).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import (DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval,
                                      percentile_intervals, residual_draws, rng_for)
from hyperp.fitting.diagnostics import at_bound, interval_crosses, too_few_points
from hyperp.fitting.profile import RowData, exp_outer, ls_line, minimize_profile
from hyperp.fitting.result import (CONVERGED, LawResult, failed_note, leave_out, main_status, not_converged_note,
                                   stop_codes)
from hyperp.fitting.table import (FitInputError, best_lr_note, finite_points, fit_rows, lowest, numeric_column,
                                  require_columns, several_lrs)

B_MAX = 2.0  # upper end of the exponent search; loss-compute exponents are ~0.05-0.5
B_GRID_POINTS = 81  # spacing 0.025
MIN_POINTS = 3  # parameters of the law
MIN_HOLDOUT_POINTS = 4  # the hold-out refit keeps at least MIN_POINTS
METHOD = "bounded least squares, profiled over b"


@dataclass(frozen=True)
class HoldOut:
    """The largest-compute point predicted by the fit to the other points."""

    compute: float
    observed: float
    predicted: float
    rel_err: float  # (predicted - observed) / observed

    def to_dict(self) -> dict[str, Any]:
        return {"compute": self.compute, "observed": self.observed, "predicted": self.predicted,
                "rel_err": self.rel_err}


@dataclass(frozen=True)
class ComputeLawFit(LawResult):
    """L(C) = A C^-b + E for one method, with residual-bootstrap intervals."""

    A: float
    b: float
    E: float
    r2: float
    n_points: int
    intervals: dict[str, Interval]
    holdout: HoldOut | None
    points: tuple[tuple[float, float], ...] = field(repr=False)
    boot_params: np.ndarray = field(repr=False)  # (n_boot, 3) replicate (A, b, E); NaN rows did not converge
    warnings: tuple[str, ...] = ()
    success: bool = True  # the main fit converged (`message` says how, or why not)
    message: str = ""
    n_failed: int = 0  # bootstrap refits that did not converge, left out of the intervals and the band
    weighted: bool = False

    def predict(self, compute: np.ndarray) -> np.ndarray:
        """Loss predicted at compute C."""
        return law_loss(np.array([[self.A, self.b, self.E]]), compute)[0]

    def compute_for_loss(self, loss: np.ndarray) -> np.ndarray:
        """Compute the fitted law needs to reach `loss` (inf when loss <= E)."""
        return law_compute(np.array([[self.A, self.b, self.E]]), loss)[0]

    def _curves(self, params: np.ndarray, compute: np.ndarray) -> np.ndarray:
        return law_loss(params, compute)

    def to_dict(self) -> dict[str, Any]:
        return {"A": self.A, "b": self.b, "E": self.E, "r2": self.r2, "n_points": self.n_points,
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
                "holdout": None if self.holdout is None else self.holdout.to_dict(),
                "points": [{"compute": c, "loss": l} for c, l in self.points], "warnings": list(self.warnings),
                **self.status_dict()}


@dataclass(frozen=True)
class CelPoint:
    """CEL of `method` over the baseline at one compute (and the baseline loss there)."""

    method: str
    compute: float
    baseline_loss: float
    cel: float
    interval: Interval
    kind: str  # "point" (an observed baseline run) or "fit" (fit-to-fit)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "kind": self.kind, "compute": self.compute,
                "baseline_loss": self.baseline_loss, "cel": self.cel, "cel_low": self.interval.low,
                "cel_high": self.interval.high, "level": self.interval.level}


@dataclass(frozen=True)
class ComputeComparison:
    """Per-method compute laws and the CEL of every other method over the baseline."""

    baseline: str
    method_col: str
    fits: dict[str, ComputeLawFit]
    cel_points: tuple[CelPoint, ...]
    cel_at: tuple[CelPoint, ...]
    notes: tuple[str, ...] = ()  # what was done to the table before fitting (the best LR kept per point)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.notes + tuple(f"{self.method_col}={m}: {w}" for m, f in self.fits.items() for w in f.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "method_col": self.method_col, "warnings": list(self.warnings),
                "fits": {k: v.to_dict() for k, v in self.fits.items()},
                "cel_points": [p.to_dict() for p in self.cel_points], "cel_at": [p.to_dict() for p in self.cel_at]}


def law_loss(params: np.ndarray, compute: np.ndarray) -> np.ndarray:
    """Loss of each law row (A, b, E) at each compute: (k, m)."""
    p = np.atleast_2d(params)
    c = np.asarray(compute, dtype=float).ravel()
    return p[:, :1] * np.power(c[None, :], -p[:, 1:2]) + p[:, 2:3]


def law_compute(params: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Compute each law row (A, b, E) needs to reach each loss (m,) or its own row of (k, m) losses.

    Returns (k, m); inf when the loss is out of reach (at or below E), NaN for a row of NaN parameters (a
    refit that did not converge: left out, not counted as out of reach).
    """
    p = np.atleast_2d(params)
    target = np.asarray(loss, dtype=float)
    target = target if target.ndim == 2 else target.ravel()[None, :]  # (k, m) gives one loss row per law
    A, b, E = p[:, :1], p[:, 1:2], p[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = np.power((target - E) / A, -1.0 / b)
    reachable = (target > E) & (A > 0) & (b > 0)
    return np.where(np.isnan(p).any(axis=1)[:, None], np.nan, np.where(reachable, c, np.inf))


def fit_loss_compute(compute: np.ndarray, loss: np.ndarray, *, weights: np.ndarray | None = None,
                     n_boot: int = DEFAULT_N_BOOT, seed: int | np.random.Generator = 0, level: float = DEFAULT_LEVEL,
                     holdout: bool = True) -> ComputeLawFit:
    """Fit L = A C^-b + E (A, b >= 0, 0 <= E <= min L) to one method's (compute, loss) points.

    weights: optional per-point weights of the least squares (inverse variances, say; only their ratios
    matter, a weight of 0 leaves the point out, and equal weights give the unweighted fit exactly).
    """
    c, y, w = _validate(compute, loss, weights)
    rng = rng_for(seed)
    lc_mean = float(np.log(c).mean())
    lc = np.log(c) - lc_mean
    p, status = _solve(lc, RowData(y[None, :], w, center=True))
    p = p[0]
    fitted = _predict(p, lc)
    draws = residual_draws(fitted, y - fitted, n_boot, rng, n_params=3, weights=w)
    boot, boot_status = _solve(lc, RowData(draws, w, center=True))
    raw = _to_raw(np.vstack([p, leave_out(boot, boot_status)]), lc_mean)
    dof = c.size - 3
    intervals = {k: percentile_interval(raw[1:, j], level, center=raw[0, j], dof=dof, log=(k == "A"))
                 for j, k in enumerate(("A", "b", "E"))}
    success, message = main_status(int(status[0]), METHOD)
    held, held_notes = _holdout(c, y, w, lc_mean) if holdout else (None, [])
    notes = [*not_converged_note(success, message), *_law_warnings(raw[0], intervals, float(y.min()), int(c.size)),
             *failed_note(boot_status, "bootstrap refits", "the intervals and the band"), *held_notes]
    return ComputeLawFit(A=float(raw[0, 0]), b=float(raw[0, 1]), E=float(raw[0, 2]), r2=_r2(y, fitted, w),
                         n_points=int(c.size), intervals=intervals, holdout=held,
                         points=tuple(zip(c.tolist(), y.tolist())), boot_params=raw[1:], warnings=tuple(notes),
                         success=success, message=message, n_failed=int(np.sum(boot_status != CONVERGED)),
                         weighted=w is not None)


def _r2(y: np.ndarray, fitted: np.ndarray, w: np.ndarray | None) -> float:
    """R^2 about the (weighted) mean loss."""
    ww = np.ones_like(y) if w is None else w
    mean = y.mean() if w is None else np.sum(w * y) / np.sum(w)
    sst = float(np.sum(ww * (y - mean) ** 2))
    return float(1.0 - np.sum(ww * (y - fitted) ** 2) / sst) if sst > 0 else float("nan")


def _law_warnings(p: np.ndarray, intervals: dict[str, Interval], min_loss: float, n: int) -> list[str]:
    """Bounds of the fit (A >= 0, 0 <= b <= B_MAX, 0 <= E <= min L) reached, intervals past them, few points."""
    A, b, E = (float(v) for v in p)
    return [*too_few_points(n, 3, "loss-compute law"),
            *at_bound("A", A, low=0.0), *at_bound("b", b, low=0.0, high=B_MAX),
            *at_bound("E", E, low=0.0, high=min_loss),
            *interval_crosses("E", intervals["E"], low=0.0, high=min_loss,
                              limit="the irreducible loss lies in [0, the lowest observed loss]"),
            *interval_crosses("b", intervals["b"], low=0.0, limit="loss must fall with compute")]


def cel_at_points(method: ComputeLawFit, compute: np.ndarray, loss: np.ndarray, name: str = "",
                  level: float = DEFAULT_LEVEL) -> list[CelPoint]:
    """CEL of `method` at observed baseline runs (C_base, L_base): C_base / C_method(L_base)."""
    c = np.asarray(compute, dtype=float).ravel()
    l_base = np.asarray(loss, dtype=float).ravel()
    point = _ratio(c[None, :], law_compute(np.array([[method.A, method.b, method.E]]), l_base))[0]
    boot = _ratio(c[None, :], law_compute(method.boot_params, l_base))
    intervals = percentile_intervals(boot, level, centers=point, dof=method.n_points - 3, log=True)
    return [CelPoint(name, float(c[j]), float(l_base[j]), float(point[j]), intervals[j], "point")
            for j in range(c.size)]


def compute_efficiency(method: ComputeLawFit, baseline: ComputeLawFit, compute: np.ndarray, name: str = "",
                       level: float = DEFAULT_LEVEL) -> list[CelPoint]:
    """Fit-to-fit CEL at each compute C: C / C_method(L_baseline_fit(C))."""
    c = np.asarray(compute, dtype=float).ravel()
    l_base = baseline.predict(c)
    point = _ratio(c[None, :], method.compute_for_loss(l_base)[None, :])[0]
    k = min(len(method.boot_params), len(baseline.boot_params))
    boot_c = law_compute(method.boot_params[:k], law_loss(baseline.boot_params[:k], c))
    boot = _ratio(c[None, :], boot_c)
    dof = min(method.n_points, baseline.n_points) - 3
    intervals = percentile_intervals(boot, level, centers=point, dof=dof, log=True)
    return [CelPoint(name, float(c[j]), float(l_base[j]), float(point[j]), intervals[j], "fit")
            for j in range(c.size)]


def compare_methods(df: pd.DataFrame, baseline: str, *, method_col: str = "param", x: str = "flops",
                    y: str = "val_loss", at: Sequence[float] = (), best_of: Sequence[str] = (),
                    every_lr: bool = False, all_status: bool = False, weight_col: str | None = None,
                    n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL,
                    source: str = "table") -> ComputeComparison:
    """Fit every method's compute law; CEL of each other method over `baseline` at its runs and at `at`.

    best_of: columns within a method (e.g. n_params, tokens) over which only the lowest-loss run is kept,
    so that an LR sweep contributes its best run per model rather than every LR; where the table has `lr`
    and `seed`, the seeds of each LR are averaged first (the best LR's mean, not its luckiest seed).
    Without best_of, a table with several LRs at one (method, x) keeps the best LR of each (best_of = [x])
    and says so in `notes`: the law is of the best run per size. every_lr fits every run instead.
    weight_col: a column of per-run weights (`fit_loss_compute`'s weights); where seeds are averaged, so are
    their weights.
    """
    require_columns(df, [method_col, x, y, *best_of, *([weight_col] if weight_col else [])], source=source)
    df = fit_rows(df, all_status, source=source)
    work = pd.DataFrame({"_m": df[method_col].astype(str), "_c": numeric_column(df, x, source, positive=True),
                         "_l": numeric_column(df, y, source),
                         "_w": 1.0 if weight_col is None else numeric_column(df, weight_col, source)}, index=df.index)
    seeds = [c for c in ("lr", "seed") if c in df.columns and c not in best_of]
    work = pd.concat([df[list(best_of) + seeds], work], axis=1)
    work = work[np.isfinite(work["_c"]) & np.isfinite(work["_l"])]
    if work.empty:
        raise FitInputError(f"{source}: no rows with finite {x!r} and {y!r}")
    notes: tuple[str, ...] = ()
    if not best_of and not every_lr and several_lrs(work, ["_m", "_c"]):
        notes = (best_lr_note(f"({method_col}, {x})", f"--best-of {x}"),)
        work = lowest(work, ["_m", "_c"], "_l", also_mean=["_w"])
    elif best_of:
        work = lowest(work, ["_m", *best_of], "_l", also_mean=["_w"])
    methods = sorted(work["_m"].unique())
    if baseline not in methods:
        raise FitInputError(f"{source}: baseline {baseline!r} not found in column {method_col!r}; "
                            f"methods are {methods}")
    rng = rng_for(seed)
    fits: dict[str, ComputeLawFit] = {}
    for m in methods:
        sub = work[work["_m"] == m]
        try:
            fits[m] = fit_loss_compute(sub["_c"].to_numpy(), sub["_l"].to_numpy(), n_boot=n_boot, seed=rng,
                                       level=level, weights=None if weight_col is None else sub["_w"].to_numpy())
        except FitInputError as exc:
            raise FitInputError(f"{source}: method {m!r}: {exc}") from exc
    base_rows = work[work["_m"] == baseline].sort_values("_c")
    cel_points, cel_at = [], []
    for m in methods:
        if m == baseline:
            continue
        cel_points += cel_at_points(fits[m], base_rows["_c"].to_numpy(), base_rows["_l"].to_numpy(), m, level)
        if len(at):
            cel_at += compute_efficiency(fits[m], fits[baseline], np.asarray(at, dtype=float), m, level)
    return ComputeComparison(baseline=baseline, method_col=method_col, fits=fits, cel_points=tuple(cel_points),
                             cel_at=tuple(cel_at), notes=notes)


def _validate(compute, loss, weights=None):
    c, y, w = finite_points(compute, loss, weights, ("compute", "loss"))
    if np.unique(c).size < MIN_POINTS:
        raise FitInputError(f"loss-compute law needs >= {MIN_POINTS} distinct compute values with a finite loss, "
                            f"got {np.unique(c).size}")
    if np.any(c <= 0):
        raise FitInputError(f"compute must be > 0, found {c.min():g}")
    return c, y, w


def _solve(lc: np.ndarray, data: RowData) -> tuple[np.ndarray, np.ndarray]:
    """Bounded least squares (A', b, E) per row, A' for compute normalized by its geometric mean, and each
    row's stop code (`hyperp.fitting.result`)."""
    e_lo, e_hi = _e_bounds(data)
    grid = np.linspace(0.0, B_MAX, B_GRID_POINTS)

    def grid_sse(g):
        sums = data.grid_sums(exp_outer(-g, lc))
        return _bounded_line(*sums, data.syy[:, None], e_lo[:, None], e_hi[:, None])[2]

    def row_sse(b, rows):
        sums = data.sums(exp_outer(-b, lc), rows)
        return _bounded_line(*sums, data.syy[rows], e_lo[rows], e_hi[rows])[2]

    b, _, status = minimize_profile(grid_sse, row_sse, grid)
    a, e, _ = _bounded_line(*data.sums(exp_outer(-b, lc)), data.syy, e_lo, e_hi)
    p = np.column_stack([a, b, e + data.mean])
    return p, stop_codes(status, p)


def _e_bounds(data: RowData) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of E in the row's centred units: 0 <= E <= min(L) becomes -mean <= e <= min(L) - mean."""
    y_min = np.min(data.y if data.w is None else np.where(data.w > 0, data.y, np.inf), axis=1)
    return -data.mean, y_min - data.mean


def _bounded_line(s1, sx, sy, sxx, sxy, syy, e_lo, e_hi):
    """min over A >= 0, e_lo <= e <= e_hi of sum w (y - A x - e)^2: returns (A, e, sse).

    Convex in (A, e): the unconstrained optimum if feasible, else the best of the boundary optima
    (e fixed at either bound with A clipped at 0, or A = 0 with e clipped).
    """
    def sse(a, e):
        return syy - 2 * a * sxy - 2 * e * sy + a * a * sxx + 2 * a * e * sx + e * e * s1

    with np.errstate(divide="ignore", invalid="ignore"):
        a_u, e_u, _ = ls_line(s1, sx, sy, sxx, sxy, syy)
        inside = (a_u >= 0) & (e_u >= e_lo) & (e_u <= e_hi)
        cands = [(np.where(inside, a_u, 0.0), np.where(inside, e_u, e_lo), inside)]
        for e_fix in (e_lo, e_hi):
            a_fix = np.maximum(np.where(sxx > 0, (sxy - e_fix * sx) / sxx, 0.0), 0.0)
            cands.append((a_fix, np.broadcast_to(e_fix, a_fix.shape), None))
        e_free = np.clip(np.where(s1 > 0, sy / s1, 0.0), e_lo, e_hi)
        cands.append((np.zeros_like(e_free), e_free, None))
    best_a, best_e, best_f = None, None, None
    for a, e, ok in cands:
        f = sse(a, e)
        if ok is not None:
            f = np.where(ok, f, np.inf)
        if best_f is None:
            best_a, best_e, best_f = a, e, f
            continue
        take = f < best_f
        best_a, best_e, best_f = np.where(take, a, best_a), np.where(take, e, best_e), np.where(take, f, best_f)
    return best_a, best_e, best_f


def _predict(p: np.ndarray, lc: np.ndarray) -> np.ndarray:
    return p[0] * np.exp(-p[1] * lc) + p[2]


def _to_raw(p: np.ndarray, lc_mean: float) -> np.ndarray:
    """(A', b, E) for normalized compute to (A, b, E) for raw compute: A = A' exp(b mean(log C))."""
    out = p.copy()
    out[:, 0] = p[:, 0] * np.exp(p[:, 1] * lc_mean)
    return out


def _holdout(c: np.ndarray, y: np.ndarray, w: np.ndarray | None, lc_mean: float) -> tuple[HoldOut | None, list[str]]:
    """Refit without the largest-compute point and predict it (NaN, with a note, when the refit fails)."""
    if np.unique(c).size < MIN_HOLDOUT_POINTS:
        return None, []
    last = int(np.argmax(c))
    keep = np.arange(c.size) != last
    lc = np.log(c) - lc_mean
    p, status = _solve(lc[keep], RowData(y[keep][None, :], None if w is None else w[keep], center=True))
    pred = float(_predict(leave_out(p, status)[0], lc[last : last + 1])[0])
    return (HoldOut(compute=float(c[last]), observed=float(y[last]), predicted=pred,
                    rel_err=float((pred - y[last]) / y[last])),
            failed_note(status, "hold-out refit", "the hold-out check"))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with inf denominators giving 0 (the method never reaches that loss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isinf(den), 0.0, num / den)
