"""`hyperp train`: one run from flags named like the config fields, or a TOML file, with rich progress."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, get_args

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from hyperp.trainer.config import ConfigError, RunConfig, field_types
from hyperp.trainer.data import DataError, load_corpus
from hyperp.trainer.loop import RunResult, StepInfo, check_corpus, train

console = Console(stderr=True)
SKIPPED_FIELDS = {"tags"}  # not a scalar flag; settable from a TOML file


def flag_type(hint: Any) -> type:
    args = [a for a in get_args(hint) if a is not type(None)]
    if hint in (int, float, bool, str):
        return hint
    if args and all(isinstance(a, str) for a in args):  # Literal[...]
        return str
    return args[0] if args else str


def config_options() -> list[inspect.Parameter]:
    """One keyword option per RunConfig field, default None meaning 'not given on the command line'."""
    params = []
    for name, hint in field_types().items():
        if name in SKIPPED_FIELDS:
            continue
        kind = flag_type(hint)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        option = typer.Option(None, *decls, help=f"RunConfig.{name}", show_default=False, rich_help_panel="Run config")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]))
    return params


def config_from_cli(config_file: Path | None, values: dict[str, Any]) -> RunConfig:
    base = RunConfig.from_toml(config_file).to_dict() if config_file else {}
    base.update({k: v for k, v in values.items() if v is not None})
    return RunConfig.from_dict(base, source="command line")


def run_with_progress(cfg: RunConfig, out: Path | None) -> RunResult:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tok"),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(cfg.name or cfg.param, total=cfg.total_steps * cfg.batch_tokens, loss=float("nan"), tps=0.0)

        def on_step(info: StepInfo) -> None:
            progress.update(task, completed=info.tokens, loss=info.loss, tps=info.tokens_per_s)

        return train(cfg, out, on_step=on_step)


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def train_command(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with run fields"),
                  out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="output directory"),
                  as_json: bool = typer.Option(False, "--json", help="print the result row as JSON"),
                  **fields: Any) -> None:
    """Train one model and write runs.parquet and curves.parquet to --out."""
    try:
        cfg = config_from_cli(config, fields)
        check_corpus(load_corpus(cfg.data, cfg.val_percent), cfg)  # fail on bad data before the progress bar
        result = run_with_progress(cfg, out)
    except (ConfigError, DataError) as e:
        fail(str(e))
    print_result(result, as_json)


def print_result(result: RunResult, as_json: bool) -> None:
    row = result.row
    if as_json:
        sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    console.print(f"[bold]{row['status']}[/bold]  val_loss {row['val_loss']:.4f}  params {row['n_params']:,}  "
                  f"flops {row['flops']:.3g}  {row['tokens_per_s']:,.0f} tok/s  MFU {100 * row['mfu']:.1f}%")
    if result.out_dir is not None:
        console.print(f"results in {result.out_dir}/ (runs.parquet, curves.parquet, config.json)")


# Typer reads the signature: splice one option per config field in place of **fields.
_sig = inspect.signature(train_command)
train_command.__signature__ = _sig.replace(
    parameters=[p for p in _sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD] + config_options())
