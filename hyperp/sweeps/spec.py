"""Sweep specs: a TOML file that names a study, parsed, validated and expanded into runs before anything runs.

Format (every key but `name` and `[base]` is optional; see examples/*.toml)::

    name = "lr_tokens"              # the sweep directory is <root>/<name>; letters, digits, - _ .
    description = "free text"
    version_tag = ""                # bump to give every run a new id (e.g. after changing the data)
    max_retries = 3                 # retries of a run after an infra failure (worker/node lost, killed)
    max_concurrent = 0              # runs in flight at once; 0: as many as the resources allow
    checkpoints_per_run = 10        # sets checkpoint_every = ceil(steps / this) when the run config has none
    tokens_per_param_basis = "active"   # N used by tokens_per_param: total | active | non_embedding | active_matrix
    max_runs = 100000               # refuse a larger grid (counted before it is built); raise it on purpose

    [base]                          # a run config: every field `hyperp train` takes (RunConfig)
    depth = 2
    aspect_ratio = 32
    head_dim = 16

    [axes]                          # crossed: one run per combination, first axis slowest
    depth = [2, 4]                  # any RunConfig field can be an axis
    tokens_per_param = [10, 20]     # T follows N: tokens = round(tpp * N / batch_tokens) * batch_tokens;
                                    # "proxy": T = base_tokens * N / N(proxy), the authors' co-scaling
    lr = [0.01, 0.02, 0.04]         # or an LR search table, see below
    param = ["hyperp", "adamw"]

    [[zip]]                         # tied axes: equal-length lists that move together, crossed with the rest
    seq_len = [64, 128]
    batch_tokens = [1024, 2048]

    [[override]]                    # for the runs matching `where`, replace fields by `set`
    where = { param = "adamw" }     # a value, or a list of accepted values, per field
    set = { lr = [1e-3, 3e-3, 1e-2], weight_decay = 0.0 }   # a list re-expands that field for the subset

    [resources]                     # per run
    cpus = 1                        # torch threads of the run follow this (at least 1)
    gpus = 0.25                     # fractional GPUs let small runs share a device
    reuse_workers = true            # warm worker processes across runs; false: a fresh process per run

LR search per cell (a cell is a run config minus `lr`); in `[axes]`, `[base]` or an override's `set`::

    lr = { search = "bracket", grid = [0.005, 0.01, 0.02], max_extend = 3 }
    lr = { search = "bracket", low = 0.005, high = 0.08, points = 5 }     # log-spaced grid
    lr = { search = "optuna", trials = 12, low = 1e-3, high = 0.1, parallel = 2, seed = 0 }
    lr = { search = "bracket", grid = [0.005, 0.01, 0.02], seeds = 3 }    # + the best LR with 2 more seeds

Bracket: run the coarse log grid; while the cell's best LR (lowest `metric`, default `val_loss`; a diverged
run counts as +inf, a failed one is ignored) is the lowest or highest grid point, add one point beyond that
edge at the grid's edge spacing, at most `max_extend` times; stop when the best point is interior
("bracketed"). Optuna: a study per cell (TPE by default, `sampler = "random"` also allowed) over log-uniform
[low, high], asked and told by the driver, `parallel` trials of a cell in flight at once, stored in
`<sweep>/optuna.db` so an interrupted search resumes. Diverged and failed trials are told as FAIL.
`seeds = n` (either search): once the cell's search is done with a finite best, that LR runs again with
the seeds seed + 1 ... seed + n - 1 (the noise floor of `hyperp check transfer`); the best is decided by the
search's own runs only, so the repeats never move it or re-open the search.

A `[command]` table (hyperp/sweeps/command.py, README "Command sweeps") makes each run a command of the user's:
`run = "python train.py --lr {lr} --out {out_dir}"`, optional `cwd`, `env`, `timeout_s`. [base], [axes],
[[zip]] and [[override]] then hold any names with TOML scalar values (`COMMAND_RULES` instead of the RunConfig
checks), every run becomes a `CommandConfig`, and a placeholder without a value is refused here.

Precedence when building a run: RunConfig defaults < [base] < [axes] < [[zip]] < [[override]] (in file
order). `tokens` and `tokens_per_param` replace each other: whichever is set later wins. Every field is
checked against RunConfig (name and type) and every resolved run with `RunConfig.from_dict`, so a typo, a
wrong type, an empty axis or an unknown scheme fails here, naming the field (e.g. `axes.dpeth`), before any
run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hyperp import schema
from hyperp.errors import close_match
from hyperp.sweeps import command as cmd
from hyperp.sweeps import identity
from hyperp.sweeps.command import CommandConfig
from hyperp.config import ConfigError, RunConfig, coerce

RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))
EXTRA_FIELDS = ("tokens_per_param",)  # spec-only fields that resolve into RunConfig fields
# tokens_per_param = "proxy": the authors' rule T = T0 N / N0 (ArchScale's pretrain.py), tokens co-scaled with
# the parameters from the proxy's (base_tokens at base_depth/base_width), N counted by tokens_per_param_basis.
PROXY_TOKENS = "proxy"
TOP_KEYS = ("name", "description", "version_tag", "max_retries", "max_concurrent", "checkpoints_per_run",
            "tokens_per_param_basis", "max_runs", "base", "axes", "zip", "override", "resources", "command")
DEFAULT_MAX_RUNS = 100_000  # a larger grid is almost always a typo; it would take minutes to expand in memory
SEARCHES = ("bracket", "optuna")
METRICS = ("val_loss", "best_val_loss", "train_loss")
SAMPLERS = ("tpe", "random")
TOKENS_BASES = ("total", "active", "non_embedding", "active_matrix")  # ParamCounts attributes
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ConfigError):
    """A sweep spec is invalid; `.field` is the dotted location (e.g. `axes.depth`)."""


def _msg(e: ConfigError) -> str:
    return str(e)[len(e.field) + 2:] if str(e).startswith(f"{e.field}: ") else str(e)


# ---------------------------------------------------------------- searches


@dataclass(frozen=True)
class BracketSearch:
    grid: tuple[float, ...]
    max_extend: int = 3
    metric: str = "val_loss"
    seeds: int = 1  # runs at the best LR in all, once the search is done: the cell's seed, seed + 1, ...
    kind: str = "bracket"

    def to_dict(self) -> dict[str, Any]:
        return {"search": "bracket", "grid": list(self.grid), "max_extend": self.max_extend, "metric": self.metric,
                "seeds": self.seeds}


@dataclass(frozen=True)
class OptunaSearch:
    trials: int
    low: float
    high: float
    parallel: int = 2
    seed: int = 0
    sampler: str = "tpe"
    metric: str = "val_loss"
    seeds: int = 1  # as for BracketSearch, at the best finished trial's LR
    kind: str = "optuna"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["search"] = d.pop("kind")
        return d


Search = BracketSearch | OptunaSearch


def log_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """`points` log-spaced values from low to high, rounded to 6 significant digits."""
    if points == 1:
        return (nice(low),)
    step = (math.log(high) - math.log(low)) / (points - 1)
    return tuple(nice(math.exp(math.log(low) + i * step)) for i in range(points))


def nice(x: float) -> float:
    return float(f"{x:.6g}")


def _number(where: str, value: Any, *, integer: bool = False, positive: bool = True, minimum: float | None = None) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise SpecError(where, f"expected {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(where, f"expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise SpecError(where, f"must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(where, f"must be >= {minimum}, got {value!r}")
    return int(value) if integer else float(value)


def _choice(where: str, value: Any, allowed: tuple[str, ...], what: str = "value") -> str:
    if value not in allowed:
        raise SpecError(where, f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def parse_search(table: dict[str, Any], where: str) -> Search:
    if "search" not in table:
        raise SpecError(f"{where}.search", f"an LR table needs `search`, one of {', '.join(SEARCHES)} "
                                           "(or give lr as a list of values)")
    kind = _choice(f"{where}.search", table["search"], SEARCHES, "search")
    allowed = {"bracket": ("search", "grid", "low", "high", "points", "max_extend", "metric", "seeds"),
               "optuna": ("search", "trials", "low", "high", "parallel", "seed", "sampler", "metric", "seeds")}[kind]
    for key in table:
        if key not in allowed:
            raise SpecError(f"{where}.{key}", f"unknown key for search = {kind!r}{close_match(key, allowed)}; "
                                              f"expected one of {', '.join(allowed)}")
    metric = _choice(f"{where}.metric", table.get("metric", "val_loss"), METRICS, "metric")
    seeds = _number(f"{where}.seeds", table.get("seeds", 1), integer=True, minimum=1)
    if kind == "bracket":
        max_extend = _number(f"{where}.max_extend", table.get("max_extend", 3), integer=True, positive=False, minimum=0)
        if "grid" in table:
            if any(k in table for k in ("low", "high", "points")):
                raise SpecError(f"{where}.grid", "give either grid or low/high/points, not both")
            grid = table["grid"]
            if not isinstance(grid, list) or len(grid) < 2:
                raise SpecError(f"{where}.grid", f"expected a list of at least 2 learning rates, got {grid!r}")
            values = tuple(sorted({_number(f"{where}.grid", v) for v in grid}))
            if len(values) < 2:
                raise SpecError(f"{where}.grid", f"needs at least 2 distinct learning rates, got {grid!r}")
        else:
            missing = [k for k in ("low", "high") if k not in table]
            if missing:
                raise SpecError(f"{where}.{missing[0]}", "a bracket search needs grid = [...] or low, high (and points)")
            low, high = _number(f"{where}.low", table["low"]), _number(f"{where}.high", table["high"])
            points = _number(f"{where}.points", table.get("points", 5), integer=True, minimum=2)
            if not low < high:
                raise SpecError(f"{where}.high", f"must be greater than low ({low}), got {high}")
            values = log_grid(low, high, points)
        return BracketSearch(grid=values, max_extend=max_extend, metric=metric, seeds=seeds)
    for key in ("trials", "low", "high"):
        if key not in table:
            raise SpecError(f"{where}.{key}", "an optuna search needs trials, low and high")
    low, high = _number(f"{where}.low", table["low"]), _number(f"{where}.high", table["high"])
    if not low < high:
        raise SpecError(f"{where}.high", f"must be greater than low ({low}), got {high}")
    return OptunaSearch(trials=_number(f"{where}.trials", table["trials"], integer=True),
                        low=low, high=high,
                        parallel=_number(f"{where}.parallel", table.get("parallel", 2), integer=True),
                        seed=_number(f"{where}.seed", table.get("seed", 0), integer=True, positive=False),
                        sampler=_choice(f"{where}.sampler", table.get("sampler", "tpe"), SAMPLERS, "sampler"),
                        metric=metric, seeds=seeds)


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Override:
    where: dict[str, tuple[Any, ...]]  # field -> accepted values
    set: dict[str, list[Any]]  # field -> values to cross (one value: a fixed setting)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    # True: Ray's worker processes stay warm across CPU runs (torch, the corpus and the optimizer's imports
    # paid once per worker); False: a fresh process per run (for run functions that leak global state).
    # GPU runs always get a fresh process (Ray's default for GPU tasks: the device's memory is released).
    reuse_workers: bool = True

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))


@dataclass(frozen=True)
class CommandSpec:
    """A spec's `[command]` table: the template and how to run it (see hyperp.sweeps.command)."""

    run: str
    cwd: str = ""  # as written; resolved into `workdir`
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    here: str = ""  # the spec file's directory ({here}); the directory `sweep run` runs in for a spec from text
    workdir: str = ""  # where the command runs: cwd against `here`, or the directory `sweep run` runs in


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    axes: dict[str, list[Any] | Search] = field(default_factory=dict)
    zips: list[dict[str, list[Any]]] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 3
    max_concurrent: int = 0
    checkpoints_per_run: int = 10
    tokens_per_param_basis: str = "active"
    max_runs: int = DEFAULT_MAX_RUNS
    version_tag: str = ""
    description: str = ""
    text: str = ""  # the TOML as given
    source: str = "spec"
    command: CommandSpec | None = None  # [command]: runs are CommandConfigs, [base]/[axes] hold any names


