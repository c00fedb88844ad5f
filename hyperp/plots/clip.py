"""Intervals that would dwarf the data: the data set the axis, an interval does not.

The view of an axis covers the data (point estimates and reference lines such as CEL = 1), and an interval may
widen it by at most REACH times the data's own span on either side (on a log axis at least MIN_DECADES
decades). An interval reaching past the view is drawn to its edge, where an arrow points on and the value it
stands for is written beside it (gid CLIPPED), so one interval of [1e-13, 16] leaves the points readable.
"""

from __future__ import annotations

import numpy as np

from hyperp.plots.style import number

REACH = 1.0  # an interval may widen the view past the data by this many times the data's span, each side
MIN_DECADES = 1.0  # ... and on a log axis by at least this many decades
MIN_LINEAR = 0.5  # ... and on a linear axis whose data are one value, by this share of it (or 1 when it is 0)
PAD = 0.05  # margin around the view, as a share of it
CLIPPED = "clipped interval"  # the gid of the arrows (and value labels) of cut intervals


def view_limits(values, lows=(), highs=(), log: bool = False) -> tuple[float, float] | None:
    """The view of an axis holding `values`, widened by the finite `lows` and `highs` within the reach (None
    when no value is finite, positive on a log axis: matplotlib's own limits then stand)."""
    to, back = (np.log10, lambda u: 10.0**u) if log else (np.asarray, lambda u: u)
    v = _usable(values, log)
    if not v.size:
        return None
    lo, hi = float(to(v.min())), float(to(v.max()))
    span = hi - lo
    floor = MIN_DECADES if log else 0.0 if span > 0 else MIN_LINEAR * abs(hi) or 1.0
    reach = max(REACH * span, floor)
    ends = [float(x) for x in to(_usable([*lows, *highs], log))]
    low = max(lo - reach, min([lo, *ends]))
    high = min(hi + reach, max([hi, *ends]))
    pad = PAD * (high - low) if high > low else reach * PAD
    return back(low - pad), back(high + pad)


def _usable(values, log: bool) -> np.ndarray:
    v = np.asarray(list(values), dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    return v[v > 0] if log else v


def clipped_interval(ax, at: float, low: float, high: float, limits: tuple[float, float], c, *,
                     vertical: bool = True, log: bool = False, slot: int = 0, **style) -> None:
    """A bar from `low` to `high` at position `at` (x for a vertical bar, y for a horizontal one), cut at
    `limits`: each cut end gets an arrow on the edge and the end's value beside it, `slot` lines in from the
    edge (one slot per group, so that the values of groups cut at one place do not overlap). Non-finite ends
    are not drawn (the caller marks a one-sided interval its own way)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return
    lo_v, hi_v = limits
    cut_low = low < lo_v or (log and low <= 0)
    cut_high = high > hi_v
    a, b = (lo_v if cut_low else low), (hi_v if cut_high else high)
    if vertical:
        ax.vlines(at, a, b, color=c, **style)
    else:
        ax.hlines(at, a, b, color=c, **style)
    for cut, edge, value, mark in ((cut_low, lo_v, low, "v<"), (cut_high, hi_v, high, "^>")):
        if cut:
            _arrow(ax, at, edge, value, c, mark[0] if vertical else mark[1], vertical, slot)


LINE_PT = 6  # points between the value labels of two slots


def _arrow(ax, at: float, edge: float, value: float, c, mark: str, vertical: bool, slot: int) -> None:
    xy = (at, edge) if vertical else (edge, at)
    ax.plot(*([v] for v in xy), mark, color=c, ms=4, clip_on=False, gid=CLIPPED, zorder=4)
    down = mark in "v<"
    step = LINE_PT * slot
    offset = (3, 1 + step if down else -6 - step) if vertical else (-3 if down else 3, 3 + step)
    ax.annotate(number(value), xy, xytext=offset, textcoords="offset points", fontsize=5, color=c,
                ha=("right" if down else "left") if not vertical else "left", gid=CLIPPED, annotation_clip=False)
