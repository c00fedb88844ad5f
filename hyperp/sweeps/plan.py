"""A sweep's plan: its spec (hyperp.sweeps.spec) expanded into runs and cells, each resolved and validated
before anything runs.

Expansion: every combination of [axes] and [[zip]] over [base], then the [[override]]s in file order, then the
explicit [[runs]] (each over [base], not overridden); the grid's
size is counted before it is built and refused past `max_runs`. Each point is resolved into a validated
RunConfig (or a command's CommandConfig): `tokens_per_param` becomes tokens, `checkpoints_per_run` a
checkpoint interval, and its static columns (parameter and FLOP counts, hyperp.trainer.metrics) are computed.
Runs with fixed learning rates and the known first runs of each LR search (`Search.known_lrs`) are listed up
front; a cell (a config minus `lr`) with a search asks for more while the sweep runs (hyperp.sweeps.lr_search).
`prepare` is what `sweep plan` and `sweep run` do first: load, expand, check every corpus; it writes nothing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperp
from hyperp.config import ConfigError, RunConfig
from hyperp.sweeps import command as cmd
from hyperp.sweeps import identity
from hyperp.sweeps.command import CommandConfig
from hyperp.sweeps.search import Search
from hyperp.sweeps.spec import AUTO_COMPILE, PROXY_TOKENS, RUN_FIELDS, CommandSpec, SpecError, SweepSpec, load_spec, message_of

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


def _lr_runs(values: dict[str, Any]) -> int:
    """Runs known up front for one point: its search's known lrs (a bracket's grid, none for optuna), else 1."""
    search = _search_of(values)
    return 1 if search is None else len(search.known_lrs)


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
    sizes = [len(v) for v in spec.axes.values()] + [len(next(iter(z.values()))) for z in spec.zips]
    check_size(math.prod(sizes), limit, "points (the product of the axis lengths)")
    groups: list[list[list[tuple[str, Any]]]] = [[[(name, v)] for v in vals] for name, vals in spec.axes.items()]
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
        points = _override(spec, points, ov, i, limit)
    points += [explicit_point(spec, run) for run in spec.runs]  # [[runs]]: after the overrides, untouched by them
    check_size(sum(_lr_runs(p) for p in points), limit, "runs (points times their lr grids)")
    return points


def explicit_point(spec: SweepSpec, run: dict[str, Any]) -> dict[str, Any]:
    """An explicit [[runs]] point: [base] and the run's own fields."""
    values = dict(spec.base)
    for k, v in run.items():
        _put(values, k, v, partners=spec.command is None)
    return values


def _override(spec: SweepSpec, points: list[dict[str, Any]], ov, i: int, limit: int) -> list[dict[str, Any]]:
    """The points after override `i`: each it matches replaced by its `set` values crossed; counted first."""
    hits = sum(_matches(values, ov.where) for values in points)
    check_size(len(points) - hits + hits * math.prod(len(v) for v in ov.set.values()), limit,
               f"points (after override[{i}])")
    if not hits:
        seen = {k: sorted({str(p.get(k, _DEFAULTS.get(k))) for p in points}) for k in ov.where}
        raise SpecError(f"override[{i}].where", f"matches no run; values in the sweep: {seen}")
    out = []
    keys = list(ov.set)
    for values in points:
        if not _matches(values, ov.where):
            out.append(values)
            continue
        for combo in itertools.product(*(ov.set[k] for k in keys)):
            new = dict(values)
            for k, v in zip(keys, combo):
                _put(new, k, v, partners=spec.command is None)
            out.append(new)
    return out


# ---------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    run_id: str
    cell_id: str
    config: RunConfig
    search: str  # grid, bracket or optuna
    info: dict[str, Any]  # static columns + tokens_per_param
    auto_compile: bool = False  # the spec says compile = "auto": hyperp.sweeps.compile decides config.compile


@dataclass
class PlannedCell:
    cell_id: str
    config: RunConfig  # the cell's config; its lr is a placeholder, set per run
    search: Search | None  # None: fixed learning rates only
    info: dict[str, Any]
    auto_compile: bool = False


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
        return PlannedRun(identity.run_id(cfg, self.spec.version_tag), cell.cell_id, cfg, search, dict(cell.info),
                          cell.auto_compile)

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
    return ", ".join(f"{k}={v}" for k, v in values.items())  # a Search shows as its kind


def _search_of(values: dict[str, Any]) -> Search | None:
    """The point's LR search, None for a fixed lr."""
    lr = values.get("lr")
    return lr if isinstance(lr, Search) else None


