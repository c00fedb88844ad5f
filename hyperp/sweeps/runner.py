"""Scheduling a sweep on Ray: one Ray task per run, retries for infra failures, a resumable ledger.

`run_sweep(spec, root)` expands and validates the spec (nothing starts on a bad spec), reads the ledger of
`<root>/<name>/`, and decides what to run:

- a run of the plan with no record, with an `infra_failed` record, or with a stale record (unreadable, or
  whose `config_json` does not hash to its run id under this code version) is scheduled;
- `completed` and `diverged` runs are never re-run; `failed` runs (the run function raised) are re-run only
  with `retry_failed=True` (CLI `--retry-failed`), since the same config usually raises again;
- LR-search cells ask for more runs until bracketed / out of trials (see lr_search.py).

When nothing is left, it rewrites the ledger and returns without starting Ray (a no-op takes about as long as
expanding the spec). Otherwise it starts a local Ray sized to the machine (`address=None`) or joins a cluster
(`"auto"`, `"ray://host:port"`; the sweep directory must then be on a filesystem every node sees), and submits
each run as a Ray task with the spec's `cpus`/`gpus` and `max_retries` (system failures only:
`retry_exceptions=False`). Inside the worker (`execute`) torch gets `threads = max(1, int(cpus))` threads
unless the config sets `threads`, an `attempt.json` is bumped, and `run_fn(cfg, out_dir)` is called: an
exception becomes a `failed` record with its message (never retried by Ray); a returned row with status
`diverged` is recorded as such (never retried). A worker killed mid-run (OOM, node lost, SIGKILL) is
retried by Ray up to `max_retries` times; the retry calls the trainer with the same config and out_dir, so it
resumes from the last `checkpoint.pt` (the spec sets `checkpoint_every` to ~1/10 of the run unless given).
After the last retry the run is recorded `infra_failed` and is scheduled again by the next `sweep run`.

Ctrl-C (KeyboardInterrupt) or `stop.set()`: the runs in flight are cancelled (interrupted, so the trainer
checkpoints; workers still running after a grace period are killed),
nothing half-written is recorded, the ledger is rewritten, and a later `sweep run` resumes them from their
checkpoints.
"""

from __future__ import annotations

import collections
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
from hyperp import io
from hyperp.sweeps import identity
from hyperp.sweeps.ledger import (ATTEMPT_FILE, COMPLETED, DIVERGED, ERROR_FILE, FAILED, INFRA_FAILED, PLAN_FILE,
                                  SEARCH_FILE, SPEC_FILE, STATE_FILE, STATUSES, SweepLock, load_records, read_json,
                                  run_dir, write_ledger, write_record)
from hyperp.sweeps.lr_search import CellSearch, make_search
from hyperp.sweeps.spec import Plan, PlannedRun, SpecError, SweepSpec, load_spec, make_plan
from hyperp.trainer.config import RunConfig

RunFn = Callable[[RunConfig, str], dict[str, Any]]
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the worker side


def train_run(cfg: RunConfig, out_dir: str) -> dict[str, Any]:
    """The default run function: `hyperp.trainer.loop.train` (checkpoints to and resumes from out_dir)."""
    from hyperp.trainer.loop import train  # noqa: PLC0415
    from hyperp.trainer.progress import ProgressWriter  # noqa: PLC0415 (progress.json for `sweep status --watch`)

    return train(cfg, out_dir, on_step=ProgressWriter(out_dir)).row


def resolve_run_fn(run_fn: str | RunFn | None) -> RunFn:
    """A callable, None (the trainer), or "package.module:function"."""
    if run_fn is None:
        return train_run
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
            "started_at": start, "checkpoint_found": (out / "checkpoint.pt").is_file()}
    io.write_json(out / ATTEMPT_FILE, info)
    return info


