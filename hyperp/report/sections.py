"""The report's descriptive sections: the spec and protocol, the runs' statuses, the LR optimum of every cell
and the training curves."""

from __future__ import annotations

import datetime
import json
from collections import Counter

from hyperp.errors import FitInputError
from hyperp.fitting.lr import LrOptima, fit_optimal_lr
from hyperp.fitting.report import fmt
from hyperp.plots.style import MAX_LEGEND, group_label, number
from hyperp.report.doc import Block, Code, Heading, Para, table
from hyperp.report.ledger import REPLICATES, Sweep, values_text
from hyperp.report.parts import Options, Part, figure, loss_text, value_interval, warnings_block
from hyperp.schema import RUNS_FILE, STATUSES


def overview(sw: Sweep) -> tuple[list[Block], list[Block]]:
    """What the sweep is (its description, where it was read, what varies, its LR search), and its spec."""
    head: list[Block] = [Heading(sw.name, 2)]
    if sw.description:
        head.append(Para(sw.description))
    head += [Para(_source(sw)), _settings(sw), *_protocol(sw)]
    spec = Code(sw.spec_text, "toml") if sw.spec_text else Para("The sweep directory has no spec.toml.")
    return head, [Heading("Spec", 3), spec]


def _source(sw: Sweep) -> str:
    mtime = datetime.datetime.fromtimestamp((sw.dir / RUNS_FILE).stat().st_mtime, datetime.UTC)
    state = sw.state
    driver = ("its state.json says a driver was running when last written" if state.get("active")
              else "its state.json says no driver was running" if state else "it has no state.json")
    return (f"Read from {sw.dir} (read only, no lock taken): runs.parquet of {len(sw.runs)} runs, written "
            f"{mtime:%Y-%m-%d %H:%M} UTC; {driver}.")


def _settings(sw: Sweep):
    rows = [(c, values_text(sw.runs[c]), "a cell column") for c in sw.cells]
    rows += [(c, values_text(sw.runs[c]), f"follows {lead} (one value per cell)") for c, lead in sw.follows.items()]
    rows += [(c, _range(sw.runs[c]), "within a cell") for c in REPLICATES if c in sw.runs.columns
             and sw.runs[c].nunique() > 1]
    return table(["setting", "values", "role"], rows, "What varies among the runs", id="settings")


def _range(values) -> str:
    distinct = sorted(values.dropna().unique())
    return values_text(distinct) if len(distinct) <= 6 else \
        f"{number(distinct[0])} to {number(distinct[-1])} ({len(distinct)} values)"


def _protocol(sw: Sweep) -> list[Block]:
    if not sw.plan:
        return [Para("The sweep directory has no plan.json: its protocol is the spec's alone.")]
    cells = sw.plan.get("cells", [])
    searches = Counter(json.dumps(c.get("search") or {}, sort_keys=True) for c in cells)
    rows = [(n, _search_text(json.loads(s))) for s, n in searches.items()]
    return [table(["cells", "learning-rate search"], rows,
                  f"Protocol: {len(sw.plan.get('runs', []))} runs planned in {len(cells)} cells", id="protocol")]


def _search_text(search: dict) -> str:
    if not search:
        return "none: the runs of the plan"
    kind = search.get("search", "grid")
    grid = ", ".join(number(v) for v in search.get("grid", []))
    text = f"{kind} over [{grid}] on {search.get('metric', 'val_loss')}"
    if search.get("max_extend"):
        text += f", extended up to {search['max_extend']} times while the best run sits on an edge"
    if search.get("seeds", 1) > 1:
        text += f", the best LR repeated to {search['seeds']} seeds"
    return text


def statuses(sw: Sweep) -> list[Block]:
    """Runs by status (the ledger's, with the plan's runs not yet recorded), and each failed run's first error
    line (`hyperp.sweeps.status.failed_runs`, as `sweep status` lists them)."""
    from hyperp.sweeps.status import failed_runs, tally  # noqa: PLC0415

    counts = tally(sw.runs["status"])
    plan_fields = {r["run_id"]: r["fields"] for r in (sw.plan or {}).get("runs", [])}
    ids = set(sw.runs["run_id"].astype(str))
    running = len(sw.state.get("running", [])) if sw.state.get("active") else 0
    row = [len(sw.runs), *counts.values(), len(set(plan_fields) - ids), running]
    blocks: list[Block] = [Heading("Runs", 3), table(["in the ledger", *STATUSES, "planned, not yet recorded",
                                                       "running (state.json)"], [row], id="runs")]
    records = {str(r["run_id"]): r for r in sw.runs.to_dict("records")}
    failed = failed_runs(records, ids, plan_fields, [*sw.cells, *REPLICATES])
    if failed:
        blocks.append(table(["run", "status", "settings", "first error line"],
                            [(f["run_id"], f["status"], group_label(f["settings"]), f["error"]) for f in failed],
                            "Failed runs", id="failed-runs"))
    else:
        blocks.append(Para("No run failed or infra-failed."))
    return blocks


