"""Optimal learning rate per group: a parabola in ln(lr) (method.md section 7), fitted near the best run.

loss = c0 + c1 u + c2 u^2 with u = ln(lr); lr* = exp(-c1 / (2 c2)) and loss* the parabola's value there.
The parabola is fitted on a window around the best observed run (its LR and the `LR_WINDOW` distinct LRs
on each side, shifted inward at an edge), not on the whole sweep: a loss curve is a parabola in ln(lr) only near its minimum, and one
parabola over a 256x range is pulled by the far points (its vertex can land outside the sweep while the
best run sits well inside it).

The optimum is *bracketed* (`bracket_verdict`, the one definition the LR search uses too) when the windowed
parabola curves upward (c2 > 0), its vertex lies inside the window's range, it is a good fit (R^2 >= R2_MIN
and c2 > 0 significant at CURVATURE_LEVEL, one-sided t-test), and the best
observed run is not at an edge of the swept range (completed and diverged LRs together); otherwise lr_opt
falls back to the best observed run and the group is flagged with the first reason that applies, in that
order.

Diverged runs never enter the least squares. They do bound the optimum: a run that diverged at lr_d says
the optimum lies below lr_d, so when the window reaches the largest completed LR its range extends up to
the smallest diverged LR above it (a vertex between the last completed LR and the first diverged one is
still bracketed), and a vertex at or beyond a diverged LR is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from hyperp.fitting.bootstrap import (DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval,
                                      residual_draws, rng_for)
from hyperp.fitting.defaults import R2_MIN  # below it the vertex is not trusted (why 0.5: defaults.py)
from hyperp.fitting.diagnostics import too_few_points
from hyperp.fitting.result import band_of
from hyperp.fitting.table import (FitInputError, finite_losses, group_indices, numeric_column, require_columns,
                                  status_masks)

MIN_LR_POINTS = 3  # distinct learning rates a parabola needs
# Distinct LRs on each side of the best run that the parabola is fitted on: 5 points on a grid of factor-2
# steps span 16x, over which measured loss-vs-ln(lr) curves are close to parabolic, and leave 2 degrees of
# freedom for R^2 and the interval.
LR_WINDOW = 2
BRACKETED = "bracketed"
AT_EDGE = "best run at the edge of the swept range"
CONCAVE = "curvature <= 0"
OUTSIDE = "vertex outside swept range"
POOR_FIT = "poor fit"
TOO_FEW = "fewer than 3 learning rates with a finite loss"
# A window of 5 noisy points fits a parabola with a high R^2 by chance (a flat, pure-noise sweep: median
# R^2 0.5), so a fit is "poor" unless its upward curvature is also significant at this one-sided level.
CURVATURE_LEVEL = 0.95


@dataclass(frozen=True)
class LrOptimum:
    """The optimal LR of one group. `lr_interval` is a bootstrap interval of lr_opt (same procedure)."""

    group: dict[str, Any]
    lr_opt: float
    loss_opt: float
    r2: float
    n_points: int
    n_diverged: int
    bracketed: bool
    reason: str  # "bracketed", or why not: "curvature <= 0", "vertex outside swept range", "poor fit"
    lr_interval: Interval
    coef: tuple[float, float, float]  # (c0, c1, c2) of loss = c0 + c1 ln(lr) + c2 ln(lr)^2
    lr_range: tuple[float, float]  # the range the vertex must fall in: the window's (diverged runs may widen it)
    points: tuple[tuple[float, float], ...] = field(repr=False)  # (lr, loss) of every completed run
    diverged_lr: tuple[float, ...] = field(repr=False, default=())
    n_fitted: int = 0  # runs inside the window, the ones the parabola is fitted to
    warnings: tuple[str, ...] = ()
    window: tuple[float, float] = (float("nan"), float("nan"))  # lowest and highest LR of the fitted window
    # The bootstrap's replicates, for quantities derived from the fit (a transfer regret): each row's parabola
    # (c0, c1, c2) and its optimum (the vertex, or the best point where that replicate is not bracketed).
    boot_coef: np.ndarray | None = field(default=None, repr=False, compare=False)
    boot_lr: np.ndarray | None = field(default=None, repr=False, compare=False)

    def curve(self, lr: np.ndarray) -> np.ndarray:
        """The fitted parabola at the given learning rates."""
        u = np.log(np.asarray(lr, dtype=float))
        c0, c1, c2 = self.coef
        return c0 + c1 * u + c2 * u * u

    # The result protocol (`hyperp.fitting.result.FitResult`): the parabola is a closed-form least squares, so
    # the fit and each bootstrap refit succeed whenever their coefficients are finite.
    predict = curve

    @property
    def success(self) -> bool:
        return bool(np.all(np.isfinite(self.coef)))

    @property
    def message(self) -> str:
        return ("converged (closed-form least squares)" if self.success
                else "did not converge (closed-form least squares): non-finite coefficients")

    @property
    def n_failed(self) -> int:
        c = self.boot_coef
        return 0 if c is None else int(np.sum(~np.isfinite(c).all(axis=1)))

    def band(self, lr: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap percentile band of the parabola at the given learning rates."""
        u = np.log(np.asarray(lr, dtype=float)).ravel()
        c = np.empty((0, 3)) if self.boot_coef is None else self.boot_coef
        curves = c[:, :1] + c[:, 1:2] * u[None, :] + c[:, 2:3] * (u * u)[None, :]
        return band_of(curves, self.lr_interval.level if level is None else level)

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "lr_opt": self.lr_opt, "loss_opt": self.loss_opt, "r2": self.r2,
                "n_points": self.n_points, "n_diverged": self.n_diverged, "bracketed": self.bracketed,
                "reason": self.reason, "lr_low": self.lr_interval.low, "lr_high": self.lr_interval.high,
                "level": self.lr_interval.level, "coef": list(self.coef), "lr_range": list(self.lr_range),
                "window": list(self.window), "n_fitted": self.n_fitted, "warnings": list(self.warnings),
                "success": self.success, "message": self.message}


