"""Stability indicators over training, one panel per indicator, one line per run coloured by the run setting
that varies among the plotted runs (a scale first, then the LR or another setting, the seed last; the legend's
title names any other setting that varies too), or by the column asked for.

Input: a curves table with one row per logged step of a run (`run_id`, `step`, `tokens`, losses, and any
numeric indicator columns: the trainer's `hyperp.schema.STABILITY_INDICATORS` and `grad_norm`; method.md
section 6), or a directory: a sweep (`runs/<run_id>/curves.parquet` per run) or
one trainer output (`curves.parquet` beside a one-row `runs.parquet`). The scale of a run (default
`n_params`) comes from the curves table itself or from the runs table, joined on `run_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hyperp.fitting.table import (CURVES_FILE, RUNS_FILE, FitInputError, load_table, numeric_column, read_file,
                                  require_columns)
from hyperp.plots.style import MAX_LEGEND, color, new_figure, number, paper, readable_axis, scale_colors
from hyperp.schema import CURVE_COLUMNS, RUNS_DIR, STABILITY_INDICATORS
from hyperp.config import field_types

RUN_DIRS = RUNS_DIR  # a sweep keeps each run's files in runs/<run_id>/
# Known indicators, drawn first and in this order (the trainer's, then the gradient norm every curve row
# has); any other numeric column is an indicator too.
KNOWN_INDICATORS = (*STABILITY_INDICATORS, "grad_norm")
# Columns that are coordinates, identifiers or run settings, never indicators.
NOT_INDICATORS = {"run_id", "step", "tokens", "train_loss", "val_loss", "lr", "time", "wall_time", "seed",
                  "depth", "width", "n_params", "n_params_active", "batch_tokens", "sparsity", "top_k", "flops",
                  "epoch", "elapsed_s", "lr_mult"}
NCOLS = 3
SPARSE_POINTS = 20  # runs with at most this many logged points get markers
# Indicators spanning more than this ratio (all positive) get a log axis.
LOG_RATIO = 100.0


def read_curves(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(curves, runs or None) from a curves file, a trainer output directory or a sweep directory.

    Curves of a sweep get their run_id from the run's directory name; a trainer output's curves get the
    run_id of its one-row runs.parquet (or the directory name when that row has none).
    """
    path = Path(path)
    if not path.is_dir():
        return load_table(path), None
    runs = load_table(path) if (path / RUNS_FILE).exists() else None
    if (path / CURVES_FILE).exists():  # one trainer output: its runs.parquet has one row, maybe no run_id
        curves = read_file(path / CURVES_FILE)
        if runs is not None and len(runs) == 1 and "run_id" not in runs.columns:
            runs = runs.assign(run_id=path.name)
        if "run_id" not in curves.columns:
            curves = curves.assign(run_id=runs["run_id"].iloc[0] if runs is not None and len(runs) == 1 else path.name)
        return curves, runs
    files = sorted((path / RUN_DIRS).glob(f"*/{CURVES_FILE}"))
    if not files:
        raise FitInputError(f"{path}: no {CURVES_FILE} (nor {RUN_DIRS}/<run_id>/{CURVES_FILE})")
    curves = pd.concat([read_file(f).assign(run_id=f.parent.name) for f in files], ignore_index=True)
    return curves, runs

RUN_SUFFIX = "_run"  # a run setting named like a curve column (tokens) joins as tokens_run


def stability_frame(curves: pd.DataFrame, runs: pd.DataFrame | None = None, scale: str | None = "n_params",
                    source: str = "curves") -> pd.DataFrame:
    """The curves with a `scale` column, joined from `runs` on run_id when the curves lack it. With scale None
    (the plot picks the setting that varies) the runs' settings are joined whenever `runs` is given."""
    require_columns(curves, ["run_id"], source=source)
    if scale in curves.columns or (scale is None and runs is None):
        return curves
    if runs is None:
        raise FitInputError(f"{source}: no {scale!r} column; give the runs table to join it on run_id")
    setting = scale.removesuffix(RUN_SUFFIX) if scale and scale not in runs.columns else scale  # tokens_run: tokens
    require_columns(runs, ["run_id", *([setting] if setting else [])], source="runs table")
    # Bring the scale and the runs' other settings (param, lr, ...) so that rows can be filtered on them. A run
    # setting whose name a curve column already has (tokens: the step's count vs the run's budget) arrives
    # as NAME_run, so `--where tokens_run=1048576` selects runs by budget.
    merged = curves.merge(runs.drop_duplicates("run_id"), on="run_id", how="left", suffixes=("", RUN_SUFFIX))
    matched = merged[scale].notna() if scale else curves["run_id"].isin(runs["run_id"])
    if not matched.any():
        raise FitInputError(f"{source}: no run_id of the curves matches the runs table")
    return merged


SCALE_CANDIDATES = ("n_params", "tokens_run", "width", "depth", "top_k", "lr", "seed")
# Config fields that never tell runs apart in a figure: bookkeeping, hardware, logging.
BOOKKEEPING = {"name", "tags", "data", "device", "threads", "workers", "compile", "peak_tflops", "ns_backend",
               "eval_every", "log_every", "stats_every", "checkpoint_every"}


def varying_scale(df: pd.DataFrame, candidates: Sequence[str] = SCALE_CANDIDATES, default: str = "n_params") -> str:
    """The first candidate column that takes more than one value across the runs: a colour by a setting every
    run shares says nothing (all runs of one size coloured by n_params)."""
    return next(iter(varying_columns(df, candidates)), default)


