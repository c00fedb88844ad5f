"""A/B of one option: does switching a column from its baseline value change the optimum loss? (method.md 11)

In each group (every value of the `by` columns, e.g. each model size) each arm's LR curve is fitted
(hyperp.fitting.lr: a parabola in ln lr over the window about its best run) and its optimum loss read at the
vertex. The difference d = L*(variant) - L*(baseline) gets a t interval from the runs' noise:

- sigma: the larger of the pooled seed-to-seed SD (runs repeated at one LR, every arm of the group pooled) and
  the pooled residual SD of the arms' parabolas (noise plus misfit), with that estimate's degrees of freedom;
- each vertex's standard error sigma sqrt(x0' (X'X)^-1 x0), x0 = (1, u*, u*^2) at the vertex u* = ln lr*, X
  the arm's window design (the vertex's own position moves the minimum only to second order).

Verdict against tol = REGRET_TOL x the baseline's optimum loss (the relative loss a user may pay, the tolerance
of hyperp.checks.transfer):
- pass: the interval lies within +-tol (the option changes the optimum by less than the tolerance);
- fail: the interval lies wholly beyond +tol or -tol (it changes it by more; `better` says which arm);
- inconclusive: the interval straddles an edge, an arm's optimum is not bracketed (its loss is then only a
  bound), or no noise estimate exists (no repeated LR and a parabola through 3 points).
A check over several groups passes when every group passes and fails when any fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from hyperp.checks.transfer import (FAIL, INCONCLUSIVE, PASS, REGRET_TOL, larger_noise, noise_sd,
                                    normal_quantile)
from hyperp.fitting.bootstrap import DEFAULT_LEVEL, Interval
from hyperp.fitting.lr import LrOptimum, fit_optimal_lr
from hyperp.fitting.table import FitInputError, require_columns


@dataclass(frozen=True)
class ArmGroup:
    """One group's comparison."""

    group: dict[str, Any]
    baseline: LrOptimum
    variant: LrOptimum
    delta: float  # L(variant) - L(baseline), nats, each arm's loss where it is read (`read`)
    read: tuple[float, float]  # (baseline, variant) loss where read: at the optimum, or at the transferred LR
    interval: Interval
    se: float  # the difference's standard error
    sigma: float  # the noise SD the interval uses
    sigma_source: str  # "seeds" or "residuals"
    dof: int
    tol: float  # nats
    verdict: str
    why: str
    better: str  # "variant", "baseline" or "" (no difference shown)

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "loss_baseline": self.baseline.loss_opt, "loss_variant": self.variant.loss_opt,
                "read_baseline": self.read[0], "read_variant": self.read[1],
                "lr_baseline": self.baseline.lr_opt, "lr_variant": self.variant.lr_opt,
                "bracketed": [self.baseline.bracketed, self.variant.bracketed], "delta": self.delta,
                "delta_low": self.interval.low, "delta_high": self.interval.high, "level": self.interval.level,
                "se": self.se,
                "sigma": self.sigma, "sigma_source": self.sigma_source, "dof": self.dof, "tol": self.tol,
                "verdict": self.verdict, "why": self.why, "better": self.better}


@dataclass(frozen=True)
class ABCheck:
    column: str
    baseline: str
    variant: str
    groups: tuple[ArmGroup, ...]
    verdict: str
    why: str
    protocol: str = "tuned"  # "tuned": each arm at its own optimum; "transferred": at its proxy's base LR
    trend: Trend | None = None
    thresholds: dict[str, float] = field(default_factory=lambda: {"regret_tol": REGRET_TOL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"check": "ab", "column": self.column, "baseline": self.baseline, "variant": self.variant,
                "protocol": self.protocol, "verdict": self.verdict, "why": self.why, "thresholds": self.thresholds,
                "groups": [g.to_dict() for g in self.groups],
                "trend": self.trend.to_dict() if self.trend else None, "warnings": list(self.warnings)}


@dataclass(frozen=True)
class Trend:
    """The difference against ln x over the groups with an interval: a weighted line (weights 1/se^2, the
    groups' own standard errors), its slope per e-fold of x with a t interval, and where it crosses 0."""

    x: str
    points: tuple[tuple[float, float, float], ...]  # (x, delta, se) of each group with an interval
    slope: float  # nats per e-fold of x
    interval: Interval
    crossing: float  # x where the line crosses 0 (NaN: no crossing within reach, see crossing_interval)
    crossing_interval: Interval  # NaN bounds unless the slope's interval excludes 0

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "points": [list(p) for p in self.points], "slope": self.slope,
                "slope_low": self.interval.low, "slope_high": self.interval.high, "level": self.interval.level,
                "crossing": self.crossing, "crossing_low": self.crossing_interval.low,
                "crossing_high": self.crossing_interval.high}