def execute(run_fn: RunFn, cfg_json: str, out_dir: str, threads: int, gpus: float = 0.0) -> dict[str, Any]:
    """Body of the Ray task of one run: never raises for errors of the run itself (those become `failed`).

    With no GPU requested, GPUs are hidden from the run (CUDA_VISIBLE_DEVICES="", effective before CUDA is
    first initialised in the worker) so `device = "auto"` trains on CPU instead of sharing a GPU unaccounted.
    """
    start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attempt = _bump_attempt(out, start)
    cfg = RunConfig.from_dict(json.loads(cfg_json))
    if not gpus and cfg.device == "auto":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    _set_threads(cfg.threads or threads)
    row: dict[str, Any] = {}
    try:
        row = dict(run_fn(cfg, str(out)))
        status = row.get("status", COMPLETED)
        error = str(row.get("error") or "")
        if status not in (COMPLETED, DIVERGED):
            status, error = FAILED, error or f"run function returned status {status!r}"
    except Exception as e:  # noqa: BLE001 (any error of the run is its result)
        status, error = FAILED, f"{type(e).__name__}: {e}"
        io.write_bytes(out / ERROR_FILE, traceback.format_exc().encode())
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


@dataclass
class Job:
    run: PlannedRun
    submitted_at: float


def config_row(run: PlannedRun) -> dict[str, Any]:
    """The columns every row has, even for a run that never trained: config fields and static facts."""
    from hyperp.trainer.loop import config_columns  # noqa: PLC0415

    return config_columns(run.config) | run.info | {"lr": run.config.base_lr, "tokens": run.config.tokens}


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
        cj = row.get("config_json")
        return isinstance(cj, str) and identity.digest(cj, self.spec.version_tag) == rid

    def adopt(self, rid: str, row: dict[str, Any]) -> dict[str, Any]:
        """Complete a record the trainer wrote but the driver never stamped (it stopped in between)."""
        cfg = RunConfig.from_dict(json.loads(row["config_json"]))
        run = self.planned.get(rid) or PlannedRun(rid, identity.cell_id(cfg, self.spec.version_tag), cfg,
                                                  "adopted", {})
        attempt = read_json(run_dir(self.sweep_dir, rid) / ATTEMPT_FILE, {}) or {}
        row = config_row(run) | row | {"run_id": rid, "sweep": self.spec.name, "cell_id": run.cell_id,
                                       "lr_search": run.search, "attempts": attempt.get("attempt", 1),
                                       "host": attempt.get("host", ""), "error": row.get("error") or ""}
        write_record(self.sweep_dir, row)
        return row

    def load(self) -> None:
        for rid, row in load_records(self.sweep_dir).items():
            if not self.valid(rid, row):
                continue  # stale: re-run if planned
            if "sweep" not in row or "cell_id" not in row:
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

    def has_work(self) -> bool:
        return bool(self.queue or self.in_flight)

    # -- results
    def ledger_row(self, run: PlannedRun, res: dict[str, Any]) -> dict[str, Any]:
        row = config_row(run) | dict(res.get("row") or {})
        row |= {"run_id": run.run_id, "sweep": self.spec.name, "cell_id": run.cell_id, "lr_search": run.search,
                "status": res["status"], "error": res.get("error", ""), "attempts": res.get("attempt", 1),
                "elapsed_s": res.get("elapsed_s", math.nan), "host": res.get("host", ""),
                "started_at": res.get("started_at", math.nan), "finished_at": res.get("finished_at", time.time()),
                "config_json": run.config.to_json(), "code_version": hyperp.__version__}
        row.setdefault("wall_time_s", row["elapsed_s"])
        row.setdefault("hardware", res.get("machine", ""))
        return row

    def infra_result(self, run: PlannedRun, err: BaseException) -> dict[str, Any]:
        attempt = read_json(run_dir(self.sweep_dir, run.run_id) / ATTEMPT_FILE, {}) or {}
        return {"status": INFRA_FAILED, "error": f"{type(err).__name__}: {err}"[:4000],
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


def prepare(spec: str | Path | SweepSpec, root: str | Path) -> tuple[SweepSpec, Plan, Path]:
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    plan = make_plan(spec)
    return spec, plan, Path(root) / spec.name


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
                      "fields": plan.varying_values(r.config, r.info), "flops": r.info["flops_planned"],
                      "n_params": r.info["n_params"]} for r in plan.runs],
            "cells": [{"cell_id": c.cell_id, "search": c.search.to_dict() if c.search else None,
                       "fields": plan.varying_values(c.config, c.info, lr=False)} for c in plan.cells.values()]}