def _check_field(name: str, where: str) -> None:
    if name not in RUN_FIELDS and name not in EXTRA_FIELDS:
        known = RUN_FIELDS + EXTRA_FIELDS
        raise SpecError(where, f"unknown run config field {name!r}{close_match(name, known)}; "
                               f"known fields: {', '.join(sorted(known))}")


def _check_value(name: str, value: Any, where: str) -> Any:
    """Type-check one value of a field; an `lr` table is an LR search."""
    if name == "tokens_per_param":
        return value if value == PROXY_TOKENS else _number(where, value)
    if name == "lr" and isinstance(value, dict):
        return parse_search(value, where)
    if isinstance(value, dict) and name != "tags":
        raise SpecError(where, f"expected a single value for {name}, got a table {value!r}")
    try:
        return coerce(name, value)
    except ConfigError as e:
        raise SpecError(where, _msg(e)) from None


VALUE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a command's value: usable as a {placeholder}
# Names a command's values cannot take: the placeholders every run has, and the columns the driver writes.
RESERVED_NAMES = (*cmd.BUILTINS, "sweep", "cell_id", "lr_search", "status", "error", "attempts", "elapsed_s",
                  "host", "started_at", "finished_at", "config_json", "extra_json", "schema_version",
                  "results_version", "code_version", "git_commit")


