"""Scheduling a sweep on Ray: one Ray task per run, retries for infra failures, a resumable ledger.

`run_sweep(spec, root)` expands and validates the spec, checks the grid's size, every corpus of the plan, the
local machine's resources, Ray's temp dir and a cluster address (nothing is written and Ray does not start on
bad input), locks and reads the ledger of `<root>/<name>/`, and decides what to run:

- a run of the plan with no record, with an `infra_failed` record, or with a stale record (unreadable, or
  whose `config_json` does not hash to its run id, hyperp.identity) is scheduled; a record the trainer wrote
  but no driver stamped (the driver was killed) is adopted; an older ledger is migrated first (ledger.migrate);
- `completed` and `diverged` runs are never re-run; `failed` runs (the run function raised) are re-run only
  with `retry_failed=True` (CLI `--retry-failed`), since the same config usually raises again;
- LR-search cells ask for more runs until bracketed / out of trials (see lr_search.py).

When nothing is left, it rewrites the ledger and returns without starting Ray (a no-op takes about as long as
expanding the spec). Otherwise it starts a local Ray sized to the machine (`address=None`) or joins a cluster
(`"auto"`, `"ray://host:port"`; the sweep directory must then be on a filesystem every node sees), and submits
each run as a Ray task with the spec's `cpus`/`gpus` and `max_retries` (system failures only:
`retry_exceptions=False`). The run function is the trainer, or `command.command_run` for a spec with a
`[command]` table (`resolve_run_fn`; `--run-fn` wins). Inside the worker (`execute`) torch gets `threads = max(1, int(cpus))` threads
unless the config sets `threads`, an `attempt.json` is bumped, and `run_fn(cfg, out_dir)` is called: an
exception becomes a `failed` record with its message (never retried by Ray); a returned row with status
`diverged` is recorded as such (never retried). A worker killed mid-run (OOM, node lost, SIGKILL) is
retried by Ray up to `max_retries` times; the retry calls the trainer with the same config and out_dir, so it
resumes from the last `checkpoint.pt` (the spec sets `checkpoint_every` to ~1/10 of the run unless given).
After the last retry the run is recorded `infra_failed` and is scheduled again by the next `sweep run`.

Ctrl-C (KeyboardInterrupt), SIGTERM or `stop.set()`: the runs in flight are cancelled (interrupted, so the
trainer checkpoints; workers still running after a grace period are killed), nothing half-written is
recorded, the ledger is rewritten, state.json says inactive, and a later `sweep run` resumes them from their
checkpoints; after SIGTERM `hyperp.errors.Terminated` is raised. A full disk is an `infra_failed` run when a
run writes, and stops the sweep the same way (then UnavailableError) when the driver writes. Temp files of
writers killed before the driver started are removed. Failures of the plan's runs are listed, one line
each, in `SweepOutcome.failed_runs`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import json
import logging
import math
import os
import platform
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperp
from hyperp import identity, io, schema
from hyperp.errors import InputError, Terminated, UnavailableError, first_line
from hyperp.schema import (ATTEMPT_FILE, CHECKPOINT_FILE, COMPLETED, DIVERGED, ERROR_FILE, FAILED, INFRA_FAILED,
                           PLAN_FILE, RUNS_DIR, SEARCH_FILE, SPEC_FILE, STATE_FILE, STATUSES)
from hyperp.signals import StopSignals
from hyperp.sweeps.ledger import (SweepLock, load_records, migrate, needs_migration, read_json, run_dir,
                                  write_ledger, write_record)
from hyperp.sweeps.command import command_run, config_from_json
from hyperp.sweeps.lr_search import CellSearch, make_search
from hyperp.sweeps.spec import Plan, PlannedRun, Resources, SpecError, SweepSpec, load_spec, make_plan
from hyperp.config import RunConfig

RunFn = Callable[[RunConfig, str], dict[str, Any]]  # (a CommandConfig for command_run)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the worker side


def train_run(cfg: RunConfig, out_dir: str) -> dict[str, Any]:
    """The default run function: `hyperp.trainer.loop.train` (checkpoints to and resumes from out_dir)."""
    from hyperp.trainer.loop import train  # noqa: PLC0415
    from hyperp.trainer.progress import ProgressWriter  # noqa: PLC0415 (progress.json for `sweep status --watch`)

    return train(cfg, out_dir, on_step=ProgressWriter(out_dir), run_id=Path(out_dir).name).row  # the id under the spec's version_tag


def resolve_run_fn(run_fn: str | RunFn | None, spec: SweepSpec | None = None) -> RunFn:
    """A callable, None (the trainer; `command_run` for a spec with a [command] table), or
    "package.module:function"."""
    if run_fn is None:
        return command_run if spec is not None and spec.command is not None else train_run
    if callable(run_fn):
        return run_fn
    module, _, name = run_fn.partition(":")
    if not module or not name:
        raise SpecError("run_fn", f"expected 'package.module:function', got {run_fn!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise SpecError("run_fn", f"cannot import {run_fn!r}: {e}") from None
    if not callable(fn):
        raise SpecError("run_fn", f"{run_fn!r} is not callable")
    return fn


def _set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)  # for a torch imported later by the run function
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def _bump_attempt(out: Path, start: float) -> dict[str, Any]:
    prev = read_json(out / ATTEMPT_FILE, {}) or {}
    info = {"attempt": int(prev.get("attempt", 0)) + 1, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": start, "checkpoint_found": (out / CHECKPOINT_FILE).is_file()}
    io.write_json(out / ATTEMPT_FILE, info)
    return info


def run_error(e: BaseException, out: Path) -> tuple[str, str]:
    """(status, one-line error) of a run function's exception: a full disk or another UnavailableError is an
    infra failure (the next `sweep run` retries it), anything else a failure (error.txt: the exception's
    `details` when it has some, as a failed command's stderr tail, else the traceback)."""
    error = first_line(f"{type(e).__name__}: {e}")
    if isinstance(e, UnavailableError) or io.is_disk_full(e):
        return INFRA_FAILED, error
    with contextlib.suppress(OSError, UnavailableError):  # the traceback is a bonus, not worth a second error
        io.write_bytes(out / ERROR_FILE, (getattr(e, "details", "") or traceback.format_exc()).encode())
    return FAILED, error


def setup_process(cfg: RunConfig, threads: int, gpus: float) -> None:
    """A run's process (a Ray task, or each Ray Train worker of a data-parallel run): its thread count, and no
    GPU visible when it asked for none."""
    if not gpus and cfg.device == "auto":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    _set_threads(cfg.threads or threads)


def execute(run_fn: RunFn, cfg_json: str, out_dir: str, threads: int, gpus: float = 0.0, cpus: float = 1.0,
            max_retries: int = 0) -> dict[str, Any]:
    """Body of the Ray task of one run: never raises for errors of the run itself (those become `failed`,
    or `infra_failed` for a full disk). A run of several workers is handed to Ray Train
    (hyperp.sweeps.data_parallel; `cpus` and `gpus` per worker, `max_retries` restarts of the group).

    With no GPU requested, GPUs are hidden from the run (CUDA_VISIBLE_DEVICES="", effective before CUDA is
    first initialised in the worker) so `device = "auto"` trains on CPU instead of sharing a GPU unaccounted.
    A SIGTERM of the worker (the trainer checkpoints, then raises Terminated) ends the worker the way Ray's
    own SIGTERM handler does (SystemExit), so Ray treats it as a lost worker and retries the run.
    """
    start = time.time()
    out = Path(out_dir)
    attempt: dict[str, Any] = {"attempt": 1, "pid": os.getpid(), "host": socket.gethostname()}
    row: dict[str, Any] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        attempt = _bump_attempt(out, start)
        cfg = config_from_json(cfg_json)
        if cfg.workers > 1:
            from hyperp.sweeps import data_parallel  # noqa: PLC0415

            setup = functools.partial(setup_process, threads=threads, gpus=gpus)
            row = data_parallel.fit(run_fn, cfg, out, cpus=cpus, gpus=gpus, max_retries=max_retries, setup=setup)
        else:
            setup_process(cfg, threads, gpus)
            row = dict(run_fn(cfg, str(out)))
        status = row.get("status", COMPLETED)
        error = str(row.get("error") or "")
        if status not in (COMPLETED, DIVERGED):
            status, error = FAILED, error or f"run function returned status {status!r}"
    except Terminated as e:
        raise SystemExit(f"worker {e}") from None
    except Exception as e:  # noqa: BLE001 (any error of the run is its result)
        status, error = run_error(e, out)
    return {"row": row, "status": status, "error": error, "attempt": attempt["attempt"], "host": attempt["host"],
            "pid": attempt["pid"], "started_at": start, "finished_at": time.time(),
            "elapsed_s": time.time() - start, "machine": platform.machine()}


# ---------------------------------------------------------------- the driver side


@dataclass
class SweepOutcome:
    sweep_dir: Path
    plan: Plan = field(repr=False)
    submitted: int  # runs submitted in this invocation
    counts: dict[str, int]  # status -> runs of the current plan with that status
    pending: int  # known runs without a final record (interrupted, queued, or infra_failed before this call)
    interrupted: bool
    started_ray: bool
    elapsed_s: float
    searches: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # failed and infra_failed runs of the plan: {run_id, status, the plan's varying fields, error (one line)}
    failed_runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Job:
    run: PlannedRun
    submitted_at: float


def config_row(run: PlannedRun) -> dict[str, Any]:
    """The columns a run has before it trains: config fields, static facts, ids and provenance."""
    return schema.config_columns(run.config) | run.info | identity.code_columns() | {
        "run_id": run.run_id, "cell_id": run.cell_id, "lr_search": run.search}


class Driver:
    def __init__(self, plan: Plan, sweep_dir: Path, run_fn: RunFn, retry_failed: bool = False):
        self.plan, self.spec, self.sweep_dir, self.run_fn = plan, plan.spec, sweep_dir, run_fn
        self.retry_failed = retry_failed
        self.planned = {r.run_id: r for r in plan.runs}
        self.search_cells = {c.cell_id for c in plan.searches}
        self.records: dict[str, dict[str, Any]] = {}
        self.final: dict[str, dict[str, Any]] = {}  # runs that are not to be (re)run in this invocation
        self.searches: list[CellSearch] = []
        self.queue: collections.deque[PlannedRun] = collections.deque()
        self.queued: set[str] = set()
        self.in_flight: dict[Any, Job] = {}
        self.busy: set[str] = set()
        self.finished_now: collections.Counter[str] = collections.Counter()
        self.submitted = 0
        self.cancelled: list[str] = []

    # -- records
    def valid(self, rid: str, row: dict[str, Any]) -> bool:
        """A record is of its run when its config has that identity under this spec's version_tag."""
        return identity.run_id_of_json(row.get("config_json"), self.spec.version_tag) == rid

    def adopt(self, rid: str, row: dict[str, Any]) -> dict[str, Any]:
        """Complete a record the trainer wrote but the driver never stamped (it stopped in between)."""
        cfg = config_from_json(row["config_json"])
        run = self.planned.get(rid) or PlannedRun(rid, self.cell_of(cfg), cfg, "adopted", {})
        attempt = read_json(run_dir(self.sweep_dir, rid) / ATTEMPT_FILE, {}) or {}
        trained = {k: v for k, v in row.items() if not schema.is_null(v)}  # the trainer's values over the plan's
        row = config_row(run) | trained | {"run_id": rid, "sweep": self.spec.name, "cell_id": run.cell_id,
                                           "lr_search": run.search, "attempts": attempt.get("attempt", 1),
                                           "host": attempt.get("host", ""), "error": row.get("error") or ""}
        write_record(self.sweep_dir, row)
        return row

    def cell_of(self, cfg: RunConfig) -> str:
        """The cell of a run the plan does not list: a search's seed run (its config's seed differs from the
        cell's) belongs to that search's cell, as when the driver itself submits it; others to their own."""
        tag = self.spec.version_tag
        own = identity.cell_id(cfg, tag)
        if own in self.plan.cells:
            return own
        for cell in self.plan.searches:
            if identity.cell_id(cfg.replace(seed=cell.config.seed), tag) == cell.cell_id:
                return cell.cell_id
        return own

    def load(self) -> None:
        records = load_records(self.sweep_dir)
        legacy = {identity.legacy_run_id(r.config.to_json(), self.spec.version_tag): r.run_id for r in self.plan.runs}
        if needs_migration(self.sweep_dir, records, self.spec.version_tag, legacy):  # an older ledger: rewrite it
            moved = migrate(self.sweep_dir, self.spec.version_tag, legacy)
            log.warning("%s: migrated to ledger schema %d and results version %d (%d records rewritten, %d runs "
                        "renamed, %d left as they were)", self.sweep_dir, schema.SCHEMA_VERSION,
                        identity.RESULTS_VERSION, moved.rewritten, len(moved.renamed), len(moved.left))
            records = load_records(self.sweep_dir)
        for rid, row in records.items():
            if not self.valid(rid, row):
                continue  # stale: re-run if planned
            if row.get("sweep") is None:
                try:
                    row = self.adopt(rid, row)
                except Exception:  # noqa: BLE001 (an unreadable record is stale)
                    continue
            self.records[rid] = row
            status = row.get("status")
            if status in (COMPLETED, DIVERGED) or (status == FAILED and not self.retry_failed):
                self.final[rid] = row
        self.searches = [make_search(self.plan, cell, self.sweep_dir) for cell in self.plan.searches]
        for run in self.plan.runs:
            if run.search == "grid":
                self.enqueue(run)
        self.refill()

    def current_rows(self) -> list[dict[str, Any]]:
        return [row for rid, row in self.records.items()
                if rid in self.planned or row.get("cell_id") in self.search_cells]

    def counts(self) -> dict[str, int]:
        c = collections.Counter(row.get("status") for row in self.current_rows())
        return {s: c.get(s, 0) for s in STATUSES}

    # -- queue
    def enqueue(self, run: PlannedRun) -> None:
        rid = run.run_id
        if rid in self.final or rid in self.busy or rid in self.queued:
            return
        self.queue.append(run)
        self.queued.add(rid)

    def refill(self) -> None:
        for s in self.searches:
            for lr in s.wanted(self.final):
                self.enqueue(self.plan.run_for(s.cell, lr, s.kind))
            for run in s.seed_runs(self.final):
                self.enqueue(run)

    def has_work(self) -> bool:
        return bool(self.queue or self.in_flight)

    # -- results
    def ledger_row(self, run: PlannedRun, res: dict[str, Any]) -> dict[str, Any]:
        row = config_row(run) | dict(res.get("row") or {})
        row |= {"run_id": run.run_id, "sweep": self.spec.name, "cell_id": run.cell_id, "lr_search": run.search,
                "status": res["status"], "error": res.get("error", ""), "attempts": res.get("attempt", 1),
                "elapsed_s": res.get("elapsed_s", math.nan), "host": res.get("host", ""),
                "started_at": res.get("started_at", math.nan), "finished_at": res.get("finished_at", time.time()),
                "config_json": run.config.to_json()}
        row.setdefault("wall_time_s", row["elapsed_s"])
        row.setdefault("hardware", res.get("machine", ""))
        return row

    def infra_result(self, run: PlannedRun, err: BaseException) -> dict[str, Any]:
        attempt = read_json(run_dir(self.sweep_dir, run.run_id) / ATTEMPT_FILE, {}) or {}
        return {"status": INFRA_FAILED, "error": first_line(f"{type(err).__name__}: {err}"),
                "attempt": attempt.get("attempt", self.spec.max_retries + 1), "host": attempt.get("host", ""),
                "started_at": attempt.get("started_at", math.nan), "finished_at": time.time()}

    def record(self, run: PlannedRun, res: dict[str, Any]) -> dict[str, Any]:
        row = self.ledger_row(run, res)
        write_record(self.sweep_dir, row)
        self.records[run.run_id] = row
        self.final[run.run_id] = row  # in this invocation even infra_failed is final (no endless loop)
        self.finished_now[row["status"]] += 1
        return row

    def write_outputs(self, state: dict[str, Any] | None = None) -> None:
        write_ledger(self.sweep_dir, self.current_rows())
        io.write_json(self.sweep_dir / SEARCH_FILE, [s.summary(self.final) for s in self.searches])
        if state is not None:
            io.write_json(self.sweep_dir / STATE_FILE, state)


def prepare(spec: str | Path | SweepSpec, root: str | Path,
            max_runs: int | None = None) -> tuple[SweepSpec, Plan, Path]:
    """Load, expand and check a spec (grid size, every run's config, every distinct corpus); writes nothing."""
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    plan = make_plan(spec, max_runs)
    if spec.command is None:  # a command reads its own data
        check_plan_data(plan)
    return spec, plan, Path(root) / spec.name


def check_plan_data(plan: Plan) -> None:
    """Each distinct corpus of the plan is loaded and checked once: paths, emptiness, token ids < vocab_size."""
    from hyperp.trainer.data import check_data, load_corpus  # noqa: PLC0415 (pulls in torch)

    seen = set()
    for cfg in [r.config for r in plan.runs] + [c.config for c in plan.cells.values()]:
        key = (cfg.data, cfg.val_percent, cfg.vocab_size, cfg.seq_len)
        if key not in seen:
            seen.add(key)
            check_data(cfg)
    load_corpus.cache_clear()  # the driver trains nothing: do not hold a text corpus for the whole sweep


# Longest path Ray appends to its temp dir for a session socket: "/ray/session_<date 26>_<pid 7>" +
# "/sockets/plasma_store" and a ".N" Ray may add; the kernel's limit for a Unix socket path is 107 bytes.
RAY_SOCKET_SUFFIX = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store.1")
UNIX_SOCKET_MAX = 107
ADDRESS_TIMEOUT_S = 10.0  # a cluster address that does not answer a TCP connect within this is refused


def ray_temp_dir() -> tuple[str, str]:
    """(variable, directory) Ray will put its session in: RAY_TMPDIR, else TMPDIR on Linux, else /tmp."""
    for var in ("RAY_TMPDIR", "TMPDIR") if sys.platform.startswith("linux") else ("RAY_TMPDIR",):
        if os.environ.get(var):
            return var, os.environ[var]
    return "", "/tmp"


def local_gpus(driver: Path = Path("/proc/driver/nvidia/gpus"), dev: Path = Path("/dev")) -> int:
    """GPUs a local Ray would see, without torch: CUDA_VISIBLE_DEVICES if set, else the NVIDIA driver's list,
    else the device files nvidia0, nvidia1, ... (some containers and VMs have no /proc/driver/nvidia)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir(driver))
    except OSError:
        return len([p for p in dev.glob("nvidia*") if p.name.removeprefix("nvidia").isdigit()])


def check_cluster(resources: Resources, address: str | None, num_cpus: int | None, workers: int = 1) -> None:
    """What can be known before Ray starts: for a local Ray, that one run (of `workers` workers of `resources`
    each, the plan's largest) fits this machine and that Ray's socket paths fit the Unix limit; for a cluster
    address, that it answers. Raises UnavailableError (InputError for a temp dir that is too long); starts and
    writes nothing."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return  # joined as is; `capacity` checks it
    if address:
        check_address(address)
        return
    cpus, gpus = num_cpus or os.cpu_count() or 1, local_gpus()
    if resources.cpus * workers > cpus or resources.gpus * workers > gpus:
        if resources.cpus <= cpus and resources.gpus <= gpus:  # one worker fits, not all of them
            key, each = "workers", f" ({workers} workers of {resources.cpus:g} CPUs and {resources.gpus:g} GPUs)"
        else:
            key, each = ("resources.gpus" if resources.gpus > gpus else "resources.cpus"), ""
        raise UnavailableError(f"{key}: one run needs {resources.cpus * workers:g} CPUs and "
                               f"{resources.gpus * workers:g} GPUs{each} but this machine offers {cpus:g} CPUs "
                               f"and {gpus:g} GPUs; lower it, or give --address to run on a cluster")
    var, tmp = ray_temp_dir()
    if len(tmp.encode()) + RAY_SOCKET_SUFFIX > UNIX_SOCKET_MAX:
        raise InputError(f"{var or 'temp dir'}: {tmp!r} is too long for Ray's session sockets ({len(tmp.encode())} "
                         f"+ {RAY_SOCKET_SUFFIX} bytes > {UNIX_SOCKET_MAX}); set RAY_TMPDIR to a shorter directory, "
                         "e.g. RAY_TMPDIR=/tmp")


def check_address(address: str) -> None:
    """A `host:port` or `ray://host:port` address must accept a TCP connection within ADDRESS_TIMEOUT_S
    (`ray.init` to a wrong address hangs for minutes); "auto" and "local" are left to Ray."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address in ("auto", "local") or not sep:
        return
    if not port.isdigit():
        raise InputError(f"address: expected auto, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        reason = first_line(str(e)) or "timed out"
        raise UnavailableError(f"address: cannot reach the Ray cluster at {address} ({reason}); "
                               "is it running and is the port open?") from None


def write_spec_files(spec: SweepSpec, plan: Plan, sweep_dir: Path) -> None:
    """spec.toml as given (a changed spec archives the old one under history/), and plan.json."""
    old = sweep_dir / SPEC_FILE
    if spec.text and old.is_file() and old.read_text() != spec.text:
        io.write_bytes(sweep_dir / "history" / f"spec-{time.strftime('%Y%m%d-%H%M%S')}.toml", old.read_bytes())
    if spec.text and (not old.is_file() or old.read_text() != spec.text):  # a spec built in code has no text
        io.write_bytes(old, spec.text.encode())
    io.write_json(sweep_dir / PLAN_FILE, plan_json(plan))


def plan_json(plan: Plan) -> dict[str, Any]:
    return {"sweep": plan.spec.name, "code_version": hyperp.__version__, "version_tag": plan.spec.version_tag,
            "varying": plan.varying, "resources": {"cpus": plan.spec.resources.cpus, "gpus": plan.spec.resources.gpus},
            "runs": [{"run_id": r.run_id, "cell_id": r.cell_id, "search": r.search,
                      "fields": plan.varying_values(r.config, r.info), "flops": r.info.get("flops_planned"),
                      "n_params": r.info.get("n_params")} for r in plan.runs],  # None for a command
            "cells": [{"cell_id": c.cell_id, "search": c.search.to_dict() if c.search else None,
                       "fields": plan.varying_values(c.config, c.info, lr=False)} for c in plan.cells.values()]}


RAY_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def connect_ray(address: str | None, num_cpus: int | None):
    """Join `address`, or start a local Ray with `num_cpus` (default: every core). Returns (ray, started).
    A failure to connect raises UnavailableError naming the address."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": worker_env(address)}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # Ray (2.5x on) announces at every local start that it turned token authentication on, and how to turn
            # it off: the local Ray is the sweep's own, so the notice is noise to its user (the token stays on)
            logging.getLogger(RAY_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, OSError) as e:
        raise UnavailableError(f"address: cannot start or join Ray at {address or 'a local Ray'}: "
                               f"{first_line(str(e))}") from None
    return ray, True


def worker_env(address: str | None) -> dict[str, Any]:
    """Ray's runtime environment: the working directory importable by the workers (`--run-fn module:fn`).

    A remote cluster (`ray://`) gets the directory itself shipped (`working_dir`); local Ray and `auto` (this
    node's cluster) get it on PYTHONPATH. `ray://` needs Ray's client (`pip install 'hyperp[cluster]'`).
    """
    cwd = os.getcwd()
    if address and address.startswith("ray://"):
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("grpc") is None:
            raise SpecError("address", f"{address} needs Ray's client, which is not installed: "
                                       "pip install 'hyperp[cluster]' (ray[client,default])")
        return {"working_dir": cwd}
    path = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def capacity(ray, spec: SweepSpec, local: bool) -> int:
    """How many runs fit on the cluster at once; errors when one run cannot fit on a local cluster."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    fits = math.floor(cpus / spec.resources.cpus + 1e-9)
    if spec.resources.gpus:
        fits = min(fits, math.floor(gpus / spec.resources.gpus + 1e-9))
    if fits < 1:
        msg = (f"one run needs {spec.resources.cpus} CPUs and {spec.resources.gpus} GPUs but the cluster has "
               f"{cpus:g} CPUs and {gpus:g} GPUs")
        if local:
            key = "resources.gpus" if spec.resources.gpus and gpus < spec.resources.gpus else "resources.cpus"
            raise UnavailableError(f"{key}: {msg}")
        log.warning("%s; waiting for the autoscaler", msg)
        fits = 1
    return min(fits, spec.max_concurrent) if spec.max_concurrent else fits


class _Progress:
    """A rich progress bar: done / running / failed / diverged counts and an ETA; a no-op when disabled."""

    def __init__(self, enabled: bool, name: str, console=None):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,  # noqa: PLC0415
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console or Console(stderr=True))
        self.task = self.progress.add_task(name, total=None, stats="")
        self.progress.start()

    def update(self, d: Driver, before: dict[str, int]) -> None:
        if not self.enabled:
            return
        n = sum(d.finished_now.values())
        c = d.finished_now
        stats = (f"[green]done {before[COMPLETED] + c[COMPLETED]}[/] [cyan]running {len(d.in_flight)}[/] "
                 f"queued {len(d.queue)} [red]failed {before[FAILED] + c[FAILED] + c[INFRA_FAILED]}[/] "
                 f"[yellow]diverged {before[DIVERGED] + c[DIVERGED]}[/]")
        self.progress.update(self.task, completed=n, total=n + len(d.in_flight) + len(d.queue), stats=stats)

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()


CANCEL_GRACE_S = 5.0  # seconds a cancelled run gets to write its checkpoint before its worker is killed


def cancel_in_flight(ray, refs: list) -> None:
    """Cancel runs: first a KeyboardInterrupt in each task (the trainer then checkpoints between updates),
    then, after CANCEL_GRACE_S, kill the workers of those still running."""
    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # noqa: BLE001 (already finished or gone)
            pass
    _, still_running = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in still_running:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001
            pass


def run_sweep(spec: str | Path | SweepSpec, root: str | Path = "sweeps", *, address: str | None = None,
              run_fn: str | RunFn | None = None, retry_failed: bool = False, num_cpus: int | None = None,
              progress: bool = True, stop: threading.Event | None = None, console=None,
              poll_s: float = 0.5, max_runs: int | None = None) -> SweepOutcome:
    """Run (or resume) a sweep; see the module docstring.

    Before anything is written or Ray starts: the spec and every run's config (SpecError), the grid's size
    against `max_runs` (default: the spec's, 100,000), every distinct corpus (DataError), the local machine's
    cores and GPUs against one run's resources, Ray's temp dir and a cluster address (UnavailableError).
    A lock held by another driver raises UnavailableError. SIGTERM is handled like Ctrl-C (runs in flight
    checkpoint, the ledger is rewritten, state.json says inactive) and then raises Terminated; SIGINT always
    interrupts, even in a process started with SIGINT ignored. A full disk stops the sweep the same way and
    raises UnavailableError naming the file.
    """
    t0 = time.time()
    with StopSignals(sigint=True) as signals:
        spec, plan, sweep_dir = prepare(spec, root, max_runs)
        fn = resolve_run_fn(run_fn, spec)
        check_cluster(spec.resources, address, num_cpus, max((r.config.workers for r in plan.runs), default=1))
        lock = SweepLock(sweep_dir)
        if not lock.acquire():
            raise UnavailableError(f"{sweep_dir}: already being run by process {lock.holder()} (one driver per "
                                   "sweep directory); wait for it to finish or stop it")
        try:
            return drive(plan, sweep_dir, fn, retry_failed, address, num_cpus, progress, stop, console, poll_s, t0,
                         signals)
        finally:
            lock.release()


def remove_stale_tmp(sweep_dir: Path, before: float) -> None:
    """Temp files of writers killed before this driver started, in the sweep dir and every run dir (no run is
    in flight yet: this driver holds the lock)."""
    io.remove_stale_tmp(sweep_dir, before)
    with contextlib.suppress(OSError), os.scandir(sweep_dir / RUNS_DIR) as it:
        for entry in it:
            if entry.is_dir():
                io.remove_stale_tmp(entry.path, before)


def drive(plan: Plan, sweep_dir: Path, fn: RunFn, retry_failed: bool, address: str | None, num_cpus: int | None,
          progress: bool, stop: threading.Event | None, console, poll_s: float, t0: float,
          signals: StopSignals) -> SweepOutcome:
    """The locked part of run_sweep: decide what to run, start Ray if needed, schedule, record."""
    spec = plan.spec
    remove_stale_tmp(sweep_dir, t0)
    d = Driver(plan, sweep_dir, fn, retry_failed)
    d.load()
    before = d.counts()
    state = {"sweep": spec.name, "pid": os.getpid(), "host": socket.gethostname(), "started_at": t0}
    if not d.has_work():
        write_spec_files(spec, plan, sweep_dir)
        d.write_outputs(state | {"updated_at": time.time(), "running": [], "queued": 0, "active": False,
                                 "counts": d.counts()})
        return outcome(d, sweep_dir, plan, False, False, t0)
    started_ray, ray, bar = False, None, None
    try:
        ray, started_ray = connect_ray(address, num_cpus)
        signals.install()  # ray.init sets its own SIGTERM handler (exit at once); take SIGTERM back
        limit = capacity(ray, spec, local=started_ray and not address)
        write_spec_files(spec, plan, sweep_dir)
        bar = _Progress(progress, spec.name, console)
        stopped = schedule(ray, d, limit, fn, state, stop, poll_s, bar, before)
        bar.update(d, before)
        final = state | {"updated_at": time.time(), "running": [], "queued": len(d.queue), "active": False,
                         "interrupted": stopped is not None, "counts": d.counts()}
        if isinstance(stopped, UnavailableError):  # the disk is full: the last rewrite may fail too
            with contextlib.suppress(UnavailableError):
                d.write_outputs(final)
            raise stopped
        d.write_outputs(final)
        if isinstance(stopped, KeyboardInterrupt) and signals.terminated:
            raise signals.error()
        return outcome(d, sweep_dir, plan, stopped is not None, started_ray, t0)
    finally:
        if bar is not None:
            bar.stop()
        if started_ray and ray is not None:
            ray.shutdown()


def schedule(ray, d: Driver, limit: int, fn: RunFn, state: dict[str, Any], stop: threading.Event | None,
             poll_s: float, bar: _Progress, before: dict[str, int]) -> BaseException | None:
    """Submit, wait, record until no work is left. Returns None, or what stopped it (KeyboardInterrupt, which
    is also how SIGTERM arrives, or an UnavailableError of the driver's own writes) after cancelling the runs
    in flight."""
    spec, sweep_dir = d.spec, d.sweep_dir
    # Ray keeps a CPU task's worker process for the next task (torch, the corpus and torch.optim's dynamo
    # import paid once per worker); GPU tasks get a fresh process by Ray's default, which releases the device.
    # max_calls is fixed per remote function (`.options()` refuses it).
    remote = ray.remote(execute) if spec.resources.reuse_workers else ray.remote(max_calls=1)(execute)
    threads = spec.resources.threads
    last_ledger, last_state, ledger_every, changed = 0.0, 0.0, 2.0, True
    try:
        while d.has_work():
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            # A run of w workers takes w of the `limit` slots; the queue's head waits for its slots rather than
            # let later one-worker runs take them first (a data-parallel run is never starved).
            while d.queue and sum(j.run.config.workers for j in d.in_flight.values()) + \
                    d.queue[0].config.workers <= max(limit, d.queue[0].config.workers):
                run = d.queue.popleft()
                d.queued.discard(run.run_id)
                ray_train = run.config.workers > 1  # the task only waits: Ray Train reserves the workers
                ref = remote.options(num_cpus=0 if ray_train else spec.resources.cpus,
                                     num_gpus=0 if ray_train else spec.resources.gpus,
                                     max_retries=spec.max_retries, retry_exceptions=False,
                                     name=f"hyperp-{spec.name}-{run.run_id}").remote(
                    fn, run.config.to_json(), str(run_dir(sweep_dir, run.run_id).resolve()), threads,
                    spec.resources.gpus, spec.resources.cpus, spec.max_retries)
                d.in_flight[ref] = Job(run, time.time())
                d.busy.add(run.run_id)
                d.submitted += 1
                changed = True
            now = time.time()
            if (changed and now - last_state > 0.5) or now - last_state > 2.0:  # heartbeat for `sweep status`
                io.write_json(sweep_dir / STATE_FILE, state | {
                    "updated_at": now, "active": True, "running": [j.run.run_id for j in d.in_flight.values()],
                    "running_cells": {j.run.run_id: j.run.cell_id for j in d.in_flight.values()},
                    "queued": len(d.queue), "counts": d.counts()})
                last_state, changed = now, False
            ready, _ = ray.wait(list(d.in_flight), num_returns=1, timeout=poll_s)
            if ready:
                rest = [r for r in d.in_flight if r not in ready]
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
                for ref in list(ready) + list(more):
                    job = d.in_flight.pop(ref)
                    d.busy.discard(job.run.run_id)
                    d.record(job.run, result_of(ray, d, job, ref))
                d.refill()
            changed = changed or bool(ready)
            now = time.time()
            if now - last_ledger > ledger_every:
                t = time.time()
                d.write_outputs()
                ledger_every = max(2.0, 20 * (time.time() - t))  # keep ledger rewrites under ~5% of time
                last_ledger = time.time()
            bar.update(d, before)
    except (KeyboardInterrupt, UnavailableError) as e:  # SIGTERM arrives as a KeyboardInterrupt (hyperp.signals)
        d.cancelled = [job.run.run_id for job in d.in_flight.values()]
        cancel_in_flight(ray, list(d.in_flight))
        d.in_flight.clear()
        return e
    return None


def result_of(ray, d: Driver, job: Job, ref) -> dict[str, Any]:
    """The worker's result, or a failed / infra_failed result with a one-line error when there is none."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the wrapper itself raised
        cause = getattr(e, "cause", None) or e
        return {"status": FAILED, "error": first_line(f"{type(cause).__name__}: {cause}")}
    except ray.exceptions.RayError as e:  # worker/node lost after all retries
        return d.infra_result(job.run, e)


def settings(plan: Plan, row: dict[str, Any]) -> dict[str, Any]:
    """The plan's varying settings of a ledger row: its columns, else (a command sweep's values in a record
    read back from disk) the keys of its extra_json."""
    extra = json.loads(row.get("extra_json") or "{}") if any(k not in row for k in plan.varying) else {}
    return {k: row[k] if k in row else extra.get(k) for k in plan.varying}


def outcome(d: Driver, sweep_dir: Path, plan: Plan, interrupted: bool, started_ray: bool, t0: float) -> SweepOutcome:
    counts = d.counts()
    pending = {r.run_id for r in plan.runs if r.search == "grid" and r.run_id not in d.final}
    pending = len(pending | d.queued | set(d.cancelled))
    failed = [{"run_id": row["run_id"], "status": row["status"], **settings(plan, row),
               "error": first_line(str(row.get("error") or ""))}
              for row in sorted(d.current_rows(), key=lambda r: r["run_id"])
              if row.get("status") in (FAILED, INFRA_FAILED)]
    return SweepOutcome(sweep_dir=sweep_dir, plan=plan, submitted=d.submitted, counts=counts, pending=pending,
                        interrupted=interrupted, started_ray=started_ray, elapsed_s=time.time() - t0,
                        searches=[s.summary(d.final) for s in d.searches], failed_runs=failed)
