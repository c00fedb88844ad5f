"""Sweep specs: a TOML file that names a study, parsed and validated (hyperp.sweeps.plan expands it into runs).

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

    [[runs]]                        # explicit runs added to the grid (what `hyperp design` writes): each a
    param = "hyperp"                # table of fields over [base], not crossed with [axes] and untouched by
    width = 64                      # the overrides; a fixed `lr` (or an LR search table) like any point
    lr = 0.02
    seed = 1

    [resources]                     # per run
    cpus = 1                        # torch threads of the run follow this (at least 1)
    gpus = 0.25                     # fractional GPUs let small runs share a device
    reuse_workers = true            # warm worker processes across runs; false: a fresh process per run
    compile_cache = "sweep"         # Inductor's caches of compiled runs: "sweep" (<sweep>/compile-cache, one
                                    # compilation per shape), "run" (each run its own) or "system" (torch's)
    compile_costs = "costs.json"    # measured compile costs for compile = "auto" (hyperp.sweeps.compile)

`compile = "auto"` (in [base], [axes] or an override) compiles a shape's runs where the saving pays for the
compilation, from measured compile times and speed-ups (hyperp.sweeps.compile); `sweep plan` states it.

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
from hyperp.sweeps.search import BracketSearch, OptunaSearch, Search, log_grid
from hyperp.tracking import Tracking, parse_tracking
from hyperp.config import ConfigError, RunConfig, coerce

RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))
EXTRA_FIELDS = ("tokens_per_param",)  # spec-only fields that resolve into RunConfig fields
# tokens_per_param = "proxy": the authors' rule T = T0 N / N0 (ArchScale's pretrain.py), tokens co-scaled with
# the parameters from the proxy's (base_tokens at base_depth/base_width), N counted by tokens_per_param_basis.
PROXY_TOKENS = "proxy"
# compile = "auto": torch.compile where it pays on this machine, decided per shape when the plan is made from
# measured compile time and speed-up (hyperp.sweeps.compile)
AUTO_COMPILE = "auto"
# [resources] compile_cache: where a sweep's runs keep Inductor's caches (its compiled graphs): one directory
# of the sweep that every worker sees (a shape compiles once per sweep), a fresh one per run, or torch's
# default (the host's temp directory)
COMPILE_CACHES = ("sweep", "run", "system")
TOP_KEYS = ("name", "description", "version_tag", "max_retries", "max_concurrent", "checkpoints_per_run",
            "tokens_per_param_basis", "max_runs", "base", "axes", "zip", "override", "runs", "resources", "command",
            "tracking")
DEFAULT_MAX_RUNS = 100_000  # a larger grid is almost always a typo; it would take minutes to expand in memory
SEARCHES = ("bracket", "optuna")
METRICS = ("val_loss", "best_val_loss", "train_loss")
SAMPLERS = ("tpe", "random")
TOKENS_BASES = ("total", "active", "non_embedding", "active_matrix")  # ParamCounts attributes
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ConfigError):
    """A sweep spec is invalid; `.field` is the dotted location (e.g. `axes.depth`)."""


def message_of(e: ConfigError) -> str:
    """A ConfigError's message without its leading `field: ` (to be raised again under another field)."""
    return str(e)[len(e.field) + 2:] if str(e).startswith(f"{e.field}: ") else str(e)


# ---------------------------------------------------------------- values


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
    compile_cache: str = "sweep"  # COMPILE_CACHES
    compile_costs: str = ""  # a JSON of measured compile costs for compile = "auto" (hyperp.sweeps.compile)

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
    axes: dict[str, list[Any]] = field(default_factory=dict)  # an LR search is one value: [Search]
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
    runs: list[dict[str, Any]] = field(default_factory=list)  # [[runs]]: explicit points over [base]
    tracking: Tracking = field(default_factory=Tracking)  # [tracking]: trackers each run logs to (hyperp.tracking)


