"""A sweep directory as a report reads it, and what varies in it.

Read-only: the files are opened for reading (runs.parquet through one handle, safe beside a driver's atomic
rewrites), no lock is probed or taken, nothing is created. What a report finds applicable is decided here from
the ledger's columns: the cell columns (the run settings that vary, the LR and the seed aside), the columns
that merely follow another (width co-scaled with depth), and the transfer axes among the cell columns.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from hyperp.checks.transfer import AXES
from hyperp.config import field_types
from hyperp.errors import FitInputError
from hyperp.io import read_json
from hyperp.plots.stability import BOOKKEEPING  # config fields that never tell runs apart
from hyperp.schema import CURVES_FILE, PLAN_FILE, RUNS_DIR, RUNS_FILE, SPEC_FILE, STATE_FILE

REPLICATES = ("lr", "seed")  # settings swept within a cell: never a cell column
FIRST = ("param", "depth", "width", "tokens", "top_k")  # the order cell columns are taken in: the first of two
# co-scaled columns is kept (depth before width: the paper co-scales width with depth)


@dataclass(frozen=True)
class Sweep:
    """One sweep directory, read once."""

    dir: Path
    name: str
    runs: pd.DataFrame  # runs.parquet (extra_json expanded)
    spec_text: str = ""
    description: str = ""
    plan: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def cells(self) -> list[str]:
        return cell_columns(self.runs)[0]

    @cached_property
    def follows(self) -> dict[str, str]:
        return cell_columns(self.runs)[1]

    @cached_property
    def axes(self) -> list[str]:
        """The transfer axes (width, depth, tokens, top_k) among the cell columns."""
        return [c for c in self.cells if c in AXES]

    def settings(self, *extra: str) -> pd.DataFrame:
        """The runs' ids, statuses and the settings that tell them apart (cell columns, the ones that follow
        them, LR, seed, size and budget), plus `extra`: a slim frame to join onto curves of many steps."""
        keep = ["run_id", "status", *self.cells, *self.follows, *REPLICATES, "n_params", "tokens", *extra]
        return self.runs[[c for c in dict.fromkeys(keep) if c in self.runs.columns]]

    @cached_property
    def curves(self):
        """The step curves of the ledger's runs that have them (`hyperp.sweeps.ledger.load_curves`), None when
        no run has curves."""
        from hyperp.sweeps.ledger import load_curves  # noqa: PLC0415

        ids = [r for r in self.runs["run_id"].astype(str) if (self.dir / RUNS_DIR / r / CURVES_FILE).is_file()]
        return load_curves(self.dir, ids) if ids else None


def read_sweep(path: str | Path, root: str | Path = "sweeps") -> Sweep:
    """The sweep at `path` (a directory with runs.parquet; else as `find_sweep_dir` finds it: a spec maps to
    `root`/<its name>, a typo gets the sweeps there are); InputError when there is none or its ledger is
    missing or empty."""
    from hyperp.fitting.table import load_table  # noqa: PLC0415
    from hyperp.sweeps.ledger import find_sweep_dir  # noqa: PLC0415

    path = Path(path)
    if not (path / RUNS_FILE).is_file():
        path = find_sweep_dir(path, Path(root))
    if not (path / RUNS_FILE).is_file():
        raise FitInputError(f"{path}: no {RUNS_FILE} yet: no run of the sweep has been recorded")
    runs = load_table(path)
    if runs.empty or "run_id" not in runs.columns:
        raise FitInputError(f"{path}: the ledger {RUNS_FILE} holds no runs")
    spec = path / SPEC_FILE
    text = spec.read_text() if spec.is_file() else ""
    return Sweep(dir=path, name=_name(path, runs), runs=runs, spec_text=text, description=_description(text),
                 plan=read_json(path / PLAN_FILE), state=read_json(path / STATE_FILE, {}) or {})


def _name(path: Path, runs: pd.DataFrame) -> str:
    names = runs["sweep"].dropna().unique() if "sweep" in runs.columns else []
    return str(names[0]) if len(names) == 1 else path.name


def _description(spec_text: str) -> str:
    try:
        return str(tomllib.loads(spec_text).get("description", "")) if spec_text else ""
    except tomllib.TOMLDecodeError:
        return ""


def varying(runs: pd.DataFrame) -> list[str]:
    """The run settings (config fields) that take more than one value, bookkeeping and replicates aside, in
    the order FIRST then the config's."""
    names = [*FIRST, *(n for n in field_types() if n not in FIRST)]
    return [c for c in names if c in runs.columns and c not in BOOKKEEPING and c not in REPLICATES
            and runs[c].astype(str).nunique() > 1]


def cell_columns(runs: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """(the columns that set a cell, {column: the cell column(s) it follows}): a varying setting that one value
    of the columns kept before it always fixes (width at a fixed aspect ratio, given depth) is not a cell
    column of its own."""
    kept: list[str] = []
    follows: dict[str, str] = {}
    for c in varying(runs):
        leader = next((k for k in kept if _determines(runs, [k], c)), None)
        if leader is None and kept and _determines(runs, kept, c):
            leader = " and ".join(kept)
        if leader is None:
            kept.append(c)
        else:
            follows[c] = leader
    return kept, follows


def _determines(runs: pd.DataFrame, keys: list[str], column: str) -> bool:
    text = runs[[*keys, column]].astype(str)
    return bool((text.groupby(keys)[column].nunique() <= 1).all())


def values_text(values) -> str:
    """The distinct values of a column, sorted, as text: '32, 64, 128'."""
    from hyperp.plots.style import number  # noqa: PLC0415

    distinct = pd.Series(values).dropna().unique()
    try:
        distinct = sorted(distinct)
    except TypeError:
        distinct = sorted(distinct, key=str)
    return ", ".join(number(v) for v in distinct)
