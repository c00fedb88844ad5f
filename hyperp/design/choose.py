"""Choosing runs: greedy by the narrowing of the question's interval per FLOP, over simulated outcomes.

For each candidate, `n_sims` outcome sets are drawn from the response model (hyperp.design.model); each is
added to the runs (and to the candidates already chosen, with that simulation's outcomes), the question is
refitted exactly as its command does, and the median width over the simulations is the candidate's predicted
width. The candidate with the largest (current width - predicted width) / FLOPs is added; repeat until the
budget or the target width is reached, or no candidate narrows the interval. While the runs cannot answer the
question yet (too few LRs at a scale), candidates are ranked by the cells they make fittable per FLOP
instead. Simulations use common random numbers (the same normal draws and bootstrap seed for every
candidate), so candidates differ by their runs, not by luck; everything is reproducible from `seed`.

The designer sees only the runs it is given and the candidates' settings, never an unrun candidate's loss:
a candidate's rows carry NaN in the loss column, and outcomes come from the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.design.candidates import Candidate
from hyperp.design.model import ResponseModel, fit_model
from hyperp.design.questions import UNANSWERED, Estimate, Question
from hyperp.fitting.bootstrap import DEFAULT_N_BOOT
from hyperp.fitting.table import FitInputError

DESIGN_N_BOOT = 200  # bootstrap replicates per simulated refit: enough to rank candidates, 5x cheaper
DESIGN_SIMS = 8  # outcome sets per candidate: the median width over 8 ranks candidates stably enough


class BudgetError(FitInputError):
    """The budget buys no candidate run; `budget` and `cheapest` (FLOPs) let design rounds end on a note."""

    def __init__(self, budget: float, cheapest: float):
        self.budget, self.cheapest = budget, cheapest
        super().__init__(f"budget: {budget:.3g} FLOPs (--budget-flops, or --budget-fraction of the runs so far) "
                         f"is below the cheapest candidate run ({cheapest:.3g} FLOPs)")


@dataclass
class Design:
    question: Question
    current: Estimate
    predicted: Estimate
    chosen: list[Candidate]
    cost_flops: float
    noise: str
    notes: list[str] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)  # per chosen candidate: width narrowed per FLOP

    def to_dict(self) -> dict[str, Any]:
        runs = [{**s, "kind": c.kind, "label": c.label, "flops": c.flops / len(c.settings), "gain": g}
                for c, g in zip(self.chosen, self.gains) for s in c.settings]
        return {"question": self.question.name, "describe": self.question.describe(),
                "command": self.question.command, "current": self.current.to_dict(),
                "predicted": self.predicted.to_dict(), "runs": runs, "n_runs": len(runs),
                "cost_flops": self.cost_flops, "noise": self.noise, "notes": self.notes}


@dataclass
class _Sims:
    """The chosen runs' simulated outcomes, one table per simulation."""

    tables: list[pd.DataFrame]
    widths: np.ndarray
    estimates: list[Estimate]


def choose(runs: pd.DataFrame, question: Question, candidates: list[Candidate], *,
           budget_flops: float = math.inf, target_width: float | None = None, max_candidates: int | None = None,
           n_sims: int = DESIGN_SIMS, n_boot: int = DESIGN_N_BOOT, seed: int = 0,
           model: ResponseModel | None = None) -> Design:
    """Greedy choice among `candidates` for the question over `runs` (see the module doc)."""
    if not candidates:
        raise FitInputError("no candidate runs to choose from")
    cheapest = min(c.flops for c in candidates)
    if budget_flops < cheapest:
        raise BudgetError(budget_flops, cheapest)
    model = model or fit_model(runs, question)
    rng = np.random.default_rng(seed)
    current = question.estimate(runs)
    draws = {id(c): rng.standard_normal((n_sims, len(c.rows))) for c in candidates}
    sims = _evaluate(question, [runs] * n_sims, n_boot, seed)
    design = Design(question, current, _median(sims.estimates), [], 0.0, model.noise)
    pending = list(candidates)
    while pending and (max_candidates is None or len(design.chosen) < max_candidates):
        if target_width is not None and np.median(sims.widths) <= target_width:
            break
        options = [c for c in _heads(pending) if design.cost_flops + c.flops <= budget_flops]
        if not options:
            break
        best, best_sims, gain = _best(question, model, sims, options, draws, n_boot, seed)
        if best is None:
            design.notes.append(f"stopped: no remaining candidate narrows the interval in simulation "
                                f"({len(options)} affordable, {n_sims} simulations each)")
            break
        pending.remove(best)
        design.chosen.append(best)
        design.gains.append(gain)
        design.cost_flops += best.flops
        sims = best_sims
        design.predicted = _median(sims.estimates)
    return design


