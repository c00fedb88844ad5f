"""`hyperp report SWEEP... -o DIR [--format html|md]`: a study report generated from sweep ledgers
(hyperp.report). Read-only on the sweeps: no lock taken, nothing written inside them, so a running sweep is
reported as it stands. The report library (pandas, matplotlib, the fits) loads inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, command, new_app, print_json
from hyperp.fitting.defaults import DEFAULT_N_BOOT

app = new_app(SUBAPPS["report"][1])  # one command: typer makes `hyperp report` that command itself


@command(app, "report")
def report_command(sweeps: Annotated[list[Path], typer.Argument(
                       metavar="SWEEP...", help="Sweep directories (each with runs.parquet), or the specs they were "
                                                "run from (their directories under ./sweeps).")],
                   out: Annotated[Path, typer.Option(
                       "--output", "-o", help="Directory to write the report into (created; never inside a sweep).")],
                   fmt: Annotated[str, typer.Option(
                       "--format", metavar="html|md", help="html: one self-contained file (figures embedded); md: "
                                                           "report.md with its figures as PNG files beside it.")]
                   = "html",
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
    every figure; what the ledger does not support is listed with the reason."""
    from hyperp.report.build import build_report, check_format, write_report  # noqa: PLC0415 (pandas, matplotlib)
    from hyperp.report.parts import Options  # noqa: PLC0415

    check_format(fmt)
    report = build_report(sweeps, Options(n_boot=n_boot, seed=seed, baseline=baseline), out)
    files = write_report(report, out, fmt)
    if as_json:
        print_json({"format": fmt, "files": [str(f) for f in files], "sweeps": [s.to_dict() for s in report.sweeps]})
        return
    verdicts = [v["verdict"] for s in report.sweeps for v in s.part.verdicts]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("pass", "fail", "inconclusive") if v in verdicts)
    typer.echo(f"wrote {files[0]} ({len(report.sweeps)} sweep{'s' if len(report.sweeps) > 1 else ''}, "
               f"{sum(s.n_figures for s in report.sweeps)} figures, verdicts: {counts or 'none'})")
