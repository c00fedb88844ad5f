"""The sweep ledger: one directory per sweep, one record per run, a rebuilt `runs.parquet`.

Layout of `<root>/<sweep name>/` (see hyperp/sweeps/README.md for the column schema)::

    spec.toml            the spec exactly as given (an edited spec archives the previous one in history/)
    plan.json            the expanded plan: run ids, cell ids, varying fields, LR searches
    runs.parquet         one row per finished run of the current plan, rebuilt from the per-run records
    searches.json        per LR-search cell: grid run so far, best lr, bracketed or not
    state.json           written by the running driver: counts, runs in flight, heartbeat
    optuna.db            Optuna studies (sqlite), one per optuna cell, only when used
    runs/<run_id>/
        runs.parquet     the run's ledger row (the trainer's row + sweep columns), written last, atomically
        curves.parquet   the trainer's step curves (absent for failed runs)
        config.json, hparams.json   the trainer's outputs
        attempt.json     written by the worker at each attempt start: attempt number, pid, host, time
        checkpoint.pt    only while the run is unfinished (the trainer removes it at the end)
        error.txt        the traceback of a failed run

Every file is written with `hyperp.io` (temp file + fsync + rename), so a crash mid-write leaves the old
file or the new one; per-run files are written only for their own run, so concurrent runs never clash.
The per-run records are the source of truth: `runs.parquet` at the top is a cache of them, rebuilt
incrementally (only records newer than it are re-read) and completely by `rebuild_ledger`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hyperp import io

SPEC_FILE = "spec.toml"
PLAN_FILE = "plan.json"
STATE_FILE = "state.json"
LEDGER_FILE = "runs.parquet"
SEARCH_FILE = "searches.json"
OPTUNA_DB = "optuna.db"
LOCK_FILE = ".lock"
RUNS_DIR = "runs"
RECORD_FILE = "runs.parquet"
CURVES_FILE = "curves.parquet"
ATTEMPT_FILE = "attempt.json"
ERROR_FILE = "error.txt"

COMPLETED, DIVERGED, FAILED, INFRA_FAILED = "completed", "diverged", "failed", "infra_failed"
STATUSES = (COMPLETED, DIVERGED, FAILED, INFRA_FAILED)

# Columns first in runs.parquet (the fitter's names first); every other column follows.
KEY_COLUMNS = ("run_id", "sweep", "param", "depth", "width", "n_params", "n_params_active", "tokens",
               "batch_tokens", "lr", "sparsity", "top_k", "seed", "flops", "val_loss", "status",
               "cell_id", "lr_search", "tokens_per_param", "best_val_loss", "train_loss", "error", "attempts",
               "wall_time_s", "elapsed_s", "tokens_per_s", "hardware", "host", "started_at", "finished_at")


def run_dir(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / RUNS_DIR / run_id


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(KEY_COLUMNS))
    first = [c for c in KEY_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def write_record(sweep_dir: str | Path, row: dict[str, Any]) -> Path:
    """The run's ledger row, atomically, as runs/<run_id>/runs.parquet (pyarrow directly: ~4x faster than pandas)."""
    first = [c for c in KEY_COLUMNS if c in row]
    table = pa.Table.from_pylist([{k: row[k] for k in first + [c for c in row if c not in first]}])
    return io.atomic_write(run_dir(sweep_dir, row["run_id"]) / RECORD_FILE, lambda p: pq.write_table(table, p))


def _read_table(path: str | Path) -> pa.Table | None:
    try:
        table = pq.ParquetFile(path).read()
    except (OSError, pa.ArrowException):
        return None
    return table if table.num_rows == 1 else None


def _rows(tables: list[pa.Table]) -> list[dict[str, Any]]:
    """Rows of many one-row tables: one concatenation and one conversion when the schemas agree."""
    try:
        rows = pa.concat_tables(tables, promote_options="permissive").to_pylist()
    except (pa.ArrowException, ValueError, TypeError):
        rows = [t.to_pylist()[0] for t in tables]
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]


def read_record(path: str | Path) -> dict[str, Any] | None:
    """One per-run row as a dict, or None when the file is missing or unreadable."""
    table = _read_table(path)
    return None if table is None else _rows([table])[0]


