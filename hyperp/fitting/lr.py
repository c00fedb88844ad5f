"""Optimal learning rate per group: a parabola in ln(lr) (method.md section 7).

loss = c0 + c1 u + c2 u^2 with u = ln(lr); lr* = exp(-c1 / (2 c2)) and loss* the parabola's value there.
The optimum is *bracketed* when c2 > 0, the vertex lies inside the swept range and R^2 >= R2_MIN;
otherwise lr_opt falls back to the best observed run and the group is flagged.

Diverged runs never enter the least squares. They do bound the optimum: a run that diverged at lr_d says
the optimum lies below lr_d, so by default the swept range for the bracketing decision extends up to the
smallest diverged LR above the completed ones (a vertex between the last completed LR and the first
diverged one is still bracketed), and a vertex at or beyond a diverged LR is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import (DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval,
                                      residual_draws, rng_for)
from hyperp.fitting.table import (FitInputError, finite_losses, group_indices, numeric_column, require_columns,
                                  status_masks)

# Below this R^2 the parabola does not describe the sweep (noise-dominated or not U-shaped) and the vertex is
# not trusted. 0.5 is loose on purpose: near a flat optimum a good sweep still leaves much unexplained noise.
R2_MIN = 0.5
MIN_LR_POINTS = 3  # distinct learning rates a parabola needs


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
    lr_range: tuple[float, float]  # the range the vertex must fall in (diverged runs may widen it)
    points: tuple[tuple[float, float], ...] = field(repr=False)  # (lr, loss) of the fitted runs
    diverged_lr: tuple[float, ...] = field(repr=False, default=())

    def curve(self, lr: np.ndarray) -> np.ndarray:
        """The fitted parabola at the given learning rates."""
        u = np.log(np.asarray(lr, dtype=float))
        c0, c1, c2 = self.coef
        return c0 + c1 * u + c2 * u * u

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "lr_opt": self.lr_opt, "loss_opt": self.loss_opt, "r2": self.r2,
                "n_points": self.n_points, "n_diverged": self.n_diverged, "bracketed": self.bracketed,
                "reason": self.reason, "lr_low": self.lr_interval.low, "lr_high": self.lr_interval.high,
                "level": self.lr_interval.level, "coef": list(self.coef), "lr_range": list(self.lr_range)}


@dataclass(frozen=True)
class LrOptima:
    """Optimal LRs of every group, in group order."""

    by: tuple[str, ...]
    optima: tuple[LrOptimum, ...]
    skipped: tuple[dict[str, Any], ...] = ()  # groups left out for too few points (skip_sparse)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([o.to_dict() for o in self.optima])

    def to_dict(self) -> dict[str, Any]:
        return {"by": list(self.by), "groups": [o.to_dict() for o in self.optima], "skipped": list(self.skipped)}


def fit_lr_curve(lr: np.ndarray, loss: np.ndarray, *, diverged_lr: Sequence[float] = (), r2_min: float = R2_MIN,
                 n_boot: int = DEFAULT_N_BOOT, seed: int | np.random.Generator = 0,
                 level: float = DEFAULT_LEVEL, group: dict[str, Any] | None = None) -> LrOptimum:
    """Fit the parabola in ln(lr) to one group's (lr, loss) points and locate the optimum.

    lr, loss: the completed runs (lr > 0). diverged_lr: learning rates of diverged runs, which only bound
    the optimum. Raises FitInputError with fewer than MIN_LR_POINTS distinct learning rates.
    """
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
    u = np.log(lr)
    lo, hi = _bracket_range(lr, diverged)
    design, center = _design(u)
    d_coef = np.linalg.lstsq(design, loss, rcond=None)[0]
    point = _optima(d_coef[None, :], loss[None, :], design, center, lr, np.log(lo), np.log(hi), r2_min)
    fitted = design @ d_coef
    boot_y = residual_draws(fitted, loss - fitted, n_boot, rng_for(seed), n_params=3)
    boot_coef = boot_y @ np.linalg.pinv(design).T
    boot = _optima(boot_coef, boot_y, design, center, lr, np.log(lo), np.log(hi), r2_min)
    interval = percentile_interval(boot["lr"], level, center=float(point["lr"][0]), dof=lr.size - 3, log=True)
    return LrOptimum(group=dict(group or {}), lr_opt=float(point["lr"][0]), loss_opt=float(point["loss"][0]),
                     r2=float(point["r2"][0]), n_points=int(lr.size), n_diverged=int(diverged.size),
                     bracketed=bool(point["bracketed"][0]), reason=str(point["reason"][0]), lr_interval=interval,
                     coef=_uncentered(d_coef, center), lr_range=(float(lo), float(hi)),
                     points=tuple(zip(lr.tolist(), loss.tolist())), diverged_lr=tuple(diverged.tolist()))


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


def _bracket_range(lr: np.ndarray, diverged: np.ndarray) -> tuple[float, float]:
    """Swept range for the bracketing decision: completed LRs, extended up to the first diverged LR above."""
    lo, hi = float(lr.min()), float(lr.max())
    above = diverged[diverged > hi]
    if above.size:
        hi = float(above.min())
    return lo, hi


def _design(u: np.ndarray) -> tuple[np.ndarray, float]:
    """Design matrix [1, v, v^2] with v = u - mean(u): centring keeps the normal equations well conditioned."""
    center = float(u.mean())
    v = u - center
    return np.column_stack([np.ones_like(v), v, v * v]), center


def _uncentered(d: np.ndarray, center: float) -> tuple[float, float, float]:
    """Coefficients of the centred parabola d0 + d1 v + d2 v^2 (v = u - center) in powers of u."""
    d0, d1, d2 = (float(x) for x in d)
    return (d0 - d1 * center + d2 * center**2, d1 - 2 * d2 * center, d2)


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
    good = r2 >= r2_min
    bracketed = curved & inside & good
    best = np.argmin(y, axis=1)
    rows = np.arange(y.shape[0])
    vertex_loss = coef[:, 0] + coef[:, 1] * v_star + coef[:, 2] * v_star**2
    lr_opt = np.where(bracketed, np.exp(np.where(bracketed, u_star, 0.0)), lr[best])
    loss = np.where(bracketed, vertex_loss, y[rows, best])
    reason = [("curvature <= 0" if not c else "vertex outside swept range" if not i else
               "poor fit" if not g else "bracketed") for c, i, g in zip(curved[:1], inside[:1], good[:1])]
    return {"lr": lr_opt, "loss": loss, "r2": r2, "bracketed": bracketed, "reason": reason}
