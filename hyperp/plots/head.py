"""The head-radius figure (method.md section 10): per scheme, the best loss over the LR search and the final
norm's gain in that best run, against the LM head's init std. Where the head's sphere binds, the gain grows
past the head check's threshold and the loss rises. A std with no completed run is an x along the top."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from hyperp.checks.head import GAIN_TOL
from hyperp.fitting.table import best_rows
from hyperp.plots.style import color, legend_entry, marker, new_figure, paper, readable_axis

STD = "head_init_std"
NO_RUN = "no completed run (every LR diverged or failed)"


def plot_head(runs: pd.DataFrame, title: str | None = None, source: str = "runs") -> Figure:
    """Two panels over `head_init_std`, one line per scheme: best validation loss, and its run's gain."""
    best = best_rows(runs, ["param", STD], source=source).sort_values(["param", STD])
    with paper():
        fig, (ax_loss, ax_gain) = new_figure(ncols=2)
        for i, param in enumerate(sorted(runs["param"].unique())):
            g = best[best["param"] == param]
            style = dict(color=color(i), marker=marker(i), mec="k", mew=0.3)
            ax_loss.plot(g[STD], g["val_loss"], "-", label=param, **style)
            ax_gain.plot(g[STD], g["final_norm_gain_max"], "-", **style)
            _missing(ax_loss, runs[runs["param"] == param], g, color(i))
        ax_gain.axhline(GAIN_TOL, color="0.4", ls="--", lw=0.8)
        for ax in (ax_loss, ax_gain):
            ax.set_xscale("log")
            ax.set_xticks(sorted(best[STD].unique()))
            readable_axis(ax.xaxis)
            ax.set_xlabel(r"LM head init std $\sigma$")
        ax_gain.set_yscale("log")
        readable_axis(ax_gain.yaxis)
        readable_axis(ax_loss.yaxis)
        ax_loss.set_ylabel("best validation loss over LR")
        ax_gain.set_ylabel("final norm gain (max RMS), best run")
        ax_loss.set_title("each point: the best run of its LR search", fontsize=7)
        ax_gain.set_title(f"dashed: the head check's threshold ({GAIN_TOL:g}x)", fontsize=7)
        legend_entry(ax_loss, NO_RUN, "x")
        if title:
            fig.suptitle(title, fontsize=8)
        fig.legend(loc="outside lower center", ncols=min(runs["param"].nunique(), 4))
    return fig


def _missing(ax, runs: pd.DataFrame, best: pd.DataFrame, c) -> None:
    """An x along the top of the panel at each std of this scheme where no run has a best loss to plot."""
    missing = sorted(set(runs[STD].dropna()) - set(best[STD]))
    if missing:
        ax.plot(missing, [0.97] * len(missing), "x", color=c, ms=5, mew=1.2, clip_on=False, gid=NO_RUN,
                transform=blended_transform_factory(ax.transData, ax.transAxes))