def varying_columns(df: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The candidate columns that take more than one value across the runs (one row per run_id), in order."""
    per_run = df.drop_duplicates("run_id")
    return [c for c in candidates if c in per_run.columns and per_run[c].nunique(dropna=True) > 1]


def run_settings() -> list[str]:
    """The run settings a stability frame may be coloured by, in the order of preference: the scales and the
    LR, the trainer's other config fields, the seed last (replicates, the least telling colour). A setting
    named like a curve column (tokens) is its NAME_run column; the curve column itself is per step."""
    config = [f"{n}{RUN_SUFFIX}" if n in CURVE_COLUMNS else n for n in field_types() if n not in BOOKKEEPING]
    names = [c for c in dict.fromkeys([*SCALE_CANDIDATES, *config]) if c != "seed"]
    return [*names, "seed"]


def indicator_columns(df: pd.DataFrame, scale: str = "n_params", x: str = "tokens") -> list[str]:
    """Numeric indicator columns present: the known ones first, then any other numeric column."""
    skip = NOT_INDICATORS | {scale, x}
    numeric = [c for c in df.columns if c not in skip and not str(c).endswith(RUN_SUFFIX)
               and pd.api.types.is_numeric_dtype(df[c])
               and df[c].notna().any()]
    return [c for c in KNOWN_INDICATORS if c in numeric] + [c for c in numeric if c not in KNOWN_INDICATORS]


def plot_stability(df: pd.DataFrame, *, scale: str | None = None, x: str = "tokens",
                   metrics: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """One panel per indicator versus `x`, one line per run, coloured by `scale` (df from stability_frame);
    by default by the first run setting that varies among the runs (`run_settings`)."""
    scale, key = color_key(df, scale)
    require_columns(df, ["run_id", x, scale], source="curves")
    metrics = list(metrics) if metrics else indicator_columns(df, scale, x)
    if not metrics:
        raise FitInputError(f"curves: no numeric indicator columns besides {sorted(NOT_INDICATORS & set(df.columns))}")
    require_columns(df, metrics, source="curves")
    for m in metrics:
        numeric_column(df, m, source="curves")
    to_color, norm, cmap = run_colors(df[scale])
    nrows = -(-len(metrics) // NCOLS)
    ncols = min(NCOLS, len(metrics))
    with paper():
        fig, axes = new_figure(ncols=ncols, nrows=nrows, size=(2.35 * ncols, 1.9 * nrows))
        axes = np.atleast_1d(axes)
        for ax, m in zip(axes, metrics):
            _panel(ax, df, m, x, scale, to_color)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        scale_legend(fig, df[scale], key, to_color, norm, cmap)
        fig.suptitle(title or f"Stability indicators vs {x}, coloured by {scale}", fontsize=8)
    return fig


def color_key(df: pd.DataFrame, scale: str | None = None) -> tuple[str, str]:
    """(the column that colours the runs, the colour legend's title): `scale`, else the first run setting that
    varies among the runs (`run_settings`); the title names the other settings that vary too."""
    varying = varying_columns(df, run_settings())
    scale = scale or next(iter(varying), "n_params")
    also = [c for c in varying if c != scale]
    return scale, f"{scale} ({', '.join(also)} also {'varies' if len(also) == 1 else 'vary'})" if also else scale


def _panel(ax, df: pd.DataFrame, metric: str, x: str, scale: str, to_color) -> None:
    for _, run in df.sort_values([x]).groupby("run_id", sort=False):
        vals = run[metric].to_numpy(dtype=float)
        ok = np.isfinite(vals)  # indicators are logged every few steps: join the logged points
        if ok.any():
            style = "-" if ok.sum() > SPARSE_POINTS else ".-"
            ax.plot(run[x].to_numpy(dtype=float)[ok], vals[ok], style, lw=0.8, ms=2.5, alpha=0.85,
                    color=to_color(run[scale].iloc[0]))
    v = df[metric].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if v.size and v.min() > 0 and v.max() / v.min() > LOG_RATIO:
        ax.set_yscale("log")
    readable_axis(ax.xaxis)
    readable_axis(ax.yaxis)
    ax.set_xlabel(x)
    ax.set_title(metric)


def run_colors(values: pd.Series):
    """(to_color, norm, cmap) for a colour column: the sequential map over a numeric one, the palette (norm and
    cmap None) over the values of a categorical one such as param."""
    if pd.api.types.is_numeric_dtype(values):
        v = values.to_numpy(dtype=float)
        return scale_colors(np.unique(v[np.isfinite(v)]))
    hues = {v: color(i) for i, v in enumerate(sorted(values.dropna().unique()))}
    return hues.get, None, None


def scale_legend(fig, values: pd.Series, key: str, to_color, norm, cmap) -> None:
    """A legend entry per colour value, titled `key`, when there are few; a colorbar otherwise."""
    distinct = sorted(values.dropna().unique())
    if len(distinct) <= MAX_LEGEND or norm is None:
        handles = [Line2D([], [], color=to_color(v), label=number(v)) for v in distinct]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=5.5, title=key,
                   title_fontsize=6)  # below the panels: never over a run's line
    else:
        from matplotlib.cm import ScalarMappable  # noqa: PLC0415

        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=fig.axes, label=key, shrink=0.8)
        readable_axis(bar.ax.yaxis)