def connect_ray(address: str | None, num_cpus: int | None):
    """Join `address`, or start a local Ray with `num_cpus` (default: every core). Returns (ray, started)."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": worker_env(address)}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
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
            raise SpecError("resources.gpus" if spec.resources.gpus and gpus < spec.resources.gpus
                            else "resources.cpus", msg)
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
              poll_s: float = 0.5) -> SweepOutcome:
    """Run (or resume) a sweep; see the module docstring. Raises SpecError before anything runs on a bad spec."""
    t0 = time.time()
    spec, plan, sweep_dir = prepare(spec, root)
    fn = resolve_run_fn(run_fn)
    lock = SweepLock(sweep_dir)
    if not lock.acquire():
        raise SpecError("sweep", f"{sweep_dir} is already being run by process {lock.holder()}")
    started_ray, interrupted, ray = False, False, None
    d = Driver(plan, sweep_dir, fn, retry_failed)
    bar: _Progress | None = None
    try:
        write_spec_files(spec, plan, sweep_dir)
        d.load()
        before = d.counts()
        state = {"sweep": spec.name, "pid": os.getpid(), "host": socket.gethostname(), "started_at": t0}
        if not d.has_work():
            d.write_outputs(state | {"updated_at": time.time(), "running": [], "queued": 0, "active": False,
                                     "counts": d.counts()})
            return outcome(d, sweep_dir, plan, False, False, t0)
        ray, started_ray = connect_ray(address, num_cpus)
        limit = capacity(ray, spec, local=started_ray and not address)
        remote = ray.remote(execute)
        threads = spec.resources.threads
        bar = _Progress(progress, spec.name, console)
        last_ledger, last_state, ledger_every, changed = 0.0, 0.0, 2.0, True
        try:
            while d.has_work():
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                while d.queue and len(d.in_flight) < limit:
                    run = d.queue.popleft()
                    d.queued.discard(run.run_id)
                    ref = remote.options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus,
                                         max_retries=spec.max_retries, retry_exceptions=False,
                                         name=f"hyperp-{spec.name}-{run.run_id}").remote(
                        fn, run.config.to_json(), str(run_dir(sweep_dir, run.run_id).resolve()), threads,
                        spec.resources.gpus)
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
                        try:
                            res = ray.get(ref)
                        except ray.exceptions.RayTaskError as e:  # the wrapper itself raised
                            res = {"status": FAILED, "error": str(e)[:4000]}
                        except ray.exceptions.RayError as e:  # worker/node lost after all retries
                            res = d.infra_result(job.run, e)
                        d.record(job.run, res)
                    d.refill()
                changed = changed or bool(ready)
                now = time.time()
                if now - last_ledger > ledger_every:
                    t = time.time()
                    d.write_outputs()
                    ledger_every = max(2.0, 20 * (time.time() - t))  # keep ledger rewrites under ~5% of time
                    last_ledger = time.time()
                bar.update(d, before)
        except KeyboardInterrupt:
            interrupted = True
            d.cancelled = [job.run.run_id for job in d.in_flight.values()]
            cancel_in_flight(ray, list(d.in_flight))
            d.in_flight.clear()
        bar.update(d, before)
        d.write_outputs(state | {"updated_at": time.time(), "running": [], "queued": len(d.queue),
                                 "active": False, "interrupted": interrupted, "counts": d.counts()})
        return outcome(d, sweep_dir, plan, interrupted, started_ray, t0)
    finally:
        if bar is not None:
            bar.stop()
        if started_ray and ray is not None:
            ray.shutdown()
        lock.release()


def outcome(d: Driver, sweep_dir: Path, plan: Plan, interrupted: bool, started_ray: bool, t0: float) -> SweepOutcome:
    counts = d.counts()
    pending = {r.run_id for r in plan.runs if r.search == "grid" and r.run_id not in d.final}
    pending = len(pending | d.queued | set(d.cancelled))
    return SweepOutcome(sweep_dir=sweep_dir, plan=plan, submitted=d.submitted, counts=counts, pending=pending,
                        interrupted=interrupted, started_ray=started_ray, elapsed_s=time.time() - t0,
                        searches=[s.summary(d.final) for s in d.searches])
