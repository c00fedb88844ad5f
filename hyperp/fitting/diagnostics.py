"""Warnings a fit attaches to its result when the data cannot answer what was asked.

Every fit result carries a `warnings` tuple of one-line messages (also in its JSON and on screen). Each
function here checks one thing and returns a list of messages, empty when all is well:

- `too_few_points`: fewer residual degrees of freedom than an interval or an R^2 needs;
- `at_bound`: a parameter sits on a bound of its search range, so the data pushed it there and the
  reported value is the bound, not an estimate;
- `interval_crosses`: an interval reaches past a physical limit (a negative irreducible loss, a
  non-positive exponent), so the data do not exclude an unphysical value;
- `not_separable`: two inputs move together (a fixed tokens-per-parameter sweep has log D = log N + const),
  so a law with a term in each cannot tell them apart.

They are pure and cheap; the thresholds below are the only tuning and are named here.
"""

from __future__ import annotations

import math

import numpy as np

from hyperp.fitting.bootstrap import Interval

MIN_DOF = 2  # residual degrees of freedom below which the fit can (nearly) pass through every point
BOUND_RTOL = 1e-6  # relative distance to a bound that counts as on it
# log D explained this well by a straight line in log N: the two cannot be separated (a fixed-ratio sweep
# gives exactly 1; Chinchilla's IsoFLOP design gives about 0.5).
SEPARABLE_R2_MAX = 0.99


def too_few_points(n_points: int, n_params: int, what: str) -> list[str]:
    dof = n_points - n_params
    if dof >= MIN_DOF:
        return []
    return [f"{what}: {n_points} points for {n_params} parameters ({dof} degree(s) of freedom): the fit can "
            f"pass (nearly) through every point, so its R^2 and intervals say little"]


def _near(value: float, bound: float) -> bool:
    return math.isfinite(bound) and abs(value - bound) <= BOUND_RTOL * max(abs(bound), abs(value), 1e-12)


def at_bound(name: str, value: float, low: float = -math.inf, high: float = math.inf) -> list[str]:
    for bound, side in ((low, "lower"), (high, "upper")):
        if _near(value, bound):
            return [f"{name} = {value:.4g} is at its {side} bound {bound:.4g}: the data push it there, so it is "
                    f"a bound, not an estimate"]
    return []


def interval_crosses(name: str, interval: Interval, low: float = -math.inf, high: float = math.inf,
                     limit: str = "") -> list[str]:
    """The interval reaches below `low` or above `high` (physical limits, described by `limit`)."""
    lo, hi = interval.low, interval.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if lo < low or hi > high:
        bound = low if lo < low else high
        return [f"{name}'s {interval.level:.0%} interval [{lo:.4g}, {hi:.4g}] crosses {bound:.4g}"
                f"{f' ({limit})' if limit else ''}: the data do not rule out an unphysical value"]
    return []


def not_separable(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> list[str]:
    """y (nearly) a linear function of x: a law with separate x and y terms is not identified."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        spread = x_name if np.ptp(x) == 0 else y_name
        return [f"{spread} does not vary in these data, so its term of the law is not identified"]
    r = float(np.corrcoef(x, y)[0, 1])
    if r * r < SEPARABLE_R2_MAX:
        return []
    return [f"{x_name} and {y_name} are not separable in these data (R^2 = {r * r:.4f} of one on the other, "
            f"e.g. a fixed tokens-per-parameter sweep): their exponents and coefficients trade off freely; "
            f"sweep both independently"]
