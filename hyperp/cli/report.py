"""`hyperp report SWEEP... -o DIR [--format html|md]`: a study report generated from sweep ledgers
(hyperp.report); `--fill FILE [--check]` puts its tables into a Markdown file's marked blocks (hyperp.report.fill).
Read-only on the sweeps: no lock taken, nothing written inside them, so a running sweep is reported as it stands.
The report library (pandas, matplotlib, the fits) loads inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, command, new_app, print_json
from hyperp.errors import EXIT_RUNS_FAILED, InputError
from hyperp.fitting.defaults import DEFAULT_N_BOOT

app = new_app(SUBAPPS["report"][1])  # one command: typer makes `hyperp report` that command itself


@command(app, "report")
def report_command(sweeps: Annotated[list[Path], typer.Argument(
                       metavar="SWEEP...", help="Sweep directories (each with runs.parquet), or the specs they were "
                                                "run from (their directories under ./sweeps).")],
                   out: Annotated[Path | None, typer.Option(
                       "--output", "-o", help="Directory to write the report into (created; never inside a sweep); "
                                              "optional with --fill.")]
                   = None,
                   fmt: Annotated[str, typer.Option(
                       "--format", metavar="html|md", help="html: one self-contained file (figures embedded); md: "
                                                           "report.md with its figures as PNG files beside it.")]
                   = "html",
                   fill: Annotated[Path | None, typer.Option(
                       "--fill", metavar="FILE", help="A Markdown file whose blocks <!-- report: STUDY TABLE-ID --> "
                                                      "... <!-- /report --> get that study's table (the text outside "
                                                      "them is kept); with or without -o.")] = None,
                   check: Annotated[bool, typer.Option(
                       "--check", help="With --fill: write nothing, exit 1 when a block differs from what the "
                                       "ledgers give (the file has gone stale).")] = False,
                   n_boot: Annotated[int, typer.Option("--bootstrap", "-B", min=0, help="Bootstrap replicates of "
                                                       "every interval (the checks' and fits' default).")]
                   = DEFAULT_N_BOOT,
                   seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
                   baseline: Annotated[str | None, typer.Option(
                       help="Baseline method of the compute efficiency (CEL) (default: muon, else adamw, else "
                            "the first method).")] = None,
                   as_json: JsonFlag = False) -> None:
    """A study report of one or more sweeps, from their ledgers only: the spec and protocol, run statuses
    (failed runs with their first error line), each cell's LR optimum with its interval, every check the
    ledger supports with its verdict and the interval that decided it, the fits with their warnings, and
    every figure; what the ledger does not support is listed with the reason. --fill puts the report's tables
    into the marked blocks of a Markdown file (table ids: hyperp/report/fill.py)."""
    from hyperp.report.build import build_report, check_format, write_report  # noqa: PLC0415 (pandas, matplotlib)
    from hyperp.report.fill import check_slots, check_target, fill_file, read_slots  # noqa: PLC0415
    from hyperp.report.parts import Options  # noqa: PLC0415

    check_format(fmt)
    if check and fill is None:
        raise InputError("--check compares the blocks of a --fill FILE with the ledgers: give --fill")
    if check and out is not None:  # --check writes nothing, so a report directory would contradict it
        raise InputError(f"-o {out}: --check writes nothing; drop -o (or --check to write the report)")
    if out is None and fill is None:
        raise InputError("give -o DIR (write the report) or --fill FILE (fill a Markdown file's report blocks)")
    slots = read_slots(fill)[1] if fill is not None else []  # bad markers fail before any work

    def before(read) -> None:
        if fill is not None:
            check_target(fill, [s.dir for s in read])
            check_slots(fill, slots, [s.name for s in read])

    options = Options(n_boot=n_boot, seed=seed, baseline=baseline, figures=out is not None)
    report = build_report(sweeps, options, out, check=before)
    files = write_report(report, out, fmt) if out is not None else []
    filled = fill_file(fill, {s.sweep.name: s.tables() for s in report.sweeps}, check=check) if fill else None
    stale = check and bool(filled.changed)
    if as_json:
        print_json({"format": fmt if out is not None else None, "files": [str(f) for f in files],
                    "fill": filled.to_dict() if filled else None, "sweeps": [s.to_dict() for s in report.sweeps]})
        raise typer.Exit(EXIT_RUNS_FAILED if stale else 0)
    if files:
        verdicts = [v["verdict"] for s in report.sweeps for v in s.part.verdicts]
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("pass", "fail", "inconclusive") if v in verdicts)
        typer.echo(f"wrote {files[0]} ({len(report.sweeps)} sweep{'s' if len(report.sweeps) > 1 else ''}, "
                   f"{sum(s.n_figures for s in report.sweeps)} figures, verdicts: {counts or 'none'})")
    if filled is not None:
        _echo_fill(filled, check)
    if stale:
        raise typer.Exit(EXIT_RUNS_FAILED)


def _echo_fill(filled, check: bool) -> None:
    n, changed = len(filled.slots), len(filled.changed)
    if check:
        head = (f"{filled.path}: {changed} of {n} report blocks differ from the ledgers (refill with --fill)"
                if changed else f"{filled.path}: all {n} report blocks are current")
    else:
        head = f"filled {n} report blocks of {filled.path} ({changed} changed)" if filled.written else \
            f"filled {n} report blocks of {filled.path} (none changed; not rewritten)"
    typer.echo(head)
    for s in filled.slots:
        mark = ("stale" if check else "changed") if s.changed else "same"
        typer.echo(f"  line {s.open_line}: {s.study} {s.table} ({mark})")
