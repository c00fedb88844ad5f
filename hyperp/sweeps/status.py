"""A sweep's state, counted one way for the driver, `hyperp sweep status` and `hyperp sweep ls`.

`tally` is the one count: runs by status (every status of hyperp.schema.STATUSES, 0 when none). The driver
tallies the records of its plan (state.json's `counts`, `SweepOutcome.counts`, the `Progress` it hands to
`run_sweep`'s `on_progress`); `sweep_status` tallies a sweep directory's records per cell of its plan.json
(plus the runs in flight and pending, from state.json while a driver holds the lock); `sweep_list` tallies
the status column of each sweep's runs.parquet under a root. All of it only reads: no file is created.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperp.errors import InputError, first_line
from hyperp.io import read_json
from hyperp.schema import COMPLETED, FAILED, INFRA_FAILED, PLAN_FILE, SEARCH_FILE, SPEC_FILE, STATE_FILE, STATUSES
from hyperp.sweeps.ledger import LEDGER_FILE, is_running, load_records, run_dir, sweep_dirs

COUNTED = ("planned", *STATUSES, "running", "pending")  # the columns of a cell in `sweep_status`


def tally(statuses: Iterable[str | None]) -> dict[str, int]:
    """Runs by status: each of STATUSES, in that order (a missing or unknown status is not counted)."""
    c = collections.Counter(statuses)
    return {s: c.get(s, 0) for s in STATUSES}


@dataclass(frozen=True)
class Progress:
    """A running sweep as its driver sees it, handed to `run_sweep(on_progress=...)` after every poll."""

    sweep: str
    counts: dict[str, int]  # `tally` of the plan's records, those of this invocation included
    running: int  # runs in flight
    queued: int  # runs waiting for a slot
    finished_now: int  # runs recorded by this invocation

    @property
    def failed(self) -> int:
        return self.counts["failed"] + self.counts["infra_failed"]


# ---------------------------------------------------------------- `sweep status`


def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    """Per cell: planned, completed, diverged, failed, infra_failed, running, pending runs, best lr; and the
    failed runs (`failed_runs`: status, varying settings, first error line)."""
    plan = read_json(sweep_dir / PLAN_FILE)
    if plan is None:
        raise InputError(f"{sweep_dir}: not a sweep directory (no {PLAN_FILE})")
    searches = {s["cell_id"]: s for s in read_json(sweep_dir / SEARCH_FILE, []) or []}
    state = read_json(sweep_dir / STATE_FILE, {}) or {}
    active = is_running(sweep_dir)
    running = set(state.get("running", [])) if active else set()
    running_cells = state.get("running_cells", {}) if active else {}
    cells = {c["cell_id"]: _cell_row(c) for c in plan["cells"]}
    planned = {r["run_id"]: r["cell_id"] for r in plan["runs"]}
    records = load_records(sweep_dir)
    seen, stale = _count_records(cells, planned, records)
    for rid in running:
        cid = planned.get(rid) or running_cells.get(rid)
        if cid in cells:
            cells[cid]["running"] += 1
    for rid, cid in planned.items():
        if rid not in seen and rid not in running:
            cells[cid]["pending"] += 1
    for cid, s in searches.items():
        if cid in cells:
            cells[cid]["note"] = search_note(s)
    rows = list(cells.values())
    totals = {k: sum(r[k] for r in rows) for k in COUNTED}
    plan_fields = {r["run_id"]: r["fields"] for r in plan["runs"]}
    in_flight = [run_progress(sweep_dir, rid, plan_fields.get(rid) or cells.get(running_cells.get(rid), {}))
                 for rid in sorted(running)]
    searching = [s for cid, s in searches.items() if cid in cells and not search_done(s)]
    finished = not active and totals["running"] == totals["pending"] == 0 and not searching
    return {"sweep": plan["sweep"], "dir": str(sweep_dir), "active": active, "starting": False, "finished": finished,
            "updated_at": state.get("updated_at"), "varying": [k for k in plan["varying"] if k != "lr"],
            "cells": rows, "totals": totals, "stale_records": stale, "in_flight": in_flight,
            "failed_runs": failed_runs(records, seen, plan_fields, plan["varying"])}


def failed_runs(records: dict[str, dict[str, Any]], counted: set[str], plan_fields: dict[str, dict[str, Any]],
                varying: list[str]) -> list[dict[str, Any]]:
    """The counted runs that failed or infra-failed, by run id: status, the plan's varying settings (the plan's
    fields of the run, else its record's columns: a run added by an LR search) and the first line of its error."""
    out = []
    for rid in sorted(counted):
        row = records[rid]
        if row.get("status") in (FAILED, INFRA_FAILED):
            fields = plan_fields.get(rid) or {}
            out.append({"run_id": rid, "status": row["status"],
                        "settings": {k: fields[k] if k in fields else row.get(k) for k in varying},
                        "error": first_line(str(row.get("error") or ""))})
    return out


