"""Sweeps of any training command: a spec's `[command]` table, its per-run config and its run function.

A command sweep's runs are `CommandConfig`s instead of `RunConfig`s: the command template, its working
directory and environment, and the run's resolved `values` (every [base]/[axes]/[[zip]]/[[override]] value,
`lr` and `seed` included). A CommandConfig offers what the sweep machinery reads from a run's config (`lr`,
`seed`, `replace`, `to_json`, `workers`, `threads`, `device`, `tags`, its ids), so the driver, the LR searches
and the ledger treat both alike.

`command_run(cfg, out_dir)` is the run function the plan picks for such a sweep: it formats the template
(each placeholder's value passed through `shlex.quote`, then split with `shlex`), runs it with stdout and
stderr in `out_dir/stdout.txt` and `stderr.txt`, and reads `out_dir/result.json`:

- exit 0 with a result holding the metric (or `"status": "diverged"`) -> the result's keys, as a ledger row;
- a non-zero exit -> `CommandError("command exited with status N: <last stderr line>")`, a `failed` run whose
  error.txt holds the last STDERR_TAIL_LINES lines of stderr;
- killed by a signal -> UnavailableError, an `infra_failed` run that the next `sweep run` retries;
- past `timeout_s` -> killed (its whole process group) and `failed` with "timed out after N s";
- a program that cannot be started -> `failed`, "command exited with status 127: cannot start ...";
- the worker process dies, even by SIGKILL -> the command's process group is killed with it (on Linux:
  hyperp/sweeps/guard.py), and the run, never recorded, is resumed by the next `sweep run`;
- exit 0 but no usable result.json or curves.jsonl -> `failed`, the error naming the file, error.txt the tail;
- `out_dir/curves.jsonl` (optional, one JSON object per line with at least `step`) -> curves.parquet.

This module imports no torch and no spec code (hyperp.sweeps.spec and hyperp.sweeps.plan import it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperp import identity, io, schema
from hyperp.errors import UnavailableError

KIND = identity.COMMAND_KIND  # the `kind` key of a CommandConfig's JSON
RESULT_FILE = "result.json"
COMMAND_CURVES_FILE = "curves.jsonl"
STDOUT_FILE, STDERR_FILE = "stdout.txt", "stderr.txt"
STDERR_TAIL_LINES = 50  # lines of stderr kept in error.txt of a failed command
BUILTINS = ("out_dir", "run_id", "here")  # placeholders every run has besides its values
EMPTY_STDERR = "(the command wrote nothing to stderr)"
GUARD = str(Path(__file__).with_name("guard.py"))  # runs the command; kills it if this process dies
RESULT_STATUSES = (schema.COMPLETED, schema.DIVERGED)


class CommandError(RuntimeError):
    """A command failed; `details` is what error.txt keeps (the tail of its stderr)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


# ---------------------------------------------------------------- templates


def placeholders(template: str) -> Iterator[tuple[str, str | None, str, str | None]]:
    """(literal text, name, format spec, conversion) of each piece of a `str.format` template; name is None
    for text after the last placeholder ("" for a positional {}). Raises ValueError for a malformed template
    (an unmatched brace)."""
    for literal, name, spec, conversion in string.Formatter().parse(template):
        yield literal, name, spec or "", conversion


def names(template: str) -> list[str]:
    """The placeholder names of a template, in order of first use."""
    return list(dict.fromkeys(name for _, name, _, _ in placeholders(template) if name))


def fill(template: str, values: dict[str, Any], quote: bool) -> str:
    """The template with each placeholder replaced by its value (formatted by its spec), shell-quoted when
    `quote` (for a command line that is then split)."""
    formatter = string.Formatter()
    out = []
    for literal, name, spec, conversion in placeholders(template):
        out.append(literal)
        if name is not None:
            text = format(formatter.convert_field(values[name], conversion), spec)
            out.append(shlex.quote(text) if quote else text)
    return "".join(out)


# ---------------------------------------------------------------- the config


@dataclass(frozen=True)
class CommandConfig:
    """One run of a command sweep. `template`, `values`, `cwd` and `env` (as written in the spec) make its
    identity; `here` (the spec's directory), `workdir` (the resolved working directory), `timeout_s` and
    `metric` only say how and where it runs."""

    template: str
    values: dict[str, Any]
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    metric: str = "val_loss"
    here: str = ""
    workdir: str = ""
    # what the runner reads from any run config: one process, the resources' threads, GPUs hidden unless asked
    workers = 1
    threads = 0
    device = "auto"

    @property
    def tags(self) -> dict[str, str]:
        """None: a command's settings are its values (a RunConfig's custom run functions read tags)."""
        return {}

    @property
    def lr(self) -> float | None:
        return self.values.get("lr")

    base_lr = lr

    @property
    def seed(self) -> int:
        return self.values.get("seed", 0)

    def replace(self, **values: Any) -> CommandConfig:
        """The same command with some values replaced (the searches' `lr=...`, `seed=...`)."""
        return dataclasses.replace(self, values=self.values | values)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "template": self.template, "values": self.values, "cwd": self.cwd, "env": self.env,
                "timeout_s": self.timeout_s, "metric": self.metric, "here": self.here, "workdir": self.workdir}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CommandConfig:
        return cls(**{k: v for k, v in d.items() if k != "kind"})

    def run_id(self, tag: str = "") -> str:
        return identity.command_run_id(self.template, self.values, tag, cwd=self.cwd, env=self.env)

    def cell_id(self, tag: str = "") -> str:
        return identity.command_cell_id(self.template, self.values, tag, cwd=self.cwd, env=self.env)

    def config_columns(self) -> dict[str, Any]:
        """Ledger columns before the run: its values (a schema column when named like one, else extra_json)."""
        return self.values | {"config_json": self.to_json()}

    def placeholder_values(self, out_dir: str | Path) -> dict[str, Any]:
        return self.values | {"out_dir": str(out_dir), "run_id": Path(out_dir).name, "here": self.here}

    def argv(self, out_dir: str | Path) -> list[str]:
        return shlex.split(fill(self.template, self.placeholder_values(out_dir), quote=True))

    def environ(self, out_dir: str | Path) -> dict[str, str]:
        """os.environ with the spec's variables (their placeholders filled) over it."""
        values = self.placeholder_values(out_dir)
        return dict(os.environ) | {k: fill(v, values, quote=False) for k, v in self.env.items()}


