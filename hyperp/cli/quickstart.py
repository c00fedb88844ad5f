"""`hyperp quickstart`: the main job on embedded defaults (hyperp.quickstart): a small sweep, the fits, the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import JsonFlag, print_json

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Directory for the sweep, summary.json and the plots.")]


def quickstart_command(out: OutDir = Path("hyperp-quickstart"), as_json: JsonFlag = False) -> None:
    """The main job on embedded defaults: a small LR x tokens sweep on the stdlib corpus, fits and plots."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.quickstart import run_quickstart  # noqa: PLC0415 (pulls in Ray, scipy, matplotlib)

    # With --json every human-readable line (progress, tables) goes to stderr; stdout carries the JSON only.
    summary = run_quickstart(out, Console(stderr=as_json))
    if as_json:
        print_json(summary)