def _cell_row(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell of plan.json as a row of `sweep_status`, nothing counted yet."""
    return {"cell_id": cell["cell_id"], **cell["fields"], "search": (cell["search"] or {}).get("search", "grid"),
            **{k: 0 for k in COUNTED}, "best_lr": math.nan, "best_val_loss": math.nan, "note": ""}


def _count_records(cells: dict[str, dict[str, Any]], planned: dict[str, str],
                   records: dict[str, dict[str, Any]]) -> tuple[set[str], int]:
    """Each cell's planned runs, its records by status (`tally`) and its best completed run. Returns the run ids
    counted and how many records belong to no cell of the plan (stale: kept on disk, not counted)."""
    for cid in planned.values():
        cells[cid]["planned"] += 1
    statuses: dict[str, list[str | None]] = collections.defaultdict(list)
    seen: set[str] = set()
    stale = 0
    for rid, row in records.items():
        cid = row.get("cell_id")
        if cid not in cells or (rid not in planned and cells[cid]["search"] == "grid"):
            stale += 1
            continue
        seen.add(rid)
        cell = cells[cid]
        if rid not in planned:
            cell["planned"] += 1  # a run added by an LR search
        statuses[cid].append(row.get("status"))
        loss = row.get("val_loss", math.nan)
        if row.get("status") == COMPLETED and loss == loss and not (cell["best_val_loss"] <= loss):
            cell["best_val_loss"], cell["best_lr"] = loss, row.get("lr")
    for cid, found in statuses.items():
        cells[cid].update(tally(found))
    return seen, stale


def search_note(search: dict[str, Any]) -> str:
    """A cell's LR search in a word or two: bracketed, why it is not, searching, or trials done."""
    if search["search"] == "bracket":
        return ("bracketed" if search["bracketed"] else search.get("reason", "")) if search["done"] else "searching"
    return f"{search['finished']}/{search['trials']} trials" + ("" if search["done"] else ", searching")


def starting(sweep_dir: Path) -> bool:
    """A driver holds the sweep's lock and has not written plan.json yet."""
    return not (sweep_dir / PLAN_FILE).is_file() and is_running(sweep_dir)


def starting_status(sweep_dir: Path) -> dict[str, Any]:
    """The status of a sweep whose driver holds the lock and has not written its plan yet: the keys of
    `sweep_status`, nothing counted."""
    return {"sweep": sweep_dir.name, "dir": str(sweep_dir), "active": True, "starting": True, "finished": False,
            "updated_at": None, "varying": [], "cells": [], "totals": {k: 0 for k in COUNTED}, "stale_records": 0,
            "in_flight": [], "failed_runs": []}


def search_done(search: dict[str, Any]) -> bool:
    """An LR search that wants no more runs: done, and its seed repeats of the best LR recorded."""
    return bool(search.get("done")) and search.get("seed_runs_done", 0) >= len(search.get("seed_run_ids") or [])


def run_progress(sweep_dir: Path, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A run in flight: its settings and the last progress.json its trainer wrote (None before the first)."""
    from hyperp.trainer.progress import read_progress  # noqa: PLC0415

    p = read_progress(run_dir(sweep_dir, run_id)) or {}
    keys = ("step", "total_steps", "train_loss", "tokens_per_s", "eta_s", "updated_at")
    return {"run_id": run_id, "settings": fields, **{k: p.get(k) for k in keys}}


# ---------------------------------------------------------------- `sweep ls`


def ledger_columns(sweep_dir: Path, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Columns of the sweep's runs.parquet (empty lists before it has one; a column an older file lacks: nulls),
    read alone (pyarrow, no pandas)."""
    path = sweep_dir / LEDGER_FILE
    if not path.is_file():
        return {n: [] for n in names}
    import pyarrow.parquet as pq  # noqa: PLC0415

    f = pq.ParquetFile(path)
    have = [n for n in names if n in f.schema_arrow.names]
    table = f.read(columns=have)
    return {n: table.column(n).to_pylist() if n in have else [None] * table.num_rows for n in names}


def ledger_statuses(sweep_dir: Path) -> list[str | None]:
    """The status column of the sweep's runs.parquet ([] before it has one)."""
    return ledger_columns(sweep_dir, ("status",))["status"]


def cost(sweep_dir: Path, cpus: float) -> dict[str, float]:
    """What the sweep's runs in runs.parquet cost: CPU-hours (each run's last attempt, start-up and evaluation
    included, `elapsed_s` x the CPUs a run holds) and the FLOPs they trained."""
    cols = ledger_columns(sweep_dir, ("elapsed_s", "flops"))
    return {"cpu_hours": finite_sum(cols["elapsed_s"]) * cpus / 3600, "flops": finite_sum(cols["flops"])}


def finite_sum(values) -> float:
    """The sum of the finite values: 0 for no values, NaN when none is finite (a command sweep's FLOPs are
    unknown, not 0). None (the ledger's null) is unknown, as NaN is."""
    values = list(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(finite)) if finite or not values else math.nan


def sweep_list(root: Path) -> list[dict[str, Any]]:
    """The sweeps under `root`: planned runs, LR searches, runs.parquet's rows by status, their cost (`cost`), a
    driver running, the time of the last change (runs.parquet, state.json or spec.toml)."""
    out = []
    for d in sweep_dirs(root):
        plan = read_json(d / PLAN_FILE, {}) or {}
        mtime = max(f.stat().st_mtime for f in (d / LEDGER_FILE, d / STATE_FILE, d / SPEC_FILE) if f.exists())
        cpus = float((plan.get("resources") or {}).get("cpus", 1))
        out.append({"sweep": d.name, "dir": str(d), "planned": len(plan.get("runs", [])),
                    "searches": sum(1 for c in plan.get("cells", []) if c.get("search")),
                    **tally(ledger_statuses(d)), **cost(d, cpus), "running": is_running(d),
                    "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))})
    return out