def is_command_json(values: Any) -> bool:
    return isinstance(values, dict) and values.get("kind") == KIND


def config_from_json(text: str):
    """The config a run's `config_json` holds: a CommandConfig, or a RunConfig."""
    from hyperp.config import RunConfig  # noqa: PLC0415

    values = json.loads(text)
    return CommandConfig.from_dict(values) if is_command_json(values) else RunConfig.from_dict(values)


# ---------------------------------------------------------------- the run function


def command_run(cfg: CommandConfig, out_dir: str) -> dict[str, Any]:
    """Run the command once in `out_dir` and return its ledger row (see the module docstring)."""
    out = Path(out_dir)
    for name in (RESULT_FILE, COMMAND_CURVES_FILE):  # never read an earlier attempt's result
        (out / name).unlink(missing_ok=True)
    start = time.perf_counter()
    returncode = run_process(cfg, out)
    wall = time.perf_counter() - start
    if returncode < 0:
        raise UnavailableError(f"command killed by signal {signal.Signals(-returncode).name}")
    if returncode > 0:
        tail = stderr_tail(out)
        last = next(line.strip() for line in reversed(tail.splitlines()) if line.strip())
        raise CommandError(f"command exited with status {returncode}: {last}", tail)
    try:
        result = read_result(out / RESULT_FILE, cfg.metric)
        write_curves(out, out.name)
    except CommandError as e:  # error.txt: what the command said on its way out
        e.details = stderr_tail(out)
        raise
    return cfg.values | {"wall_time_s": wall} | result


def run_process(cfg: CommandConfig, out: Path) -> int:
    """The command's exit status (negative: the signal that killed it), stdout and stderr in out/. It runs
    in a session of its own under hyperp/sweeps/guard.py, killed whole on a timeout, when the run is interrupted
    (a cancelled sweep), or when this process dies (the guard's kernel request)."""
    argv = cfg.argv(out)
    if not argv:
        raise CommandError("command.run: the command is empty")
    env = cfg.environ(out) | {"HYPERP_GUARD_PARENT": str(os.getpid())}
    with open(out / STDOUT_FILE, "wb") as stdout, open(out / STDERR_FILE, "wb") as stderr:
        try:
            proc = subprocess.Popen([sys.executable, GUARD, *argv], cwd=cfg.workdir or None, env=env,
                                    stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise CommandError(f"cannot start {argv[0]!r}: {e.strerror or e}") from None
        try:
            return proc.wait(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            raise CommandError(f"timed out after {cfg.timeout_s:g} s", stderr_tail(out)) from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def stderr_tail(out: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last `lines` non-blank lines of the command's stderr, or a line saying there were none."""
    try:
        text = (out / STDERR_FILE).read_text(errors="replace")
    except OSError:
        text = ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) + "\n" if kept else EMPTY_STDERR + "\n"


def _strict(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (write null for a missing value)")


def read_json_object(path: Path) -> dict[str, Any]:
    """A strict JSON object (no NaN or Infinity); CommandError naming the file otherwise."""
    try:
        value = json.loads(path.read_text(), parse_constant=_strict)
    except FileNotFoundError:
        raise CommandError(f"{path.name}: the command exited 0 but wrote no {path.name}") from None
    except (OSError, ValueError) as e:
        raise CommandError(f"{path.name}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise CommandError(f"{path.name}: expected a JSON object, got {type(value).__name__}")
    return value


def read_result(path: Path, metric: str) -> dict[str, Any]:
    """The result's keys, checked: `status` completed (default) or diverged, the metric a number unless
    diverged, every key named like a ledger column of that column's type."""
    result = read_json_object(path)
    status = result.setdefault("status", schema.COMPLETED)
    if status not in RESULT_STATUSES:
        raise CommandError(f"{path.name}: status {status!r}; expected one of {', '.join(RESULT_STATUSES)}")
    value = result.get(metric)
    if status == schema.COMPLETED and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise CommandError(f"{path.name}: no number under {metric!r} (the sweep's metric); got {value!r}")
    for key, value in result.items():
        if key in schema.COLUMN_TYPES:
            try:
                schema.coerce(key, schema.COLUMN_TYPES[key], value)
            except (ValueError, TypeError) as e:
                raise CommandError(f"{path.name}: {e}") from None
    return result


def write_curves(out: Path, run_id: str) -> None:
    """out/curves.jsonl (when the command wrote one) as curves.parquet with a first run_id column, atomically."""
    path = out / COMMAND_CURVES_FILE
    if not path.is_file():
        return
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=lambda c: math.nan)
        except ValueError as e:
            raise CommandError(f"{path.name}: line {i} is not JSON ({e})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise CommandError(f"{path.name}: line {i} is not a JSON object with a step")
        rows.append({"run_id": run_id} | row)
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError) as e:
        raise CommandError(f"{path.name}: a key changes type between lines ({e})") from None
    io.atomic_write(out / schema.CURVES_FILE, lambda p: pq.write_table(table, p))