def resolve_command(spec: SweepSpec, values: dict[str, Any]) -> tuple[CommandConfig, Search | None, dict[str, Any]]:
    """One expanded point of a command sweep -> its CommandConfig (a searched lr holds the search's first
    value), its search, and no static columns. Every placeholder must have a value and every value given must
    be used by one, else SpecError naming command.run (or command.env.NAME) before anything runs."""
    command = spec.command
    assert command is not None
    search = _search_of(values)
    values = {"seed": 0} | dict(values)  # seed defaults to 0, like a RunConfig's
    if search is not None:
        values["lr"] = search.first_lr
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
    """One expanded point -> a validated RunConfig (a searched lr holds the search's first), its search, its info;
    a CommandConfig for a spec with [command] (`resolve_command`)."""
    if spec.command is not None:
        return resolve_command(spec, values)
    from hyperp.trainer.metrics import param_counts, static_columns  # noqa: PLC0415 (torch: when a plan is built)

    values = dict(values)
    search = _search_of(values)
    if search is not None:
        values["lr"] = search.first_lr
    tpp = values.pop("tokens_per_param", None)
    if values.get("compile") == AUTO_COMPILE:  # decided per shape from measurements (hyperp.sweeps.compile)
        values["compile"] = False
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
        raise SpecError(e.field, f"{message_of(e)} (in the run with {_describe(values) or 'the base config'})") from None
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
        point = PlannedCell(identity.cell_id(cfg, spec.version_tag), cfg, search, info,  # this point's runs
                            auto_compile=values.get("compile") == AUTO_COMPILE)
        _add_cell(cells, point, values)
        for lr in (cfg.lr,) if search is None else search.known_lrs:
            _add_run(runs, spec, point, lr, values)
    return Plan(spec=spec, runs=list(runs.values()), cells=cells, varying=varying_fields(spec, runs, cells))


def _add_cell(cells: dict[str, PlannedCell], point: PlannedCell, values: dict[str, Any]) -> None:
    """A point's cell: new, or one already planned taking the point's search (one search per cell)."""
    cell = cells.get(point.cell_id)
    if cell is None:
        cells[point.cell_id] = PlannedCell(point.cell_id, point.config, point.search, point.info, point.auto_compile)
    elif point.search is not None:
        if cell.search is not None and cell.search != point.search:
            raise SpecError("lr", f"two different LR searches for the same cell ({_describe(values)})")
        cell.search = point.search


def _add_run(runs: dict[str, PlannedRun], spec: SweepSpec, point: PlannedCell, lr: float,
             values: dict[str, Any]) -> None:
    """The point's run at `lr`, once per run id (two configs of one id differ in a result-neutral field)."""
    try:
        run_cfg = point.config.replace(lr=lr)
    except ConfigError as e:
        raise SpecError(e.field, f"{message_of(e)} (in the run with {_describe(values)})") from None
    rid = identity.run_id(run_cfg, spec.version_tag)
    if rid in runs and runs[rid].config != run_cfg:
        raise SpecError(*_neutral_only(runs[rid].config, run_cfg, values))
    if rid not in runs:
        kind = "grid" if point.search is None else point.search.kind
        runs[rid] = PlannedRun(rid, point.cell_id, run_cfg, kind, dict(point.info), point.auto_compile)


def varying_fields(spec: SweepSpec, runs: dict[str, PlannedRun], cells: dict[str, PlannedCell]) -> list[str]:
    """The config fields that differ between the plan's runs and cells (lr when it does or is searched;
    tokens_per_param, before tokens, when it differs); `checkpoint_every` only when the spec sets it."""
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
    return varying


def plan_json(plan: Plan) -> dict[str, Any]:
    """plan.json: the runs and cells with their varying settings (what `sweep status` and `ls` read)."""
    return {"sweep": plan.spec.name, "code_version": hyperp.__version__, "version_tag": plan.spec.version_tag,
            "varying": plan.varying, "resources": {"cpus": plan.spec.resources.cpus, "gpus": plan.spec.resources.gpus},
            "runs": [{"run_id": r.run_id, "cell_id": r.cell_id, "search": r.search,
                      "fields": plan.varying_values(r.config, r.info), "flops": r.info.get("flops_planned"),
                      "n_params": r.info.get("n_params")} for r in plan.runs],  # None for a command
            "cells": [{"cell_id": c.cell_id, "search": c.search.to_dict() if c.search else None,
                       "fields": plan.varying_values(c.config, c.info, lr=False)} for c in plan.cells.values()]}


# ---------------------------------------------------------------- before a sweep runs


def prepare(spec: str | Path | SweepSpec, root: str | Path,
            max_runs: int | None = None) -> tuple[SweepSpec, Plan, Path]:
    """Load, expand and check a spec (grid size, every run's config, every distinct corpus); writes nothing.
    Returns the spec, its plan and its sweep directory (`root/<name>`)."""
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    plan = make_plan(spec, max_runs)
    if spec.command is None:  # a command reads its own data
        check_plan_data(plan)
    return spec, plan, Path(root) / spec.name


def check_plan_data(plan: Plan) -> None:
    """Each distinct corpus of the plan is loaded and checked once: paths, emptiness, token ids < vocab_size."""
    from hyperp.trainer.data import check_data, load_corpus  # noqa: PLC0415 (pulls in torch)

    seen = set()
    for cfg in [r.config for r in plan.runs] + [c.config for c in plan.cells.values()]:
        key = (cfg.data, cfg.val_percent, cfg.vocab_size, cfg.seq_len)
        if key not in seen:
            seen.add(key)
            check_data(cfg)
    load_corpus.cache_clear()  # the driver trains nothing: do not hold a text corpus for the whole sweep
