"""Trackers: a run's config, step curves and final record logged to TensorBoard, Weights & Biases or MLflow.

Each tracker is an optional extra (`pip install "hyperp[tensorboard]"`, `[wandb]`, `[mlflow]`), off by default,
and works offline. Runs are logged under their run id and grouped by sweep and cell, in a tracking directory
DIR (a sweep's `[tracking] dir`, default <sweep>/tracking; `hyperp train --tracking-dir`, default
<out>/tracking; `hyperp export -o`):

    DIR/tensorboard/<sweep>/<cell>/<run_id>/events.out.tfevents.*   TensorBoard event files (`tensorboard
                                                                    --logdir DIR/tensorboard`)
    DIR/wandb/offline-run-<time>-<run_id>/run-<run_id>.wandb        W&B offline runs (`wandb sync`): project =
                                                                    sweep, group = cell, id = run id
    DIR/mlflow/mlflow.db (+ artifacts/)                             MLflow's SQLite store: experiment = sweep,
                                                                    run name = run id, tags run_id, cell, sweep

What each tracker gets: the config (TensorBoard: a text summary and the HParams dashboard's session; W&B: the
run config; MLflow: params), every curves row at its step (train_loss, val_loss, lr_mult, grad_norm, tokens and
the indicators, under their column names) and the final record (its numbers under `final/<column>`, its text
as TensorBoard's `final` text, W&B's summary, MLflow's tags). A plain `hyperp train` run is logged under the
sweep name `train`.

Trackers never make a run fail: a tracker that cannot write (its directory cannot be made, the library raises)
logs one warning and the run goes on without it (`Guarded`). A tracker whose library is not installed is
refused before anything runs (`check_installed`, exit 2). Each library is imported only inside its adapter, so
this module costs nothing to import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import numbers
import os
import socket
import struct
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from hyperp import io
from hyperp.config import ConfigError
from hyperp.errors import close_match, first_line

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "wandb", "mlflow")  # the extra of each is named like it, and so is its module
TRAIN_SWEEP = "train"  # the sweep name a plain `hyperp train` run is logged under
FINAL_PREFIX = "final/"  # the final record's numbers, apart from the curves' columns of the same name
FLUSH_EVERY_S = 10.0  # buffered steps reach the files at least this often while a run trains
FLUSH_EVERY_N = 1000  # ... or every this many metrics (MLflow's largest batch)
EVENTS_PER_WRITE = 10_000  # ... or TensorBoard events (an export's run is written in one or a few writes)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Tracking:
    """Where a run logs: the trackers (none: tracking is off) and the tracking directory ("": the default)."""

    log_to: tuple[str, ...] = ()
    dir: str = ""

    def __bool__(self) -> bool:
        return bool(self.log_to)

    def resolved(self, default: str | Path) -> Tracking:
        """The same with an absolute directory (`default` when none was given), as workers elsewhere need."""
        return replace(self, dir=str(Path(self.dir or default).expanduser().resolve()))


def check_names(names: Iterable[str], where: str) -> tuple[str, ...]:
    """The tracker names, each known (in order, once); an unknown one is a ConfigError naming `where`."""
    names = list(names)
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(where, f"unknown tracker {name!r}{close_match(str(name), TRACKERS)}; expected one of "
                                     f"{', '.join(TRACKERS)}")
    return tuple(dict.fromkeys(names))


def installed(name: str) -> bool:
    """The library can be imported (found, not imported; `sys.modules[name] = None` blocks it, as for `import`)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def check_installed(names: Iterable[str], where: str) -> None:
    """Each tracker's library is installed; else a one-line ConfigError naming the extra to install."""
    for name in names:
        if not installed(name):
            raise ConfigError(where, f'{name} is not installed; pip install "hyperp[{name}]"')


def parse_tracking(table: Any, where: str = "tracking") -> Tracking:
    """A spec's `[tracking]` table (`log_to = ["tensorboard"]`, `dir = "..."`), checked; absent: tracking off."""
    if table is None:
        return Tracking()
    if not isinstance(table, dict):
        raise ConfigError(where, f"expected a table, got {table!r}")
    keys = ("log_to", "dir")
    for key in table:
        if key not in keys:
            raise ConfigError(f"{where}.{key}", f"unknown key{close_match(key, keys)}; expected {', '.join(keys)}")
    log_to = table.get("log_to", [])
    log_to = [log_to] if isinstance(log_to, str) else log_to
    if not isinstance(log_to, list) or not all(isinstance(n, str) for n in log_to):
        raise ConfigError(f"{where}.log_to", f"expected a list of tracker names ({', '.join(TRACKERS)}), "
                                             f"got {table['log_to']!r}")
    directory = table.get("dir", "")
    if not isinstance(directory, str):
        raise ConfigError(f"{where}.dir", f"expected a directory (a string), got {directory!r}")
    return Tracking(check_names(log_to, f"{where}.log_to"), directory)


