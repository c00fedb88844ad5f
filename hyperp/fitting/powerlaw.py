"""Power laws y = a x^b (+ c), in linear or log space (method.md section 7).

- space="linear": nonlinear least squares on y. The exponent is found by variable projection (a grid over
  b, then golden section; a and c are closed-form for each b), which is global over the search range, and
  the point estimate is then polished with scipy's curve_fit, the reference NLS of method.md.
- space="log": least squares on log y. Without offset it is the straight line log y = log a + b log x;
  with offset it minimizes sum (log y - log(a x^b + c))^2 (scipy least_squares for the point estimate,
  a batched Levenberg-Marquardt from it for the refits).

Every fit reports R^2 (in the space of the fit), the leave-one-out relative error of each point's
prediction, and residual-bootstrap intervals for a, b and c. x is rescaled by its geometric mean inside
the solver (y = a' (x / x_g)^b), which keeps x^b well scaled for any units; a is reported for raw x.
Optional per-point weights (e.g. inverse variances over seeds) weight every least squares; the result
follows `hyperp.fitting.result.FitResult` (success, message, refits that did not converge, band).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit, least_squares

from hyperp.fitting.bootstrap import (DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval,
                                      residual_draws, rng_for)
from hyperp.fitting.diagnostics import too_few_points
from hyperp.fitting.profile import RowData, exp_outer, ls_line, ls_slope_only, minimize_profile
from hyperp.fitting.result import (CONVERGED, DAMPING_LIMIT, ITERATION_LIMIT, NOT_FINITE, LawResult, failed_note,
                                   leave_out, main_status, not_converged_note, stop_codes)
from hyperp.fitting.table import FitInputError, finite_points

Space = Literal["linear", "log"]
# Search range for the exponent in linear space: the log-space slope +- this half width. In units of
# "orders of magnitude of y per order of magnitude of x" 3 is far wider than any scaling exponent.
B_HALF_WIDTH = 3.0
B_GRID_POINTS = 61  # spacing 0.1 over the search range
# Log space with offset: refits (bootstrap, leave-one-out) run a batched Levenberg-Marquardt from the point
# estimate; it stops when an accepted step lowers the SSE by less than LM_FTOL (relative).
LM_MAX_ITER = 100
LM_FTOL = 1e-12
# Leave-one-out refits on at most this many held-out points (a seeded subset beyond it): on a large table
# each point's leverage is tiny and refitting thousands of times buys nothing.
LOO_MAX_POINTS = 200
LM_MAX_DAMPING = 1e12  # a row whose damping passes this without a step that lowers its SSE stops there
METHOD = {("linear", False): "variable projection over b, polished by curve_fit",
          ("linear", True): "variable projection over b, polished by curve_fit",
          ("log", False): "closed-form least squares on log y",
          ("log", True): "Levenberg-Marquardt on log y (scipy least_squares)"}


@dataclass(frozen=True)
class PowerLawFit(LawResult):
    """y = a x^b + c (c = 0 without offset). Intervals are residual-bootstrap percentile intervals."""

    a: float
    b: float
    c: float
    offset: bool
    space: str
    r2: float  # in the space of the fit (log y for space="log")
    loo_rel_err: float  # mean |y_loo - y| / |y| over held-out points
    n_points: int
    intervals: dict[str, Interval]
    points: tuple[tuple[float, float], ...] = field(repr=False)
    boot_params: np.ndarray = field(repr=False)  # (n_boot, 3) replicate (a, b, c); NaN rows did not converge
    warnings: tuple[str, ...] = ()
    success: bool = True  # the main fit converged (`message` says how, or why not)
    message: str = ""
    n_failed: int = 0  # bootstrap refits that did not converge, left out of the intervals and the band
    weighted: bool = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted law at x."""
        return self.a * np.power(np.asarray(x, dtype=float), self.b) + self.c

    def _curves(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return params[:, :1] * np.power(x[None, :], params[:, 1:2]) + params[:, 2:3]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c, "offset": self.offset, "space": self.space,
                "r2": self.r2, "loo_rel_err": self.loo_rel_err, "n_points": self.n_points,
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
                "points": [{"x": x, "y": y} for x, y in self.points], "warnings": list(self.warnings),
                **self.status_dict()}


