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
incrementally (only records newer than it are re-read) and completely by `rebuild_ledger`. Every record has
every column of `hyperp.schema` (file names, statuses and columns live there); records of an older schema are
read correctly in memory and rewritten on disk only by `migrate` (which `run_sweep` calls).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pandas loads where a frame is built: `sweep status` and `ls` never need it
    import pandas as pd

from hyperp import identity, io, schema
from hyperp.io import read_json
from hyperp.schema import (ATTEMPT_FILE, COMPLETED, CURVES_FILE, DIVERGED, ERROR_FILE, FAILED,  # noqa: F401
                           INFRA_FAILED, LOCK_FILE, OPTUNA_DB, PLAN_FILE, RUNS_DIR, SCHEMA_VERSION, SEARCH_FILE,
                           SPEC_FILE, STATE_FILE, STATUSES)
from hyperp.config import ConfigError, RunConfig

LEDGER_FILE = schema.RUNS_FILE  # <sweep>/runs.parquet
RECORD_FILE = schema.RUNS_FILE  # <sweep>/runs/<run_id>/runs.parquet
log = logging.getLogger(__name__)


def run_dir(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / RUNS_DIR / run_id


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame of the schema's columns (pandas dtypes, as pd.read_parquet gives them)."""
    return schema.to_table(rows).to_pandas()


def write_record(sweep_dir: str | Path, row: dict[str, Any]) -> Path:
    """The run's ledger row, atomically, as runs/<run_id>/runs.parquet, with every column of the schema."""
    return schema.write_records(run_dir(sweep_dir, row["run_id"]) / RECORD_FILE, [row])


def _read_table(path: str | Path) -> pa.Table | None:
    try:
        table = pq.ParquetFile(path).read()
    except (OSError, pa.ArrowException):
        return None
    return table if table.num_rows == 1 else None


def _record(table: pa.Table | None, rid: str) -> dict[str, Any] | None:
    """The normalised row of a one-row record in runs/<rid>/ (None when unreadable or not of this run).

    A record the trainer wrote alone (no `sweep`: the driver stopped before stamping it, or an old trainer's
    record without a run_id) belongs to its directory, so it gets `run_id = rid` and the caller can adopt it.
    """
    if table is None:
        return None
    try:
        row = schema.read_rows(table)[0]
    except (ValueError, TypeError):  # a value of the wrong type: the record is unreadable
        return None
    if row["run_id"] is None or row["sweep"] is None:
        row["run_id"] = rid
    return row if row["run_id"] == rid else None


def read_record(path: str | Path) -> dict[str, Any] | None:
    """One per-run record (runs/<run_id>/runs.parquet) as a normalised dict, or None when missing or unreadable."""
    return _record(_read_table(path), Path(path).parent.name)


def read_ledger(sweep_dir: str | Path) -> pd.DataFrame:
    """The sweep's runs.parquet with every column of the schema (an older file is normalised in memory), and
    the keys of `extra_json` as columns where no column has their name (`schema.expand_extra`)."""
    path = Path(sweep_dir) / LEDGER_FILE
    if not path.is_file():
        return frame([])
    table = io.read_parquet_table(path)
    df = table.to_pandas() if table.schema.equals(schema.arrow_schema()) else frame(schema.read_rows(table))
    return schema.expand_extra(df)


def load_records(sweep_dir: str | Path, workers: int = 8) -> dict[str, dict[str, Any]]:
    """Every per-run record under runs/, keyed by run id, normalised to the schema (read-only).

    Incremental: rows of the top-level runs.parquet are trusted for runs whose record file is older than it;
    newer, new or uncached records are read (in a thread pool). Records deleted from disk are dropped.
    Records of any schema version are read, whatever columns they have (see `_record`).
    """
    sweep_dir = Path(sweep_dir)
    runs = sweep_dir / RUNS_DIR
    if not runs.is_dir():
        return {}
    cache: dict[str, dict[str, Any]] = {}
    top = sweep_dir / LEDGER_FILE
    top_mtime = -1
    with contextlib.suppress(OSError, pa.ArrowException, ValueError, TypeError):
        top_mtime = top.stat().st_mtime_ns
        # ParquetFile, not read_table: read_table's dataset layer imports pandas (0.4 s of `sweep status`)
        cache = {row["run_id"]: row for row in schema.read_rows(pq.ParquetFile(top).read()) if row["run_id"]}
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
        for (rid, _), table in zip(to_read, tables):
            row = _record(table, rid)
            if row is not None:
                out[rid] = row
    return out


def write_ledger(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """runs.parquet at the top of the sweep, atomically, from the given rows (sorted by run id)."""
    rows = sorted(rows, key=lambda r: r["run_id"])
    return schema.write_records(Path(sweep_dir) / LEDGER_FILE, rows)


def rebuild_ledger(sweep_dir: str | Path, run_ids: set[str] | None = None) -> pd.DataFrame:
    """Rebuild runs.parquet from scratch from runs/*/runs.parquet (only `run_ids` when given)."""
    sweep_dir = Path(sweep_dir)
    (sweep_dir / LEDGER_FILE).unlink(missing_ok=True)
    records = load_records(sweep_dir)
    rows = [r for rid, r in records.items() if run_ids is None or rid in run_ids]
    write_ledger(sweep_dir, rows)
    return read_ledger(sweep_dir)


# ---------------------------------------------------------------- migration of older ledgers


@dataclass
class Migration:
    """What `migrate` did: records rewritten, run directories renamed (old id -> new id), and what it left."""

    rewritten: int = 0
    renamed: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)  # run directory -> why it was left as it is


def migratable(rid: str, row: dict[str, Any], tag: str) -> bool:
    """A record `migrate` can carry over: of an older schema, with its directory named by the current or the
    schema-1 id of its config under `tag`; or trained by an older RESULTS_VERSION, named by its id under that
    version, with a config that no later bump changed (`identity.carries_over`). Others are stale, left alone."""
    config_json = row.get("config_json")
    if not isinstance(config_json, str):
        return False
    old_schema = (row.get("schema_version") or 0) < SCHEMA_VERSION
    trained_by = row.get("results_version") or 1  # schema-1 records predate the constant: version 1
    if trained_by >= identity.RESULTS_VERSION:
        return old_schema and rid in (identity.run_id_of_json(config_json, tag),
                                      identity.legacy_run_id(config_json, tag))
    named = (identity.legacy_run_id(config_json, tag) if old_schema
             else identity.run_id_of_json(config_json, tag, version=trained_by))
    if rid != named:
        return False
    try:
        return identity.carries_over(RunConfig.from_dict(json.loads(config_json)), trained_by)
    except (ValueError, TypeError):
        return False


def needs_migration(sweep_dir: str | Path, records: dict[str, dict[str, Any]], tag: str,
                    legacy_ids: dict[str, str] | None = None) -> bool:
    """True when `migrate` has something to do: a migratable record, or a run directory named by a legacy id."""
    if any(migratable(rid, r, tag) for rid, r in records.items()):
        return True
    runs = Path(sweep_dir) / RUNS_DIR
    return bool(legacy_ids) and runs.is_dir() and not set(legacy_ids).isdisjoint(os.listdir(runs))


def migrate(sweep_dir: str | Path, tag: str | None = None, legacy_ids: dict[str, str] | None = None) -> Migration:
    """Rewrite an older sweep directory to the current schema and run identity, in place; idempotent.

    Each record is rewritten with every column (`schema_version` set, run_id and cell_id recomputed under the
    spec's `tag`, by default the `version_tag` in plan.json) and its directory renamed to the new run id, when
    its directory is named by the old id (sha256 of "hyperp 0.1.0|<tag>|<config_json>") or already by the new
    one. `legacy_ids` (old id -> new id, e.g. from the current plan) also moves directories without a record
    (an unfinished run's checkpoint). Ids in plan.json, searches.json, state.json and the Optuna studies follow.
    Nothing is deleted: a directory that cannot be migrated (unreadable record, a config this code rejects, an
    id of another tag or version, a new id already taken) is left as it is and reported in `left`. Each step is
    atomic (a rename, or a temp file renamed over the record), so an interrupted migration resumes.
    """
    sweep_dir = Path(sweep_dir)
    if tag is None:
        tag = (read_json(sweep_dir / PLAN_FILE, {}) or {}).get("version_tag", "")
    runs, done = sweep_dir / RUNS_DIR, Migration()
    ids = dict(legacy_ids or {})  # old id -> new id, for runs and cells
    dirs = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    cells = _cell_map(dirs, tag)
    for d in dirs:
        why = _migrate_run(sweep_dir, d, tag, ids, done, cells)
        if why:
            done.left[str(d)] = why
            log.warning("migrate: left %s as it is: %s", d, why)
    _remap_files(sweep_dir, ids)
    top = sweep_dir / LEDGER_FILE
    if top.is_file():  # the same runs as before, under their new ids and schema
        with contextlib.suppress(OSError, pa.ArrowException, ValueError, TypeError):
            old = {r["run_id"] for r in schema.read_rows(io.read_parquet_table(top))}
            records = load_records(sweep_dir)
            write_ledger(sweep_dir, [records[ids.get(rid, rid)] for rid in old if ids.get(rid, rid) in records])
    return done


def _cell_map(dirs: list[Path], tag: str) -> dict[str, str]:
    """Old cell id -> new: the new cell id that most of its records' configs give. A search's seed runs
    (`seeds = n`) carry the search cell's id while their configs' seeds differ, so that each alone would name
    a cell of its own; the search's own runs, at its seed, outnumber them."""
    votes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for d in dirs:
        row = read_record(d / RECORD_FILE)
        if row is None or not row.get("cell_id"):
            continue
        try:
            cfg = RunConfig.from_dict(json.loads(row["config_json"]))
        except (TypeError, ValueError, ConfigError):
            continue  # _migrate_run reports it
        votes[row["cell_id"]][identity.cell_id(cfg, tag)] += 1
    return {old: count.most_common(1)[0][0] for old, count in votes.items()}


def _migrate_run(sweep_dir: Path, d: Path, tag: str, ids: dict[str, str], done: Migration,
                 cells: dict[str, str]) -> str:
    """Migrate one run directory; returns why it was left as it is ("" when migrated or already current)."""
    row = read_record(d / RECORD_FILE)
    if row is None:
        if (d / RECORD_FILE).exists():
            return "unreadable record, or the record of another run"
        if d.name in ids and ids[d.name] != d.name:  # an unfinished run of the plan: move its checkpoint along
            return _rename(d, ids[d.name], done)
        return ""  # a run in progress under its current id, or nothing to migrate
    new = identity.run_id_of_json(row["config_json"], tag)
    if new is None:
        return "its config_json is not a valid config of this code"
    if d.name == new and row["schema_version"] == SCHEMA_VERSION:
        return ""  # already current (its curves were labelled before its record was rewritten)
    if not migratable(d.name, row, tag):
        return (f"its id is neither the current ({new}) nor an older id of its config under tag {tag!r} that "
                f"RESULTS_VERSION {identity.RESULTS_VERSION} carries over")
    if d.name != new:
        why = _rename(d, new, done)
        if why:
            return why
    cfg = RunConfig.from_dict(json.loads(row["config_json"]))
    new_cell = cells.get(row["cell_id"]) or identity.cell_id(cfg, tag)
    if row["cell_id"] and row["cell_id"] != new_cell:
        ids[row["cell_id"]] = new_cell
    ids[d.name] = new
    label_curves(d.parent / new / CURVES_FILE, new)
    write_record(sweep_dir, row | {"run_id": new, "cell_id": new_cell})
    done.rewritten += 1
    return ""


def label_curves(path: Path, rid: str) -> None:
    """Give a run's curves file a first `run_id` column (schema-1 curves have none), atomically."""
    try:
        table = io.read_parquet_table(path)
    except (OSError, pa.ArrowException):
        return  # no curves (a failed run) or unreadable ones: the record is what matters
    if table.column_names[:1] == ["run_id"] and set(table.column("run_id").to_pylist()) == {rid}:
        return
    if "run_id" in table.column_names:
        table = table.drop_columns(["run_id"])
    table = table.add_column(0, "run_id", pa.array([rid] * table.num_rows, pa.string()))
    io.atomic_write(path, lambda p: pq.write_table(table, p))


def _rename(d: Path, new: str, done: Migration) -> str:
    target = d.parent / new
    if target.exists():
        return f"its new id {new} is taken by {target}"
    d.rename(target)  # atomic on one filesystem
    done.renamed[d.name] = new
    return ""


def _remap(obj: Any, ids: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return ids.get(obj, obj)
    if isinstance(obj, list):
        return [_remap(v, ids) for v in obj]
    if isinstance(obj, dict):
        return {ids.get(k, k): _remap(v, ids) for k, v in obj.items()}
    return obj


def _remap_files(sweep_dir: Path, ids: dict[str, str]) -> None:
    """Old run and cell ids -> new ones in plan.json, searches.json, state.json and the Optuna studies."""
    ids = {k: v for k, v in ids.items() if k != v}
    if not ids:
        return
    for name in (PLAN_FILE, SEARCH_FILE, STATE_FILE):
        data = read_json(sweep_dir / name)
        if data is not None and _remap(data, ids) != data:
            io.write_json(sweep_dir / name, _remap(data, ids))
    db = sweep_dir / OPTUNA_DB
    if db.is_file():  # studies are named "<sweep>-<cell_id>"; each trial keeps its run_id as a user attribute
        with contextlib.closing(sqlite3.connect(db)) as con, con:  # one transaction
            for old, new in ids.items():
                con.execute("UPDATE studies SET study_name = replace(study_name, ?, ?) WHERE study_name LIKE ?",
                            (f"-{old}", f"-{new}", f"%-{old}"))
                con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'run_id' AND value_json = ?",
                            (json.dumps(new), json.dumps(old)))


def sweep_dirs(root: Path) -> list[Path]:
    """The sweep directories directly under `root` (each holds the spec.toml its sweep was run with), sorted."""
    return sorted(p for p in root.iterdir() if (p / SPEC_FILE).is_file()) if root.is_dir() else []


def find_sweep_dir(path: Path, root: Path) -> Path:
    """`path` as a sweep directory: itself when it holds a plan; a spec file maps to `root`/<the spec's name>
    (where `hyperp sweep run SPEC` puts it by default). Anything else is an InputError that names the sweeps
    there are (the closest first), so a typo'd name or a wrong root says what to type instead."""
    import tomllib  # noqa: PLC0415

    from hyperp.errors import InputError, did_you_mean  # noqa: PLC0415

    if (path / PLAN_FILE).is_file():
        return path
    if path.is_file() and path.suffix == ".toml":
        try:
            name = tomllib.loads(path.read_text()).get("name")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            name = None
        if not isinstance(name, str) or not name:
            raise InputError(f"{path}: not a sweep directory, nor a sweep spec with a name")
        if (root / name / PLAN_FILE).is_file():
            return root / name
        raise InputError(f"{path}: a spec whose sweep directory {root / name} has no plan; run `hyperp sweep run "
                         f"{path}` first, or give the directory its --out made")
    inside = [d.name for d in sweep_dirs(path)]
    if inside:
        raise InputError(f"{path}: a directory of sweeps, not a sweep; give one of: "
                         f"{', '.join(str(path / n) for n in inside)}")
    known = [d.name for d in sweep_dirs(path.parent)]
    if not known:
        raise InputError(f"{path}: not a sweep directory (no {PLAN_FILE}), and there are no sweeps under {path.parent}")
    raise InputError(f"{path}: not a sweep directory (no {PLAN_FILE}); among the sweeps under {path.parent}, "
                     f"{did_you_mean(path.name, known)}")


class SweepLock:
    """An exclusive flock on <sweep>/.lock: one driver per sweep directory at a time. The file names the holder,
    "<pid> <time it took the lock> <host>" (`lock_owner`), which `sweep stop` addresses."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / LOCK_FILE
        self.fd: int | None = None
        self.owner: dict[str, Any] | None = None  # {"pid", "since", "host"} while held

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        self.owner = {"pid": os.getpid(), "since": time.time(), "host": socket.gethostname()}
        os.write(fd, f"{self.owner['pid']} {self.owner['since']!r} {self.owner['host']}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # while still held: the file never names a driver that has let go
            self.owner = None
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().split()[0]
        except (OSError, IndexError):
            return "?"


def lock_owner(sweep_dir: str | Path) -> dict[str, Any] | None:
    """Who took the sweep's lock last, from its file: {"pid", "since", "host"} ("" when a driver of an older
    hyperp did not write it); None when there is no readable lock file or it names nobody (a driver that
    released the lock emptied it). A driver that crashed still stands there: whether it holds the lock is
    `is_running`'s question."""
    try:
        parts = (Path(sweep_dir) / LOCK_FILE).read_text().split()
        return {"pid": int(parts[0]), "since": float(parts[1]), "host": parts[2] if len(parts) > 2 else ""}
    except (OSError, IndexError, ValueError):
        return None


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
    import pandas as pd  # noqa: PLC0415

    frames = [io.read_parquet(runs / rid / CURVES_FILE).assign(run_id=rid) for rid in ids
              if (runs / rid / CURVES_FILE).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "step"])