@dataclass(frozen=True)
class RunLabel:
    """What a run is logged under: its id, its sweep (TensorBoard's directory, W&B's project, MLflow's
    experiment) and its cell (TensorBoard's sub-directory, W&B's group, MLflow's `cell` tag)."""

    run_id: str
    sweep: str
    cell: str


PLAIN_NUMBERS = (float, int, bool)


def scalars(values: dict[str, Any], skip: Iterable[str] = ("step",)) -> dict[str, float]:
    """The finite numbers of a curves row or a record as floats (booleans as 0/1); text, lists, nulls and NaN
    are left out, and so are the keys in `skip`."""
    skip = set(skip)
    out = {}
    for k, v in values.items():
        if v is None or k in skip or (type(v) not in PLAIN_NUMBERS and not isinstance(v, numbers.Real)):
            continue  # (the type test first: an ABC check per value would take most of an export's time)
        if math.isfinite(v):
            out[k] = float(v)
    return out


def texts(values: dict[str, Any]) -> dict[str, str]:
    """The non-empty strings of a record (status, error, hardware, ...)."""
    return {k: v for k, v in values.items() if isinstance(v, str) and v}


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """A config one level deep: a table (`tags`) as `tags.<key>` entries; nulls left out."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items() if vv is not None})
        elif v is not None:
            out[k] = v
    return out


def read_curves(path: Path) -> list[dict[str, Any]]:
    """A run's curves.parquet as rows ([] when there is none)."""
    if not path.is_file():
        return []
    return [r for r in io.read_parquet_table(path).to_pylist() if r.get("step") is not None]


def ended(row: dict[str, Any]) -> bool:
    """The record says the run ended (completed or diverged), not that it failed."""
    return row.get("status") in ("completed", "diverged")


def final_step(row: dict[str, Any], default: int) -> int:
    """The step a record's numbers are logged at: its `steps`, `default` where it has none (a failed run)."""
    steps = row.get("steps")
    return int(steps) if isinstance(steps, numbers.Real) and math.isfinite(steps) else default


# ---------------------------------------------------------------- the protocol and its guard