def check_ab(df: pd.DataFrame, column: str, baseline: str, variant: str | None = None, by: Sequence[str] = (), *,
             transfer_along: str | None = None, trend_x: str | None = None, lr_col: str = "lr",
             loss_col: str = "val_loss", level: float = DEFAULT_LEVEL, source: str = "table") -> ABCheck:
    """The A/B of `column` = `variant` against `column` = `baseline` (values compared as text; `variant` None:
    the one other value) in every group of `by`. `transfer_along` (a `by` column): each arm's loss is read at
    its base LR tuned at that column's smallest value (the paper's protocol) instead of at its own optimum;
    `trend_x` (a numeric column, e.g. flops): the difference's trend against ln x over the groups (`Trend`)."""
    by = tuple(by)
    if transfer_along is not None and transfer_along not in by:
        raise FitInputError(f"{source}: --transfer-along {transfer_along} must be one of the --by columns {list(by)}")
    require_columns(df, [column, lr_col, loss_col, *by, *([trend_x] if trend_x else [])], source=source)
    text = df[column].astype(str)
    values = sorted(set(text))
    if baseline not in values:
        raise FitInputError(f"{source}: --baseline {baseline!r} is no value of {column} (values: {values})")
    others = [v for v in values if v != baseline]
    if variant is None:
        if len(others) != 1:
            raise FitInputError(f"{source}: {column} has {len(others)} values besides {baseline!r} ({others}); "
                                "name the variant")
        variant = others[0]
    elif variant not in others:
        raise FitInputError(f"{source}: variant {variant!r} is no other value of {column} (values: {values})")
    rows = df[text.isin([baseline, variant])].assign(**{column: text})
    optima = fit_optimal_lr(rows, by=(*by, column), lr_col=lr_col, loss_col=loss_col, n_boot=0, level=level,
                            source=source).optima
    arms = {(tuple(o.group[b] for b in by), o.group[column]): o for o in optima}
    proxies = _proxies(arms, by, transfer_along) if transfer_along else {}
    groups, xs = [], []
    for key in dict.fromkeys(k for k, _ in arms):
        if (key, baseline) not in arms or (key, variant) not in arms:
            continue
        mask = np.ones(len(rows), dtype=bool)
        for b, v in zip(by, key):
            mask &= (rows[b] == v).to_numpy()
        at = {arm: proxies.get((key, arm)) for arm in (baseline, variant)}
        groups.append(_compare(dict(zip(by, key)), arms[key, baseline], arms[key, variant], rows[mask], column,
                               lr_col, loss_col, level, at[baseline], at[variant]))
        xs.append(float(np.median(rows[mask][trend_x].astype(float))) if trend_x else math.nan)
    if not groups:
        raise FitInputError(f"{source}: no group has both {column}={baseline} and {column}={variant}")
    verdicts = [g.verdict for g in groups]
    verdict = FAIL if FAIL in verdicts else PASS if set(verdicts) == {PASS} else INCONCLUSIVE
    why = "; ".join(f"{_label(g.group)}{g.verdict}" for g in groups)
    trend = _trend(groups, xs, trend_x, level) if trend_x else None
    return ABCheck(column, baseline, variant, tuple(groups), verdict, why, protocol="transferred" if transfer_along
                   else "tuned", trend=trend)


