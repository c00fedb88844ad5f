"""What every `hyperp` command shares: one error style, one strict-JSON printer, one exception -> exit code map.

Exit codes follow the table in hyperp/errors.py (README "Exit codes"). Every Typer app of the CLI is built by
`new_app`, whose group class maps exceptions to those codes, so a command only raises:

- `InputError` (bad flag, spec, config, data, table): `error: <message>` on stderr, exit 2, nothing written;
- `UnavailableError` (lock held, cluster too small or unreachable, disk full): exit 3;
- `KeyboardInterrupt` (Ctrl-C): exit 130; `hyperp.errors.Terminated` (SIGTERM): exit 143.

This module imports only typer/click and the standard library, so building the CLI stays fast.
"""

from __future__ import annotations

import enum
import math
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from hyperp import io
from hyperp.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_UNAVAILABLE, InputError,
                           Terminated, UnavailableError)
from hyperp.tracking import TRACKERS

def error(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: <message>` (one line, no markup) on stderr and exit with `code`."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


strict = io.jsonable  # one converter for every JSON the CLI prints (hyperp.io: also the fitting reports')
json_text = io.json_text  # strict JSON text; kept here for the commands that import it from hyperp.cli.core


def print_json(obj: Any, indent: int | None = 2) -> None:
    sys.stdout.write(json_text(obj, indent) + "\n")
    sys.stdout.flush()


def exit_code_of(exc: BaseException) -> int | None:
    """The documented exit code of an exception, or None for one the CLI does not map (a bug: traceback)."""
    if isinstance(exc, InputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, UnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    return None


def map_errors(invoke):
    """Run a click invoke, turning the documented exceptions into their message and exit code."""
    try:
        return invoke()
    except (InputError, UnavailableError) as e:
        error(str(e), exit_code_of(e))
    except KeyboardInterrupt:
        error("interrupted; run the same command again to resume", EXIT_INTERRUPTED)
    except Terminated:
        error("terminated; run the same command again to resume", EXIT_TERMINATED)
    except Exception as e:
        if is_usage_error(e):  # a subcommand's flag parsed by click: same one-line style, exit 2
            error(e.format_message(), EXIT_BAD_INPUT)
        raise


def is_usage_error(e: Exception) -> bool:
    """click's bad-flag errors (typer may vendor its own click, so matched by behaviour, not class)."""
    if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: click prints its help, not an error
        return False
    return hasattr(e, "format_message") and getattr(e, "exit_code", None) == EXIT_BAD_INPUT


class ExitCodes:
    """Mixed into a click command or group: parse errors and exceptions follow the exit-code table (one
    `error:` line), and flags show no `<bool>` metavar (a flag takes no value)."""

    def invoke(self, ctx):
        return map_errors(lambda: super(ExitCodes, self).invoke(ctx))

    def parse_args(self, ctx, args):
        return map_errors(lambda: super(ExitCodes, self).parse_args(ctx, args))

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False):
                p.metavar = ""
        return params


class Command(ExitCodes, TyperCommand):
    """A `hyperp` command."""


class Group(ExitCodes, TyperGroup):
    """A `hyperp` command group."""


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer app of the `hyperp` CLI: shared group/command classes, help on no arguments, no completion."""
    kwargs.setdefault("cls", Group)
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, **kwargs)


def command(app: typer.Typer, name: str | None = None, **kwargs: Any):
    """`@app.command(...)` with the CLI's command class."""
    return app.command(name, cls=Command, **kwargs)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as strict JSON (NaN and infinities as null).")]

# The trackers of `train --log-to` and `export --to` (hyperp.tracking), as choices; "\\[" is a bracket, not rich markup
TrackerName = enum.Enum("TrackerName", {n: n for n in TRACKERS}, type=str)
TRACKER_METAVAR = "|".join(TRACKERS)
TRACKER_EXTRAS = 'Each needs its extra: pip install "hyperp\\[tensorboard]" (or \\[wandb], \\[mlflow]).'


def as_count(text: str) -> int:
    """The parser of every count option (tokens, sizes, steps): 1000000, 1_000_000 or 1e6, as a spec reads a
    count (`hyperp.config.parse_count`); anything else is click's one-line error naming the option,
    exit 2. Use as `typer.Option(parser=as_count)`."""
    from hyperp.config import parse_count  # noqa: PLC0415

    try:
        return parse_count(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None

# The nouns of `hyperp`: module of each sub-app and its one-line help. hyperp.cli imports a sub-app's module
# only when that noun is used, so `hyperp --help` never loads the libraries behind them.
SUBAPPS: dict[str, tuple[str, str]] = {
    "sweep": ("hyperp.cli.sweep", "Declarative sweeps: plan, run on Ray (local or a cluster), watch, inspect."),
    "fit": ("hyperp.cli.fit", "Fit scaling laws to a runs table (Parquet, CSV or sweep directory)."),
    "plot": ("hyperp.cli.plot", "Draw paper figures (PNG, SVG or PDF by the output suffix) from a runs table."),
    "bench": ("hyperp.cli.bench", "Benchmarks (figures measured in this run, never timed tests)."),
    "check": ("hyperp.cli.check", "HyperP's claims as checks (coord, transfer, sphere, stability, head, moe-rms), each "
                                  "with a verdict and its thresholds."),
    "report": ("hyperp.cli.report", "A study report of sweeps from their ledgers (one HTML file, or Markdown with "
                                    "PNGs): spec, statuses, LR optima, checks, fits, figures."),
    "design": ("hyperp.cli.design", "Which runs would decide a question (an interval), for a compute budget."),
    "predict": ("hyperp.cli.predict", "Optimal LRs and loss at a target shape and budget from a sweep's laws."),
    "export": ("hyperp.cli.export", "Write a sweep's runs (config, curves, final record) to TensorBoard, MLflow or "
                                    "W&B, offline."),
    "data": ("hyperp.cli.data", "Corpora for the trainer: `data prepare` trains a BPE tokenizer and writes token "
                                "shards."),
}

PLAIN_PROGRESS_S = 30.0  # seconds between plain progress lines when stderr is not a terminal (batch logs)


def duration(s: float | None) -> str:
    """A short human duration: 42.0s, 3.5min, 2.1h; '?' when unknown."""
    if s is None or not math.isfinite(s):
        return "?"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


class PlainProgress:
    """Plain progress lines on stderr at most every `every_s` seconds (no bar, no cursor moves), for logs."""

    def __init__(self, every_s: float = PLAIN_PROGRESS_S):
        import time  # noqa: PLC0415

        self.clock = time.monotonic
        self.every_s = every_s
        self.last = self.clock()

    def __call__(self, line_fn, force: bool = False) -> None:
        now = self.clock()
        if force or now - self.last >= self.every_s:
            self.last = now
            typer.echo(line_fn(), err=True)
