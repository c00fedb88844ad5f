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
    import threading  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hyperp.cli.sweep import plain_progress_thread  # noqa: PLC0415
    from hyperp.quickstart import run_quickstart, sweep_dir  # noqa: PLC0415 (pulls in Ray, scipy, matplotlib)

    # With --json every human-readable line (progress, tables) goes to stderr; stdout carries the JSON only.
    console = Console(stderr=as_json)
    live = console.is_terminal  # a bar on a terminal; plain lines on stderr in a log (a bar's last frame is cut)
    stop = threading.Event()
    if not live:
        plain_progress_thread(sweep_dir(out), progress_every, stop)
    try:
        summary = run_quickstart(out, console, progress=live)
    finally:
        stop.set()
    if as_json:
        print_json(summary)