def _proxies(arms: dict, by: tuple[str, ...], axis: str) -> dict:
    """(group key, arm) -> the arm's optimum at the smallest `axis` value among the groups that agree on the
    other `by` columns: the proxy its base LR is transferred from."""
    i = by.index(axis)
    out = {}
    for (key, arm) in arms:
        rest = key[:i] + key[i + 1:]
        same = [k for k, a in arms if a == arm and k[:i] + k[i + 1:] == rest]
        proxy = min(same, key=lambda k: float(k[i]))
        if proxy != key:
            out[key, arm] = arms[proxy, arm]
    return out


def _label(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) + ": " if group else ""


def _compare(group, base: LrOptimum, var: LrOptimum, rows: pd.DataFrame, column: str, lr_col, loss_col, level,
             base_proxy: LrOptimum | None = None, var_proxy: LrOptimum | None = None) -> ArmGroup:
    """One group's verdict; an arm with a proxy is read at the proxy's optimum LR, else at its own."""
    sigma, dof, source = larger_noise(noise_sd(rows, lr_col, loss_col, by=(column,)), _residual_sd(base, var))
    (loss_b, lev_b), (loss_v, lev_v) = _reading(base, base_proxy), _reading(var, var_proxy)
    delta = loss_v - loss_b
    tol = REGRET_TOL * base.loss_opt

    def result(verdict: str, why: str, interval: Interval | None = None, se: float = math.nan, better: str = ""):
        return ArmGroup(group, base, var, delta, (loss_b, loss_v), interval or Interval(math.nan, math.nan, level),
                        se, sigma, source, dof, tol, verdict, why, better)

    unread = [name for name, lev in (("baseline", lev_b), ("variant", lev_v)) if not math.isfinite(lev)]
    if unread:
        where = "its transferred LR lies outside its fitted window" if base_proxy or var_proxy else \
            "its optimum is not bracketed: its loss is only a bound"
        return result(INCONCLUSIVE, f"the {unread[0]}'s loss is not read off a fit: {where}")
    if not (math.isfinite(sigma) and dof > 0):
        return result(INCONCLUSIVE, "no noise estimate: repeat an LR with another seed")
    se = sigma * math.hypot(lev_b, lev_v)
    half = float(student_t.ppf(0.5 + level / 2, dof)) * se
    interval = Interval(delta - half, delta + half, level)
    span = f"d = {delta:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}] nats"
    if -tol <= interval.low and interval.high <= tol:
        return result(PASS, f"{span} lies within +-{tol:.4f}", interval, se)
    if interval.low > tol or interval.high < -tol:
        better = "baseline" if delta > 0 else "variant"
        return result(FAIL, f"{span} lies wholly beyond +-{tol:.4f}: the {better} is better", interval, se, better)
    return result(INCONCLUSIVE, f"{span} straddles +-{tol:.4f}; {_to_decide(delta, half, tol)}", interval, se)


def _to_decide(delta: float, half: float, tol: float) -> str:
    """How many times the runs (per arm, at the same design) would shrink the interval's half-width enough to
    decide, if the difference stayed where it is (half-widths fall as 1/sqrt(runs))."""
    room = abs(abs(delta) - tol)
    if room <= 0:
        return "the difference sits on the tolerance's edge: no number of runs decides it"
    goal = "fail" if abs(delta) > tol else "pass"
    return f"about {(half / room) ** 2:.1f}x the runs would {goal} it if the difference held"


def _reading(opt: LrOptimum, proxy: LrOptimum | None) -> tuple[float, float]:
    """(loss, its standard error per unit noise SD) of an arm: at its own vertex, or at its proxy's optimum LR,
    where the proxy's vertex uncertainty moves the reading by the local slope (delta method). NaN SE where the
    loss is not read off a fit (not bracketed, or the transferred LR outside the window)."""
    if not opt.bracketed or (proxy is not None and not proxy.bracketed):
        return (opt.loss_opt, math.nan)
    if proxy is None:
        return opt.loss_opt, _leverage(opt, math.log(opt.lr_opt))
    u = math.log(proxy.lr_opt)
    lo, hi = opt.window
    loss = float(opt.curve(np.array([proxy.lr_opt]))[0])
    if not lo <= proxy.lr_opt <= hi:
        return loss, math.nan
    slope = opt.coef[1] + 2 * opt.coef[2] * u  # dL/d ln lr at the transferred LR
    return loss, math.hypot(_leverage(opt, u), slope * _vertex_se(proxy))


