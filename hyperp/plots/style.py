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
from matplotlib.ticker import Formatter

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
SMALL = 0.01  # below this a number reads better as 3e-3 than as 0.003 (LRs, init stds)
SHORT_RANGE = 4.0  # a log axis spanning less than this ratio may label every minor tick, room permitting
CURVE_POINTS = 200  # samples along every fitted curve
DODGE = 1.04  # factor between neighbouring groups' interval bars on a log x axis, so that they do not overlap
EXTRAPOLATION = "extrapolation"  # the legend label (and gid) of a fitted curve's dashed part beyond its data

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


def png_bytes(fig: Figure, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG bytes, saved in the hyperp style: for a data URI, or a file written atomically."""
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    with paper():
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def dodge(i: int, n: int) -> float:
    """The factor that shifts the i-th of n groups' bars on a log x axis, the middle one unshifted."""
    return DODGE ** (i - (n - 1) / 2)


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


def number(v) -> str:
    """The one number format of every legend, label and tick: `readable` (128k, 1M, 6e18, 0.0213) to 3
    significant digits, so never 1.65e+04 (16512.3 -> 16.5k, 999.7 -> 1k), and 3e-3 below SMALL."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    x = float(v)
    if not np.isfinite(x) or x == 0:
        return readable(x)
    if abs(x) < SMALL:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    if not x.is_integer():  # rounded first: readable prints a fractional 16512.3 with %g (1.65e+04)
        x = float(f"{x:.3g}")
    return readable(x)


def group_label(group: dict) -> str:
    """'param=hyperp, tokens=128k' from a group dict; '' for the one group of an ungrouped fit (no 'all')."""
    return ", ".join(f"{k}={number(v)}" for k, v in group.items())


def short_reason(reason: str) -> str:
    """Why an LR optimum is not bracketed, in the few words a marker's annotation has room for."""
    from hyperp.fitting.lr import AT_EDGE, CONCAVE, OUTSIDE, POOR_FIT, TOO_FEW  # noqa: PLC0415 (scipy: LR plots only)

    short = {AT_EDGE: "best LR at grid edge", CONCAVE: "not U-shaped", OUTSIDE: "vertex off the window",
             POOR_FIT: "poor parabola fit", TOO_FEW: "< 3 LRs"}
    return short.get(reason, reason)


def write_reason(ax, reason: str, xy: tuple[float, float], offset: tuple[float, float] = (5, -8)) -> None:
    """Why an optimum is not bracketed (`short_reason`), written small beside its marker, on a light backing so
    that it stays legible over lines."""
    ax.annotate(short_reason(reason), xy, xytext=offset, textcoords="offset points", fontsize=5, color="0.25",
                bbox=dict(fc="white", ec="none", alpha=0.7, pad=0.3))


def readable_axis(axis, minor: bool = False) -> None:
    """Tick labels through `number`, spaced so that no two overlap (`SpacedLabels`, judged at draw time on the
    axis's final limits). Minor ticks are labelled with `minor`, and otherwise only where fewer than two major
    labels are in view (a log axis within one decade); never in matplotlib's own 2x10^11 style."""
    axis.set_major_formatter(SpacedLabels(axis))
    axis.set_minor_formatter(SpacedLabels(axis, minor=minor))


EM_PER_CHAR = 0.64  # widest digit of DejaVu Sans (0.636 em): a label's width is at most this per character
LINE_EM = 1.25  # a label's height, in ems
GAP_EM = 0.4  # the least space between two labels


class SpacedLabels(Formatter):
    """A tick formatter: each label is `number(value)`, and a label is dropped where it would overlap one
    already placed (majors left to right; minors after the majors, 5x then 2x a power of ten first, only
    those two across a range of SHORT_RANGE or more). `minor`: None for a major formatter; True to label minor
    ticks wherever there is room, False only where fewer than two major labels are in view."""

    def __init__(self, axis, minor: bool | None = None):
        self.axis, self.minor = axis, minor

    def __call__(self, value, pos=None) -> str:
        return number(value)

    def format_ticks(self, values) -> list[str]:
        values = [float(v) for v in values]
        if self.minor is None:
            keep = _place(self.axis, values, range(len(values)), [])
        else:
            keep = self._minor_keep(values)
        return [number(v) if i in keep else "" for i, v in enumerate(values)]

    def _minor_keep(self, values: list[float]) -> set[int]:
        majors = [float(v) for v in self.axis.get_majorticklocs()]
        labels = self.axis.major.formatter.format_ticks(majors)
        placed = [(v, t) for v, t in zip(majors, labels) if t and _in_view(self.axis, v)]
        if not self.minor and len(placed) >= 2:
            return set()
        taken = [e for e in _extents(self.axis, [v for v, _ in placed], [t for _, t in placed]) if np.isfinite(e[0])]
        return _place(self.axis, values, _minor_order(self.axis, values), taken)


def _in_view(axis, v: float) -> bool:
    lo, hi = sorted(axis.get_view_interval())
    return lo - 1e-9 * abs(lo) <= v <= hi + 1e-9 * abs(hi)


def _minor_order(axis, values: list[float]) -> list[int]:
    """Minor ticks in the order they get a label: 5x, 2x, then 3x ... 9x a power of ten (only 5x and 2x when the
    view spans SHORT_RANGE or more)."""
    lo, hi = sorted(axis.get_view_interval())
    wide = not (lo > 0 and hi / lo < SHORT_RANGE)
    rank = {}
    for i, v in enumerate(values):
        if v <= 0:
            continue
        m = round(v / 10 ** np.floor(np.log10(v) + 1e-9))
        if not wide or m in (2, 5):
            rank[i] = (0 if m == 5 else 1 if m == 2 else m, v)
    return sorted(rank, key=rank.get)


def _extents(axis, values: list[float], texts: list[str]) -> list[tuple[float, float]]:
    """(centre, half extent) in pixels along the axis of each label (its width on an x axis, its height on a
    y axis, plus half the gap); the centre is NaN where the axis cannot place the value (<= 0 on a log axis)."""
    size = axis.get_major_ticks(1)[0].label1.get_fontsize() * axis.figure.dpi / 72
    centres = _pixels(axis, values)
    if axis.axis_name == "x":
        half = [(len(t) * EM_PER_CHAR + GAP_EM) * size / 2 for t in texts]
    else:
        half = [(LINE_EM + GAP_EM) * size / 2] * len(texts)
    return list(zip(centres, half))


def _pixels(axis, values: list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float).reshape(-1)
    other = np.ones_like(v)
    pts = np.column_stack([v, other] if axis.axis_name == "x" else [other, v])
    with np.errstate(all="ignore"):
        return axis.axes.transData.transform(pts)[:, 0 if axis.axis_name == "x" else 1]


def _place(axis, values: list[float], order, taken: list[tuple[float, float]]) -> set[int]:
    """The indices of `values` (tried in `order`, in view only) whose labels overlap none placed before."""
    keep = set()
    taken = list(taken)
    spans = _extents(axis, values, [number(v) for v in values])
    for i in order:
        c, h = spans[i]
        if np.isfinite(c) and _in_view(axis, values[i]) and all(abs(c - c2) >= h + h2 for c2, h2 in taken):
            keep.add(i)
            taken.append((c, h))
    return keep


def fitted_curve(ax, predict, span: tuple[float, float], fitted: tuple[float, float], c, label=None,
                 **style) -> None:
    """`predict` over the log-spaced `span`: solid over the `fitted` range (the data the fit saw) and dashed
    beyond it, where the curve is an extrapolation (tagged for `legend_entry(ax, EXTRAPOLATION, "--")`)."""
    lo, hi = max(span[0], fitted[0]), min(span[1], fitted[1])
    x = np.geomspace(lo, hi, CURVE_POINTS)
    ax.plot(x, predict(x), "-", color=c, label=label, **style)
    for a, b in ((span[0], lo), (hi, span[1])):
        if b > a * (1 + 1e-9):
            x = np.geomspace(a, b, CURVE_POINTS // 4)
            ax.plot(x, predict(x), "--", color=c, gid=EXTRAPOLATION, **style)


def legend_entry(ax, gid: str, fmt: str) -> None:
    """One grey legend entry labelled `gid`, after the others, for every line tagged `gid` whatever its colour
    (the dashed parts of curves, the markers of missing points)."""
    if any(ln.get_gid() == gid for ln in ax.lines):
        ax.plot([], [], fmt, color="0.4", lw=0.9, label=gid)


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