def _check_field(name: str, where: str) -> None:
    if name not in RUN_FIELDS and name not in EXTRA_FIELDS:
        known = RUN_FIELDS + EXTRA_FIELDS
        raise SpecError(where, f"unknown run config field {name!r}{close_match(name, known)}; "
                               f"known fields: {', '.join(sorted(known))}")


def _check_value(name: str, value: Any, where: str) -> Any:
    """Type-check one value of a field; an `lr` table is an LR search."""
    if name == "tokens_per_param":
        return value if value == PROXY_TOKENS else _number(where, value)
    if name == "compile" and value == AUTO_COMPILE:
        return value
    if name == "lr" and isinstance(value, dict):
        return parse_search(value, where)
    if isinstance(value, dict) and name != "tags":
        raise SpecError(where, f"expected a single value for {name}, got a table {value!r}")
    try:
        return coerce(name, value)
    except ConfigError as e:
        raise SpecError(where, message_of(e)) from None


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
    name = _check_top(data)
    command = parse_command(data, base_dir)
    rules = COMMAND_RULES if command else RUN_RULES
    base = {k: _base_value(k, v, rules) for k, v in _table(data, "base").items()}
    axes = _parse_axes(data, rules, ties=command is None)
    zips = _parse_zips(data, rules, set(axes), ties=command is None)
    overrides = [_parse_override(o, f"override[{i}]", rules) for i, o in enumerate(_tables(data, "override"))]
    runs = [_parse_run(r, f"runs[{i}]", rules) for i, r in enumerate(_tables(data, "runs"))]
    resources = _parse_resources(data, base_dir)
    basis = _choice("tokens_per_param_basis", data.get("tokens_per_param_basis", "active"), TOKENS_BASES)
    return SweepSpec(
        name=name, base=base, axes=axes, zips=zips, overrides=overrides, resources=resources,
        max_retries=_number("max_retries", data.get("max_retries", 3), integer=True, positive=False, minimum=0),
        max_concurrent=_number("max_concurrent", data.get("max_concurrent", 0), integer=True, positive=False, minimum=0),
        checkpoints_per_run=_number("checkpoints_per_run", data.get("checkpoints_per_run", 10), integer=True,
                                    positive=False, minimum=0),
        tokens_per_param_basis=basis, version_tag=data.get("version_tag", ""),
        max_runs=_number("max_runs", data.get("max_runs", DEFAULT_MAX_RUNS), integer=True),
        description=data.get("description", ""), text=text, source=source, command=command, runs=runs,
        tracking=parse_tracking(data.get("tracking")))


def _check_top(data: dict[str, Any]) -> str:
    """The top-level keys known, `name` a directory name, the free-text keys strings; returns the name."""
    for key in data:
        if key not in TOP_KEYS:
            hint = close_match(key, TOP_KEYS)
            if key in RUN_FIELDS:
                hint = " (run config fields go in [base] or [axes])"
            raise SpecError(key, f"unknown top-level key{hint}; expected one of {', '.join(TOP_KEYS)}")
    if "name" not in data:
        raise SpecError("name", "a sweep needs a name (letters, digits, -, _, .)")
    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError("name", f"must be a non-empty string of letters, digits, -, _, . (a directory name), got {name!r}")
    for key in ("description", "version_tag"):
        if not isinstance(data.get(key, ""), str):
            raise SpecError(key, f"expected a string, got {data[key]!r}")
    return name


def _base_value(name: str, value: Any, rules: FieldRules) -> Any:
    return _base_value_at(name, value, rules, f"base.{name}")


def _base_value_at(name: str, value: Any, rules: FieldRules, where: str) -> Any:
    rules.name(name, where)
    return rules.value(name, value, where)


