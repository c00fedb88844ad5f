"""The LR search types of a sweep spec (`lr = { search = "bracket" | "optuna", ... }`), and what each is.

A `Search` is a value of a spec's `lr` (parsed and checked by hyperp.sweeps.spec.parse_search); it owns what the
plan and the cost estimate ask of it: the lr a cell's config holds before the search picks one (`first_lr`),
the runs known before any result (`known_lrs`: a bracket's grid, none for optuna), the most runs it may add
(`max_additional_runs`) and a line describing it. Running a search (asking for learning rates as results come
in) is hyperp.sweeps.lr_search's, whose `CellSearch` of the same `kind` the driver builds for each cell.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class Search:
    """An LR search of a cell (`lr = { search = ... }`): what the plan, the cost estimate and the driver ask
    of it. The driver's side of a search (asking for runs as results come in) is hyperp.sweeps.lr_search's
    `CellSearch` of the same `kind`."""

    kind: str
    metric: str
    seeds: int

    def __str__(self) -> str:  # a point's description names the search, not its settings
        return self.kind

    @property
    def first_lr(self) -> float:
        """The lr a cell's config holds until its search picks one (a config needs a valid lr)."""
        raise NotImplementedError

    @property
    def known_lrs(self) -> tuple[float, ...]:
        """The learning rates run before any result is in (the plan lists their runs up front)."""
        raise NotImplementedError

    @property
    def search_runs(self) -> int:
        """At most this many runs beyond `known_lrs`, before the seed repeats."""
        raise NotImplementedError

    @property
    def max_additional_runs(self) -> int:
        """At most this many runs beyond `known_lrs`: the search's own, then the best lr's seed repeats."""
        return self.search_runs + self.seeds - 1

    def search_description(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for `sweep plan`: the search, then the best lr's repeats with other seeds."""
        repeats = self.seeds - 1
        more = f", then the best lr with {repeats} more seed{'s' if repeats > 1 else ''}" if repeats else ""
        return self.search_description() + more

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class BracketSearch(Search):
    grid: tuple[float, ...]
    max_extend: int = 3
    metric: str = "val_loss"
    seeds: int = 1  # runs at the best LR in all, once the search is done: the cell's seed, seed + 1, ...
    kind: str = "bracket"

    @property
    def first_lr(self) -> float:
        return self.grid[0]

    @property
    def known_lrs(self) -> tuple[float, ...]:
        return self.grid

    @property
    def search_runs(self) -> int:
        return self.max_extend

    def search_description(self) -> str:
        return f"bracket grid {list(self.grid)} + up to {self.max_extend} extensions"

    def to_dict(self) -> dict[str, Any]:
        return {"search": "bracket", "grid": list(self.grid), "max_extend": self.max_extend, "metric": self.metric,
                "seeds": self.seeds}


@dataclass(frozen=True)
class OptunaSearch(Search):
    trials: int
    low: float
    high: float
    parallel: int = 2
    seed: int = 0
    sampler: str = "tpe"
    metric: str = "val_loss"
    seeds: int = 1  # as for BracketSearch, at the best finished trial's LR
    kind: str = "optuna"

    @property
    def first_lr(self) -> float:
        return self.low

    @property
    def known_lrs(self) -> tuple[float, ...]:
        return ()  # every trial's lr is asked of the study while the sweep runs

    @property
    def search_runs(self) -> int:
        return self.trials

    def search_description(self) -> str:
        return f"optuna {self.trials} trials, lr in [{self.low:g}, {self.high:g}]"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["search"] = d.pop("kind")
        return d


def log_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """`points` log-spaced values from low to high, rounded to 6 significant digits."""
    if points == 1:
        return (nice(low),)
    step = (math.log(high) - math.log(low)) / (points - 1)
    return tuple(nice(math.exp(math.log(low) + i * step)) for i in range(points))


def nice(x: float) -> float:
    return float(f"{x:.6g}")
