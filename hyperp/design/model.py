"""The response model a design simulates from, fitted from the sweep itself: per cell, the loss against ln(lr)
(its windowed LR parabola, the one `hyperp fit lr` fits), and one per-run noise SD.

Mean loss of a run at (cell, lr):
- inside the cell's fitted window, its parabola (when it curves upward);
- between measured LRs outside the window, the measured means interpolated in ln(lr) (a loss curve is a
  parabola only near its minimum, hyperp.fitting.lr);
- beyond the measured LRs, the parabola, or the edge's slope where there is none;
- at a cell with fewer than 3 LRs, the nearest fitted cell's curve (its curvature, its optimum moved along the
  fitted drift of ln eta* against ln scale), shifted to pass through the cell's own measured mean;
- at a new scale, the same borrowed curve, its level from ln(loss*) linear in ln(scale) over the fitted cells.

Noise: the larger of (a) the seed spread, pooled over every (cell, lr) with repeats, and (b) the window
parabolas' residual SD, pooled over fitted cells; (b) is what the commands' residual bootstrap sees, lack of
fit included, so simulated data are never cleaner than the real ones. Which one set it is stated (`noise`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hyperp.checks.transfer import larger_noise
from hyperp.design.questions import MIN_LRS, Question
from hyperp.fitting.table import FitInputError, status_masks


@dataclass(frozen=True)
class CellCurve:
    """One cell's expected loss against ln(lr)."""

    u: np.ndarray  # ln(lr) of the distinct measured LRs, sorted
    means: np.ndarray  # mean measured loss at each
    coef: tuple[float, float, float] | None  # window parabola c0 + c1 u + c2 u^2 (c2 > 0), else None
    window: tuple[float, float]  # ln(lr) range of the fitted window
    fitted: bool  # the cell had >= 3 LRs of its own

    @property
    def u_opt(self) -> float:
        if self.coef is not None:
            return -self.coef[1] / (2 * self.coef[2])
        return float(self.u[np.argmin(self.means)])

    @property
    def loss_opt(self) -> float:
        if self.coef is not None:
            return float(self._parabola(np.array([self.u_opt]))[0])
        return float(self.means.min())

    def _parabola(self, u: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.coef
        return c0 + c1 * u + c2 * u * u

    def mean(self, lr: np.ndarray) -> np.ndarray:
        u = np.log(np.asarray(lr, dtype=float))
        out = np.interp(u, self.u, self.means)
        if self.coef is not None:
            inside = (u >= self.window[0]) & (u <= self.window[1])
            beyond = (u < self.u[0]) | (u > self.u[-1])
            out = np.where(inside | beyond, self._parabola(u), out)
        elif self.u.size >= 2:
            lo = self.means[0] + (u - self.u[0]) * (self.means[1] - self.means[0]) / (self.u[1] - self.u[0])
            hi = self.means[-1] + (u - self.u[-1]) * (self.means[-1] - self.means[-2]) / (self.u[-1] - self.u[-2])
            out = np.where(u < self.u[0], lo, np.where(u > self.u[-1], hi, out))
        return out

    def moved(self, du: float, level: float) -> CellCurve:
        """This curve with its optimum moved by du in ln(lr) and its optimum loss set to `level`."""
        shift = level - self.loss_opt
        coef = None
        if self.coef is not None:
            c0, c1, c2 = self.coef  # p(u - du) + shift, expanded
            coef = (c0 - c1 * du + c2 * du * du + shift, c1 - 2 * c2 * du, c2)
        return CellCurve(self.u + du, self.means + shift, coef, (self.window[0] + du, self.window[1] + du), False)


@dataclass(frozen=True)
class ResponseModel:
    """Expected loss per (cell, lr) and the per-run noise SD."""

    question: Question
    curves: dict[Hashable, CellCurve]
    sd: float
    noise: str  # where sd comes from, stated
    drift: float  # d ln eta* / d ln scale over the fitted cells (0 with fewer than 2)

    def mean(self, rows: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(rows))
        for i, (key, lr) in enumerate(zip(_keys(rows, self.question), rows[self.question.lr_col].to_numpy(float))):
            out[i] = self.curve(key).mean(np.array([lr]))[0]
        return out

    def simulate(self, rows: pd.DataFrame, z: np.ndarray) -> np.ndarray:
        """Losses of `rows` for standard-normal draws `z` (one per row): mean + sd z."""
        return self.mean(rows) + self.sd * np.asarray(z, dtype=float)

    def curve(self, key: Hashable) -> CellCurve:
        if key not in self.curves:
            self.curves[key] = self._borrowed(key, None)
        return self.curves[key]

    def optimum_lr(self, key: Hashable) -> float:
        return math.exp(self.curve(key).u_opt)

    def _borrowed(self, key: Hashable, measured: tuple[np.ndarray, np.ndarray] | None) -> CellCurve:
        """A curve for a cell with too few LRs: the nearest fitted cell of its group, moved along the drift."""
        group, scale = _split(key)
        fitted = {k: c for k, c in self.curves.items() if c.fitted and _split(k)[0] == group}
        if not fitted:
            raise FitInputError(f"no cell of {group or 'the group'} has {MIN_LRS} LRs to model its LR curve; "
                                f"run an LR sweep at one scale first")
        near = min(fitted, key=lambda k: abs(math.log(_split(k)[1] / scale)))
        src = fitted[near]
        du = self.drift * math.log(scale / _split(near)[1])
        level = _level(fitted, scale) if measured is None else None
        curve = src.moved(du, src.loss_opt if level is None else level)
        if measured is not None:  # pass through the cell's own runs
            u, m = measured
            curve = curve.moved(0.0, curve.loss_opt + float(np.mean(m - curve.mean(np.exp(u)))))
        return curve


def fit_model(df: pd.DataFrame, question: Question) -> ResponseModel:
    """The response model of one group's runs (completed, finite loss)."""
    ok, _ = status_masks(df)
    loss = pd.to_numeric(df[question.loss_col], errors="coerce").to_numpy(float)
    runs = df[ok & np.isfinite(loss)]
    if runs.empty:
        raise FitInputError("no completed run with a finite loss to model")
    cells: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
    seed_ss, seed_dof, fit_ss, fit_dof = 0.0, 0, 0.0, 0
    for key, sub in runs.groupby(list(question.cell_cols), sort=True):
        lr = sub[question.lr_col].to_numpy(float)
        y = sub[question.loss_col].to_numpy(float)
        ss, dof = _repeat_spread(lr, y)
        seed_ss, seed_dof = seed_ss + ss, seed_dof + dof
        cells[cell_key(key)] = (lr, y)
    curves, measured = {}, {}
    for key, (lr, y) in cells.items():
        u, means = _means(lr, y)
        if u.size >= MIN_LRS:
            curve, ss, dof = _fit_curve(lr, y, u, means)
            curves[key] = curve
            fit_ss, fit_dof = fit_ss + ss, fit_dof + dof
        else:
            measured[key] = (u, means)
    sd, noise = _noise(seed_ss, seed_dof, fit_ss, fit_dof)
    model = ResponseModel(question, curves, sd, noise, _drift(curves))
    for key, m in measured.items():
        curves[key] = model._borrowed(key, m)
    return model


def _fit_curve(lr, y, u, means) -> tuple[CellCurve, float, int]:
    from hyperp.fitting.lr import fit_lr_curve  # noqa: PLC0415

    opt = fit_lr_curve(lr, y, n_boot=0)
    coef = opt.coef if opt.coef[2] > 0 else None
    in_window = (lr >= opt.window[0]) & (lr <= opt.window[1])
    resid = y[in_window] - opt.curve(lr[in_window])
    window = (math.log(opt.window[0]), math.log(opt.window[1]))
    return CellCurve(u, means, coef, window, True), float(resid @ resid), max(0, int(in_window.sum()) - 3)


def _means(lr: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    levels, inv = np.unique(lr, return_inverse=True)
    return np.log(levels), np.bincount(inv, weights=y) / np.bincount(inv)


def _repeat_spread(lr: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Sum of squares about each LR's mean and its degrees of freedom (the seeds' spread)."""
    _, inv = np.unique(lr, return_inverse=True)
    n = np.bincount(inv)
    mean = np.bincount(inv, weights=y) / n
    return float(np.sum((y - mean[inv]) ** 2)), int(np.sum(n - 1))


def _sd(ss: float, dof: int) -> float:
    """sqrt(ss / dof); NaN without dof or with a spread of exactly 0 (identical repeats: a deterministic run
    repeated, not evidence of noise-free losses; an SD of 0 would make every simulation noise-free)."""
    return math.sqrt(ss / dof) if dof and ss > 0 else math.nan


def _noise(seed_ss: float, seed_dof: int, fit_ss: float, fit_dof: int) -> tuple[float, str]:
    seed, fit = _sd(seed_ss, seed_dof), _sd(fit_ss, fit_dof)
    if not (math.isfinite(seed) or math.isfinite(fit)):
        raise FitInputError("no noise estimate: no LR has seed repeats with a nonzero spread and no cell's LR "
                            "parabola has spare points off the curve (add seeds at one LR, or more LRs at one "
                            "scale; identical repeats give no noise SD)")
    seed_text = (f"seed spread {seed:.4g} ({seed_dof} dof, pooled over repeated LRs)" if math.isfinite(seed) else
                 f"seed repeats identical ({seed_dof} dof: no spread)" if seed_dof else "no seed repeats")
    fit_text = (f"LR-parabola residual SD {fit:.4g} ({fit_dof} dof, pooled over cells)" if math.isfinite(fit) else
                f"LR parabolas fit exactly ({fit_dof} dof)" if fit_dof else "no spare parabola points")
    sd, _, source = larger_noise((seed, seed_dof), (fit, fit_dof))
    first, second = (seed_text, fit_text) if source == "seeds" else (fit_text, seed_text)
    return sd, f"{first} (the larger; {second})"


def _drift(curves: dict[Hashable, CellCurve]) -> float:
    """The least-squares slope of ln eta* against ln scale over the fitted cells, per group, averaged."""
    slopes = []
    groups = {_split(k)[0] for k in curves}
    for g in groups:
        pts = [(math.log(_split(k)[1]), c.u_opt) for k, c in curves.items() if c.fitted and _split(k)[0] == g]
        if len(pts) >= 2:
            x, y = np.array(pts).T
            slopes.append(float(np.polyfit(x, y, 1)[0]))
    return float(np.mean(slopes)) if slopes else 0.0


def _level(fitted: dict[Hashable, CellCurve], scale: float) -> float:
    """ln(loss*) linear in ln(scale) over the fitted cells, at `scale` (the nearest cell's with one)."""
    pts = sorted((math.log(_split(k)[1]), math.log(c.loss_opt)) for k, c in fitted.items())
    if len(pts) < 2:
        return math.exp(pts[0][1])
    x, y = np.array(pts).T
    a, b = np.polyfit(x, y, 1)
    return math.exp(a * math.log(scale) + b)


def cell_key(key) -> Hashable:
    return tuple(key) if isinstance(key, tuple) else (key,)


def _split(key: Hashable) -> tuple[tuple, float]:
    """(group values, scale) of a cell key (the scale is the last cell column)."""
    return tuple(key[:-1]), float(key[-1])


def _keys(rows: pd.DataFrame, question: Question) -> list[Hashable]:
    return [tuple(r) for r in rows[list(question.cell_cols)].itertuples(index=False, name=None)]
