"""The report of several sweeps, and writing it.

`build_report` reads every sweep first (a missing directory or an empty ledger fails before any work), then
computes every section; `write_report` writes only after that, each file atomically (hyperp.io), never
inside a sweep directory: bad input writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.errors import FitInputError
from hyperp.report import fits, sections, verdicts
from hyperp.report.doc import Block, Figure, Heading, Table, render_html, render_markdown, table
from hyperp.report.ledger import Sweep, read_sweep
from hyperp.report.parts import Options, Part

FORMATS = ("html", "md")
STEM = "report"  # DIR/report.html or DIR/report.md


@dataclass(frozen=True)
class SweepReport:
    """One sweep's part of a report: its blocks and what it reported, decided and skipped."""

    sweep: Sweep
    blocks: list[Block]
    part: Part

    @property
    def n_figures(self) -> int:
        return sum(isinstance(b, Figure) for b in self.blocks)

    def tables(self) -> dict[str, Table]:
        """The report's named tables by id (what `--fill` can put into a Markdown file), in the report's order."""
        named = [b for b in self.blocks if isinstance(b, Table) and b.id]
        ids = [t.id for t in named]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup:
            raise AssertionError(f"{self.sweep.name}: two tables with the id {dup!r}")
        return {t.id: t for t in named}

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep.name, "dir": str(self.sweep.dir), "runs": len(self.sweep.runs),
                "figures": self.n_figures, "tables": list(self.tables()),
                "reported": self.part.reported, "verdicts": self.part.verdicts,
                "skipped": [{"what": w, "why": y} for w, y in self.part.skipped]}


@dataclass(frozen=True)
class Report:
    sweeps: tuple[SweepReport, ...]
    title: str = field(default="")

    def blocks(self) -> list[Block]:
        return [b for s in self.sweeps for b in s.blocks]

    def figure_files(self) -> dict[int, str]:
        """The file name of each figure (by id) in the Markdown rendering: NAME.png, SWEEP-NAME.png with several."""
        several = len(self.sweeps) > 1
        return {id(b): f"{s.sweep.name}-{b.name}.png" if several else f"{b.name}.png"
                for s in self.sweeps for b in s.blocks if isinstance(b, Figure)}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise FitInputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def check_output(out: str | Path, sweep_dirs: Sequence[Path]) -> None:
    """FitInputError for an output directory that is a file, or a sweep directory or inside one (a report
    only reads sweeps)."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise FitInputError(f"{out}: exists and is not a directory")
    inside = io.containing(out, sweep_dirs)
    if inside is not None:
        raise FitInputError(f"{out}: inside the sweep directory {inside}; a report never writes into a sweep")


def build_report(paths: Sequence[str | Path], options: Options = Options(), out: str | Path | None = None,
                 check: Callable[[Sequence[Sweep]], None] | None = None) -> Report:
    """Read every sweep (and check that `out`, where the report will go, is none of them, and anything else
    `check` asks of the sweeps read), then compute each one's sections."""
    if not paths:
        raise FitInputError("no sweep directory given")
    sweeps = [read_sweep(p) for p in paths]
    names = [s.name for s in sweeps]
    if len(set(names)) < len(names):
        raise FitInputError(f"two sweeps of one name among {', '.join(map(str, paths))}: give each once")
    if out is not None:
        check_output(out, [s.dir for s in sweeps])
    if check is not None:
        check(sweeps)
    return Report(tuple(_sweep_report(s, options) for s in sweeps), title=f"hyperp study report: {', '.join(names)}")


def _sweep_report(sw: Sweep, options: Options) -> SweepReport:
    lr_part, lr = sections.lr_optima(sw, options)
    body = Part(blocks=sections.statuses(sw)).add(lr_part)
    for part in (verdicts.transfer(sw, options, lr), verdicts.stability(sw, options), verdicts.head(sw, options, lr),
                 verdicts.not_from_ledgers(), fits.compute(sw, options), fits.chinchilla(sw, options),
                 sections.curves(sw, options)):
        body.add(part)
    head, spec = sections.overview(sw)
    blocks = [b for b in (*head, *_summary(body), *body.blocks, *spec) if b is not None]  # None: a figure not drawn
    return SweepReport(sw, blocks, body)


def _summary(part: Part) -> list[Block]:
    """The verdicts at a glance, and every item the report covers or skips, with the reason."""
    blocks: list[Block] = [Heading("Summary", 3)]
    if part.verdicts:
        blocks.append(table(["check", "group", "verdict", "decided by"],
                            [(v["check"], v["group"] or "-", v["verdict"], v["decided_by"]) for v in part.verdicts],
                            "Verdicts", id="verdicts"))
    rows = [(r, "reported", "") for r in part.reported] + [(w, "skipped", why) for w, why in part.skipped]
    blocks.append(table(["item", "in this report", "why not"], rows, "What the ledger supports", id="supports"))
    return blocks


def write_report(report: Report, out: str | Path, fmt: str) -> list[Path]:
    """Write the report into `out` (created if needed): report.html, or report.md with its PNG figures."""
    check_format(fmt)
    check_output(out, [s.sweep.dir for s in report.sweeps])
    out = Path(out)
    if fmt == "html":
        return [io.write_bytes(out / f"{STEM}.html", render_html(report.title, report.blocks()).encode())]
    files = report.figure_files()
    written = [io.write_bytes(out / files[id(b)], b.png) for b in report.blocks() if isinstance(b, Figure)]
    text = render_markdown(report.title, report.blocks(), lambda fig: files[id(fig)])
    return [io.write_bytes(out / f"{STEM}.md", text.encode()), *written]