def _parse_axes(data: dict[str, Any], rules: FieldRules, ties: bool) -> dict[str, list[Any]]:
    """[axes]: each a list of values; an LR search table is one value (`lr = { search = ... }`). `ties`: tokens
    and tokens_per_param replace each other (a run config's), so only one may be an axis."""
    axes: dict[str, list[Any]] = {}
    for k, v in _table(data, "axes").items():
        rules.name(k, f"axes.{k}")
        if k == "lr" and isinstance(v, dict):
            axes[k] = [parse_search(v, "axes.lr")]
        else:
            axes[k] = _values(k, v, f"axes.{k}", rules)
    if ties and "tokens" in axes and "tokens_per_param" in axes:
        raise SpecError("axes.tokens_per_param", "give tokens or tokens_per_param as an axis, not both")
    return axes


def _tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """An array of tables ([[zip]], [[override]]), each a table."""
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        what = {"zip": "[[zip]] tables of equal-length lists", "override": "[[override]] tables with `where` and `set`",
                "runs": "[[runs]] tables of field = value"}
        raise SpecError(key, f"expected {what[key]}")
    return raw


def _parse_zips(data: dict[str, Any], rules: FieldRules, seen: set[str], ties: bool) -> list[dict[str, list[Any]]]:
    """[[zip]]: tied lists of equal lengths; a field varies in one place only (`seen`: the axes)."""
    zips: list[dict[str, list[Any]]] = []
    for i, z in enumerate(_tables(data, "zip")):
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
    if ties and {"tokens", "tokens_per_param"} <= seen:
        raise SpecError("tokens_per_param", "tokens and tokens_per_param both vary; pick one")
    return zips


def _parse_override(o: dict[str, Any], where: str, rules: FieldRules) -> Override:
    """One [[override]]: `where` a value or a list of accepted values per field, `set` values to cross."""
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
    return Override(where=w, set=s)


def _parse_run(run: dict[str, Any], where: str, rules: FieldRules) -> dict[str, Any]:
    """One [[runs]] table: field = one value each (an `lr` table is a search, as in [base])."""
    if not run:
        raise SpecError(where, "empty [[runs]] table; give at least one field = value")
    for k, v in run.items():
        if isinstance(v, list):
            raise SpecError(f"{where}.{k}", f"one value per field in a [[runs]] table, got a list {v!r}")
    return {k: _base_value_at(k, v, rules, f"{where}.{k}") for k, v in run.items()}


def _parse_resources(data: dict[str, Any], base_dir: Path | None = None) -> Resources:
    res = _table(data, "resources")
    resource_keys = ("cpus", "gpus", "reuse_workers", "compile_cache", "compile_costs")
    for key in res:
        if key not in resource_keys:
            hint = (f"; {key} is a top-level key (write it before the first [table])" if key in TOP_KEYS
                    else close_match(key, resource_keys))
            raise SpecError(f"resources.{key}", f"unknown key{hint}; expected {', '.join(resource_keys)}")
    reuse = res.get("reuse_workers", True)
    if not isinstance(reuse, bool):
        raise SpecError("resources.reuse_workers", f"expected true or false, got {reuse!r}")
    cache = res.get("compile_cache", "sweep")
    if cache not in COMPILE_CACHES:
        raise SpecError("resources.compile_cache", f"expected one of {', '.join(COMPILE_CACHES)}, got {cache!r}")
    costs = res.get("compile_costs", "")
    if not isinstance(costs, str):
        raise SpecError("resources.compile_costs", f"expected the path of a JSON file, got {costs!r}")
    if costs:  # relative to the spec file's directory
        path = (base_dir or Path.cwd()) / costs
        if not path.is_file():
            raise SpecError("resources.compile_costs", f"no such file: {path}")
        costs = str(path.resolve())
    return Resources(cpus=_number("resources.cpus", res.get("cpus", 1)),
                     gpus=_number("resources.gpus", res.get("gpus", 0), positive=False, minimum=0),
                     reuse_workers=reuse, compile_cache=cache, compile_costs=costs)


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
