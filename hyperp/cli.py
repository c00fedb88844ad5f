"""The `hyperp` command line: subcommands by noun (train, quickstart, bench, sweep, fit, plot)."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperp import bench_cli
from hyperp.fitting import cli as fit_cli
from hyperp.plots import cli as plot_cli
from hyperp.sweeps import cli as sweep_cli
from hyperp.trainer.cli import run_with_progress, print_result, train_command
from hyperp.trainer.config import RunConfig

app = typer.Typer(help="Scaling-law sweeps and fits for language models trained with HyperP.",
                  no_args_is_help=True, add_completion=False)
app.command("train")(train_command)
app.add_typer(bench_cli.app, name="bench")
app.add_typer(fit_cli.app, name="fit")
app.add_typer(plot_cli.app, name="plot")
app.add_typer(sweep_cli.app, name="sweep")


@app.command()
def quickstart(out: Path = typer.Option(Path("hyperp-quickstart"), "--out", "-o")) -> None:
    """The main job on embedded defaults: one small HyperP run on the stdlib corpus."""
    cfg = RunConfig(name="quickstart", depth=2, tokens=2**19, batch_tokens=4096, seq_len=128)
    print_result(run_with_progress(cfg, out / "train"), as_json=False)


if __name__ == "__main__":
    app()