def _heads(pending: list[Candidate]) -> list[Candidate]:
    """The candidates on offer: every one without a queue, and the first pending one of each queue."""
    seen, out = set(), []
    for c in pending:
        if not c.queue or c.queue not in seen:
            out.append(c)
            seen.add(c.queue)
    return out


def _best(question, model, sims: _Sims, options, draws, n_boot, seed):
    """The option with the largest narrowing per FLOP; while the runs cannot answer, the one that brings
    cells closest to a fittable LR curve (and the most simulations to an answer) per FLOP, ties going to the
    runs the model puts nearest an optimum (lowest predicted loss).

    The narrowing is each simulation's width before minus after (paired: same draws, same bootstrap seed),
    scored by its mean less its standard error: dividing by FLOPs magnifies the Monte Carlo noise of a cheap
    run's narrowing, and a lower bound keeps that noise from buying it. Where no option's lower bound is
    positive, the mean decides."""
    answered_now = math.isfinite(float(np.median(sims.widths)))  # as the predicted interval (_median) reads it
    ready_now = question.readiness(sims.tables[0])
    scored = []
    for c in options:
        tables = [pd.concat([t, _simulated(c, model, z)], ignore_index=True) for t, z in zip(sims.tables, draws[id(c)])]
        new = _evaluate(question, tables, n_boot, seed)
        if answered_now:
            d = _narrowing(sims.widths, new.widths)
            mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
            key = ((mean - se) / c.flops, mean / c.flops)
        else:
            answered = float(np.mean(np.isfinite(new.widths)))
            progress = (question.readiness(tables[0]) - ready_now + answered) / c.flops
            key = (progress, progress, -float(np.mean(model.mean(c.rows))))
        scored.append((key, c, new))
    for rank in (0, 1):  # the lower bound first, then the mean
        positive = [s for s in scored if s[0][rank] > 0]
        if positive:
            key, c, new = max(positive, key=lambda s: (s[0][rank], *s[0][2:]))
            return c, new, key[1]
    return None, None, 0.0


def _narrowing(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Each simulation's width before minus after. An unanswered width (inf) is scored as twice the answered
    one beside it: a simulation the candidate leaves unanswered loses its width, one it answers gains its new
    width, and one unanswered either way gains nothing (so a few unanswered simulations among answered ones
    neither stall the choice nor buy a run by themselves)."""
    fb, fa = np.isfinite(before), np.isfinite(after)
    b, a = np.where(fb, before, 0.0), np.where(fa, after, 0.0)
    return np.select([fb & fa, fb, fa], [b - a, -b, a], 0.0)


def _simulated(c: Candidate, model: ResponseModel, z: np.ndarray) -> pd.DataFrame:
    rows = c.rows.copy()
    rows[model.question.loss_col] = model.simulate(rows, z)
    return rows


def _evaluate(question: Question, tables: list[pd.DataFrame], n_boot: int, seed: int) -> _Sims:
    est = [question.estimate(t, n_boot=n_boot, seed=seed) for t in tables]
    return _Sims(list(tables), np.array([e.width for e in est]), est)


def _median(estimates: list[Estimate]) -> Estimate:
    """The simulation of median width (an unanswered one counts as infinitely wide, as in `choose`'s stopping
    test), whole: its value and both bounds come from one simulation, so a few answered simulations among
    many unanswered ones cannot pass for a narrow interval. Unanswered when the median width is infinite
    (half or more of the simulations unanswered). With an even count the upper of the two middle ones."""
    widths = np.array([e.width for e in estimates], dtype=float)
    mid = estimates[int(np.argsort(widths, kind="stable")[len(widths) // 2])]
    return mid if mid.answered else UNANSWERED


def predicted_width(runs: pd.DataFrame, question: Question, model: ResponseModel, *, n_sims: int = 20,
                    n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> tuple[float, np.ndarray]:
    """The width the model predicts for the runs that exist: their losses re-drawn from the model (same LRs,
    seeds, scales), refitted as the command does; (median width, every simulation's width). The calibration
    of the noise model against the width the command reports on the real losses."""
    rng = np.random.default_rng(seed)
    ok = runs["status"].astype(str).eq("completed").to_numpy()
    widths = []
    for _ in range(n_sims):
        t = runs.copy()
        sub = t[ok]
        t.loc[ok, question.loss_col] = model.simulate(sub, rng.standard_normal(len(sub)))
        widths.append(question.estimate(t, n_boot=n_boot, seed=seed).width)
    w = np.array(widths)
    return float(np.median(w)), w
