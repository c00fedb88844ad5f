"""Figures of fit results: LR sweeps, power laws, loss versus compute with CEL, Chinchilla contours.

Each function takes the result object of a `hyperp.fitting` function and draws it; nothing is refitted
here (curves, optima, bands and frontiers all come from the result's own methods).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from hyperp.fitting.chinchilla import ChinchillaFit
from hyperp.fitting.compute import ComputeComparison, compute_efficiency
from hyperp.fitting.lr import TOO_FEW, LrOptima
from hyperp.fitting.powerlaw import LawFit
from hyperp.plots.clip import clipped_interval, view_limits
from hyperp.plots.style import (CURVE_POINTS, EXTRAPOLATION, MAX_LEGEND, color, dodge, families, fitted_curve,
                                group_label, legend_entry, marker, new_figure, number, paper, readable_axis,
                                scale_colors, short_reason, write_reason)

# Column names as mathtext for axis labels and titles; any other column is shown as it is.
SYMBOLS = {"lr": r"$\eta$", "lr_opt": r"$\eta^*$", "loss_opt": r"$L^*$", "tokens": r"$T$", "n_params": r"$N$",
           "flops": r"$C$", "val_loss": r"$L$", "depth": r"$d$", "width": r"$w$", "top_k": r"$k$"}


def symbol(column: str) -> str:
    return SYMBOLS.get(column, column)


def plot_lr(result: LrOptima, title: str | None = None) -> Figure:
    """Loss versus LR per group (scheme by colour, budget or size by shade and marker): runs, the parabola
    over its window, the optimum starred with its interval (hollow when not bracketed, with the reason beside
    it), diverged LRs as crosses along the top edge, groups left out for too few LRs in the legend."""
    n_groups = len(result.optima)
    styles = families([o.group for o in result.optima])
    with paper():
        fig, ax = new_figure(size=(3.4, 2.6 + 0.12 * min(n_groups, MAX_LEGEND)))
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        lr_view = _lr_view(result)
        ys = []
        for i, (opt, (c, m)) in enumerate(zip(result.optima, styles)):
            lr, loss = np.array(opt.points).T
            ys.append(loss)
            label = group_label(opt.group) if i < MAX_LEGEND else None
            ax.plot(lr, loss, m, color=c, label=label, zorder=3, mec="k", mew=0.2)
            lo, hi = opt.lr_range
            grid = np.geomspace(lo / 1.3, hi * 1.3, CURVE_POINTS)
            ax.plot(grid, opt.curve(grid), "-", color=c, lw=0.9, alpha=0.8)
            clipped_interval(ax, opt.loss_opt, opt.lr_interval.low, opt.lr_interval.high, lr_view, c,
                             vertical=False, log=True, lw=1.2, zorder=3)
            ax.plot([opt.lr_opt], [opt.loss_opt], "*", ms=9, color=c, mec="k", mew=0.5, zorder=4,
                    mfc=c if opt.bracketed else "white")
            if not opt.bracketed:
                write_reason(ax, opt.reason, (opt.lr_opt, opt.loss_opt))
            if opt.diverged_lr:
                ax.plot(opt.diverged_lr, np.full(len(opt.diverged_lr), 0.97), "x", color=c, transform=trans,
                        clip_on=False)
        _clip_y(ax, np.concatenate(ys))
        ax.set_xscale("log")
        ax.set_xlim(lr_view)
        readable_axis(ax.xaxis)
        readable_axis(ax.yaxis)
        ax.set_xlabel(r"learning rate $\eta$")
        ax.set_ylabel("validation loss")
        bars = [o.lr_interval for o in result.optima if np.isfinite(o.lr_interval.low)]
        bar = f", bar: its {bars[0].level:.0%} interval" if bars else ""
        ax.set_title(title or rf"star: optimum{bar} (hollow: not bracketed), $\times$: diverged", fontsize=7)
        _skipped_entries(ax, result.skipped)
        if any(o.group for o in result.optima) or result.skipped:
            fig.legend(loc="outside lower center", ncols=2 if n_groups > 3 else 1)
    return fig


def plot_law(laws: Sequence[LawFit], title: str | None = None) -> Figure:
    """The power law(s) in log-log: points, fit, bootstrap band, exponent with its interval in the legend."""
    with paper():
        fig, ax = new_figure()
        for i, lf in enumerate(laws):
            f, c = lf.fit, color(i)
            x, y = np.array(f.points).T
            ax.plot(x, y, marker(i), color=c, zorder=3)
            if lf.excluded:
                ex = np.array([(e[lf.x], e[lf.y]) for e in lf.excluded], dtype=float)
                ax.plot(ex[:, 0], ex[:, 1], marker(i), mfc="white", color=c, zorder=3,
                        label="not bracketed (left out)" if i == 0 else None)
                for e, (xe, ye) in zip(lf.excluded, ex):
                    write_reason(ax, e["reason"], (xe, ye), offset=(4, 4))
            grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, CURVE_POINTS)
            bi = f.intervals["b"]
            label = f"b = {f.b:.3f} [{bi.low:.3f}, {bi.high:.3f}]"
            label = f"{group_label(lf.group)}: {label}" if lf.group else label
            fitted_curve(ax, f.predict, (grid[0], grid[-1]), (x.min(), x.max()), c, label=label)
            if len(f.boot_params):
                lo, hi = f.band(grid)
                ax.fill_between(grid, lo, hi, color=c, alpha=0.18, lw=0)
        lf0 = laws[0]
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_axis(ax.xaxis)
        readable_axis(ax.yaxis, minor=np.ptp(np.log10(np.concatenate([np.array(lf.fit.points)[:, 1]
                                                                        for lf in laws]))) < 1)
        ax.set_xlabel(f"{lf0.x} {symbol(lf0.x)}" if lf0.x in SYMBOLS else lf0.x)
        ax.set_ylabel(f"{lf0.y} {symbol(lf0.y)}" if lf0.y in SYMBOLS else lf0.y)
        y_sym, x_sym = (symbol(c).strip("$") if c in SYMBOLS else rf"\mathrm{{{c}}}".replace("_", r"\_")
                        for c in (lf0.y, lf0.x))
        form = rf"${y_sym} = a\,{x_sym}^{{b}}" + (" + c$" if lf0.fit.offset else "$")
        ax.set_title(title or f"{form} ({lf0.fit.space} space, {lf0.fit.intervals['b'].level:.0%} band)")
        legend_entry(ax, EXTRAPOLATION, "--")
        ax.legend(loc="best")
    return fig


def plot_compute(result: ComputeComparison, title: str | None = None) -> Figure:
    """Left: loss versus FLOPs per method with fitted laws. Right: CEL over the baseline versus FLOPs on a log
    axis with parity (1) marked (fit-to-fit curve with band; markers at the baseline's runs). Bands and
    intervals never set an axis: one that dwarfs the data is cut with an arrow and its value (`clip`)."""
    with paper():
        fig, (ax, ax2) = new_figure(ncols=2)
        methods = list(result.fits)
        _loss_panel(ax, result, methods)
        _cel_panel(ax2, result, methods)
        fig.suptitle(title or r"Loss vs compute, $L = A\,C^{-b} + E$, and compute efficiency leverage (CEL)",
                     fontsize=8)
    return fig


def _loss_panel(ax, result: ComputeComparison, methods: list[str]) -> None:
    c_all = np.concatenate([np.array(f.points)[:, 0] for f in result.fits.values()])
    grid = np.geomspace(c_all.min() / 1.5, c_all.max() * 1.5, CURVE_POINTS)
    ys, lows, highs = [], [], []
    for i, m in enumerate(methods):
        f, c = result.fits[m], color(i)
        pts = np.array(f.points)
        ax.plot(pts[:, 0], pts[:, 1], marker(i), color=c, zorder=3)
        at_bound = any(w.startswith("E = ") for w in f.warnings)
        fitted_curve(ax, f.predict, (grid[0], grid[-1]), (pts[:, 0].min(), pts[:, 0].max()), c,
                     label=rf"{m}: $b$={f.b:.3f}, $E$={number(f.E)}" + (" (at its bound)" if at_bound else ""))
        ys += [*pts[:, 1], *f.predict(grid)]
        if f.holdout is not None:
            h = f.holdout
            ax.plot([h.compute], [h.observed], "o", ms=8, mfc="none", mec=c, mew=0.9, zorder=4,
                    label=f"held out: predicted {number(h.predicted)} ({h.rel_err:+.1%})")
        if len(f.boot_params):
            lo, hi = f.band(grid)
            ax.fill_between(grid, lo, hi, color=c, alpha=0.15, lw=0)
            lows, highs = [*lows, *lo], [*highs, *hi]
    ax.set_ylim(view_limits(ys, lows, highs))
    ax.set_xscale("log")
    readable_axis(ax.xaxis, minor=True)
    readable_axis(ax.yaxis)
    ax.set_xlabel(r"training FLOPs $C$")
    ax.set_ylabel(r"validation loss $L$")
    legend_entry(ax, EXTRAPOLATION, "--")
    ax.legend(loc="upper right", fontsize=5.5)


def _cel_panel(ax, result: ComputeComparison, methods: list[str]) -> None:
    base = result.fits[result.baseline]
    base_c = np.array(base.points)[:, 0]
    c_grid = np.geomspace(base_c.min(), base_c.max(), CURVE_POINTS // 2)
    curves = {m: compute_efficiency(result.fits[m], base, c_grid, m) for m in methods if m != result.baseline}
    shown = [*(p for curve in curves.values() for p in curve), *result.cel_points]
    limits = view_limits([1.0, *(p.cel for p in shown)], [p.interval.low for p in shown],
                         [p.interval.high for p in shown], log=True)
    ax.set_yscale("log")
    ax.axhline(1.0, color=color(methods.index(result.baseline)), lw=0.8, ls="--",
               label=f"{result.baseline} (CEL = 1)")
    for m, curve in curves.items():
        i = methods.index(m)
        ax.plot(c_grid, [p.cel for p in curve], "-", color=color(i), label=m)
        ax.fill_between(c_grid, [p.interval.low for p in curve], [p.interval.high for p in curve], color=color(i),
                        alpha=0.15, lw=0)
        _cel_points(ax, [p for p in result.cel_points if p.method == m], i, limits, list(curves).index(m),
                    len(curves))
    ax.set_ylim(limits)
    ax.set_xscale("log")
    readable_axis(ax.xaxis, minor=True)
    readable_axis(ax.yaxis, minor=True)
    ax.set_xlabel("baseline training FLOPs")
    ax.set_ylabel(f"CEL over {result.baseline} (log)")
    ax.legend(loc="best")


def plot_chinchilla(fit: ChinchillaFit, n: np.ndarray, d: np.ndarray, loss: np.ndarray,
                    title: str | None = None, levels: int = 12) -> Figure:
    """Iso-loss contours of the fitted L(N, D) in the (C, N) plane (C = 6 N D), the compute-efficient
    frontier N_opt(C), and the runs coloured by their loss."""
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    c = 6.0 * n * d
    with paper():
        fig, ax = new_figure(size=(3.6, 2.9))
        cg = np.geomspace(c.min() / 2, c.max() * 10, CURVE_POINTS)
        ng = np.geomspace(n.min() / 2, n.max() * 2, CURVE_POINTS)
        C, N = np.meshgrid(cg, ng)
        L = fit.predict(N, C / (6.0 * N))
        # Levels span the observed losses, log-spaced (denser near the floor, where the runs are).
        lv = np.geomspace(max(fit.E * 1.01, loss.min() * 0.97), np.percentile(loss, 95), levels)
        _, norm, cmap = scale_colors(np.array([lv.min(), lv.max()]))
        cs = ax.contour(C, N, L, levels=lv, cmap=cmap, norm=norm, linewidths=0.7)
        ax.clabel(cs, cs.levels[::2], fmt=lambda v: f"{v:.2f}", fontsize=5.5, inline=True)
        sc = ax.scatter(c, n, c=loss, cmap=cmap, norm=norm, s=6, edgecolors="k", linewidths=0.2, zorder=3)
        fitted_curve(ax, lambda cc: fit.optimal_allocation(cc)[0], (cg[0], cg[-1]), (c.min(), c.max()), "#D55E00",
                     lw=1.6, label=rf"efficient frontier $N_{{opt}} \propto C^{{{fit.exponent_n:.3f}}}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_axis(ax.xaxis)
        readable_axis(ax.yaxis)
        ax.set_ylim(ng.min(), ng.max())
        ax.set_xlabel(r"training FLOPs $C = 6ND$")
        ax.set_ylabel(r"parameters $N$")
        legend_entry(ax, EXTRAPOLATION, "--")
        fig.legend(loc="outside lower center", ncols=2)  # below the axes: never over the contour labels
        fig.colorbar(sc, ax=ax, label="loss")
        ax.set_title(title or (rf"$E$={number(fit.E)}, $A$={number(fit.A)}, $B$={number(fit.B)}, "
                               rf"$\alpha$={fit.alpha:.3f}, $\beta$={fit.beta:.3f}"))
    return fig


def _skipped_entries(ax, skipped) -> None:
    """A legend entry per group left out of the LR fit (skip_sparse), with its reason: it has no optimum."""
    for s in skipped:
        keys = {k: v for k, v in s.items() if k != "n_points"}
        ax.plot([], [], "x", color="0.4",
                label=f"{group_label(keys)}: no optimum ({short_reason(TOO_FEW)}, {s['n_points']} runs)")


def _cel_points(ax, pts, i: int, limits: tuple[float, float], slot: int, n: int) -> None:
    """CEL at the baseline's runs with intervals (cut at the view's `limits`), the `slot`-th of `n` methods
    dodged beside the others; a run whose loss the method's law never reaches (CEL 0) as an x on the bottom
    edge, with that reason in the legend."""
    if not pts:
        return
    pc = np.array([(p.compute * dodge(slot, n), p.cel, p.interval.low, p.interval.high) for p in pts])
    ok = np.isfinite(pc[:, 1]) & (pc[:, 1] > 0)
    ax.plot(pc[ok, 0], pc[ok, 1], marker(i), color=color(i), ms=3, ls="none")
    for c, _, lo, hi in pc[ok]:
        clipped_interval(ax, c, lo, hi, limits, color(i), log=True, slot=slot, lw=0.6)
    if not ok.all():
        ax.plot(pc[~ok, 0], np.zeros((~ok).sum()), "x", color=color(i), ms=5, clip_on=False,
                transform=blended_transform_factory(ax.transData, ax.transAxes),
                label=f"{pts[0].method}: loss out of its law's reach")


def _lr_view(result: LrOptima) -> tuple[float, float]:
    """The LR axis: every run, diverged ones included, and each optimum; an interval widens it only within
    `clip.view_limits`' reach."""
    opts = result.optima
    lrs = [*(p[0] for o in opts for p in o.points), *(x for o in opts for x in o.diverged_lr),
           *(o.lr_opt for o in opts)]
    return view_limits(lrs, [o.lr_interval.low for o in opts], [o.lr_interval.high for o in opts], log=True)


def _clip_y(ax, y: np.ndarray) -> None:
    """Limit y to the data (with margin) so that parabola arms do not squash the points."""
    y = y[np.isfinite(y)]
    if y.size:
        span = max(y.max() - y.min(), 1e-6)
        ax.set_ylim(y.min() - 0.08 * span, y.max() + 0.15 * span)


__all__ = ["plot_chinchilla", "plot_compute", "plot_law", "plot_lr"]
