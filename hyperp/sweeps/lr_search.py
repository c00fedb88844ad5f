"""Learning-rate search per cell (a cell = a run config minus `lr`): grid bracketing and Optuna.

Both searches are driven by the sweep driver through one small interface: `wanted(results)` returns the
learning rates that should be running now (given every finished run of the cell), and `summary(results)`
describes the search. The driver submits the wanted runs that are neither finished nor in flight and asks
again whenever one of the cell's runs finishes; a search is done when it wants nothing.

Bracket (`bracket_state`) is a pure function of the finished runs, so a resumed sweep re-derives exactly
the same extended grid and reuses every run already in the ledger. Optuna keeps its state in an sqlite
study in the sweep directory (`optuna.db`, one study per cell); a trial asked but not told when the driver
stopped is re-run with the same lr (same run id, so it resumes from its checkpoint) and told on resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperp.sweeps.ledger import COMPLETED, DIVERGED, OPTUNA_DB
from hyperp.sweeps.plan import Plan, PlannedCell, PlannedRun
from hyperp.sweeps.search import BracketSearch, OptunaSearch, nice

Results = dict[str, dict[str, Any]]  # run_id -> finished ledger row


def score(row: dict[str, Any] | None, metric: str) -> float | None:
    """A finished run's loss for the search: +inf when diverged (or no finite loss), None when unusable."""
    if row is None:
        return None
    status = row.get("status")
    if status == DIVERGED:
        return math.inf
    if status != COMPLETED:
        return None  # failed or infra_failed: says nothing about the lr
    value = row.get(metric, math.nan)
    return float(value) if value is not None and math.isfinite(value) else math.inf


@dataclass
class BracketState:
    grid: list[float]  # every lr of the (possibly extended) grid, ascending
    pending: list[float]  # lrs without a finished run
    extensions: int
    done: bool
    bracketed: bool
    best_lr: float | None = None
    best: float | None = None
    reason: str = ""
    edge: str = ""  # where the best run sits once done unbracketed: "low", "high" or "interior"
    next_grid: list[float] = field(default_factory=list)  # a grid to try when done unbracketed


def bracket_state(search: BracketSearch, lookup: Callable[[float], dict[str, Any] | None],
                  repeats: Sequence[dict[str, Any]] = ()) -> BracketState:
    """Replay the bracketing rule over the finished runs (`lookup(lr)` -> the cell's run at lr, or None).

    Bracketed means what `hyperp fit lr` means by it (`hyperp.fitting.lr.bracket_verdict`), judged on the
    rows `fit lr --by <cell columns>` reads: the grid's runs pooled with the cell's `repeats` (its runs with
    other seeds). While the best run is on an edge (or fewer than 3 LRs have a finite loss), one point is
    added beyond the better edge at the edge's spacing (downward when nothing finite lies above); while the
    best is interior but its parabola fails the test, the two geometric midpoints beside it are added. Each
    step counts against max_extend.
    """
    from hyperp.fitting.lr import bracket_verdict  # noqa: PLC0415 (scipy: only when a search is replayed)

    grid = sorted(search.grid)
    extensions = 0
    while True:
        pending = [lr for lr in grid if lookup(lr) is None]
        if pending:
            return BracketState(grid, pending, extensions, done=False, bracketed=False, reason="running")
        scores = {lr: score(lookup(lr), search.metric) for lr in grid}
        finite = {lr: s for lr, s in scores.items() if s is not None and math.isfinite(s)}
        pooled = [(lr, s) for lr, s in scores.items() if s is not None]
        pooled += [(float(r["lr"]), s) for r in repeats if (s := score(r, search.metric)) is not None]
        if not pooled:
            return BracketState(grid, [], extensions, True, False, reason="no usable run (all failed)")
        best_lr = min(finite, key=lambda lr: (finite[lr], lr)) if finite else None
        best = finite[best_lr] if best_lr is not None else None
        verdict = bracket_verdict([lr for lr, s in pooled if math.isfinite(s)],
                                  [s for s in (s for _, s in pooled) if math.isfinite(s)],
                                  diverged_lr=[lr for lr, s in pooled if not math.isfinite(s)])
        if verdict.bracketed:
            return BracketState(grid, [], extensions, True, True, best_lr, best, reason=verdict.reason)
        added = _next_points(grid, verdict.direction, best_lr)
        if not added or extensions >= search.max_extend:
            why = (f"after max_extend={search.max_extend} extensions" if added else
                   "and the grid cannot be refined further")
            edge = {-1: "low", 1: "high"}.get(verdict.direction, "interior")
            return BracketState(grid, [], extensions, True, False, best_lr, best, reason=f"{verdict.reason} {why}",
                                edge=edge, next_grid=_grid_to_try(grid, edge, best_lr))
        grid = sorted(grid + added)
        extensions += 1