def _check_command_name(name: str, where: str) -> None:
    if not VALUE_NAME_RE.match(name):
        raise SpecError(where, f"{name!r} cannot be a placeholder; use letters, digits and _ (not first a digit)")
    if name in RESERVED_NAMES:
        raise SpecError(where, f"{name!r} is reserved (set by the sweep); reserved: {', '.join(RESERVED_NAMES)}")


def _check_command_value(name: str, value: Any, where: str) -> Any:
    """One value of a command sweep: a TOML scalar (an `lr` table is an LR search); a value named like a
    ledger column must have that column's type (it is stored there); lr a positive number, seed an integer."""
    if name == "lr" and isinstance(value, dict):
        return parse_search(value, where)
    if isinstance(value, (dict, list)) or not isinstance(value, (bool, int, float, str)):
        what = {dict: "a table", list: "a list"}.get(type(value), type(value).__name__)
        raise SpecError(where, f"expected an integer, number, string or boolean, got {what} {value!r} (only lr "
                               "may be a table, an LR search; a list is an axis)")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(where, f"expected a finite number, got {value!r}")
    if name == "lr":
        return _number(where, value)
    if name == "seed":
        return _number(where, value, integer=True, positive=False)
    if name in schema.COLUMN_TYPES:
        try:
            schema.coerce(name, schema.COLUMN_TYPES[name], value)
        except ValueError as e:
            raise SpecError(where, f"{e} ({name} is a ledger column; rename the value to keep it apart)") from None
    return value


