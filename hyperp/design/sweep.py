"""A design for a sweep directory: load its ledger, pose the question, model, candidates, choose; and the
DESIGN.toml that `hyperp sweep run` accepts as is.

DESIGN.toml is the sweep's own spec.toml (same name, so its runs land in the same ledger and every finished
run is reused) with the chosen runs appended as [[runs]] tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hyperp.design.candidates import Candidate, SweepContext, auto_candidates, run_cost
from hyperp.design.choose import Design, choose
from hyperp.design.model import fit_model
from hyperp.design.questions import make_question
from hyperp.fitting.table import FitInputError, filter_rows, load_table, where_values


def design_sweep(sweep_dir: str | Path, question: str, *, axis: str | None = None, by: tuple[str, ...] = ("param",),
                 where: dict[str, Any] | None = None, method: str | None = None, baseline: str | None = None,
                 method_col: str = "param", at: float | None = None, budget_flops: float | None = None,
                 budget_fraction: float | None = None, target_width: float | None = None,
                 pool: str | Path | None = None, seed: int = 0, n_sims: int | None = None,
                 target: dict[str, Any] | None = None) -> Design:
    """The design of `question` for one group of the sweep at `sweep_dir` (see hyperp.design)."""
    sweep_dir = Path(sweep_dir)
    ctx = SweepContext.load(sweep_dir)
    runs = filter_rows(load_table(sweep_dir), where or {}, source=str(sweep_dir))
    q = make_question(question, runs, axis=axis, by=by, method=method, baseline=baseline, method_col=method_col,
                      at=at, target=target, source=str(sweep_dir))
    q = dataclasses.replace(q, where=tuple((k, v) for k, vs in (where or {}).items() for v in where_values(vs)))
    runs = q.group_rows(runs)
    budget = _budget(runs, budget_flops, budget_fraction, target_width)
    model = fit_model(runs, q)
    cands = pool_candidates(pool, runs, q, ctx) if pool else auto_candidates(runs, q, model, ctx)
    kw = {} if n_sims is None else {"n_sims": n_sims}
    return choose(runs, q, cands, budget_flops=budget, target_width=target_width, seed=seed, model=model, **kw)


def _budget(runs: pd.DataFrame, flops: float | None, fraction: float | None, target: float | None) -> float:
    """The FLOPs a design may spend: --budget-flops, or --budget-fraction of the group's FLOPs so far; either
    may come with --target-width (stop when reached), which alone leaves the budget open."""
    if flops is None and fraction is None and target is None:
        raise FitInputError("give --budget-flops, --budget-fraction or --target-width")
    if flops is not None and fraction is not None:
        raise FitInputError("give --budget-flops or --budget-fraction, not both")
    for name, x in (("--budget-flops", flops), ("--budget-fraction", fraction), ("--target-width", target)):
        if x is not None and not (math.isfinite(x) and x > 0):
            raise FitInputError(f"{name}: expected a positive number, got {x}")
    if fraction is not None:
        return fraction * sum(run_cost(row) for _, row in runs.iterrows())
    return math.inf if flops is None else flops


def pool_candidates(pool: str | Path, runs: pd.DataFrame, q, ctx: SweepContext) -> list[Candidate]:
    """One candidate per run of a pool spec (any spec whose runs the sweep's table can hold), its FLOPs from
    the plan's accounting; runs already in the ledger are left out."""
    from hyperp.sweeps.plan import field_values, make_plan  # noqa: PLC0415
    from hyperp.sweeps.spec import SpecError, load_spec  # noqa: PLC0415

    try:
        plan = make_plan(load_spec(pool))
    except (SpecError, OSError) as exc:
        raise FitInputError(f"--pool {pool}: {exc}") from None
    done = set(runs["run_id"].astype(str)) if "run_id" in runs.columns else set()
    out = []
    for r in plan.runs:
        if r.run_id in done:
            continue
        values = field_values(r.config)
        row = {**values, **r.info, "run_id": r.run_id, "flops": float(r.info["flops_planned"]),
               q.loss_col: math.nan, "status": "completed"}
        settings = {k: v for k, v in values.items() if v != ctx.base.get(k) and k != "checkpoint_every"}
        out.append(Candidate("pool", f"{r.run_id}: lr {r.config.lr:.4g}", pd.DataFrame([row]), row["flops"],
                             [settings]))
    if not out:
        raise FitInputError(f"--pool {pool}: every run of the pool is already in the sweep")
    return out


def design_toml(design: Design, ctx: SweepContext) -> str:
    """The sweep's spec.toml with the chosen runs appended as [[runs]] tables."""
    q = design.question
    lines = [ctx.spec.text.rstrip("\n"), "", f"# hyperp design --question {q.name}: {q.describe()}; "
             f"current width {design.current.width:.4g}, predicted {design.predicted.width:.4g}, "
             f"{len(design.chosen)} batch(es), {design.cost_flops:.4g} FLOPs"]
    for c in design.chosen:
        lines.append(f"# {c.kind}: {c.label}")
        for s in c.settings:
            lines += ["[[runs]]", *(f"{k} = {_toml(v)}" for k, v in sorted(s.items())), ""]
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise FitInputError(f"cannot write {v!r} to TOML")
