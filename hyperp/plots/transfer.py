"""The LR-transfer figure (method.md section 9): where the optimum sits at each scale, and what trusting the
proxy's LR costs there.

Left: eta* per scale with its interval (hollow: not bracketed), the fitted drift line, and the cone of slopes
the check allows (+-SLOPE_TOL) opened from the proxy. Right: the transfer regret at each scale, relative to
the best loss, with its interval (a caret: only a lower bound is known there), against the check's allowance
(REGRET_TOL); a scale with no regret (the proxy's LR outside its sweep) is marked with an x on the axis, its
reason in the legend. An unbracketed optimum has the reason written beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from hyperp.checks.transfer import REGRET_TOL, SLOPE_TOL, TransferCheck
from hyperp.plots.clip import clipped_interval, view_limits
from hyperp.plots.style import (dodge, families, group_label, legend_entry, new_figure, paper, readable_axis,
                                write_reason)

CONE_ALPHA = 0.08  # shading of the allowed-drift cone: visible, yet behind every point
NO_REGRET = "no regret: the proxy's LR lies outside this scale's sweep"


def plot_transfer(checks: Sequence[TransferCheck], title: str | None = None, name: str | None = None) -> Figure:
    """Both panels for every group of the check (scheme by colour). `name` (the method) labels the one group
    of a check without `by`; without it that group's legend entry is its verdict alone."""
    styles = families([c.group for c in checks]) if checks else []
    with paper():
        fig, (ax_eta, ax_regret) = new_figure(ncols=2, size=(7.0, 2.9 + 0.12 * len(checks)))
        views = _views(checks)
        for i, (check, (c, m)) in enumerate(zip(checks, styles)):
            _optima(ax_eta, check, c, m, group_label(check.group) or name, views[0], i)
            _regrets(ax_regret, check, c, m, views[1], i, len(checks))
        axis = checks[0].axis if checks else "scale"
        scales = sorted({p.scale for c in checks for p in c.points})
        for ax, view in zip((ax_eta, ax_regret), views):
            ax.set_xscale("log")
            ax.set_xticks(scales)  # the swept scales themselves, labelled 64, 128k ...
            readable_axis(ax.xaxis)
            ax.set_xlabel(axis)
            if view is not None:
                ax.set_ylim(view)
        ax_eta.set_yscale("log")
        readable_axis(ax_eta.yaxis, minor=True)
        ax_eta.set_ylabel(r"optimal base LR $\eta^*$")
        ax_eta.set_title(rf"drift: slope of ln $\eta^*$ (cone: $\pm${SLOPE_TOL:g} from the proxy)", fontsize=7)
        readable_axis(ax_regret.yaxis)
        ax_regret.axhline(100 * REGRET_TOL, color="0.4", ls="--", lw=0.8)
        legend_entry(ax_regret, NO_REGRET, "x")
        ax_regret.set_ylabel("transfer regret (% of best loss)")
        ax_regret.set_title(f"regret at the proxy's LR (bar: interval; ^: lower bound; dashed: {REGRET_TOL:.0%})",
                            fontsize=7)
        if title:
            fig.suptitle(title, fontsize=8)
        fig.legend(loc="outside lower center", ncols=min(len(checks), 2) or 1)
    return fig


def method_name(df, column: str = "param") -> str | None:
    """The table's one method (its single value of `column`), or None where it has none or several."""
    values = df[column].dropna().unique() if column in df.columns else []
    return str(values[0]) if len(values) == 1 else None


def _views(checks: Sequence[TransferCheck]):
    """The y views of both panels: eta* (log) and the regret in % (with 0 and the allowance), each widened by
    the intervals only within `clip.view_limits`' reach."""
    pts = [p for c in checks for p in c.points]
    known = [p for p in pts if p.optimum.bracketed]  # an unbracketed optimum's interval means nothing
    eta = view_limits([p.optimum.lr_opt for p in pts], [p.optimum.lr_interval.low for p in known],
                      [p.optimum.lr_interval.high for p in known], log=True)
    pct = [(100 * p.regret_rel, *(100 * v / p.optimum.loss_opt for v in (p.regret_interval.low,
                                                                         p.regret_interval.high))) for p in pts]
    regret = view_limits([0.0, 100 * REGRET_TOL, *(r for r, _, _ in pct)], [lo for _, lo, _ in pct],
                         [hi for _, _, hi in pct])
    return eta, regret


def _optima(ax, check: TransferCheck, c, m, name: str | None, view, slot: int) -> None:
    pts = check.points
    x = np.array([p.scale for p in pts])
    eta = np.array([p.optimum.lr_opt for p in pts])
    for p in pts:
        if p.optimum.bracketed:  # an unbracketed optimum's interval means nothing
            clipped_interval(ax, p.scale, p.optimum.lr_interval.low, p.optimum.lr_interval.high, view, c, log=True,
                             slot=slot, lw=0.9)
    for p, xi, yi in zip(pts, x, eta):
        ax.plot([xi], [yi], m, color=c, mec="k", mew=0.3, mfc=c if p.optimum.bracketed else "white", zorder=3)
        if not p.optimum.bracketed:
            write_reason(ax, p.optimum.reason, (xi, yi))
    proxy_eta = next(p.optimum.lr_opt for p in pts if p.scale == check.proxy)
    grid = np.geomspace(x.min(), x.max(), 50)
    ratio = grid / check.proxy
    ax.fill_between(grid, proxy_eta * ratio ** -SLOPE_TOL, proxy_eta * ratio ** SLOPE_TOL, color=c, alpha=CONE_ALPHA,
                    lw=0)
    s, si = check.slope, check.slope_interval
    label = f"{name}: {check.verdict}" if name else check.verdict
    if np.isfinite(s):
        good = np.array([p.optimum.bracketed for p in pts])
        mid = np.exp(np.mean(np.log(eta[good])) + s * (np.log(grid) - np.mean(np.log(x[good]))))
        ax.plot(grid, mid, "-", color=c, lw=0.9)
        label += f", s = {s:.2f} [{si.low:.2f}, {si.high:.2f}]"
    ax.plot([], [], m + "-", color=c, label=label)


def _regrets(ax, check: TransferCheck, c, m, view, i: int = 0, n: int = 1) -> None:
    shift = dodge(i, n)  # each group beside the others
    pts = [p for p in check.points if np.isfinite(p.regret_rel)]
    for p in check.points:
        if not np.isfinite(p.regret_rel):  # the proxy's LR outside this scale's sweep: say so where it belongs
            ax.plot([p.scale * shift], [0], "x", color=c, ms=5, mew=1.2, zorder=3, gid=NO_REGRET)
    if not pts:
        return
    x = np.array([p.scale for p in pts])
    ax.plot(x, [100 * p.regret_rel for p in pts], m + "-", color=c, mec="k", mew=0.3, zorder=3)
    for p in pts:
        lo, hi = (100 * v / p.optimum.loss_opt for v in (p.regret_interval.low, p.regret_interval.high))
        if np.isfinite(lo) and np.isfinite(hi):  # side by side per group
            clipped_interval(ax, p.scale * shift, lo, hi, view, c, slot=i, lw=2, alpha=0.35)
        elif np.isfinite(lo):
            ax.plot([p.scale * shift], [lo], "^", color=c, ms=4, alpha=0.6)