@dataclass(frozen=True)
class FieldRules:
    """How a spec's names and values are checked: RunConfig fields, or (with [command]) a command's values."""

    name: Callable[[str, str], None]
    value: Callable[[str, Any, str], Any]


RUN_RULES = FieldRules(_check_field, _check_value)
COMMAND_RULES = FieldRules(_check_command_name, _check_command_value)


def _values(name: str, raw: Any, where: str, rules: FieldRules = RUN_RULES) -> list[Any]:
    """An axis: a non-empty list of values of the field."""
    if not isinstance(raw, list):
        raise SpecError(where, f"an axis is a list of values, got {raw!r} (put a single value in [base], "
                               "or use [axes] lr = {search = ...} for an LR search)")
    if not raw:
        raise SpecError(where, "empty axis; give at least one value")
    return [rules.value(name, v, where) for v in raw]


def _check_template(text: Any, where: str) -> str:
    """A string whose placeholders are {name} or {name:format}; SpecError naming `where` otherwise."""
    if not isinstance(text, str):
        raise SpecError(where, f"expected a string, got {text!r}")
    try:
        pieces = list(cmd.placeholders(text))
    except ValueError as e:
        raise SpecError(where, f"not a valid template ({e}; write {{{{ and }}}} for literal braces)") from None
    for _, name, _, _ in pieces:
        if name is not None and not VALUE_NAME_RE.match(name):
            raise SpecError(where, f"placeholder {{{name}}}: expected {{name}} with the name of a value")
    return text


def parse_command(data: dict[str, Any], base_dir: Path | None) -> CommandSpec | None:
    """The `[command]` table, checked (run a template string, cwd a string, env a table of template strings,
    timeout_s a number), or None when the spec has none."""
    if "command" not in data:
        return None
    table = _table(data, "command")
    keys = ("run", "cwd", "env", "timeout_s")
    for key in table:
        if key not in keys:
            raise SpecError(f"command.{key}", f"unknown key{close_match(key, keys)}; expected {', '.join(keys)}")
    if "run" not in table:
        raise SpecError("command.run", 'a [command] table needs run = "the command line with {placeholders}"')
    run = _check_template(table["run"], "command.run")
    env = {k: _check_template(v, f"command.env.{k}") for k, v in _table(table, "env", "command.env").items()}
    cwd = table.get("cwd", "")
    if not isinstance(cwd, str):
        raise SpecError("command.cwd", f"expected a directory (a string), got {cwd!r}")
    timeout = _number("command.timeout_s", table["timeout_s"]) if "timeout_s" in table else None
    here = str((base_dir or Path.cwd()).resolve())
    workdir = str(Path(here, cwd).resolve()) if cwd else os.getcwd()
    return CommandSpec(run=run, cwd=cwd, env=env, timeout_s=timeout, here=here, workdir=workdir)