class Tracker(Protocol):
    def log_config(self, config: dict[str, Any]) -> None: ...

    def log_step(self, step: int, values: dict[str, Any], wall_time: float | None = None) -> None: ...

    def log_final(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Dispatching:
    """The protocol's four methods, each handed on as `dispatch(method name, *args)`."""

    def dispatch(self, method: str, *args: Any) -> None:
        raise NotImplementedError

    def log_config(self, config: dict[str, Any]) -> None:
        self.dispatch("log_config", config)

    def log_step(self, step: int, values: dict[str, Any], wall_time: float | None = None) -> None:
        self.dispatch("log_step", step, values, wall_time)

    def log_final(self, row: dict[str, Any]) -> None:
        self.dispatch("log_final", row)

    def close(self) -> None:
        self.dispatch("close")


class Guarded(Dispatching):
    """A tracker whose first error (opening it included) logs one warning and turns it off: the run goes on."""

    def __init__(self, name: str, label: RunLabel, open_tracker):
        self.name, self.label, self.tracker = name, label, None
        try:
            self.tracker = open_tracker()
        except Exception as e:  # noqa: BLE001 (a tracker never fails the run)
            self.fail(e)

    def fail(self, e: BaseException) -> None:
        log.warning("tracking: %s cannot log run %s (%s); the run goes on without it", self.name,
                    self.label.run_id, first_line(f"{type(e).__name__}: {e}"))
        broken, self.tracker = self.tracker, None
        with contextlib.suppress(Exception):
            if broken is not None:
                broken.close()

    def dispatch(self, method: str, *args: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as e:  # noqa: BLE001
            self.fail(e)
        if method == "close":
            self.tracker = None


class Trackers(Dispatching):
    """Several trackers as one; `on_step` is a trainer callback logging each curves row the trainer keeps."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def dispatch(self, method: str, *args: Any) -> None:
        for t in self.trackers:
            getattr(t, method)(*args)

    def on_step(self, info: Any) -> None:
        if getattr(info, "row", None) is not None:  # hyperp.trainer.loop.StepInfo: the step's curves row, if kept
            self.log_step(info.step, info.row)

    def log_curves(self, rows: Iterable[dict[str, Any]], started_at: float | None = None,
                   seconds: float | None = None) -> int:
        """Log finished curves (rows with a `step`); wall times spread over [started_at, started_at + seconds]
        when both are known. Returns the number of steps logged."""
        rows = list(rows)
        last = max((r["step"] for r in rows), default=0) or 1
        known = started_at is not None and seconds is not None and math.isfinite(started_at + seconds)
        for r in rows:
            self.log_step(int(r["step"]), r, started_at + seconds * r["step"] / last if known else None)
        return len(rows)


def adapter(name: str):
    """The adapter class of a tracker name."""
    return {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}[name]


def open_trackers(tracking: Tracking, label: RunLabel, fresh: bool = False, guarded: bool = True) -> Trackers:
    """The trackers of `tracking` for one run, under `tracking.dir` (resolved). `fresh`: replace what an
    earlier export wrote for the run (TensorBoard's file, MLflow's run) instead of resuming it. Guarded
    trackers warn once and switch off on error; unguarded ones raise (an export's errors are its own)."""
    root = Path(tracking.dir)

    def opener(name: str):
        return functools.partial(adapter(name), root, label, fresh)

    if guarded:
        return Trackers([Guarded(name, label, opener(name)) for name in tracking.log_to])
    return Trackers([opener(name)() for name in tracking.log_to])


@contextlib.contextmanager
def tracked(tracking: Tracking, label: RunLabel, config: dict[str, Any]) -> Iterator[Trackers]:
    """Guarded trackers for one run with its config logged; closed on the way out (an interrupted run's files
    keep what was logged). The caller logs the steps and the final record."""
    trackers = open_trackers(tracking, label)
    try:
        trackers.log_config(config)
        yield trackers
    finally:
        trackers.close()


def settle(tracking: Tracking) -> None:
    """Make every file the trackers of this process wrote complete on disk: W&B writes its offline runs from a
    service process, which `finish` does not wait for, so it is shut down here (a later run starts another).
    For commands that end (`train`, `export`); a sweep's warm workers leave theirs running."""
    wandb = sys.modules.get("wandb") if "wandb" in tracking.log_to else None
    if wandb is not None:
        try:
            wandb.teardown()
        except Exception as e:  # noqa: BLE001 (a tracker never fails the run; its files may be incomplete: say so)
            log.warning("tracking: wandb teardown failed (%s); its offline run files may be incomplete",
                        first_line(str(e)))


def prepare(tracking: Tracking, sweep: str) -> None:
    """What a sweep's driver sets up once before its runs log concurrently: MLflow's database and experiment
    (two first writers would race to create them). A failure warns once; the runs then warn for themselves."""
    if "mlflow" not in tracking.log_to:
        return
    try:
        MlflowTracker.experiment(Path(tracking.dir), sweep)
    except Exception as e:  # noqa: BLE001
        log.warning("tracking: mlflow cannot set up %s (%s); the sweep goes on", tracking.dir,
                    first_line(f"{type(e).__name__}: {e}"))


# ---------------------------------------------------------------- TensorBoard


class TensorBoardTracker:
    """Event files of TensorBoard's format written with its protos (no TensorFlow), one directory per run under
    tensorboard/<sweep>/<cell>/<run_id>. Steps are buffered and appended every FLUSH_EVERY_S seconds."""

    def __init__(self, root: Path, label: RunLabel, fresh: bool = False):
        from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415

        self.event_pb2, self.summary_pb2 = event_pb2, summary_pb2
        self.label = label
        self.dir = root / "tensorboard" / label.sweep / label.cell / label.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        # an export replaces its own file (re-exporting is idempotent); a live run adds one per attempt
        name = "hyperp-export" if fresh else f"{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}"
        self.file = EventFile(self.dir / f"events.out.tfevents.{name}")
        self.last_step = 0
        self.add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add(self, event) -> None:
        self.file.add(event.SerializeToString())

    def summary(self, step: int, values: list, wall_time: float | None = None) -> None:
        self.add(self.event_pb2.Event(step=step, wall_time=wall_time or time.time(),
                                      summary=self.summary_pb2.Summary(value=values)))

    def text(self, tag: str, step: int, text: str) -> None:
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: PLC0415
        from tensorboard.plugins.text.metadata import create_summary_metadata  # noqa: PLC0415

        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto())
        self.summary(step, [self.summary_pb2.Summary.Value(tag=tag, tensor=tensor,
                                                           metadata=create_summary_metadata(tag, ""))])

    def log_config(self, config: dict[str, Any]) -> None:
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb  # noqa: PLC0415

        self.text("config", 0, markdown_json(config))
        hparams = {k: v for k, v in flat(config).items() if isinstance(v, (bool, int, float, str))}
        self.add(self.event_pb2.Event(step=0, wall_time=time.time(), summary=hparams_pb(hparams, self.label.run_id)))

    def log_step(self, step: int, values: dict[str, Any], wall_time: float | None = None) -> None:
        Value = self.summary_pb2.Summary.Value
        self.summary(step, [Value(tag=k, simple_value=v) for k, v in scalars(values).items()], wall_time)
        self.last_step = max(self.last_step, step)

    def log_final(self, row: dict[str, Any]) -> None:
        step = final_step(row, self.last_step)
        Value = self.summary_pb2.Summary.Value
        self.summary(step, [Value(tag=FINAL_PREFIX + k, simple_value=v) for k, v in scalars(row, ()).items()])
        self.text("final", step, markdown_json(row))

    def close(self) -> None:
        self.file.flush()


def markdown_json(values: dict[str, Any]) -> str:
    """Strict JSON indented as a Markdown code block (how TensorBoard's text dashboard shows it verbatim)."""
    text = io.json_text(values, indent=1, sort_keys=True)
    return "\n".join("    " + line for line in text.splitlines())


class EventFile:
    """A TFRecord file of serialized events, buffered: the first batch replaces the file atomically (an earlier
    export's), later ones are appended. The CRC-32C checksums of a batch are computed at once (`masked_crc32c`):
    tensorboard's own pure-Python CRC would take most of an export's time."""

    def __init__(self, path: Path):
        self.path, self.pending, self.last, self.started = path, [], time.monotonic(), False

    def add(self, payload: bytes) -> None:
        self.pending.append(payload)
        if len(self.pending) >= EVENTS_PER_WRITE or time.monotonic() - self.last > FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        data = tf_records(self.pending)
        if self.started:
            with open(self.path, "ab") as f:
                f.write(data)
        else:
            io.write_bytes(self.path, data)
        self.pending, self.last, self.started = [], time.monotonic(), True


def tf_records(payloads: list[bytes]) -> bytes:
    """TFRecord framing: length (uint64), its masked CRC, the payload, its masked CRC (all little-endian)."""
    lengths = [struct.pack("<Q", len(p)) for p in payloads]
    length_crcs, payload_crcs = masked_crc32c(lengths), masked_crc32c(payloads)
    return b"".join(n + struct.pack("<I", nc) + p + struct.pack("<I", pc)
                    for n, nc, p, pc in zip(lengths, length_crcs, payloads, payload_crcs))


CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
CRC_MASK_DELTA = 0xA282EAD8  # TFRecord's masking of a CRC stored next to its data
FEW = 16  # fewer payloads of one length than this are summed in Python (a numpy pass per byte costs more)


@functools.cache
def crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _crc32c_one(data: bytes) -> int:
    table, crc = crc32c_table(), 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(payloads: list[bytes]) -> list[int]:
    """TFRecord's masked CRC-32C of each payload. Payloads of one length are summed together, one numpy step
    per byte position across all of them (a run's step events have a handful of distinct lengths)."""
    import numpy as np  # noqa: PLC0415

    table = np.array(crc32c_table(), dtype=np.uint32)
    crcs = np.zeros(len(payloads), dtype=np.uint32)
    lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        if len(idx) < FEW:
            crcs[idx] = [_crc32c_one(payloads[i]) for i in idx]
            continue
        data = np.frombuffer(b"".join(payloads[i] for i in idx), dtype=np.uint8).reshape(len(idx), int(n))
        crc = np.full(len(idx), 0xFFFFFFFF, dtype=np.uint32)
        for j in range(int(n)):
            crc = table[(crc ^ data[:, j]) & 0xFF] ^ (crc >> np.uint32(8))
        crcs[idx] = crc ^ np.uint32(0xFFFFFFFF)
    masked = ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(CRC_MASK_DELTA)
    return masked.astype(np.uint32).tolist()


# ---------------------------------------------------------------- MLflow


def _quiet(*loggers: str) -> None:
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)


class MlflowTracker:
    """One MLflow run per hyperp run in the SQLite store mlflow/mlflow.db: experiment = sweep, run name = run id,
    tags run_id, cell, sweep. A resumed run logs into its earlier MLflow run; an export replaces it (`fresh`).
    Steps are sent in batches of up to FLUSH_EVERY_N metrics."""

    MAX_PARAMS = 100  # MLflow's largest batch of params (and of tags)
    MAX_TEXT = 5000  # longest param or tag value kept

    def __init__(self, root: Path, label: RunLabel, fresh: bool = False):
        self.client, experiment = self.experiment(root, label.sweep)
        self.run = self.open_run(experiment, label, fresh)
        self.pending: list = []
        self.last = time.monotonic()
        self.status = "KILLED"  # until a final record says otherwise

    @staticmethod
    def experiment(root: Path, sweep: str):
        """(client, experiment id) of the sweep in root/mlflow/mlflow.db, created on first use."""
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        _quiet("mlflow", "alembic")  # after the import: mlflow sets its own logger's level when imported

        store = root / "mlflow"
        store.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # the store's first use: SQLAlchemy deprecations of mlflow's own code
            warnings.simplefilter("ignore", DeprecationWarning)
            client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
            client.get_experiment_by_name(sweep)
        error: Exception | None = None
        for _ in range(2):  # another process may create it between the look-up and the creation
            found = client.get_experiment_by_name(sweep)
            if found is not None:
                return client, found.experiment_id
            try:
                return client, client.create_experiment(sweep, artifact_location=(store / "artifacts").as_uri())
            except Exception as e:  # noqa: BLE001 (mlflow's errors: the look-up again, then this one as the cause)
                error = e
        raise RuntimeError(f"cannot create the MLflow experiment {sweep!r} in {store}: "
                           f"{first_line(str(error))}") from error

    def open_run(self, experiment: str, label: RunLabel, fresh: bool) -> str:
        found = self.client.search_runs([experiment], filter_string=f"tags.run_id = '{label.run_id}'")
        if found and not fresh:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        for old in found:
            self.client.delete_run(old.info.run_id)
        tags = {"run_id": label.run_id, "cell": label.cell, "sweep": label.sweep}
        return self.client.create_run(experiment, run_name=label.run_id, tags=tags).info.run_id

    def log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param  # noqa: PLC0415

        params = [Param(k, str(v)[:self.MAX_TEXT]) for k, v in flat(config).items()]
        for i in range(0, len(params), self.MAX_PARAMS):
            self.client.log_batch(self.run, params=params[i:i + self.MAX_PARAMS])

    def log_step(self, step: int, values: dict[str, Any], wall_time: float | None = None) -> None:
        from mlflow.entities import Metric  # noqa: PLC0415

        ms = int(1000 * (wall_time or time.time()))
        self.pending += [Metric(k, v, ms, step) for k, v in scalars(values).items()]
        if len(self.pending) >= FLUSH_EVERY_N or time.monotonic() - self.last > FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.pending), FLUSH_EVERY_N):
            self.client.log_batch(self.run, metrics=self.pending[i:i + FLUSH_EVERY_N])
        self.pending, self.last = [], time.monotonic()

    def log_final(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag  # noqa: PLC0415

        step, ms = final_step(row, 0), int(1000 * time.time())
        self.pending += [Metric(FINAL_PREFIX + k, v, ms, step) for k, v in scalars(row, ()).items()]
        self.flush()
        tags = [RunTag(FINAL_PREFIX + k, v[:self.MAX_TEXT]) for k, v in texts(row).items()]
        for i in range(0, len(tags), self.MAX_PARAMS):
            self.client.log_batch(self.run, tags=tags[i:i + self.MAX_PARAMS])
        self.status = "FINISHED" if ended(row) else "FAILED"

    def close(self) -> None:
        self.flush()
        self.client.set_terminated(self.run, self.status)


# ---------------------------------------------------------------- Weights & Biases


class WandbTracker:
    """A W&B offline run under wandb/ (`wandb sync DIR/wandb/offline-run-*` uploads it): project = sweep,
    group = cell, id and name = run id. No system metrics, no console capture."""

    def __init__(self, root: Path, label: RunLabel, fresh: bool = False):
        import wandb  # noqa: PLC0415

        root.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                  disable_git=True, disable_code=True, disable_job_creation=True)
        self.run = wandb.init(mode="offline", dir=str(root), project=label.sweep, group=label.cell, id=label.run_id,
                              name=label.run_id, reinit="create_new", settings=settings)
        self.exit_code = 1  # until a final record says the run ended

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(io.jsonable(config), allow_val_change=True)

    def log_step(self, step: int, values: dict[str, Any], wall_time: float | None = None) -> None:
        self.run.log(scalars(values), step=step)

    def log_final(self, row: dict[str, Any]) -> None:
        self.run.summary.update({FINAL_PREFIX + k: v for k, v in io.jsonable(row).items() if v is not None})
        self.exit_code = 0 if ended(row) else 1

    def close(self) -> None:
        self.run.finish(exit_code=self.exit_code)
