"""Training curves of a sweep: the loss (or any logged indicator) of every run against tokens, steps or FLOPs,
one line per run coloured the way the stability figure colours its runs (`stability.color_key`: the run
setting that varies, or the column asked for), diverged runs marked with an x at their last logged point.

Input: the frame of `stability.stability_frame` (each run's curves joined with its runs.parquet row on run_id),
read by `stability.read_curves` from a sweep directory (runs/<run_id>/curves.parquet). Plotting only: no fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hyperp.errors import did_you_mean
from hyperp.fitting.table import FitInputError, numeric_column, require_columns
from hyperp.plots.stability import (LOG_RATIO, RUN_SUFFIX, SPARSE_POINTS, color_key, run_colors, scale_legend,
                                    stability_frame)
from hyperp.plots.style import new_figure, paper, readable_axis
from hyperp.schema import DIVERGED

X_AXES = ("tokens", "step", "flops")
X_LABELS = {"tokens": "tokens", "step": "step",
            "flops": "FLOPs (tokens x the run's FLOPs per token: its flops / tokens trained)"}
DIVERGED_MARK = "x"
DIVERGED_GID = "diverged"  # the gid (and legend label) of a diverged run's mark
SIZE = (4.6, 3.4)


def curves_frame(curves: pd.DataFrame, runs: pd.DataFrame | None, y: str = "train_loss",
                 source: str = "curves") -> pd.DataFrame:
    """The curves joined with the runs' settings (`stability_frame`), once `y` is known to be a numeric column
    of the curves themselves (a runs.parquet column of the same name is the run's final value, not a curve)."""
    if y not in curves.columns:
        logged = [c for c in curves.columns if c not in ("run_id", "step", "tokens")]
        raise FitInputError(f"{source}: no curve column {y!r}; {did_you_mean(y, logged)}")
    numeric_column(curves, y, source=source)
    return stability_frame(curves, runs, scale=None, source=source)


def flops_per_token(df: pd.DataFrame, source: str = "curves") -> pd.Series:
    """Each row's run's training FLOPs per token: the run's `flops` (the whole run) over the tokens it trained
    (`tokens_trained`, else its budget `tokens`, joined as tokens_run)."""
    flops = f"flops{RUN_SUFFIX}" if f"flops{RUN_SUFFIX}" in df.columns else "flops"
    if flops not in df.columns:
        raise FitInputError(f"{source}: --x flops needs the runs' 'flops' column (runs.parquet)")
    tokens = pd.Series(np.nan, index=df.index)
    for col in ("tokens_trained", f"tokens{RUN_SUFFIX}"):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce")
            tokens = tokens.where(tokens > 0, v.where(v > 0))
    per_token = pd.to_numeric(df[flops], errors="coerce") / tokens
    if not np.isfinite(per_token.to_numpy(dtype=float)).any():
        raise FitInputError(f"{source}: --x flops needs the runs' 'flops' and 'tokens' (runs.parquet); none usable")
    return per_token


def x_values(df: pd.DataFrame, x: str, source: str = "curves") -> np.ndarray:
    """The x coordinate of every row: its step, its tokens seen, or those tokens times its run's FLOPs per token."""
    if x not in X_AXES:
        raise FitInputError(f"--x {x!r}: must be one of {', '.join(X_AXES)}")
    coord = numeric_column(df, "step" if x == "step" else "tokens", source=source)
    return coord * flops_per_token(df, source).to_numpy(dtype=float) if x == "flops" else coord


def plot_curves(df: pd.DataFrame, *, by: str | None = None, x: str = "tokens", y: str = "train_loss",
                title: str | None = None, source: str = "curves") -> Figure:
    """`y` against `x` (tokens, step or flops), one line per run coloured by `by` (default: the run setting
    that varies, `color_key`); a diverged run (status column) gets an x at its last logged point."""
    require_columns(df, ["run_id", y], source=source)
    by, key = color_key(df, by)
    require_columns(df, [by], source=source)
    df = df.assign(_x=x_values(df, x, source), _y=numeric_column(df, y, source=source))
    if not (np.isfinite(df["_x"]) & np.isfinite(df["_y"])).any():
        raise FitInputError(f"{source}: no finite value of {y!r} to draw")
    to_color, norm, cmap = run_colors(df[by])
    with paper():
        fig, ax = new_figure(size=SIZE)
        n_diverged = sum(_draw_run(ax, run, to_color(run[by].iloc[0]))
                         for _, run in df.sort_values("_x").groupby("run_id", sort=True))
        _axes(ax, df, x, y)
        if n_diverged:
            ax.legend(handles=[Line2D([], [], ls="none", marker=DIVERGED_MARK, color="0.2",
                                      label=f"{DIVERGED_GID} ({n_diverged})")], loc="best")
        scale_legend(fig, df[by], key, to_color, norm, cmap)
        fig.suptitle(title or f"{y} vs {x}, coloured by {by}", fontsize=8)
    return fig


def _draw_run(ax, run: pd.DataFrame, c) -> bool:
    """One run's line over its finite points; an x at the last of them when it diverged. True if marked."""
    ok = np.isfinite(run["_x"].to_numpy(dtype=float)) & np.isfinite(run["_y"].to_numpy(dtype=float))
    if not ok.any():
        return False
    xs, ys = run["_x"].to_numpy(dtype=float)[ok], run["_y"].to_numpy(dtype=float)[ok]
    ax.plot(xs, ys, "-" if ok.sum() > SPARSE_POINTS else ".-", lw=0.8, ms=2.5, alpha=0.8, color=c,
            gid=str(run["run_id"].iloc[0]))
    if "status" not in run.columns or run["status"].iloc[0] != DIVERGED:
        return False
    ax.plot(xs[-1:], ys[-1:], ls="none", marker=DIVERGED_MARK, ms=5, mew=1.2, color=c, gid=DIVERGED_GID)
    return True


def _axes(ax, df: pd.DataFrame, x: str, y: str) -> None:
    """Log axes where the values span more than LOG_RATIO (all positive), labels in the shared number style."""
    for values, set_scale in ((df["_x"], ax.set_xscale), (df["_y"], ax.set_yscale)):
        v = values.to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size and v.min() > 0 and v.max() / v.min() > LOG_RATIO:
            set_scale("log")
    readable_axis(ax.xaxis)
    readable_axis(ax.yaxis)
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(y)
