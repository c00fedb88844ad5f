"""The one style every hyperp figure uses: paper-sized, colour-blind-safe, PNG or SVG by file suffix.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so plotting
needs no display, keeps no global figure state and leaves the caller's matplotlib backend alone.
Sizes are in inches for a two-column paper: SINGLE fits one column, DOUBLE spans both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from hyperp.fitting.report import readable
from hyperp.fitting.table import FitInputError

SINGLE = (3.4, 2.6)  # one column of a two-column paper
DOUBLE = (7.0, 2.8)  # full width, one row of panels
PNG_DPI = 300
FORMATS = (".png", ".svg", ".pdf")
# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
SEQUENTIAL = "viridis"  # for ordered groups (model scale) and loss levels
MAX_LEGEND = 12  # beyond this many groups a legend stops being readable: colour by a colorbar instead

RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.linewidth": 0.7, "lines.linewidth": 1.2,
    "lines.markersize": 3.5, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4, "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.35,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "svg.fonttype": "none", "pdf.fonttype": 42,
    "figure.constrained_layout.use": True, "axes.prop_cycle": mpl.cycler(color=PALETTE),
}


@contextlib.contextmanager
def paper() -> Iterator[None]:
    """Apply the hyperp style within the block (figures must be created and saved inside it)."""
    with mpl.rc_context(RC):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] | None = None):
    """A figure and its axes array (squeezed), sized for the paper; call inside `paper()`."""
    if size is None:
        size = SINGLE if ncols == 1 else (DOUBLE[0], DOUBLE[1] * nrows)
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel() if axes.size > 1 else axes[0, 0]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG (PNG_DPI), SVG or PDF according to the suffix."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise FitInputError(f"{path}: output must end in one of {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with paper():
        fig.savefig(path, dpi=PNG_DPI if path.suffix.lower() == ".png" else None)
    return path


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def scale_colors(values: np.ndarray):
    """A colour per value of an ordered quantity (model size ...): log-normalized when it spans > 10x."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    positive = finite.size and finite.min() > 0
    if positive and finite.max() / finite.min() > 10:
        norm = LogNorm(finite.min(), finite.max())
    else:
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
    cmap = mpl.colormaps[SEQUENTIAL]
    return (lambda x: cmap(0.9 * norm(x))), norm, cmap  # 0.9: skip the washed-out yellow end


def group_label(group: dict) -> str:
    """'param=hyperp, tokens=128k' from a group dict ('all' when empty)."""
    if not group:
        return "all"
    return ", ".join(f"{k}={readable(v)}" for k, v in group.items())


def readable_axis(axis, minor: bool = False) -> None:
    """Major (and with `minor`, minor) tick labels of a (log) axis through `readable`."""
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: readable(v)))
    if minor:
        axis.set_minor_formatter(FuncFormatter(lambda v, _pos: readable(v)))


def families(groups: list[dict]) -> list[tuple]:
    """(colour, marker) per group: one hue per value of the first categorical key (the scheme), shaded light
    to dark and marked along the order of the remaining keys (the budget or size), so one budget has one
    marker in every scheme. With no categorical key: the palette in order (a sequential map when there are
    more groups than colours) and a marker per group."""
    keys = list(groups[0]) if groups else []
    primary = next((k for k in keys if any(isinstance(g.get(k), str) for g in groups)), None)
    if primary is None:
        if len(groups) <= len(PALETTE):
            return [(color(i), marker(i)) for i in range(len(groups))]
        to_color, _, _ = scale_colors(np.arange(len(groups), dtype=float))
        return [(to_color(i), marker(i)) for i in range(len(groups))]
    hues = {v: color(i) for i, v in enumerate(dict.fromkeys(g[primary] for g in groups))}
    rest = [k for k in keys if k != primary]
    levels = sorted({tuple(g[k] for k in rest) for g in groups})
    out = []
    for g in groups:
        own = sorted({tuple(h[k] for k in rest) for h in groups if h[primary] == g[primary]})
        key = tuple(g[k] for k in rest)
        out.append((shade(hues[g[primary]], own.index(key), len(own)), marker(levels.index(key))))
    return out


LIGHTEST = 0.6  # share of white mixed into the first (smallest) member of a family


def shade(base: str, rank: int, n: int):
    """`base` mixed with white: the last of n is `base` itself, the first LIGHTEST white."""
    from matplotlib.colors import to_rgb  # noqa: PLC0415

    t = LIGHTEST * (n - 1 - rank) / max(n - 1, 1)
    return tuple((1 - t) * c + t for c in to_rgb(base))

