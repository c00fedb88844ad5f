"""Does a base learning rate transfer along an axis? (method.md section 9)

From a runs table that sweeps `lr` at several values of one axis (width, depth, tokens, top_k), and
optionally several seeds:

- eta* per scale: the windowed parabola of `hyperp.fitting.lr` with its bootstrap interval;
- drift: the slope s of ln eta* against ln(scale), over the scales whose optimum is bracketed, with an
  interval that propagates each optimum's own uncertainty (each draw refits the slope to optima drawn from
  their intervals);
- transfer regret at each scale: the loss at the proxy's eta* (the base LR; the scheme's rule maps it to
  every group's LR at that scale, so transferring means reusing the number) minus the best loss there, in
  nats and relative, read off that scale's parabola (or, outside its window, interpolated between the
  measured LRs in ln(lr));
- the noise floor: the seed-to-seed standard deviation of the loss at a repeated LR, when seeds are present;
- local slopes: the drift between each pair of adjacent scales (both bracketed), with a normal interval from
  the two optima's own intervals, so a drift that changes along the axis (a token exponent that moves as runs
  get longer) shows where the overall slope averages it away.

Verdict (method.md section 11: equivalence, not absence of evidence), with its thresholds stated in the
result. A scale's regret has an interval: the bootstrap of its LR fit and of the proxy's (the residuals carry
the seeds' spread when seeds are pooled); where the regret is read off measured means instead (an unbracketed
scale, or the transferred LR outside the fitted window), only a lower bound (`_regret_interval`), so such a
scale can fail but never pass. A scale's allowance is REGRET_TOL x its best loss.
- pass: every scale is bracketed, the slope's whole interval lies within +-SLOPE_TOL, and every regret's upper
  bound lies within its allowance (the data show the transfer costs less than the tolerance);
- fail: the slope's whole interval lies beyond +-SLOPE_TOL, or some regret's lower bound exceeds its
  allowance (the data show the transfer costs more);
- inconclusive: anything else, with the interval that straddles its band and what would narrow it.
An interval that merely contains 0 proves nothing; `decided_by` names the interval that decided the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval, rng_for
from hyperp.fitting.lr import LrOptimum, fit_lr_curve
from hyperp.fitting.report import readable
from hyperp.fitting.table import FitInputError, group_indices, numeric_column, require_columns, status_masks

AXES = ("width", "depth", "tokens", "top_k")
SLOPE_TOL = 0.1  # |d ln eta* / d ln scale| a transfer may show: over a 4x range it moves eta* by 15%
REGRET_TOL = 0.01  # relative loss a user may pay for transferring instead of tuning (1%)
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class ScalePoint:
    """One scale of the axis: its optimum, the loss at the transferred LR, and the noise floor."""

    scale: float
    optimum: LrOptimum
    transferred_lr: float
    loss_at_transferred: float  # NaN when the transferred LR lies outside this scale's sweep
    regret: float  # loss_at_transferred - best loss (nats)
    regret_rel: float
    noise_sd: float  # seed-to-seed SD of the loss at a repeated LR (NaN without seeds)
    regret_interval: Interval = Interval(math.nan, math.nan)

    @property
    def allowance(self) -> float:
        """The regret a user may pay at this scale (nats)."""
        return REGRET_TOL * self.optimum.loss_opt

    def to_dict(self) -> dict[str, Any]:
        o = self.optimum
        return {"scale": self.scale, "lr_opt": o.lr_opt, "lr_low": o.lr_interval.low, "lr_high": o.lr_interval.high,
                "loss_opt": o.loss_opt, "bracketed": o.bracketed, "reason": o.reason,
                "transferred_lr": self.transferred_lr, "loss_at_transferred": self.loss_at_transferred,
                "regret": self.regret, "regret_low": self.regret_interval.low,
                "regret_high": self.regret_interval.high, "allowance": self.allowance,
                "regret_rel": self.regret_rel, "noise_sd": self.noise_sd, "n_runs": o.n_points}


@dataclass(frozen=True)
class LocalSlope:
    """d ln eta* / d ln scale between two adjacent scales."""

    low_scale: float
    high_scale: float
    slope: float
    interval: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.low_scale, "to": self.high_scale, "slope": self.slope, "low": self.interval.low,
                "high": self.interval.high}


@dataclass(frozen=True)
class TransferCheck:
    """The transfer check of one group (e.g. one scheme) along one axis."""

    axis: str
    group: dict[str, Any]
    proxy: float
    points: tuple[ScalePoint, ...]
    slope: float
    slope_interval: Interval
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"slope_tol": SLOPE_TOL, "regret_tol": REGRET_TOL})
    warnings: tuple[str, ...] = ()
    local_slopes: tuple[LocalSlope, ...] = ()
    decided_by: str = ""  # the interval that decided the verdict ("slope", "regret at 128", ...)
    to_decide: str = ""  # for an inconclusive verdict: what would narrow the deciding interval

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "axis": self.axis, "proxy": self.proxy, "verdict": self.verdict, "why": self.why,
                "decided_by": self.decided_by, "to_decide": self.to_decide,
                "slope": self.slope, "slope_low": self.slope_interval.low, "slope_high": self.slope_interval.high,
                "level": self.slope_interval.level, "thresholds": dict(self.thresholds),
                "scales": [p.to_dict() for p in self.points], "local_slopes": [s.to_dict() for s in self.local_slopes],
                "warnings": list(self.warnings)}


def check_transfer(df: pd.DataFrame, axis: str, *, by: Sequence[str] = (), proxy: float | None = None,
                   lr_col: str = "lr", loss_col: str = "val_loss", n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   level: float = DEFAULT_LEVEL, source: str = "table") -> list[TransferCheck]:
    """The transfer check of each group of `by` along `axis`; the proxy is the smallest scale unless given."""
    if axis not in AXES:
        raise FitInputError(f"axis: expected one of {', '.join(AXES)}, got {axis!r}")
    require_columns(df, [axis, lr_col, loss_col, *by], source=source)
    rng = rng_for(seed)
    out = []
    for keys, idx in group_indices(df, by, source=source):
        sub = df.iloc[idx]
        out.append(_check_group(sub, axis, keys, proxy, lr_col, loss_col, n_boot, rng, level, source))
    return out


def _check_group(df, axis, keys, proxy, lr_col, loss_col, n_boot, rng, level, source) -> TransferCheck:
    scales = np.unique(numeric_column(df, axis, source=source, positive=True))
    if scales.size < 2:
        raise FitInputError(f"{source}: group {keys or 'all'}: column {axis!r} has {scales.size} value(s); "
                            f"a transfer check needs >= 2 scales")
    proxy = float(scales.min() if proxy is None else proxy)
    if proxy not in scales:
        raise FitInputError(f"{source}: proxy {proxy:g} is not a value of {axis!r} ({', '.join(map(str, scales))})")
    optima = {float(s): _optimum(df[df[axis] == s], lr_col, loss_col, n_boot, rng, level, {**keys, axis: s}, source)
              for s in scales}
    eta = optima[proxy].lr_opt
    points = tuple(_scale_point(s, optima[s], eta, optima[proxy].boot_lr, df[df[axis] == s], lr_col, loss_col,
                                level) for s in optima)
    slope, interval = _slope(points, n_boot, rng, level)
    warnings = [f"{axis}={readable(p.scale)}: {w}" for p in points for w in p.optimum.warnings]
    warnings += [f"{axis}={readable(p.scale)}: the transferred lr {eta:.4g} lies outside the swept LRs; no regret"
                 for p in points if not math.isfinite(p.regret)]
    v = _verdict(axis, points, slope, interval)
    return TransferCheck(axis=axis, group=keys, proxy=proxy, points=points, slope=slope, slope_interval=interval,
                         verdict=v.verdict, why=v.why, decided_by=v.decided_by, to_decide=v.to_decide,
                         warnings=tuple(warnings), local_slopes=_local_slopes(points, level))


def _optimum(df, lr_col, loss_col, n_boot, rng, level, group, source) -> LrOptimum:
    fit, diverged = status_masks(df)
    lr = numeric_column(df, lr_col, source=source, positive=True)
    loss = numeric_column(df, loss_col, source=source)
    return fit_lr_curve(lr[fit], loss[fit], diverged_lr=lr[diverged], n_boot=n_boot, seed=rng, level=level,
                        group=group)


def _scale_point(scale, opt: LrOptimum, eta: float, eta_draws, df, lr_col, loss_col, level) -> ScalePoint:
    loss = _loss_at(opt, eta)
    best = opt.loss_opt
    regret = loss - best if math.isfinite(loss) else math.nan
    noise = noise_sd(df, lr_col, loss_col)[0]
    interval = _regret_interval(opt, eta, eta_draws, regret, noise, level)
    return ScalePoint(scale=float(scale), optimum=opt, transferred_lr=eta, loss_at_transferred=loss,
                      regret=regret, regret_rel=regret / best if math.isfinite(regret) else math.nan,
                      noise_sd=noise, regret_interval=interval)


def _regret_interval(opt: LrOptimum, eta: float, eta_draws, regret: float, noise_sd: float, level) -> Interval:
    """The regret's interval at one scale.

    Where the scale is bracketed and the transferred LR lies in its window: the bootstrap's replicates, each
    replicate's parabola at that replicate's transferred LR (the proxy's replicate optimum) minus its lowest
    loss in the window. Elsewhere the regret is read off measured means, and only a lower bound is honest:
    the loss at the transferred LR minus the mean at the best LR is at most the true regret (the true best
    lies at or below that mean), less z x its standard error (the noise: the seeds' SD, else the window fit's
    residual SD), with z Bonferroni-corrected for having picked the best of the swept LRs. Its upper bound is
    infinite (no model says how low the best loss could go between the swept LRs), so it cannot pass.
    """
    nan = Interval(math.nan, math.nan, level)
    if not math.isfinite(regret):
        return nan
    lo, hi = opt.window
    if opt.bracketed and lo <= eta <= hi:
        if opt.boot_coef is None or eta_draws is None or not len(eta_draws):
            return nan
        c = opt.boot_coef
        u = np.log(np.asarray(eta_draws, dtype=float))
        draws = c[:, 0] + c[:, 1] * u + c[:, 2] * u * u - _lowest_on(c, math.log(lo), math.log(hi))
        return percentile_interval(draws, level)
    sd = noise_sd if math.isfinite(noise_sd) else _residual_sd(opt)
    if not math.isfinite(sd):
        return nan
    runs = pd.DataFrame(opt.points, columns=["lr", "loss"]).groupby("lr")["loss"].agg(["mean", "count"])
    lrs, counts = runs.index.to_numpy(), runs["count"].to_numpy()
    best = int(np.argmin(runs["mean"].to_numpy()))
    near = np.argsort(np.abs(np.log(lrs / eta)))[:2]  # the two measured LRs the transferred one lies between
    se = sd * math.sqrt(1.0 / counts[near].min() + 1.0 / counts[best])
    # two-sided at level, split over the LRs the best was picked from
    z = normal_quantile(1.0 - (1.0 - level) / len(lrs))
    return Interval(regret - z * se, math.inf, level)


def _lowest_on(coef: np.ndarray, u_lo: float, u_hi: float) -> np.ndarray:
    """Each parabola's lowest value over [u_lo, u_hi] (its vertex where that lies inside and it curves up)."""
    c0, c1, c2 = coef[:, 0], coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u_star = np.clip(np.where(c2 > 0, -c1 / (2 * c2), u_lo), u_lo, u_hi)
    values = [c0 + c1 * u + c2 * u * u for u in (u_star, np.full_like(c0, u_lo), np.full_like(c0, u_hi))]
    return np.minimum.reduce(values)


def _residual_sd(opt: LrOptimum) -> float:
    """The SD of the window fit's residuals (the noise a run's loss carries, when no seeds measure it)."""
    lo, hi = opt.window
    pts = np.array([p for p in opt.points if lo <= p[0] <= hi], dtype=float).reshape(-1, 2)
    dof = len(pts) - 3
    if dof <= 0:
        return math.nan
    return float(np.sqrt(np.sum((pts[:, 1] - opt.curve(pts[:, 0])) ** 2) / dof))


def _loss_at(opt: LrOptimum, lr: float) -> float:
    """The loss at `lr`: the parabola inside its window (where it was fitted and is trusted), else linear
    interpolation in ln(lr) between the mean measured losses; NaN outside the measured LRs."""
    lo, hi = opt.window  # not lr_range: a diverged run may widen that past the last run the parabola saw
    if opt.bracketed and lr == opt.lr_opt:  # the vertex itself (the proxy's own optimum): zero regret exactly,
        return opt.loss_opt  # not the curve re-evaluated, which differs from the vertex's loss by rounding
    if opt.bracketed and lo <= lr <= hi:
        return float(opt.curve(np.array([lr]))[0])
    pts = pd.DataFrame(opt.points, columns=["lr", "loss"]).groupby("lr")["loss"].mean()
    if not pts.index.min() <= lr <= pts.index.max():
        return math.nan
    return float(np.interp(math.log(lr), np.log(pts.index.to_numpy()), pts.to_numpy()))


def noise_sd(df, lr_col, loss_col, by: Sequence[str] = ()) -> tuple[float, int]:
    """Pooled seed-to-seed SD of the loss over the LRs (within each group of `by`) that were run more than once
    (completed runs), and its degrees of freedom; (NaN, 0) when no LR was repeated."""
    fit, _ = status_masks(df)
    runs = pd.DataFrame({"lr": df[lr_col].to_numpy()[fit], "loss": df[loss_col].to_numpy(dtype=float)[fit],
                         **{b: df[b].to_numpy()[fit] for b in by}})
    groups = [g for _, g in runs.groupby([*by, "lr"])["loss"] if g.notna().sum() >= 2]
    if not groups:
        return math.nan, 0
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    dof = sum(int(g.notna().sum()) - 1 for g in groups)
    return math.sqrt(ss / dof), dof


def larger_noise(seeds: tuple[float, int], residuals: tuple[float, int]) -> tuple[float, int, str]:
    """The larger of a seed-to-seed SD and a fit's residual SD (noise plus misfit), each given with its degrees
    of freedom: (sd, dof, "seeds" or "residuals"); a NaN one loses to a finite one. Intervals and simulations
    built on the larger are never cleaner than the data."""
    (seed_sd, seed_dof), (res_sd, res_dof) = seeds, residuals
    if math.isfinite(seed_sd) and (not math.isfinite(res_sd) or seed_sd >= res_sd):
        return seed_sd, seed_dof, "seeds"
    return res_sd, res_dof, "residuals"


def _slope(points: Sequence[ScalePoint], n_boot: int, rng, level) -> tuple[float, Interval]:
    """OLS slope of ln eta* on ln scale over bracketed optima; interval from optima drawn from their own
    (log-normal) intervals."""
    good = [p for p in points if p.optimum.bracketed]
    if len(good) < 2:
        return math.nan, Interval(math.nan, math.nan, level)
    x = np.log([p.scale for p in good])
    y = np.log([p.optimum.lr_opt for p in good])
    se = np.array([_log_se(p.optimum.lr_interval) for p in good])
    slope = float(np.polyfit(x, y, 1)[0])
    if n_boot <= 0 or not np.all(np.isfinite(se)):
        return slope, Interval(math.nan, math.nan, level)
    draws = y[None, :] + se[None, :] * rng.standard_normal((n_boot, y.size))
    xc = x - x.mean()
    slopes = (draws - draws.mean(axis=1, keepdims=True)) @ xc / float(xc @ xc)
    return slope, percentile_interval(slopes, level)


def _local_slopes(points: Sequence[ScalePoint], level: float) -> tuple[LocalSlope, ...]:
    """The slope between each pair of adjacent scales whose optima are both bracketed; its interval treats
    the two ln eta* as independent normals with the SEs of their own intervals."""
    z = normal_quantile(level)
    out = []
    for a, b in zip(points, points[1:]):
        if not (a.optimum.bracketed and b.optimum.bracketed):
            continue
        run = math.log(b.scale / a.scale)
        slope = math.log(b.optimum.lr_opt / a.optimum.lr_opt) / run
        se = math.hypot(_log_se(a.optimum.lr_interval), _log_se(b.optimum.lr_interval)) / run
        interval = Interval(slope - z * se, slope + z * se, level) if math.isfinite(se) else \
            Interval(math.nan, math.nan, level)
        out.append(LocalSlope(a.scale, b.scale, slope, interval))
    return tuple(out)


def normal_quantile(level: float) -> float:
    """The normal quantile of a two-sided interval at `level` (1.96 at 95%)."""
    from statistics import NormalDist  # noqa: PLC0415

    return NormalDist().inv_cdf(0.5 + level / 2)


def _log_se(interval: Interval) -> float:
    """The standard error of ln(x) implied by x's interval, read as a normal one in ln(x) at its own level."""
    if not (interval.low > 0 and interval.high > 0):
        return math.nan
    return (math.log(interval.high) - math.log(interval.low)) / (2 * normal_quantile(interval.level))


@dataclass(frozen=True)
class Verdict:
    verdict: str
    why: str
    decided_by: str
    to_decide: str = ""


def _verdict(axis: str, points: Sequence[ScalePoint], slope: float, interval: Interval) -> Verdict:
    """method.md section 11: each interval against its band; pass only when every one lies inside."""
    def at(p: ScalePoint) -> str:
        return f"{axis}={readable(p.scale)}"

    def regret_text(p: ScalePoint) -> str:
        r = p.regret_interval
        return f"regret {p.regret:.4g} [{r.low:.4g}, {r.high:.4g}] nats against an allowance of {p.allowance:.4g}"

    span = f"slope {slope:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
    costly = [p for p in points if p.regret_interval.low > p.allowance]
    if costly:
        p = max(costly, key=lambda q: q.regret_interval.low / q.allowance)
        return Verdict(FAIL, f"at {at(p)} the transferred lr costs more than allowed: {regret_text(p)}",
                       f"regret at {at(p)}")
    if interval.low > SLOPE_TOL or interval.high < -SLOPE_TOL:
        return Verdict(FAIL, f"the optimum drifts: {span} lies wholly beyond +-{SLOPE_TOL}", "slope")
    unknown = [p for p in points if not p.optimum.bracketed or not math.isfinite(p.regret)]
    if unknown:
        where = ", ".join(at(p) for p in unknown)
        return Verdict(INCONCLUSIVE, f"optimum not bracketed, or the transferred lr outside the sweep, at {where}",
                       f"optimum at {where}", f"extend the LR sweep at {where} until its optimum is bracketed")
    slope_in = -SLOPE_TOL <= interval.low and interval.high <= SLOPE_TOL
    open_regrets = [p for p in points if not p.regret_interval.high <= p.allowance]
    if slope_in and not open_regrets:
        worst = max(points, key=lambda q: q.regret_interval.high / q.allowance)
        return Verdict(PASS, f"{span} lies within +-{SLOPE_TOL}, and every regret's upper bound within its "
                             f"allowance (the closest: {at(worst)}, {regret_text(worst)})", "slope and regrets")
    if not slope_in:
        # the scale whose optimum is least placed (an interval that could not be estimated counts as widest)
        wide = max(points, key=lambda q: np.nan_to_num(_log_se(q.optimum.lr_interval), nan=math.inf))
        reading = ("shows a drift, but not whether it exceeds the tolerance" if interval.low > 0 or interval.high < 0
                   else "cannot tell a drift beyond the tolerance from none")
        return Verdict(INCONCLUSIVE, f"{span} straddles +-{SLOPE_TOL}: it {reading}",
                       "slope", f"more seeds or LR points near the optimum at {at(wide)} (its optimum's "
                                f"interval is the widest), or more scales along {axis}")
    p = max(open_regrets, key=lambda q: q.regret_interval.high / q.allowance)
    return Verdict(INCONCLUSIVE, f"at {at(p)} the {regret_text(p)} straddles the allowance (or has no interval)",
                   f"regret at {at(p)}", f"more seeds at {at(p)} and at the proxy, or LR points near both optima")


def transferred_runs(df: pd.DataFrame, axis: str, *, by: Sequence[str] = (), keep: Sequence[str] = (),
                     proxy: float | None = None, lr_col: str = "lr", loss_col: str = "val_loss",
                     source: str = "table") -> pd.DataFrame:
    """One row per (group, scale) at the proxy's eta*: the paper's protocol (tune the base LR once at the proxy,
    transfer it) as a table that `compare_methods` fits like any runs table.

    Columns: the `by` keys, `axis`, `lr_col` (the transferred LR), `loss_col` (its loss at that scale, read off
    the scale's parabola as the regret is; NaN where the LR lies outside the scale's sweep), the scale's best
    loss (`loss_opt`) and every `keep` column (e.g. flops, n_params: the mean over the scale's runs, which
    share it)."""
    require_columns(df, [axis, *by, *keep], source=source)
    rows = []
    for keys, idx in group_indices(df, by, source=source):
        sub = df.iloc[idx]
        (check,) = check_transfer(sub, axis, proxy=proxy, lr_col=lr_col, loss_col=loss_col, n_boot=0, source=source)
        for p in check.points:
            at_scale = sub[sub[axis] == p.scale]
            kept = {k: float(pd.to_numeric(at_scale[k], errors="coerce").mean()) for k in keep}
            rows.append({**keys, axis: p.scale, lr_col: p.transferred_lr, loss_col: p.loss_at_transferred,
                         "loss_opt": p.optimum.loss_opt, **kept, "status": "completed"})
    return pd.DataFrame(rows)