def read_ledger(sweep_dir: str | Path) -> pd.DataFrame:
    path = Path(sweep_dir) / LEDGER_FILE
    return pd.read_parquet(path) if path.is_file() else frame([])


def load_records(sweep_dir: str | Path, workers: int = 8) -> dict[str, dict[str, Any]]:
    """Every per-run record under runs/, keyed by run id.

    Incremental: rows of the top-level runs.parquet are trusted for runs whose record file is older than it;
    newer, new or uncached records are read (in a thread pool). Records deleted from disk are dropped.
    A record written by the trainer alone (no `run_id` column: the driver stopped before adding the sweep
    columns) is returned with `run_id` set from its directory name so the caller can adopt it.
    """
    sweep_dir = Path(sweep_dir)
    runs = sweep_dir / RUNS_DIR
    if not runs.is_dir():
        return {}
    cache: dict[str, dict[str, Any]] = {}
    top = sweep_dir / LEDGER_FILE
    top_mtime = -1
    with contextlib.suppress(OSError, pa.ArrowException):
        top_mtime = top.stat().st_mtime_ns
        for row in pq.read_table(top).to_pylist():
            cache[row["run_id"]] = {k: (math.nan if v is None else v) for k, v in row.items()}
    out: dict[str, dict[str, Any]] = {}
    to_read: list[tuple[str, Path]] = []
    with os.scandir(runs) as it:
        for entry in it:
            if not entry.is_dir():
                continue
            rec = Path(entry.path) / RECORD_FILE
            try:
                mtime = rec.stat().st_mtime_ns
            except OSError:
                continue
            if entry.name in cache and mtime < top_mtime:
                out[entry.name] = cache[entry.name]
            else:
                to_read.append((entry.name, rec))
    if to_read:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tables = list(pool.map(lambda t: _read_table(t[1]), to_read))
        found = [(rid, t) for (rid, _), t in zip(to_read, tables) if t is not None]
        for (rid, _), row in zip(found, _rows([t for _, t in found]) if found else []):
            row.setdefault("run_id", rid)
            if row["run_id"] == rid:
                out[rid] = row
    return out


def write_ledger(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """runs.parquet at the top of the sweep, atomically, from the given rows (sorted by run id)."""
    rows = sorted(rows, key=lambda r: r["run_id"])
    return io.write_parquet(Path(sweep_dir) / LEDGER_FILE, frame(rows))


def rebuild_ledger(sweep_dir: str | Path, run_ids: set[str] | None = None) -> pd.DataFrame:
    """Rebuild runs.parquet from scratch from runs/*/runs.parquet (only `run_ids` when given)."""
    sweep_dir = Path(sweep_dir)
    (sweep_dir / LEDGER_FILE).unlink(missing_ok=True)
    records = load_records(sweep_dir)
    rows = [r for rid, r in records.items() if run_ids is None or rid in run_ids]
    write_ledger(sweep_dir, rows)
    return read_ledger(sweep_dir)


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


class SweepLock:
    """An exclusive flock on <sweep>/.lock: one driver per sweep directory at a time."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.time()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().split()[0]
        except (OSError, IndexError):
            return "?"


def is_running(sweep_dir: str | Path) -> bool:
    """True when a driver holds the sweep's lock (on this machine's view of the filesystem).

    Read-only: the lock file is opened for reading and probed with a non-blocking shared flock (released at
    once), so nothing is created or rewritten and a read-only copy of a sweep can be inspected.
    """
    try:
        fd = os.open(Path(sweep_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file: no driver ever ran here (or it is unreadable: nothing to tell)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # a driver holds it exclusively
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def load_curves(sweep_dir: str | Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Step curves of the sweep's runs in one frame, with a `run_id` column (runs without curves are skipped)."""
    runs = Path(sweep_dir) / RUNS_DIR
    ids = run_ids if run_ids is not None else sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    frames = [pd.read_parquet(runs / rid / CURVES_FILE).assign(run_id=rid) for rid in ids
              if (runs / rid / CURVES_FILE).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "step"])
