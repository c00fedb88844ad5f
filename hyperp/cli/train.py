"""`hyperp train`: one run from flags named like the config fields, or a TOML file.

The flags are generated from RunConfig's fields (hyperp.config, pure Python): each shows the field's
own documentation and default, Literal fields show their choices. torch loads only when the command runs.
"""

# No `from __future__ import annotations`: Typer reads the spliced signature's annotations as objects.
import dataclasses
import enum
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer

from hyperp.cli.core import (PLAIN_PROGRESS_S, TRACKER_EXTRAS, TRACKER_METAVAR, JsonFlag, PlainProgress, TrackerName,
                             as_count, duration, print_json)
from hyperp.config import RunConfig, field_types
from hyperp.schema import TRACKING_DIR
from hyperp.tracking import TRAIN_SWEEP, Tracking, check_installed

SKIPPED_FIELDS = {"tags"}  # not a scalar flag; settable from a TOML file
PANEL = "Run config (RunConfig fields; also the axes of a sweep)"


def flag_type(name: str, hint: Any) -> Any:
    """The click-facing type of a field: int/float/bool/str, or an Enum of a Literal's choices."""
    if hint in (int, float, bool, str):
        return hint
    args = [a for a in get_args(hint) if a is not type(None)]
    if args and all(isinstance(a, str) for a in args):  # Literal[...]: shown and checked as choices
        return enum.Enum(name, {a: a for a in args}, type=str)
    return args[0] if args else str


