"""`hyperp export SWEEP --to tensorboard|mlflow|wandb [-o DIR]`: a sweep's ledger written to trackers, offline
(hyperp.sweeps.export; the layout under DIR is hyperp.tracking's). Read-only on the sweep directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import (SUBAPPS, TRACKER_EXTRAS, TRACKER_METAVAR, JsonFlag, TrackerName, command, duration,
                             new_app, print_json)

app = new_app(SUBAPPS["export"][1])  # one command: typer makes `hyperp export` that command itself

DEFAULT_OUT = Path("tracking")
VIEW = {"tensorboard": "tensorboard --logdir {out}/tensorboard",
        "mlflow": "mlflow ui --backend-store-uri sqlite:///{out}/mlflow/mlflow.db",
        "wandb": "wandb sync {out}/wandb/offline-run-*"}


@command(app, "export")
def export_command(sweep: Annotated[Path, typer.Argument(help="A sweep directory (or the spec it was run from, "
                                                              "its directory under ./sweeps).")],
                   to: Annotated[list[TrackerName], typer.Option(
                       "--to", metavar=TRACKER_METAVAR, help=f"Tracker to write to (repeatable). {TRACKER_EXTRAS}")],
                   out: Annotated[Path, typer.Option("--out", "-o", help="Directory the trackers write under "
                                                                        "(tensorboard/, mlflow/, wandb/).")]
                   = DEFAULT_OUT,
                   as_json: JsonFlag = False) -> None:
    """Write every run of SWEEP's ledger (config, step curves, final record) to trackers under -o, grouped by
    sweep and cell under each run's id; nothing in the sweep directory is written."""
    from hyperp.sweeps.export import export_sweep  # noqa: PLC0415
    from hyperp.sweeps.ledger import find_sweep_dir  # noqa: PLC0415

    names = tuple(dict.fromkeys(t.value for t in to))
    res = export_sweep(find_sweep_dir(sweep, Path("sweeps")), names, out)
    if as_json:
        print_json(res)
        return
    typer.echo(f"exported {res['runs']} runs ({res['steps']:,} steps) of {res['sweep']} to {', '.join(names)} "
               f"under {out} in {duration(res['seconds'])}")
    for name in names:
        typer.echo(f"  {name}: {VIEW[name].format(out=out.resolve())}")
