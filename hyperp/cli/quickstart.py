"""`hyperp quickstart`: the main job on embedded defaults (hyperp.quickstart): a small sweep, the fits, the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import PLAIN_PROGRESS_S, JsonFlag, print_json

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Directory for the sweep, summary.json and the plots.")]


def quickstart_command(out: OutDir = Path("hyperp-quickstart"),
                       progress_every: Annotated[float, typer.Option(
                           help="Seconds between plain progress lines when the output is not a terminal.")]
                       = PLAIN_PROGRESS_S,
                       as_json: JsonFlag = False) -> None:
    """The main job on embedded defaults: does a base LR tuned at width 32 transfer to widths 64 and 128?
    An LR search per width under hyperp and adamw on the stdlib corpus, then `check transfer --axis width`."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.cli.sweep import SweepProgress  # noqa: PLC0415
    from hyperp.quickstart import run_quickstart  # noqa: PLC0415 (pulls in Ray, scipy, matplotlib)

    # With --json every human-readable line (progress, tables) goes to stderr; stdout carries the JSON only.
    console = Console(stderr=as_json)
    # a bar on a terminal; plain lines in a log (a bar's last frame is cut)
    with SweepProgress(console, console.is_terminal, progress_every) as progress:
        summary, checks = run_quickstart(out, on_progress=progress)
    print_summary(checks, out, console)
    if as_json:
        print_json(summary)


def print_summary(checks, out: Path, console) -> None:
    """The transfer checks: a table of eta* and the regret per (scheme, width), then each scheme's verdict."""
    from rich.table import Table  # noqa: PLC0415

    from hyperp.fitting.report import readable  # noqa: PLC0415
    from hyperp.quickstart import AXIS  # noqa: PLC0415

    table = Table(title=f"LR transfer across {AXIS} (proxy: the smallest)")
    for col in ("param", AXIS, "eta* [95% interval]", "best loss", "regret at proxy's eta* [95% interval]"):
        table.add_column(col, justify="right")
    for c in checks:
        for p in c.points:
            o = p.optimum
            table.add_row(c.group["param"], readable(p.scale),
                          f"{o.lr_opt:.3g} [{o.lr_interval.low:.3g}, {o.lr_interval.high:.3g}]"
                          + ("" if o.bracketed else " (not bracketed)"),
                          f"{o.loss_opt:.4f}", f"{p.regret:.4f} [{p.regret_interval.low:.4f}, "
                                               f"{p.regret_interval.high:.4f}] ({p.regret_rel:.2%})")
    console.print(table)
    for c in checks:
        s = c.slope_interval
        colour = {"pass": "green", "fail": "red"}.get(c.verdict, "yellow")
        console.print(f"{c.group['param']}: ln eta* = const + s ln {AXIS}, s = {c.slope:.3f} [{s.low:.3f}, {s.high:.3f}]; "
                      f"verdict [{colour}]{c.verdict}[/{colour}]: {c.why}", highlight=False)
        if c.to_decide:
            console.print(f"  to decide it: {c.to_decide}", highlight=False)
        for w in c.warnings:
            console.print(f"  [yellow]warning:[/yellow] {w}", highlight=False)
    console.print(f"outputs in {out}/ (summary.json, transfer.png, lr.png, sweeps/)")