def config_options() -> list[inspect.Parameter]:
    """One keyword option per RunConfig field, default None meaning 'not given on the command line'. Integer
    fields are counts and read as a spec reads them: 1000000, 1_000_000 or 1e6."""
    params = []
    for f in dataclasses.fields(RunConfig):
        if f.name in SKIPPED_FIELDS:
            continue
        kind = flag_type(f.name, field_types()[f.name])
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{f.name.replace('_', '-')}"] if kind is bool else [flag]
        default = "unset" if f.default is None else f.default
        option = typer.Option(None, *decls, help=f"{f.metadata['help']} (default: {default})", show_default=False,
                              rich_help_panel=PANEL, parser=as_count if kind is int else None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params


def config_from_cli(config_file: Optional[Path], values: dict[str, Any]) -> RunConfig:
    base = RunConfig.from_toml(config_file).to_dict() if config_file else {}
    base.update({k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items() if v is not None})
    return RunConfig.from_dict(base, source="command line")


def progress_line(cfg: RunConfig, info) -> str:
    eta = (info.total_steps - info.step) * cfg.batch_tokens / info.tokens_per_s if info.tokens_per_s > 0 else None
    return (f"{cfg.name or cfg.param}: step {info.step}/{info.total_steps}  loss {info.loss:.4f}  "
            f"{info.tokens_per_s:,.0f} tok/s  ETA {duration(eta)}")


def run_with_progress(cfg: RunConfig, out: Optional[Path], console, every_s: float,
                      on_step: Callable[[Any], None] = lambda info: None):
    """Train with a live bar on a terminal, else a plain line every `every_s` seconds; `on_step` sees every step
    too (the trackers of --log-to)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    from hyperp.trainer.loop import train  # noqa: PLC0415

    def both(show: Callable[[Any], None]) -> Callable[[Any], None]:
        return lambda info: (show(info), on_step(info))

    if not console.is_terminal:
        plain = PlainProgress(every_s)
        return train(cfg, out, on_step=both(lambda info: plain(lambda: progress_line(cfg, info),
                                                               force=info.step == info.total_steps)))
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tok"),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(cfg.name or cfg.param, total=cfg.total_steps * cfg.batch_tokens, loss=float("nan"),
                                 tps=0.0)
        return train(cfg, out, on_step=both(lambda info: progress.update(task, completed=info.tokens, loss=info.loss,
                                                                         tps=info.tokens_per_s)))


def train_command(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with run fields "
                                                                 "(flags given override it).")] = None,
                  out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/train"),
                  as_json: JsonFlag = False,
                  progress_every: Annotated[float, typer.Option(
                      help="Seconds between plain progress lines when stderr is not a terminal.")] = PLAIN_PROGRESS_S,
                  log_to: Annotated[Optional[list[TrackerName]], typer.Option(
                      "--log-to", metavar=TRACKER_METAVAR, help="Also log the run (config, each step, final record) to "
                      f"this tracker, offline (repeatable). {TRACKER_EXTRAS}")] = None,
                  tracking_dir: Annotated[Optional[Path], typer.Option(
                      help="Where --log-to's trackers write (tensorboard/, mlflow/, wandb/); default OUT/tracking.")]
                  = None,
                  **fields: Any) -> None:
    """Train one model and write runs.parquet and curves.parquet to --out."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.trainer.data import check_corpus, load_corpus  # noqa: PLC0415

    console = Console(stderr=True)
    tracking = tracking_of(log_to, tracking_dir, out)
    cfg = config_from_cli(config, fields)
    check_corpus(load_corpus(cfg.data, cfg.val_percent), cfg)  # fail on bad data before the progress bar
    if cfg.workers > 1:
        row = run_data_parallel(cfg, out, console, tracking)
    else:
        row = run_tracked(cfg, out, console, progress_every, tracking)
    if as_json:
        print_json(row)
        return
    console.print(f"[bold]{row['status']}[/bold]  val_loss {row['val_loss']:.4f}  params {row['n_params']:,}  "
                  f"flops {row['flops']:.3g}  {row['tokens_per_s']:,.0f} tok/s  MFU {100 * row['mfu']:.1f}%")
    console.print(f"results in {out}/ (runs.parquet, curves.parquet, config.json)")


def tracking_of(log_to: Optional[list], tracking_dir: Optional[Path], out: Path) -> Tracking:
    """--log-to's trackers (each library installed, else exit 2 naming its extra) and where they write."""
    names = tuple(dict.fromkeys(t.value for t in log_to or []))
    check_installed(names, "--log-to")
    return Tracking(names, str(tracking_dir or "")).resolved(out / TRACKING_DIR)


def run_tracked(cfg: RunConfig, out: Path, console, every_s: float, tracking: Tracking) -> dict:
    """Train in this process; with trackers, log the config, every step and the record to them (hyperp.tracking:
    a tracker that cannot write warns once and the run goes on)."""
    if not tracking:
        return run_with_progress(cfg, out, console, every_s).row
    from hyperp import identity  # noqa: PLC0415
    from hyperp.tracking import RunLabel, settle, tracked  # noqa: PLC0415

    label = RunLabel(identity.run_id(cfg), TRAIN_SWEEP, identity.cell_id(cfg))
    try:
        with tracked(tracking, label, cfg.to_dict()) as trackers:
            row = run_with_progress(cfg, out, console, every_s, trackers.on_step).row
            trackers.log_final(row)
    finally:
        settle(tracking)  # every tracker's file complete when the command returns
    return row


def train_row(cfg: RunConfig, out_dir: str) -> dict:
    """The run function of `train --workers N` (module level: Ray Train's workers import it by name)."""
    from hyperp.trainer.loop import train  # noqa: PLC0415

    return train(cfg, out_dir).row


def run_data_parallel(cfg: RunConfig, out: Path, console, tracking: Tracking = Tracking()) -> dict:
    """`cfg.workers` Ray Train workers on a local Ray (one GPU each when the run trains on CUDA); rank 0's row,
    logged to the trackers by rank 0 once it has trained."""
    from hyperp import identity  # noqa: PLC0415
    from hyperp.sweeps.cluster import data_parallel_resources, train_data_parallel  # noqa: PLC0415
    from hyperp.sweeps.worker import TrackedRun  # noqa: PLC0415

    res = data_parallel_resources(cfg)
    console.print(f"training on {cfg.workers} Ray Train workers of {res.cpus:g} CPUs{' and 1 GPU' if res.gpus else ''}")
    run_fn = TrackedRun(train_row, tracking, TRAIN_SWEEP, identity.cell_id(cfg), identity.run_id(cfg)) \
        if tracking else train_row
    return train_data_parallel(run_fn, cfg, out, res)


# Typer reads the signature: splice one option per config field in place of **fields.
_sig = inspect.signature(train_command)
train_command.__signature__ = _sig.replace(
    parameters=[p for p in _sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD] + config_options())
