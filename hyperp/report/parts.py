"""What every section of a report shares: its options, what it found (`Part`), and how numbers, verdicts
and figures become blocks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hyperp.errors import FitInputError
from hyperp.fitting.defaults import DEFAULT_N_BOOT
from hyperp.fitting.report import fmt, fmt_interval
from hyperp.report.doc import Block, Figure, Items, Para

REPORT_DPI = 150  # figures are 7 in wide at most: 1,050 pixels, sharp on screen and small in a repository


@dataclass(frozen=True)
class Options:
    """The settings of every fit and check a report runs (the CLI's defaults are the library's own)."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    baseline: str | None = None  # the compute-efficiency baseline method (default: `default_baseline`)
    dpi: int = REPORT_DPI
    figures: bool = True  # False: no figure is drawn (`--fill` without -o needs the tables alone)


@dataclass
class Part:
    """A section's blocks, the verdicts it reached and the items it skipped, with the reason."""

    blocks: list[Block] = field(default_factory=list)
    verdicts: list[dict[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)

    def add(self, other: Part) -> Part:
        self.blocks += other.blocks
        self.verdicts += other.verdicts
        self.skipped += other.skipped
        self.reported += other.reported
        return self

    def skip(self, what: str, why: str) -> Part:
        self.skipped.append((what, why))
        return self


def attempt(what: str, build: Callable[[], Part]) -> Part:
    """The section `build` makes, or where the ledger cannot give it (FitInputError: too few runs in a sweep
    still running, an indicator never logged) a Part that skips `what` with the error as the reason."""
    try:
        return build()
    except FitInputError as e:
        return Part().skip(what, str(e))


def figure(name: str, draw: Callable[[], Any], caption: str, options: Options) -> Figure | None:
    """The matplotlib figure `draw()` makes as a report figure (PNG at the report's dpi, in the hyperp style);
    None, drawing nothing, when the options ask for no figures (the report drops it)."""
    if not options.figures:
        return None
    from hyperp.plots.style import png_bytes  # noqa: PLC0415 (matplotlib)

    return Figure(name=name, png=png_bytes(draw(), options.dpi), caption=caption)


ROUNDING = 1e-12  # a value this close to 0 is 0 up to float rounding (the proxy's own regret, +-4e-16)


def value_interval(value: float, low: float, high: float, digits: int = 3) -> str:
    """'0.0244 [0.0211, 0.0278]'; a one-sided interval as '[low, inf)'; '-' for a value that is not known."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{fmt(_unrounded(value), digits)} {interval(low, high)}"


def loss_text(loss: float) -> str:
    """A loss in nats to 4 decimals ('1.7986'): regrets and seed SDs of 0.001-0.02 nats are read against it."""
    return f"{loss:.4f}" if loss is not None and math.isfinite(loss) else "-"


def flops_text(flops: float) -> str:
    """A FLOP count as '1.80e11' (one style for every FLOPs column; never a binary suffix)."""
    if flops is None or not math.isfinite(flops):
        return "-"
    mantissa, exp = f"{flops:.2e}".split("e")
    return f"{mantissa}e{int(exp)}"


def slope_text(value: float, low: float, high: float) -> str:
    """A slope with its interval to 3 decimals, as the checks write them: '-0.099 [-0.311, 0.114]'."""
    if value is None or not math.isfinite(value):
        return "-"
    ends = ", ".join(f"{x:.3f}" if math.isfinite(x) else "-" for x in (low, high))
    return f"{value:.3f} [{ends}]"


def _unrounded(x: float) -> float:
    return 0.0 if abs(x) < ROUNDING else x


def interval(low: float, high: float) -> str:
    low, high = _unrounded(low), _unrounded(high)
    if math.isfinite(low) and math.isfinite(high):
        return fmt_interval(low, high)
    if math.isfinite(low):
        return f"[{fmt(low, 3)}, inf)"
    return "[no interval]"


def verdict_blocks(check: str, label: str, result: Any) -> tuple[list[Block], dict[str, str]]:
    """A check result's verdict (coloured), why, the interval that decided it and what would decide it."""
    head = f"{label}: {result.verdict}" if label else result.verdict
    blocks: list[Block] = [Para(result.why, lead=f"{head}.", tone=result.verdict)]
    decided = f"decided by: {result.decided_by}" if result.decided_by else ""
    to_decide = f"to decide it: {result.to_decide}" if getattr(result, "to_decide", "") else ""
    if decided or to_decide:
        blocks.append(Para("; ".join(t for t in (decided, to_decide) if t)))
    return blocks, {"check": check, "group": label, "verdict": result.verdict, "decided_by": result.decided_by,
                    "to_decide": getattr(result, "to_decide", "")}


def warnings_block(warnings) -> list[Block]:
    """The warnings of a fit or check as a list (nothing when there are none)."""
    items = tuple(dict.fromkeys(str(w) for w in warnings))
    return [Para("", lead="Warnings:"), Items(items)] if items else []
