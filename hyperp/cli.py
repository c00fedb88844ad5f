"""The `hyperp` command line: subcommands by noun (train, quickstart, bench, sweep, fit, plot)."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperp import bench_cli
from hyperp.fitting import cli as fit_cli
from hyperp.plots import cli as plot_cli
from hyperp.sweeps import cli as sweep_cli
from hyperp.trainer.cli import train_command

app = typer.Typer(help="Scaling-law sweeps and fits for language models trained with HyperP.",
                  no_args_is_help=True, add_completion=False)
app.command("train")(train_command)
app.add_typer(bench_cli.app, name="bench")
app.add_typer(fit_cli.app, name="fit")
app.add_typer(plot_cli.app, name="plot")
app.add_typer(sweep_cli.app, name="sweep")


@app.command()
def quickstart(out: Path = typer.Option(Path("hyperp-quickstart"), "--out", "-o")) -> None:
    """The main job on embedded defaults: a small LR x tokens sweep on the stdlib corpus, fits and plots."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.quickstart import run_quickstart  # noqa: PLC0415 (pulls in Ray)

    run_quickstart(out, Console())


if __name__ == "__main__":
    app()