def fit_power_law(x: np.ndarray, y: np.ndarray, *, offset: bool = False, space: Space = "linear",
                  weights: np.ndarray | None = None, n_boot: int = DEFAULT_N_BOOT,
                  seed: int | np.random.Generator = 0, level: float = DEFAULT_LEVEL) -> PowerLawFit:
    """Fit y = a x^b (+ c with offset) and estimate its uncertainty.

    x must be > 0; in log space y (or y - c) must be > 0. Needs at least one point more than parameters.
    weights: optional per-point weights of the least squares (inverse variances, say; only their ratios
    matter, a weight of 0 leaves the point out, and equal weights give the unweighted fit exactly).
    """
    x, y, w = _validate(x, y, weights, offset, space)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # bad rows become NaN, not warnings
        return _fit(x, y, w, offset, space, n_boot, rng_for(seed), level)


def _fit(x, y, w, offset: bool, space: Space, n_boot: int, rng: np.random.Generator, level: float) -> PowerLawFit:
    lx_mean = float(np.log(x).mean())
    lx = np.log(x) - lx_mean
    model = _Model(lx, offset, space, center_b=_log_slope(lx, y, w), weights=w)
    p, status = model.solve(model.data(y[None, :]))
    p = p[0]
    if space == "linear":
        p = _polish_curve_fit(lx, y, p, offset, w)
    resid = model.residual(p, y)
    r2 = _r2(model.target(p, y), resid, w)
    draws = residual_draws(model.space_fitted(p), resid, n_boot, rng, model.n_params, weights=w)
    boot, boot_status = model.solve(model.data(model.from_space(draws, p)), center_b=p[1], start=p)
    loo, loo_notes = _loo_rel_err(model, y, p, rng)
    raw = _to_raw(np.vstack([p, leave_out(boot, boot_status)]), lx_mean)
    dof = x.size - model.n_params
    intervals = {k: percentile_interval(raw[1:, j], level, center=raw[0, j], dof=dof, log=(k == "a"))
                 for j, k in enumerate(("a", "b", "c"))}
    success, message = main_status(int(status[0]), METHOD[space, offset])
    warnings = [*not_converged_note(success, message), *too_few_points(int(x.size), model.n_params, "power law"),
                *failed_note(boot_status, "bootstrap refits", "the intervals and the band"), *loo_notes]
    return PowerLawFit(a=float(raw[0, 0]), b=float(raw[0, 1]), c=float(raw[0, 2]), offset=offset, space=space,
                       r2=r2, loo_rel_err=loo, n_points=int(x.size), intervals=intervals,
                       points=tuple(zip(x.tolist(), y.tolist())), boot_params=raw[1:], warnings=tuple(warnings),
                       success=success, message=message, n_failed=int(np.sum(boot_status != CONVERGED)),
                       weighted=w is not None)