def lr_optima(sw: Sweep, options: Options) -> tuple[Part, LrOptima | None]:
    """The optimum of every cell (`fit_optimal_lr` by the cell columns, cells with fewer than 3 LRs left out
    and named), its table, warnings and figures."""
    if "lr" not in sw.runs.columns or sw.runs["lr"].nunique() < 2:
        return Part().skip("LR optima", "the learning rate does not vary"), None
    try:
        res = fit_optimal_lr(sw.runs, sw.cells, n_boot=options.n_boot, seed=options.seed, skip_sparse=True,
                             source=str(sw.dir))
    except FitInputError as e:
        return Part().skip("LR optima", str(e)), None
    return _lr_part(sw, res, options), res


def _lr_part(sw: Sweep, res: LrOptima, options: Options) -> Part:
    level = next((o.lr_interval.level for o in res.optima), 0.95)
    rows = [[*(number(o.group[k]) for k in res.by), value_interval(o.lr_opt, o.lr_interval.low, o.lr_interval.high),
             loss_text(o.loss_opt), fmt(o.r2, 3), f"{o.n_points} ({o.n_fitted})", o.n_diverged,
             "yes" if o.bracketed else f"no: {o.reason}"] for o in res.optima]
    part = Part(blocks=[Heading("Learning-rate optimum of each cell", 3), Para(
        f"The vertex of a parabola in ln(lr) over the runs around the best (seeds pooled), with its {level:.0%} "
        f"bootstrap interval ({options.n_boot} replicates); hyperp fit lr --by {' --by '.join(res.by) or '-'}."),
        table([*res.by, f"eta* [{level:.0%} interval]", "loss*", "R^2", "runs (in the window)", "diverged",
               "bracketed"], rows, id="lr-optima")], reported=["LR optima"])
    if res.skipped:
        part.blocks.append(Para("; ".join(f"{group_label({k: v for k, v in s.items() if k != 'n_points'})} "
                                          f"({s['n_points']} runs)" for s in res.skipped),
                                lead="Left out (fewer than 3 learning rates with a finite loss):"))
    part.blocks += warnings_block(res.warnings)
    part.blocks += [_lr_figure(sw, sub, name, which, options) for name, which, sub in _lr_families(res)]
    return part


def _lr_families(res: LrOptima) -> list[tuple[str, str, LrOptima]]:
    """(file name, what it shows, optima) of each LR figure: one figure, or one per value of the first cell
    column where a legend would not hold every cell."""
    if len(res.optima) <= MAX_LEGEND or not res.by:
        return [("lr", "every cell", res)]
    first = res.by[0]
    values = list(dict.fromkeys(o.group[first] for o in res.optima))
    return [(f"lr-{first}-{v}", group_label({first: v}),
             LrOptima(res.by, tuple(o for o in res.optima if o.group[first] == v),
                      tuple(s for s in res.skipped if s.get(first) == v))) for v in values]


def _lr_figure(sw: Sweep, res: LrOptima, name: str, which: str, options: Options):
    from hyperp.plots import plot_lr  # noqa: PLC0415 (matplotlib)

    return figure(name, lambda: plot_lr(res), f"{sw.name}: validation loss against the learning rate, {which} "
                                      f"(star: the optimum, bar: its interval)", options)


def curves(sw: Sweep, options: Options) -> Part:
    """Every run's training loss against tokens, coloured by the setting that varies (`plot_curves`)."""
    frame = sw.curves
    if frame is None:
        return Part().skip("training curves", "no run of the ledger has curves (runs/<id>/curves.parquet)")

    def draw():
        from hyperp.plots import curves_frame, plot_curves  # noqa: PLC0415 (matplotlib)

        return plot_curves(curves_frame(frame, sw.settings(), y="train_loss", source=str(sw.dir)), source=str(sw.dir))

    fig = figure("curves", draw,
                 f"{sw.name}: training loss of every run against tokens (x: diverged)", options)
    return Part(blocks=[Heading("Training curves", 3), fig], reported=["training curves"])