@dataclass(frozen=True)
class LrOptima:
    """Optimal LRs of every group, in group order."""

    by: tuple[str, ...]
    optima: tuple[LrOptimum, ...]
    skipped: tuple[dict[str, Any], ...] = ()  # groups left out for too few points (skip_sparse)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([o.to_dict() for o in self.optima])

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{_label(o.group)}: {w}" for o in self.optima for w in o.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {"by": list(self.by), "groups": [o.to_dict() for o in self.optima], "skipped": list(self.skipped),
                "warnings": list(self.warnings)}


def _label(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all runs"


@dataclass(frozen=True)
class BracketVerdict:
    """Whether the optimum of one LR sweep is bracketed, and where to look when it is not."""

    bracketed: bool
    reason: str
    direction: int  # -1: extend the sweep to lower LRs, +1: higher, 0: the best run is interior (refine around it)


def fit_lr_curve(lr: np.ndarray, loss: np.ndarray, *, diverged_lr: Sequence[float] = (), r2_min: float = R2_MIN,
                 n_boot: int = DEFAULT_N_BOOT, seed: int | np.random.Generator = 0,
                 level: float = DEFAULT_LEVEL, group: dict[str, Any] | None = None) -> LrOptimum:
    """Fit the parabola in ln(lr) to the window of one group's (lr, loss) points around its best run.

    lr, loss: the completed runs (lr > 0). diverged_lr: learning rates of diverged runs, which only bound
    the optimum. Raises FitInputError with fewer than MIN_LR_POINTS distinct learning rates.
    """
    lr_all, loss_all, diverged = _clean(lr, loss, diverged_lr, group)
    win = _window_mask(lr_all, loss_all)
    lr, loss = lr_all[win], loss_all[win]
    lo, hi = _bracket_range(lr, lr_all, diverged)
    design, center = _design(np.log(lr))
    d_coef = np.linalg.lstsq(design, loss, rcond=None)[0]
    point = _optima(d_coef[None, :], loss[None, :], design, center, lr, np.log(lo), np.log(hi), r2_min)
    fitted = design @ d_coef
    boot_y = residual_draws(fitted, loss - fitted, n_boot, rng_for(seed), n_params=3)
    boot_coef = boot_y @ np.linalg.pinv(design).T
    boot = _optima(boot_coef, boot_y, design, center, lr, np.log(lo), np.log(hi), r2_min)
    interval = percentile_interval(boot["lr"], level, center=float(point["lr"][0]), dof=lr.size - 3, log=True)
    reason = str(point["reason"][0])
    if reason == BRACKETED and _best_at_edge(lr_all, loss_all, diverged):
        reason = AT_EDGE
    bracketed = reason == BRACKETED
    lr_opt, loss_opt = (float(point["lr"][0]), float(point["loss"][0])) if bracketed else \
        (float(lr[np.argmin(loss)]), float(loss.min()))
    return LrOptimum(group=dict(group or {}), lr_opt=lr_opt, loss_opt=loss_opt,
                     r2=float(point["r2"][0]), n_points=int(lr_all.size), n_diverged=int(diverged.size),
                     bracketed=bracketed, reason=reason, lr_interval=interval,
                     coef=_uncentered(d_coef, center), lr_range=(float(lo), float(hi)),
                     points=tuple(zip(lr_all.tolist(), loss_all.tolist())), diverged_lr=tuple(diverged.tolist()),
                     n_fitted=int(lr.size), warnings=tuple(_lr_warnings(reason, lr_opt, lr, lr_all)),
                     window=(float(lr.min()), float(lr.max())),
                     boot_coef=_uncentered_rows(boot_coef, center), boot_lr=boot["lr"])


def bracket_verdict(lr: np.ndarray, loss: np.ndarray, diverged_lr: Sequence[float] = (),
                    r2_min: float = R2_MIN) -> BracketVerdict:
    """Is the optimum of this sweep bracketed (the definition of `fit_lr_curve`), and if not, where to add
    LRs: beyond the edge the best run sits on (a sweep of 2 included), or around an interior best (0).
    Rows at one LR (seeds) are pooled, as `fit_lr_curve` pools them."""
    lr = np.asarray(lr, dtype=float)
    loss = np.asarray(loss, dtype=float)
    keep = np.isfinite(lr) & np.isfinite(loss)
    diverged = np.concatenate([np.asarray(diverged_lr, dtype=float), lr[~keep]])
    lr, loss = lr[keep], loss[keep]
    if np.unique(lr).size < MIN_LR_POINTS:
        return BracketVerdict(False, TOO_FEW, _too_few_direction(lr, loss, diverged))
    opt = fit_lr_curve(lr, loss, diverged_lr=diverged, r2_min=r2_min, n_boot=0)
    direction = 0
    if _best_at_edge(lr, loss, diverged):
        direction = -1 if lr[np.argmin(loss)] <= np.min(lr) else 1
    return BracketVerdict(opt.bracketed, opt.reason, direction)


def _too_few_direction(lr: np.ndarray, loss: np.ndarray, diverged: np.ndarray) -> int:
    """Where to add LRs while fewer than 3 have a finite loss: beyond the best run when it is the highest LR
    swept (nothing diverged above it), else downward (nothing finite, or the LRs above diverged)."""
    if np.unique(lr).size < 2:
        return -1
    return 1 if lr[np.argmin(loss)] >= np.concatenate([lr, diverged]).max() else -1


def _clean(lr, loss, diverged_lr, group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lr = np.asarray(lr, dtype=float)
    loss = np.asarray(loss, dtype=float)
    keep = np.isfinite(lr) & np.isfinite(loss)
    lr, loss = lr[keep], loss[keep]
    label = f"group {group}" if group else "LR sweep"
    if np.unique(lr).size < MIN_LR_POINTS:
        raise FitInputError(f"{label}: {lr.size} point(s) at {np.unique(lr).size} distinct learning rate(s); "
                            f"the parabola in ln(lr) needs >= {MIN_LR_POINTS} distinct learning rates")
    if np.any(lr <= 0):
        raise FitInputError(f"{label}: learning rates must be > 0, found {lr.min():g}")
    diverged = np.asarray([d for d in diverged_lr if np.isfinite(d)], dtype=float)
    return lr, loss, diverged


def _window_mask(lr: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """The runs at the 2 LR_WINDOW + 1 distinct LRs centred on the best run's (shifted inward at an edge of
    the sweep, so the window always has that many LRs when the sweep does)."""
    distinct = np.unique(lr)
    width = min(2 * LR_WINDOW + 1, distinct.size)
    i = int(np.searchsorted(distinct, lr[np.argmin(loss)]))
    lo = min(max(0, i - LR_WINDOW), distinct.size - width)
    return (lr >= distinct[lo]) & (lr <= distinct[lo + width - 1])


def _best_at_edge(lr: np.ndarray, loss: np.ndarray, diverged: np.ndarray) -> bool:
    """The best run has the lowest or the highest LR of the sweep (diverged runs count as swept LRs)."""
    best = lr[np.argmin(loss)]
    swept = np.concatenate([lr, diverged])
    return bool(best <= swept.min() or best >= swept.max())


def _lr_warnings(reason: str, lr_opt: float, window_lr: np.ndarray, lr_all: np.ndarray) -> list[str]:
    out = []
    if reason != BRACKETED:
        detail = (f"{reason}: R^2 below {R2_MIN} or upward curvature not significant at {CURVATURE_LEVEL:.0%}"
                  if reason == POOR_FIT else reason)
        out.append(f"optimum not bracketed ({detail}): lr_opt = {lr_opt:.4g} is the best observed run; "
                   f"the swept LRs {lr_all.min():.4g} to {lr_all.max():.4g} do not locate the optimum")
    return out + too_few_points(int(window_lr.size), 3, "LR parabola")


def fit_optimal_lr(df: pd.DataFrame, by: Sequence[str] = (), *, lr_col: str = "lr", loss_col: str = "val_loss",
                   all_status: bool = False, r2_min: float = R2_MIN, n_boot: int = DEFAULT_N_BOOT,
                   seed: int = 0, level: float = DEFAULT_LEVEL, skip_sparse: bool = False,
                   source: str = "table") -> LrOptima:
    """Optimal LR of every group of the `by` columns of a runs table.

    Completed rows are fitted (all non-diverged rows with all_status); diverged rows bound the optimum.
    With skip_sparse, groups with too few learning rates are reported in `skipped` instead of failing.
    """
    by = tuple(by)
    require_columns(df, [lr_col, loss_col, *by], source=source)
    lr_all = numeric_column(df, lr_col, source=source, positive=True)
    loss_all = numeric_column(df, loss_col, source=source)
    fit_mask, div_mask = status_masks(df, all_status)
    finite_losses(np.where(fit_mask, loss_all, np.nan), loss_col, source=source)
    rng = rng_for(seed)
    optima, skipped = [], []
    for keys, idx in group_indices(df, by, source=source):
        fit = idx[fit_mask[idx] & np.isfinite(loss_all[idx])]
        try:
            optima.append(fit_lr_curve(lr_all[fit], loss_all[fit], diverged_lr=lr_all[idx[div_mask[idx]]],
                                       r2_min=r2_min, n_boot=n_boot, seed=rng, level=level, group=keys))
        except FitInputError as exc:
            if not skip_sparse:
                raise FitInputError(f"{source}: {exc} (pass skip_sparse / --skip-sparse to leave it out)") from exc
            skipped.append({**keys, "n_points": int(fit.size)})
    if not optima:
        raise FitInputError(f"{source}: no group has enough learning rates to fit")
    return LrOptima(by=by, optima=tuple(optima), skipped=tuple(skipped))


def _bracket_range(window_lr: np.ndarray, lr_all: np.ndarray, diverged: np.ndarray) -> tuple[float, float]:
    """Range the vertex must fall in: the window's LRs, extended up to the first diverged LR above the
    largest completed LR when the window reaches it."""
    lo, hi = float(window_lr.min()), float(window_lr.max())
    above = diverged[diverged > lr_all.max()]
    if above.size and hi >= lr_all.max():
        hi = float(above.min())
    return lo, hi


def _design(u: np.ndarray) -> tuple[np.ndarray, float]:
    """Design matrix [1, v, v^2] with v = u - mean(u): centring keeps the normal equations well conditioned."""
    center = float(u.mean())
    v = u - center
    return np.column_stack([np.ones_like(v), v, v * v]), center


def _uncentered(d: np.ndarray, center: float) -> tuple[float, float, float]:
    """Coefficients of the centred parabola d0 + d1 v + d2 v^2 (v = u - center) in powers of u."""
    c0, c1, c2 = _uncentered_rows(np.asarray(d, dtype=float)[None, :], center)[0]
    return (float(c0), float(c1), float(c2))


def _uncentered_rows(d: np.ndarray, center: float) -> np.ndarray:
    """`_uncentered` for every row of (k, 3) centred coefficients."""
    d0, d1, d2 = d[:, 0], d[:, 1], d[:, 2]
    return np.column_stack([d0 - d1 * center + d2 * center**2, d1 - 2 * d2 * center, d2])


def _significant_curvature(c2: np.ndarray, sse: np.ndarray, design: np.ndarray) -> np.ndarray:
    """c2 > 0 at one-sided level CURVATURE_LEVEL (t-test of the quadratic coefficient). With no residual
    degree of freedom there is nothing to test against, and every row passes (a warning says so)."""
    dof = design.shape[0] - 3
    if dof <= 0:
        return np.ones_like(c2, dtype=bool)
    var_c2 = sse / dof * np.linalg.inv(design.T @ design)[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var_c2 > 0, c2 / np.sqrt(var_c2), np.where(c2 > 0, np.inf, -np.inf))
    return t >= student_t.ppf(CURVATURE_LEVEL, dof)


def _optima(coef: np.ndarray, y: np.ndarray, design: np.ndarray, center: float, lr: np.ndarray,
            u_lo: float, u_hi: float, r2_min: float) -> dict[str, np.ndarray]:
    """Optimum of each row of centred coefficients (k, 3) fitted to responses y (k, n), with fallback.

    `reason` (why not bracketed) is given for the first row only: the point estimate.
    """
    fitted = coef @ design.T
    sse = np.sum((y - fitted) ** 2, axis=1)
    sst = np.sum((y - y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / sst, np.nan)
        v_star = -coef[:, 1] / (2.0 * coef[:, 2])
    u_star = center + v_star
    curved = coef[:, 2] > 0
    inside = curved & (u_star >= u_lo - 1e-12) & (u_star <= u_hi + 1e-12)
    good = (r2 >= r2_min) & _significant_curvature(coef[:, 2], sse, design)
    bracketed = curved & inside & good
    best = np.argmin(y, axis=1)
    rows = np.arange(y.shape[0])
    vertex_loss = coef[:, 0] + coef[:, 1] * v_star + coef[:, 2] * v_star**2
    lr_opt = np.where(bracketed, np.exp(np.where(bracketed, u_star, 0.0)), lr[best])
    loss = np.where(bracketed, vertex_loss, y[rows, best])
    reason = [(CONCAVE if not c else OUTSIDE if not i else POOR_FIT if not g else BRACKETED)
              for c, i, g in zip(curved[:1], inside[:1], good[:1])]
    return {"lr": lr_opt, "loss": loss, "r2": r2, "bracketed": bracketed, "reason": reason}