def _next_points(grid: list[float], direction: int, best_lr: float | None) -> list[float]:
    """The LRs one step of the search adds: beyond an edge, or the midpoints beside an interior best."""
    if direction < 0:
        return [nice(grid[0] / (grid[1] / grid[0]))]
    if direction > 0:
        return [nice(grid[-1] * (grid[-1] / grid[-2]))]
    i = grid.index(best_lr)
    mids = {nice(math.sqrt(grid[j] * best_lr)) for j in (i - 1, i + 1) if 0 <= j < len(grid)}
    return sorted(mids - set(grid))


GRID_TO_TRY = 5  # points of the grid suggested for a cell left unbracketed


def _grid_to_try(grid: list[float], edge: str, best_lr: float | None) -> list[float]:
    """A grid for the next sweep of a cell left unbracketed: from the best run onward past its edge at the
    edge's spacing, or (interior) at half the spacing around it; [] when there is no finite best."""
    if best_lr is None:
        return []
    if edge == "interior":
        i = grid.index(best_lr)
        j = i + 1 if i + 1 < len(grid) else i - 1
        step = math.sqrt(max(grid[j], best_lr) / min(grid[j], best_lr))
        return [nice(best_lr * step ** k) for k in range(-(GRID_TO_TRY // 2), GRID_TO_TRY // 2 + 1)]
    ratio = grid[-1] / grid[-2] if edge == "high" else grid[1] / grid[0]
    sign = 1 if edge == "high" else -1
    return sorted(nice(best_lr * ratio ** (sign * k)) for k in range(-1, GRID_TO_TRY - 1))


class CellSearch:
    """Base: a search over the lr of one cell, then its best lr repeated with more seeds (`seeds`)."""

    def __init__(self, plan: Plan, cell: PlannedCell):
        self.plan, self.cell = plan, cell

    def run_id(self, lr: float) -> str:
        return self.plan.run_for(self.cell, lr, self.kind).run_id

    kind = "grid"

    def wanted(self, results: Results) -> list[float]:
        raise NotImplementedError

    def best(self, results: Results) -> float | None:
        """The best lr once the search is done and found a finite loss; None before (or without one)."""
        raise NotImplementedError

    def summary(self, results: Results) -> dict[str, Any]:
        raise NotImplementedError

    def seed_runs(self, results: Results) -> list[PlannedRun]:
        """The repeats of the best lr with seeds seed+1 .. seed+n-1, once the search is done. The best comes
        from the search's own runs (the cell's seed), so the repeats can never move it."""
        n = self.cell.search.seeds  # type: ignore[union-attr]
        best = self.best(results) if n > 1 else None
        if best is None:
            return []
        seed = self.cell.config.seed
        return [self.plan.run_for(self.cell, best, self.kind, seed=seed + i) for i in range(1, n)]

    def seed_summary(self, results: Results) -> dict[str, Any]:
        runs = self.seed_runs(results)
        return {"seeds": self.cell.search.seeds, "seed_run_ids": [r.run_id for r in runs],  # type: ignore[union-attr]
                "seed_runs_done": sum(r.run_id in results for r in runs)}


class Bracket(CellSearch):
    kind = "bracket"

    def __init__(self, plan: Plan, cell: PlannedCell, sweep_dir: Path | None = None):  # a pure replay: no state
        super().__init__(plan, cell)
        self.search: BracketSearch = cell.search  # type: ignore[assignment]
        self._ids: dict[float, str] = {}

    def _id(self, lr: float) -> str:
        if lr not in self._ids:
            self._ids[lr] = self.run_id(lr)
        return self._ids[lr]

    def state(self, results: Results) -> BracketState:
        return bracket_state(self.search, lambda lr: results.get(self._id(lr)), self.repeats(results))

    def repeats(self, results: Results) -> list[dict[str, Any]]:
        """The cell's finished runs outside its own grid runs (its best LR with other seeds): `fit lr` pools
        them into the cell's parabola, so the search judges with them too."""
        cid = self.cell.cell_id
        return [row for rid, row in results.items()
                if row.get("cell_id") == cid and row.get("lr") is not None and rid != self._id(float(row["lr"]))]

    def wanted(self, results: Results) -> list[float]:
        return self.state(results).pending

    def best(self, results: Results) -> float | None:
        s = self.state(results)
        return s.best_lr if s.done else None

    def summary(self, results: Results) -> dict[str, Any]:
        s = self.state(results)
        return {"cell_id": self.cell.cell_id, "search": "bracket", "grid": s.grid,
                "run_ids": [self._id(lr) for lr in s.grid], "extensions": s.extensions, "done": s.done,
                "bracketed": s.bracketed, "best_lr": s.best_lr, "best": s.best, "reason": s.reason,
                "edge": s.edge, "next_grid": s.next_grid, "metric": self.search.metric} | self.seed_summary(results)


@dataclass
class _Trial:
    number: int
    lr: float
    run_id: str


class OptunaCell(CellSearch):
    """An Optuna study per cell over log-uniform [low, high], asked and told from the driver."""

    kind = "optuna"

    def __init__(self, plan: Plan, cell: PlannedCell, sweep_dir: Path):
        super().__init__(plan, cell)
        import optuna  # noqa: PLC0415

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.search: OptunaSearch = cell.search  # type: ignore[assignment]
        s = self.search
        storage = f"sqlite:///{(Path(sweep_dir) / OPTUNA_DB).resolve()}"
        name = f"{plan.spec.name}-{cell.cell_id}"
        # A resumed study gets its sampler seeded with seed + trials so far: re-seeding with `seed` alone would
        # replay the first random start-up points (same lrs, same run ids) instead of exploring new ones.
        try:
            existing = len(optuna.load_study(study_name=name, storage=storage).trials)
        except KeyError:
            existing = 0
        seed = s.seed + existing
        sampler = (optuna.samplers.TPESampler(seed=seed) if s.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
        self.study = optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=sampler,
                                         load_if_exists=True)
        self.dist = {"lr": optuna.distributions.FloatDistribution(s.low, s.high, log=True)}
        # a diverged trial is told the loss of a uniform predictor; a command sweep (no vocabulary) tells FAIL
        vocab = getattr(cell.config, "vocab_size", None)
        self.diverged_value = math.log(vocab) if vocab else math.inf
        self.running: dict[int, _Trial] = {}
        for t in self.study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.RUNNING and "lr" in t.params:
                self.running[t.number] = _Trial(t.number, t.params["lr"], self.run_id(t.params["lr"]))

    def _finished(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.is_finished())

    def _tell(self, trial: _Trial, row: dict[str, Any]) -> None:
        value = score(row, self.search.metric)
        if value is None or (math.isinf(value) and math.isinf(self.diverged_value)):
            self.study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial.number, self.diverged_value if math.isinf(value) else value)
        self.running.pop(trial.number, None)

    def wanted(self, results: Results) -> list[float]:
        for trial in list(self.running.values()):
            if trial.run_id in results:
                self._tell(trial, results[trial.run_id])
        finished = self._finished()
        while len(self.running) < self.search.parallel and finished + len(self.running) < self.search.trials:
            t = self.study.ask(self.dist)
            trial = _Trial(t.number, t.params["lr"], self.run_id(t.params["lr"]))
            t.set_user_attr("run_id", trial.run_id)
            self.running[t.number] = trial
            if trial.run_id in results:  # the same lr was already run
                self._tell(trial, results[trial.run_id])
                finished += 1
        return [t.lr for t in self.running.values()]

    def _best_trial(self):
        done = [t for t in self.study.get_trials(deepcopy=False)
                if t.state == self.optuna.trial.TrialState.COMPLETE and t.value < self.diverged_value]
        return min(done, key=lambda t: t.value) if done else None

    def _done(self) -> bool:
        return not self.running and self._finished() >= self.search.trials

    def best(self, results: Results) -> float | None:
        best = self._best_trial()
        return best.params["lr"] if best is not None and self._done() else None

    def summary(self, results: Results) -> dict[str, Any]:
        best = self._best_trial()
        return {"cell_id": self.cell.cell_id, "search": "optuna", "trials": self.search.trials,
                "finished": self._finished(), "running": len(self.running), "done": self._done(),
                "best_lr": best.params["lr"] if best else None, "best": best.value if best else None,
                "run_ids": [t.user_attrs.get("run_id") for t in self.study.get_trials(deepcopy=False)],
                "metric": self.search.metric} | self.seed_summary(results)


CELL_SEARCHES: dict[str, type[CellSearch]] = {Bracket.kind: Bracket, OptunaCell.kind: OptunaCell}  # by Search.kind


def make_search(plan: Plan, cell: PlannedCell, sweep_dir: Path) -> CellSearch:
    """The driver's side of a cell's search: the CellSearch of its spec's Search `kind`."""
    if cell.search is None:
        raise ValueError(f"cell {cell.cell_id} has no LR search")
    return CELL_SEARCHES[cell.search.kind](plan, cell, sweep_dir)