def _window_points(opt: LrOptimum) -> tuple[np.ndarray, np.ndarray]:
    """The (lr, loss) of the runs inside the window the parabola was fitted to."""
    lo, hi = opt.window
    pts = np.array([p for p in opt.points if lo <= p[0] <= hi], dtype=float).reshape(-1, 2)
    return pts[:, 0], pts[:, 1]


def _window_design(opt: LrOptimum) -> tuple[np.ndarray, float]:
    """The window's design (1, u, u^2) in ln lr centred on the window's mean (the same parabolas), and the centre."""
    u = np.log(_window_points(opt)[0])
    centre = float(u.mean())
    u = u - centre
    return np.column_stack([np.ones_like(u), u, u * u]), centre


def _leverage(opt: LrOptimum, u0: float) -> float:
    """sqrt(x0' (X'X)^-1 x0) at ln lr = u0: the fitted loss's standard error there per unit noise SD."""
    x, centre = _window_design(opt)
    v = u0 - centre
    x0 = np.array([1.0, v, v * v])
    return math.sqrt(float(x0 @ np.linalg.pinv(x.T @ x) @ x0))


def _vertex_se(opt: LrOptimum) -> float:
    """The standard error of the vertex's ln lr per unit noise SD (delta method on the centred coefficients)."""
    x, centre = _window_design(opt)
    c1 = opt.coef[1] + 2 * opt.coef[2] * centre  # the centred parabola's coefficients
    c2 = opt.coef[2]
    grad = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 * c2)])
    return math.sqrt(float(grad @ np.linalg.pinv(x.T @ x) @ grad))


def _trend(groups: list[ArmGroup], xs: list[float], name: str, level: float) -> Trend:
    """Weighted least squares of the differences on ln x (weights 1/se^2), the slope's interval at the pooled
    degrees of freedom, and the crossing ln x* = -intercept / slope when the slope's interval excludes 0 (its
    interval from the lines drawn from the fit's covariance)."""
    pts = [(x, g.delta, g.se) for g, x in zip(groups, xs) if math.isfinite(g.se) and g.se > 0 and x > 0]
    nan = Interval(math.nan, math.nan, level)
    if len(pts) < 2:
        return Trend(name, tuple(pts), math.nan, nan, math.nan, nan)
    u = np.log([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    w = 1 / np.array([p[2] for p in pts]) ** 2
    design = np.column_stack([np.ones_like(u), u])
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    a, b = cov @ design.T @ (w * y)
    dof = min(g.dof for g in groups if math.isfinite(g.se))
    t = float(student_t.ppf(0.5 + level / 2, dof))
    interval = Interval(b - t * math.sqrt(cov[1, 1]), b + t * math.sqrt(cov[1, 1]), level)
    if interval.low <= 0 <= interval.high:
        return Trend(name, tuple(pts), float(b), interval, math.nan, nan)
    # lines drawn with the covariance widened by (t / z)^2, so their normal quantiles are the t interval's
    draws = np.random.default_rng(0).multivariate_normal([a, b], cov * (t / normal_quantile(level)) ** 2, size=4000)
    crossings = np.exp(-draws[:, 0] / draws[:, 1])
    low, high = np.quantile(crossings, [(1 - level) / 2, (1 + level) / 2])
    crossing = Interval(float(low), float(high), level)
    return Trend(name, tuple(pts), float(b), interval, float(math.exp(-a / b)), crossing)


def _residual_sd(*optima: LrOptimum) -> tuple[float, int]:
    """Pooled residual SD of the arms' window parabolas, and its degrees of freedom (n - 3 per arm)."""
    ss, dof = 0.0, 0
    for opt in optima:
        lr, loss = _window_points(opt)
        ss += float(np.sum((loss - opt.curve(lr)) ** 2))
        dof += lr.size - 3
    return (math.sqrt(ss / dof), dof) if dof > 0 else (math.nan, 0)