class _Model:
    """The solver for one (offset, space) combination on centred log x.

    Parameters are rows (a', b, c) with y = a' exp(b lx) + c, lx = log x - mean(log x).
    """

    def __init__(self, lx: np.ndarray, offset: bool, space: Space, center_b: float, weights: np.ndarray | None = None):
        self.lx, self.offset, self.space, self.center_b, self.w = lx, offset, space, center_b, weights
        self.n_params = 3 if offset else 2

    def data(self, y: np.ndarray, mask: np.ndarray | None = None) -> RowData:
        """Rows to fit with the point weights times an optional (B, n) mask (0 leaves a point out); centred
        on their mean when the model has an intercept (c) in linear space."""
        w = self.w if mask is None else (mask if self.w is None else mask * self.w)
        return RowData(y, w, center=self.offset and self.space == "linear")

    def space_fitted(self, p: np.ndarray) -> np.ndarray:
        """The fitted values in the space where residuals are measured (log(y - c) in log space)."""
        if self.space == "linear":
            return p[0] * np.exp(p[1] * self.lx) + p[2]
        return np.log(p[0]) + p[1] * self.lx

    def target(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The responses in the residual space."""
        return y if self.space == "linear" else np.log(y - p[2])

    def from_space(self, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Responses in the residual space back to y."""
        return z if self.space == "linear" else p[2] + np.exp(z)

    def residual(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.target(p, y) - self.space_fitted(p)

    def solve(self, data: RowData, center_b: float | None = None,
              start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares parameters (B, 3) for every row of data, and each row's stop code (`result.py`).

        center_b centres the exponent search (linear space); start is the point estimate that log-space
        offset refits (bootstrap, leave-one-out) begin from.
        """
        if self.space == "log":
            if not self.offset:
                p, status = self._solve_log(data), np.zeros(data.n_rows, dtype=int)
            elif start is not None:
                p, status = _log_offset_lm(self.lx, data, start)
            else:
                p, status = self._log_offset_point(data)
            return p, stop_codes(status, p)
        center = self.center_b if center_b is None else center_b
        grid = center + np.linspace(-B_HALF_WIDTH, B_HALF_WIDTH, B_GRID_POINTS)
        b, _, status = minimize_profile(lambda g: self._grid_sse(data, g),
                                        lambda t, rows: self._row_sse(data, t, rows), grid)
        p = self._linear_params(data, b)
        return p, stop_codes(status, p)

    def _grid_sse(self, data: RowData, grid: np.ndarray) -> np.ndarray:
        s1, sx, sy, sxx, sxy = data.grid_sums(exp_outer(grid, self.lx))
        return self._sse(s1, sx, sy, sxx, sxy, data.syy[:, None])

    def _row_sse(self, data: RowData, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._sse(*data.sums(exp_outer(b, self.lx), rows, intercept=self.offset), data.syy[rows])

    def _sse(self, s1, sx, sy, sxx, sxy, syy):
        if self.offset:
            return ls_line(s1, sx, sy, sxx, sxy, syy)[2]
        return ls_slope_only(sxx, sxy, syy)[1]

    def _linear_params(self, data: RowData, b: np.ndarray) -> np.ndarray:
        s1, sx, sy, sxx, sxy = data.sums(exp_outer(b, self.lx), intercept=self.offset)
        if self.offset:
            a, c, _ = ls_line(s1, sx, sy, sxx, sxy, data.syy)
            return np.column_stack([a, b, c + data.mean])
        a, _ = ls_slope_only(sxx, sxy, data.syy)
        return np.column_stack([a, b, np.zeros_like(b)])

    def _solve_log(self, data: RowData) -> np.ndarray:
        """Straight line through (lx, log y) per row."""
        z = RowData(np.log(data.y), data.w, center=True)
        slope, icpt, _ = ls_line(*z.sums(self.lx), z.syy)
        return np.column_stack([np.exp(icpt + z.mean), slope, np.zeros_like(slope)])

    def _log_offset_point(self, data: RowData) -> tuple[np.ndarray, np.ndarray]:
        """Log-space fit with offset of one row: scipy least_squares from the best of two starts."""
        y = data.y[0]
        w = None if data.w is None else data.w[:1]
        linear = _Model(self.lx, True, "linear", self.center_b, None if w is None else w[0])
        starts = [linear.solve(RowData(y[None, :], w, center=True))[0][0], self._solve_log(RowData(y[None, :], w))[0]]
        sw = None if w is None else np.sqrt(w[0])
        best, best_cost, code = starts[-1], np.inf, NOT_FINITE  # no start keeps the model positive: no fit
        for p0 in starts:
            p0 = p0.copy()
            if not np.all(p0[0] * np.exp(p0[1] * self.lx) + p0[2] > 0):
                continue  # the model must stay positive to take its log
            res = least_squares(lambda p: _log_resid(self.lx, y, p, sw), p0, method="lm", x_scale="jac")
            if np.isfinite(res.cost) and res.cost < best_cost:
                best, best_cost = res.x, res.cost
                code = CONVERGED if res.status > 0 else ITERATION_LIMIT if res.status == 0 else NOT_FINITE
        return best[None, :], np.array([code])


def _log_resid(lx: np.ndarray, y: np.ndarray, p: np.ndarray, sw: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(y) - np.log(p[0] * np.exp(p[1] * lx) + p[2])
    r = r if sw is None else r * sw
    return np.where(np.isfinite(r), r, 1e6)


def _log_offset_lm(lx: np.ndarray, data: RowData, start: np.ndarray,
                   max_iter: int = LM_MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt for log y = log(a' exp(b lx) + c), every row from `start`.

    Used for refits (bootstrap, leave-one-out) whose optimum is near the point estimate. The normal
    equations are accumulated from row sums (no (B, n, 3) Jacobian); rows leave once they converge, or at
    the damping limit. Returns the parameters and each row's stop code: CONVERGED (an accepted step lowered
    the SSE by less than LM_FTOL), DAMPING_LIMIT, ITERATION_LIMIT, or NOT_FINITE (no finite SSE).
    """
    w = np.ones_like(data.y) if data.w is None else np.asarray(data.w)
    ly = np.log(data.y)
    p = np.tile(np.asarray(start, dtype=float), (data.n_rows, 1))
    lam = np.full(data.n_rows, 1e-3)
    sse = _log_offset_sse(lx, ly, w, p)
    status = np.full(data.n_rows, ITERATION_LIMIT)
    active = np.arange(data.n_rows)
    for _ in range(max_iter):
        if active.size == 0:
            break
        step = _lm_step(lx, ly[active], w[active], p[active], lam[active])
        trial = p[active] + step
        sse_new = _log_offset_sse(lx, ly[active], w[active], trial)
        ok = sse_new <= sse[active]
        done = ok & (sse[active] - sse_new <= LM_FTOL * np.maximum(sse[active], 1e-300))
        p[active[ok]] = trial[ok]
        sse[active[ok]] = sse_new[ok]
        lam[active] = np.where(ok, lam[active] / 3.0, lam[active] * 4.0)
        status[active[done]] = CONVERGED
        damped = ~done & (lam[active] >= LM_MAX_DAMPING)
        status[active[damped]] = DAMPING_LIMIT
        active = active[~done & ~damped]
    status[~np.isfinite(sse)] = NOT_FINITE
    return p, status


def _log_offset_sse(lx, ly, w, p) -> np.ndarray:
    m = p[:, 0:1] * np.exp(p[:, 1:2] * lx[None, :]) + p[:, 2:3]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = ly - np.log(m)
    sse = np.einsum("ij,ij->i", w, r * r)
    return np.where(np.isfinite(sse), sse, np.inf)


def _lm_step(lx, ly, w, p, lam) -> np.ndarray:
    """Damped Gauss-Newton step for the rows p (k, 3): solve (J'WJ + lam diag) step = -J'Wr."""
    ex = np.exp(p[:, 1:2] * lx[None, :])
    inv_m = 1.0 / (p[:, 0:1] * ex + p[:, 2:3])
    r = ly - np.log(1.0 / inv_m)
    d1 = -ex * inv_m  # dr/da'; dr/db = a' lx d1; dr/dc = -1/m
    d3 = -inv_m
    a = p[:, 0]
    q, q3 = w * d1, w * d3
    jtj = np.empty((p.shape[0], 3, 3))
    jtj[:, 0, 0] = np.einsum("ij,ij->i", q, d1)
    jtj[:, 0, 1] = a * ((q * d1) @ lx)
    jtj[:, 1, 1] = a * a * ((q * d1) @ (lx * lx))
    jtj[:, 0, 2] = np.einsum("ij,ij->i", q, d3)
    jtj[:, 1, 2] = a * ((q * d3) @ lx)
    jtj[:, 2, 2] = np.einsum("ij,ij->i", q3, d3)
    jtj[:, 1, 0], jtj[:, 2, 0], jtj[:, 2, 1] = jtj[:, 0, 1], jtj[:, 0, 2], jtj[:, 1, 2]
    grad = np.column_stack([np.einsum("ij,ij->i", q, r), a * ((q * r) @ lx), np.einsum("ij,ij->i", q3, r)])
    diag = np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-30)
    damped = jtj + lam[:, None, None] * (np.eye(3)[None] * diag[:, None, :])
    with np.errstate(invalid="ignore"):
        try:
            step = -np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -grad / diag
    return np.where(np.isfinite(step), step, 0.0)


def _validate(x, y, weights, offset: bool, space: str):
    if space not in ("linear", "log"):
        raise FitInputError(f"space must be 'linear' or 'log', got {space!r}")
    x, y, w = finite_points(x, y, weights)
    need = (3 if offset else 2) + 1
    if np.unique(x).size < need:
        raise FitInputError(f"power law{' with offset' if offset else ''} needs >= {need} distinct x values "
                            f"with finite y, got {np.unique(x).size}")
    if np.any(x <= 0):
        raise FitInputError(f"power law needs x > 0, found {x.min():g}")
    if space == "log" and np.any(y <= 0):
        raise FitInputError(f"log-space power law needs y > 0, found {y.min():g}")
    return x, y, w


def _log_slope(lx: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Slope of log y on log x as the centre of the exponent search (0 when y is not all positive)."""
    if np.any(y <= 0):
        return 0.0
    if w is None:
        return float(np.polyfit(lx, np.log(y), 1)[0])
    return float(np.polyfit(lx, np.log(y), 1, w=np.sqrt(w))[0])  # polyfit weights the unsquared residuals


def _polish_curve_fit(lx: np.ndarray, y: np.ndarray, p: np.ndarray, offset: bool,
                      w: np.ndarray | None = None) -> np.ndarray:
    """Refine the variable-projection optimum with scipy's curve_fit; keep whichever has the lower SSE."""

    def f(lxx, a, b, c=0.0):
        return a * np.exp(b * lxx) + c

    p0 = p if offset else p[:2]
    sigma = {} if w is None else {"sigma": 1.0 / np.sqrt(w)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            q = curve_fit(f, lx, y, p0=p0, maxfev=10_000, **sigma)[0]
    except (RuntimeError, ValueError):
        return p
    q = np.append(q, 0.0) if not offset else q
    ww = 1.0 if w is None else w
    sse = lambda r: float(np.sum(ww * (y - f(lx, *r)) ** 2))  # noqa: E731
    return q if np.isfinite(sse(q)) and sse(q) <= sse(p) else p


def _r2(target: np.ndarray, resid: np.ndarray, w: np.ndarray | None = None) -> float:
    """R^2 of the residuals about the (weighted) mean of the target."""
    if w is not None:
        sst = float(np.sum(w * (target - np.sum(w * target) / np.sum(w)) ** 2))
        return float(1.0 - np.sum(w * resid**2) / sst) if sst > 0 else float("nan")
    sst = float(np.sum((target - target.mean()) ** 2))
    return float(1.0 - np.sum(resid**2) / sst) if sst > 0 else float("nan")


def _loo_rel_err(model: _Model, y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> tuple[float, list[str]]:
    """Mean |prediction - y| / |y| of each held-out point from the fit to the others, and a note when some
    of those refits did not converge (they are left out of the mean)."""
    n = y.size
    held = np.arange(n) if n <= LOO_MAX_POINTS else np.sort(rng.choice(n, LOO_MAX_POINTS, replace=False))
    mask = np.ones((held.size, n))
    mask[np.arange(held.size), held] = 0.0
    fits, status = model.solve(model.data(np.broadcast_to(y, mask.shape), mask), center_b=p[1], start=p)
    fits = leave_out(fits, status)
    pred = fits[:, 0] * np.exp(fits[:, 1] * model.lx[held]) + fits[:, 2]
    notes = failed_note(status, "leave-one-out refits", "loo_rel_err")
    if np.isnan(pred).all():
        return float("nan"), notes
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nanmean(np.abs(pred - y[held]) / np.abs(y[held]))), notes


def _to_raw(p: np.ndarray, lx_mean: float) -> np.ndarray:
    """(a', b, c) for centred log x to (a, b, c) for raw x: a = a' exp(-b mean(log x))."""
    out = p.copy()
    out[:, 0] = p[:, 0] * np.exp(-p[:, 1] * lx_mean)
    return out


OPTIMA = ("lr_opt", "loss_opt")  # y values computed per group by the optimal-LR fit


@dataclass(frozen=True)
class LawFit:
    """A power law fitted to one group of a table (`group` holds the --by keys)."""

    group: dict[str, Any]
    x: str
    y: str
    fit: PowerLawFit
    excluded: tuple[dict[str, Any], ...] = ()  # optima left out because they were not bracketed

    @property
    def warnings(self) -> tuple[str, ...]:
        left_out = ([f"{len(self.excluded)} unbracketed optima left out (at {self.x} = "
                     f"{', '.join(f'{e[self.x]:.4g}' for e in self.excluded)}): the law covers fewer scales"]
                    if self.excluded else [])
        return (*self.fit.warnings, *left_out)

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "x": self.x, "y": self.y, **self.fit.to_dict(), "excluded": list(self.excluded),
                "warnings": list(self.warnings)}


def fit_law(df: pd.DataFrame, x: str, y: str = "loss_opt", by: Sequence[str] = (), *, offset: bool = False,
            space: Space = "linear", lr_col: str = "lr", loss_col: str = "val_loss", all_status: bool = False,
            include_unbracketed: bool = False, weight_col: str | None = None, n_boot: int = DEFAULT_N_BOOT,
            seed: int = 0, level: float = DEFAULT_LEVEL, source: str = "table") -> list[LawFit]:
    """Fit y = a x^b (+ c) per group of `by` columns of a runs table.

    y is a column, or "lr_opt" / "loss_opt": then the optimal LR is first located per group of (x, *by)
    and the law is fitted to those optima. Unbracketed optima (a boundary of the sweep, not an optimum) are
    left out unless include_unbracketed. weight_col: a column of per-row weights (`fit_power_law`'s
    weights), for a y column only.
    """
    from hyperp.fitting.lr import fit_optimal_lr  # here to keep powerlaw importable on its own
    from hyperp.fitting.table import fit_rows, group_indices, numeric_column, require_columns

    by = tuple(by)
    rng = rng_for(seed)
    if weight_col is not None and y in OPTIMA:
        raise FitInputError(f"{source}: weight_col weights rows of the table, so it needs y to be one of its columns, "
                            f"not {y} (computed per group)")
    if y in OPTIMA:
        optima = fit_optimal_lr(df, by=(x, *by), lr_col=lr_col, loss_col=loss_col, all_status=all_status,
                                n_boot=0, source=source).to_frame()
        numeric_column(optima, x, source=source, positive=True)
        table = optima if include_unbracketed else optima[optima["bracketed"]]
        dropped = optima[~optima["bracketed"]] if not include_unbracketed else optima.iloc[:0]
    else:
        require_columns(df, [x, y, *by, *([weight_col] if weight_col else [])], source=source)
        table, dropped = fit_rows(df, all_status, source=source), None
    x_all = numeric_column(table, x, source=source, positive=True)
    y_all = numeric_column(table, y, source=source)
    w_all = None if weight_col is None else numeric_column(table, weight_col, source=source)
    out = []
    for keys, idx in group_indices(table, by, source=source):
        xs, ys, ws = x_all[idx], y_all[idx], None if w_all is None else w_all[idx]
        label = f"{source}: group {keys}: " if keys else f"{source}: "
        try:
            law = fit_power_law(xs, ys, offset=offset, space=space, weights=ws, n_boot=n_boot, seed=rng,
                                level=level)
        except FitInputError as exc:
            raise FitInputError(f"{label}{exc}") from exc
        excluded = ()
        if dropped is not None and len(dropped):
            mask = np.ones(len(dropped), dtype=bool)
            for k, v in keys.items():
                mask &= (dropped[k] == v).to_numpy()
            excluded = tuple(dropped.loc[mask, [x, *by, "lr_opt", "loss_opt", "reason"]].to_dict("records"))
        out.append(LawFit(group=keys, x=x, y=y, fit=law, excluded=excluded))
    if not out:
        raise FitInputError(f"{source}: no points left to fit {y} against {x}")
    return out