def _table(data: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(where or key, f"expected a table, got {value!r}")
    return value


def parse_spec(data: dict[str, Any], text: str = "", source: str = "spec", base_dir: Path | None = None) -> SweepSpec:
    """Validate a parsed TOML document (field names, types, shapes) and build a SweepSpec. `base_dir`: the
    spec file's directory (a command's {here} and relative cwd), None for a spec that is no file."""
    for key in data:
        if key not in TOP_KEYS:
            hint = close_match(key, TOP_KEYS)
            if key in RUN_FIELDS:
                hint = f" (run config fields go in [base] or [axes])"
            raise SpecError(key, f"unknown top-level key{hint}; expected one of {', '.join(TOP_KEYS)}")
    if "name" not in data:
        raise SpecError("name", "a sweep needs a name (letters, digits, -, _, .)")
    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError("name", f"must be a non-empty string of letters, digits, -, _, . (a directory name), got {name!r}")
    for key in ("description", "version_tag"):
        if not isinstance(data.get(key, ""), str):
            raise SpecError(key, f"expected a string, got {data[key]!r}")

    command = parse_command(data, base_dir)
    rules = COMMAND_RULES if command else RUN_RULES
    base_raw = _table(data, "base")
    base: dict[str, Any] = {}
    for k, v in base_raw.items():
        rules.name(k, f"base.{k}")
        base[k] = rules.value(k, v, f"base.{k}")

    axes: dict[str, list[Any] | Search] = {}
    for k, v in _table(data, "axes").items():
        rules.name(k, f"axes.{k}")
        if k == "lr" and isinstance(v, dict):
            axes[k] = parse_search(v, "axes.lr")
        else:
            axes[k] = _values(k, v, f"axes.{k}", rules)
    if not command and "tokens" in axes and "tokens_per_param" in axes:
        raise SpecError("axes.tokens_per_param", "give tokens or tokens_per_param as an axis, not both")

    zips_raw = data.get("zip", [])
    if not isinstance(zips_raw, list) or not all(isinstance(z, dict) for z in zips_raw):
        raise SpecError("zip", "expected [[zip]] tables of equal-length lists")
    zips: list[dict[str, list[Any]]] = []
    seen = set(axes)
    for i, z in enumerate(zips_raw):
        if not z:
            raise SpecError(f"zip[{i}]", "empty [[zip]] table; give at least one field = [values]")
        parsed = {}
        for k, v in z.items():
            rules.name(k, f"zip[{i}].{k}")
            if k in seen:
                raise SpecError(f"zip[{i}].{k}", f"{k} is already an axis or in another [[zip]]; a field can vary in one place only")
            seen.add(k)
            parsed[k] = _values(k, v, f"zip[{i}].{k}", rules)
        lengths = {k: len(v) for k, v in parsed.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(f"zip[{i}]", f"tied lists must have equal lengths, got {lengths}")
        zips.append(parsed)
    if not command and {"tokens", "tokens_per_param"} <= seen:
        raise SpecError("tokens_per_param", "tokens and tokens_per_param both vary; pick one")

    ov_raw = data.get("override", [])
    if not isinstance(ov_raw, list) or not all(isinstance(o, dict) for o in ov_raw):
        raise SpecError("override", "expected [[override]] tables with `where` and `set`")
    overrides = []
    for i, o in enumerate(ov_raw):
        where = f"override[{i}]"
        for key in o:
            if key not in ("where", "set"):
                raise SpecError(f"{where}.{key}", f"unknown key{close_match(key, ('where', 'set'))}; expected where, set")
        cond, sets = _table(o, "where", f"{where}.where"), _table(o, "set", f"{where}.set")
        if not sets:
            raise SpecError(f"{where}.set", "an override needs `set = { field = value or [values] }`")
        w: dict[str, tuple[Any, ...]] = {}
        for k, v in cond.items():
            rules.name(k, f"{where}.where.{k}")
            vals = v if isinstance(v, list) else [v]
            if not vals:
                raise SpecError(f"{where}.where.{k}", "empty list of accepted values")
            w[k] = tuple(rules.value(k, x, f"{where}.where.{k}") for x in vals)
        s: dict[str, list[Any]] = {}
        for k, v in sets.items():
            rules.name(k, f"{where}.set.{k}")
            at = f"{where}.set.{k}"
            s[k] = _values(k, v, at, rules) if isinstance(v, list) else [rules.value(k, v, at)]
        overrides.append(Override(where=w, set=s))

    res = _table(data, "resources")
    resource_keys = ("cpus", "gpus", "reuse_workers")
    for key in res:
        if key not in resource_keys:
            hint = (f"; {key} is a top-level key (write it before the first [table])" if key in TOP_KEYS
                    else close_match(key, resource_keys))
            raise SpecError(f"resources.{key}", f"unknown key{hint}; expected {', '.join(resource_keys)}")
    reuse = res.get("reuse_workers", True)
    if not isinstance(reuse, bool):
        raise SpecError("resources.reuse_workers", f"expected true or false, got {reuse!r}")
    resources = Resources(cpus=_number("resources.cpus", res.get("cpus", 1)),
                          gpus=_number("resources.gpus", res.get("gpus", 0), positive=False, minimum=0),
                          reuse_workers=reuse)

    basis = _choice("tokens_per_param_basis", data.get("tokens_per_param_basis", "active"), TOKENS_BASES)
    return SweepSpec(
        name=name, base=base, axes=axes, zips=zips, overrides=overrides, resources=resources,
        max_retries=_number("max_retries", data.get("max_retries", 3), integer=True, positive=False, minimum=0),
        max_concurrent=_number("max_concurrent", data.get("max_concurrent", 0), integer=True, positive=False, minimum=0),
        checkpoints_per_run=_number("checkpoints_per_run", data.get("checkpoints_per_run", 10), integer=True,
                                    positive=False, minimum=0),
        tokens_per_param_basis=basis, version_tag=data.get("version_tag", ""),
        max_runs=_number("max_runs", data.get("max_runs", DEFAULT_MAX_RUNS), integer=True),
        description=data.get("description", ""), text=text, source=source, command=command)


def loads_spec(text: str, source: str = "spec", base_dir: Path | None = None) -> SweepSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError("spec", f"{source} is not valid TOML: {e}") from None
    return parse_spec(data, text=text, source=source, base_dir=base_dir)


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError("spec", f"file {path} does not exist")
    return loads_spec(path.read_text(), source=str(path), base_dir=path.parent)


# ---------------------------------------------------------------- expansion


_DEFAULTS = RunConfig().to_dict()


def _put(values: dict[str, Any], key: str, value: Any, partners: bool = True) -> None:
    """Set a field; tokens and tokens_per_param replace each other (the later one wins) unless `partners` is
    false (a command's values are independent)."""
    partner = partners and {"tokens": "tokens_per_param", "tokens_per_param": "tokens"}.get(key)
    if partner:
        values.pop(partner, None)
    values.pop(key, None)  # keep insertion order = order of setting (for descriptions)
    values[key] = value


def _matches(values: dict[str, Any], where: dict[str, tuple[Any, ...]]) -> bool:
    return all(values.get(k, _DEFAULTS.get(k)) in accepted for k, accepted in where.items())


def _lr_runs(value: Any) -> int:
    """Runs known up front for one point's lr: its bracket grid, 0 for optuna (asked later), else 1."""
    if isinstance(value, BracketSearch):
        return len(value.grid)
    return 0 if isinstance(value, OptunaSearch) else 1


def check_size(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise SpecError("max_runs", f"the grid has {n:,} {what}, more than the limit of {limit:,}; fix the axes, "
                                    "or raise the limit (max_runs = N in the spec, --max-runs)")


def expand_points(spec: SweepSpec, max_runs: int | None = None) -> list[dict[str, Any]]:
    """Every combination of axes and zips, then the overrides; each point is base + its settings.

    The size is counted before anything is built (the product of the axis lengths; then, per override, the
    points it keeps plus those it re-expands), and a grid past `max_runs` (default: the spec's) is refused.
    """
    limit = max_runs or spec.max_runs
    sizes = [1 if isinstance(v, (BracketSearch, OptunaSearch)) else len(v) for v in spec.axes.values()]
    sizes += [len(next(iter(z.values()))) for z in spec.zips]
    check_size(math.prod(sizes), limit, "points (the product of the axis lengths)")
    groups: list[list[list[tuple[str, Any]]]] = []
    for name, vals in spec.axes.items():
        vals = [vals] if isinstance(vals, (BracketSearch, OptunaSearch)) else vals
        groups.append([[(name, v)] for v in vals])
    for z in spec.zips:
        n = len(next(iter(z.values())))
        groups.append([[(k, z[k][i]) for k in z] for i in range(n)])
    points = []
    for combo in itertools.product(*groups):
        values = dict(spec.base)
        for settings in combo:
            for k, v in settings:
                _put(values, k, v, partners=spec.command is None)
        points.append(values)
    for i, ov in enumerate(spec.overrides):
        hits = sum(_matches(values, ov.where) for values in points)
        check_size(len(points) - hits + hits * math.prod(len(v) for v in ov.set.values()), limit,
                   f"points (after override[{i}])")
        hits, out = 0, []
        for values in points:
            if not _matches(values, ov.where):
                out.append(values)
                continue
            hits += 1
            keys = list(ov.set)
            for combo in itertools.product(*(ov.set[k] for k in keys)):
                new = dict(values)
                for k, v in zip(keys, combo):
                    _put(new, k, v, partners=spec.command is None)
                out.append(new)
        if not hits:
            seen = {k: sorted({str(p.get(k, _DEFAULTS.get(k))) for p in points}) for k in ov.where}
            raise SpecError(f"override[{i}].where", f"matches no run; values in the sweep: {seen}")
        points = out
    check_size(sum(_lr_runs(p.get("lr")) for p in points), limit, "runs (points times their lr grids)")
    return points


# ---------------------------------------------------------------- static run facts (no training)


def param_counts(cfg: RunConfig):
    """ParamCounts of the run's model (hyperp.trainer.metrics: torch loads only when a plan is built)."""
    from hyperp.trainer.metrics import param_counts as counts  # noqa: PLC0415

    return counts(cfg)


def static_columns(cfg: RunConfig) -> dict[str, Any]:
    from hyperp.trainer.metrics import static_columns as columns  # noqa: PLC0415

    return columns(cfg)


# ---------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    run_id: str
    cell_id: str
    config: RunConfig
    search: str  # grid, bracket or optuna
    info: dict[str, Any]  # static columns + tokens_per_param


@dataclass
class PlannedCell:
    cell_id: str
    config: RunConfig  # the cell's config; its lr is a placeholder, set per run
    search: Search | None  # None: fixed learning rates only
    info: dict[str, Any]


@dataclass
class Plan:
    spec: SweepSpec
    runs: list[PlannedRun]  # every run known up front (fixed LRs and initial bracket grids)
    cells: dict[str, PlannedCell]
    varying: list[str]  # config fields that differ between runs

    @property
    def searches(self) -> list[PlannedCell]:
        return [c for c in self.cells.values() if c.search is not None]

    def run_for(self, cell: PlannedCell, lr: float, search: str, seed: int | None = None) -> PlannedRun:
        """The cell's run at `lr` (and, for the repeats at a search's best LR, another `seed`): it keeps the
        cell's id, so the repeats are part of the cell in the ledger and the fits."""
        cfg = cell.config.replace(lr=lr) if seed is None else cell.config.replace(lr=lr, seed=seed)
        return PlannedRun(identity.run_id(cfg, self.spec.version_tag), cell.cell_id, cfg, search, dict(cell.info))

    def varying_values(self, cfg: RunConfig, info: dict[str, Any] | None = None, lr: bool = True) -> dict[str, Any]:
        d = field_values(cfg)
        out = {k: d[k] for k in self.varying if k in d and (lr or k != "lr")}
        if info and "tokens_per_param" in self.varying:
            out["tokens_per_param"] = info.get("tokens_per_param")
        return out


def field_values(cfg: RunConfig | CommandConfig) -> dict[str, Any]:
    """A run's settings by name: a RunConfig's fields (`width` the resolved d_model), or a command's values."""
    if isinstance(cfg, CommandConfig):
        return dict(cfg.values)
    return cfg.to_dict() | {"width": cfg.d_model}


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v.kind if isinstance(v, (BracketSearch, OptunaSearch)) else v}"
                     for k, v in values.items())


def resolve_command(spec: SweepSpec, values: dict[str, Any]) -> tuple[CommandConfig, Search | None, dict[str, Any]]:
    """One expanded point of a command sweep -> its CommandConfig (a searched lr holds the search's first
    value), its search, and no static columns. Every placeholder must have a value and every value given must
    be used by one, else SpecError naming command.run (or command.env.NAME) before anything runs."""
    command = spec.command
    assert command is not None
    lr = values.get("lr")
    search = lr if isinstance(lr, (BracketSearch, OptunaSearch)) else None
    values = {"seed": 0} | dict(values)  # seed defaults to 0, like a RunConfig's
    if search is not None:
        values["lr"] = search.grid[0] if isinstance(search, BracketSearch) else search.low
    used = _placeholders_used(command, values)
    unused = [k for k in values if k not in used and (k != "seed" or "seed" in spec_values(spec))]
    if unused:
        raise SpecError("command.run", f"value {unused[0]!r} is used by no placeholder of command.run or "
                                       f"command.env; add {{{unused[0]}}} or remove the value")
    if search is not None and search.seeds > 1 and "seed" not in used:
        raise SpecError("lr.seeds", f"seeds = {search.seeds} repeats the best lr with other seeds, but the command "
                                    "does not use {seed}")
    cfg = CommandConfig(template=command.run, values=values, cwd=command.cwd, env=dict(command.env),
                        timeout_s=command.timeout_s, metric=search.metric if search else "val_loss",
                        here=command.here, workdir=command.workdir)
    return cfg, search, {}


def _placeholders_used(command: CommandSpec, values: dict[str, Any]) -> set[str]:
    """The names the command's run line and env use; SpecError naming the first placeholder with no value."""
    used = set(cmd.BUILTINS)
    for where, text in [("command.run", command.run), *((f"command.env.{k}", v) for k, v in command.env.items())]:
        for name in cmd.names(text):
            if name not in values and name not in cmd.BUILTINS:
                raise SpecError(where, f"placeholder {{{name}}} has no value (in the run with "
                                       f"{_describe(values)}); give {name} in [base] or [axes]")
            used.add(name)
    return used


def set_names(spec: SweepSpec) -> set[str]:
    """The names [axes], [[zip]] and the overrides' `set` give values."""
    return set(spec.axes) | {k for z in spec.zips for k in z} | {k for o in spec.overrides for k in o.set}


def spec_values(spec: SweepSpec) -> set[str]:
    """Every name the spec gives a value: [base] and `set_names`."""
    return set(spec.base) | set_names(spec)


def resolve(spec: SweepSpec, values: dict[str, Any]) -> tuple[RunConfig, Search | None, dict[str, Any]]:
    """One expanded point -> a validated RunConfig (lr=None placeholder if searched), its search, its info;
    a CommandConfig for a spec with [command] (`resolve_command`)."""
    if spec.command is not None:
        return resolve_command(spec, values)
    values = dict(values)
    lr = values.get("lr")
    search = lr if isinstance(lr, (BracketSearch, OptunaSearch)) else None
    if search is not None:
        values["lr"] = search.grid[0] if isinstance(search, BracketSearch) else search.low
    tpp = values.pop("tokens_per_param", None)
    explicit_ckpt = "checkpoint_every" in values
    try:
        cfg = RunConfig.from_dict(values, source="sweep run")
        if tpp == PROXY_TOKENS:
            tpp = cfg.base_tokens / getattr(param_counts(proxy_of(cfg)), spec.tokens_per_param_basis)
        if tpp is not None:
            n = getattr(param_counts(cfg), spec.tokens_per_param_basis)
            steps = max(1, round(tpp * n / cfg.batch_tokens))
            cfg = cfg.replace(tokens=steps * cfg.batch_tokens)
        if not explicit_ckpt and spec.checkpoints_per_run:
            cfg = cfg.replace(checkpoint_every=math.ceil(cfg.total_steps / spec.checkpoints_per_run))
    except ConfigError as e:
        raise SpecError(e.field, f"{_msg(e)} (in the run with {_describe(values) or 'the base config'})") from None
    info = static_columns(cfg) | {"tokens_per_param": float(tpp) if tpp is not None else math.nan}
    return cfg, search, info


def proxy_of(cfg: RunConfig) -> RunConfig:
    """The proxy a run's LR was tuned on: the run at base_depth and, where its width is given, base_width (a
    width from the aspect ratio follows the depth)."""
    return cfg.replace(depth=cfg.base_depth, width=cfg.base_width if cfg.width else 0)


def _neutral_only(a: RunConfig, b: RunConfig, values: dict[str, Any]) -> tuple[str, str]:
    """(field, message) for two configs of one run id: they differ only in fields that cannot change a result
    (identity.RESULT_NEUTRAL_FIELDS: threads, workers, ...), so the sweep would keep one and drop the other."""
    left, right = a.to_dict(), b.to_dict()
    field_ = next(k for k, v in left.items() if v != right[k])
    return field_, (f"runs differing only in {field_} ({getattr(a, field_)!r} and {getattr(b, field_)!r}, in the run "
                    f"with {_describe(values)}) are one run: {field_} cannot change a result; set one value")


def make_plan(spec: SweepSpec, max_runs: int | None = None) -> Plan:
    """Expand and validate every run of a spec. Raises SpecError naming the field; runs nothing.

    `max_runs` overrides the spec's limit on the grid's size (see `expand_points`)."""
    runs: dict[str, PlannedRun] = {}
    cells: dict[str, PlannedCell] = {}
    for values in expand_points(spec, max_runs):
        cfg, search, info = resolve(spec, values)
        cid = identity.cell_id(cfg, spec.version_tag)
        cell = cells.get(cid)
        if cell is None:
            cells[cid] = cell = PlannedCell(cid, cfg, search, info)
        elif search is not None:
            if cell.search is not None and cell.search != search:
                raise SpecError("lr", f"two different LR searches for the same cell ({_describe(values)})")
            cell.search = search
        if search is None:
            lrs = [cfg.lr]
        elif isinstance(search, BracketSearch):
            lrs = list(search.grid)
        else:
            lrs = []
        for lr in lrs:
            try:
                run_cfg = cfg.replace(lr=lr)
            except ConfigError as e:
                raise SpecError(e.field, f"{_msg(e)} (in the run with {_describe(values)})") from None
            rid = identity.run_id(run_cfg, spec.version_tag)
            if rid in runs and runs[rid].config != run_cfg:
                raise SpecError(*_neutral_only(runs[rid].config, run_cfg, values))
            if rid not in runs:
                runs[rid] = PlannedRun(rid, cid, run_cfg, "grid" if search is None else search.kind, dict(info))
    configs = [field_values(r.config) for r in runs.values()] + [field_values(c.config) for c in cells.values()]
    explicit = set_names(spec)
    derived = {"checkpoint_every"} - explicit  # set by checkpoints_per_run: not a design axis
    names = list(dict.fromkeys(k for c in configs for k in c)) if spec.command else list(RUN_FIELDS)
    varying = [k for k in names if k != "lr" and k not in derived
               and len({repr(c.get(k)) for c in configs}) > 1]
    if len({repr(r.config.lr) for r in runs.values()}) > 1 or any(c.search for c in cells.values()):
        varying.append("lr")
    tpps = {repr(r.info.get("tokens_per_param", math.nan)) for r in runs.values()} | \
           {repr(c.info.get("tokens_per_param", math.nan)) for c in cells.values()}
    if len(tpps) > 1:
        varying.insert(varying.index("tokens") if "tokens" in varying else len(varying), "tokens_per_param")
    return Plan(spec=spec, runs=list(runs.values()), cells=cells, varying=varying)
