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
`[command]` table (hyperp.sweeps.worker: `resolve_run_fn`, `--run-fn` wins; `execute` is the task's body): an
exception becomes a `failed` record with its message (never retried by Ray); a returned row with status
`diverged` is recorded as such (never retried). A worker killed mid-run (OOM, node lost, SIGKILL) is
retried by Ray up to `max_retries` times; the retry calls the trainer with the same config and out_dir, so it
resumes from the last `checkpoint.pt` (the spec sets `checkpoint_every` to ~1/10 of the run unless given).
After the last retry the run is recorded `infra_failed` and is scheduled again by the next `sweep run`.

Ctrl-C (KeyboardInterrupt), SIGTERM, `stop.set()` or `hyperp sweep stop` (a request file polled every loop,
hyperp.sweeps.stop): the runs in flight are cancelled (interrupted, so the trainer checkpoints; workers still
running after a grace period are killed), nothing half-written is
recorded, the ledger is rewritten, state.json says inactive, and a later `sweep run` resumes them from their
checkpoints; after SIGTERM `hyperp.errors.Terminated` is raised. A full disk is an `infra_failed` run when a
run writes, and stops the sweep the same way (then UnavailableError) when the driver writes. Temp files of
writers killed before the driver started are removed. Failures of the plan's runs are listed, one line
each, in `SweepOutcome.failed_runs`.

The pieces: hyperp.sweeps.plan (the spec expanded, `prepare`), hyperp.sweeps.cluster (preflight, Ray, capacity,
cancel), hyperp.sweeps.worker (the task's body), hyperp.sweeps.status (the counts), hyperp.sweeps.lr_search
(the cells' searches), hyperp.sweeps.ledger (the files). Here: the Driver (what to run, the records) and the
scheduling loop. Progress is reported, never drawn: `on_progress(Progress)` after every poll (the CLI draws it).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hyperp import identity, io, schema
from hyperp.config import RunConfig
from hyperp.errors import UnavailableError, first_line
from hyperp.schema import (ATTEMPT_FILE, COMPILE_CACHE_DIR, COMPLETED, DIVERGED, FAILED, INFRA_FAILED, PLAN_FILE,
                           RUNS_DIR, SEARCH_FILE, SPEC_FILE, STATE_FILE, TRACKING_DIR)
from hyperp.signals import StopSignals
from hyperp.sweeps.cluster import cancel_in_flight, capacity, check_cluster, connect_ray
from hyperp.sweeps.command import config_from_json
from hyperp.sweeps.ledger import (SweepLock, load_records, migrate, needs_migration, read_ledger, run_dir, write_ledger,
                                  write_record)
from hyperp.sweeps.lr_search import CellSearch, make_search
from hyperp.sweeps.plan import Plan, PlannedRun, plan_json, prepare
from hyperp.sweeps.spec import SweepSpec
from hyperp.sweeps.status import Progress, tally
from hyperp.sweeps.stop import clear_stop, stop_requested
from hyperp.sweeps.worker import RunFn, TrackedRun, execute, resolve_run_fn
from hyperp.tracking import check_installed, prepare as prepare_tracking

log = logging.getLogger(__name__)
ProgressFn = Callable[[Progress], None]


@dataclass
class SweepOptions:
    """How `run_sweep` runs a sweep: its keyword arguments (see there)."""

    address: str | None = None  # None: a local Ray sized to this machine; "auto" or "ray://host:port"
    run_fn: str | RunFn | None = None  # None: the trainer (command_run for a [command] spec); "module:function"
    retry_failed: bool = False  # also re-run runs that raised
    num_cpus: int | None = None  # CPUs of a local Ray (default: every core)
    on_progress: ProgressFn | None = None  # called with the sweep's Progress after every poll and at the end
    stop: threading.Event | None = None  # set: stop as Ctrl-C does
    poll_s: float = 0.5
    max_runs: int | None = None  # refuse a larger grid (default: the spec's)


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
    """What one `run_sweep` decides and records: the plan's records read (adopted, migrated), the queue of runs
    to submit (grid runs, then what the LR searches want), the runs in flight, every result written."""

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
        # [tracking]: every run also logs to the trackers, under <sweep>/tracking unless the spec says where
        self.tracking = self.spec.tracking.resolved(sweep_dir / TRACKING_DIR) if self.spec.tracking else None

    def run_fn_for(self, run: PlannedRun) -> RunFn:
        """The run function of one run: with [tracking], wrapped to log the run under its sweep and cell."""
        if self.tracking is None:
            return self.run_fn
        return TrackedRun(self.run_fn, self.tracking, self.spec.name, run.cell_id)

    # -- records
    def valid(self, rid: str, row: dict[str, Any]) -> bool:
        """A record is of its run when its config has that identity under this spec's version_tag."""
        return identity.run_id_of_json(row.get("config_json"), self.spec.version_tag) == rid

    def adopt(self, rid: str, row: dict[str, Any]) -> dict[str, Any]:
        """Complete a record the trainer wrote but the driver never stamped (it stopped in between)."""
        cfg = config_from_json(row["config_json"])
        run = self.planned.get(rid) or PlannedRun(rid, self.cell_of(cfg), cfg, "adopted", {})
        attempt = io.read_json(run_dir(self.sweep_dir, rid) / ATTEMPT_FILE, {}) or {}
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
        return tally(row.get("status") for row in self.current_rows())

    def progress(self) -> Progress:
        return Progress(self.spec.name, self.counts(), running=len(self.in_flight), queued=len(self.queue),
                        finished_now=sum(self.finished_now.values()))

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
        attempt = io.read_json(run_dir(self.sweep_dir, run.run_id) / ATTEMPT_FILE, {}) or {}
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


def run_sweep(spec: str | Path | SweepSpec, root: str | Path = "sweeps", *, address: str | None = None,
              run_fn: str | RunFn | None = None, retry_failed: bool = False, num_cpus: int | None = None,
              on_progress: ProgressFn | None = None, stop: threading.Event | None = None, poll_s: float = 0.5,
              max_runs: int | None = None) -> SweepOutcome:
    """Run (or resume) a sweep; see the module docstring and `SweepOptions` for the arguments.

    Before anything is written or Ray starts: the spec and every run's config (SpecError), the grid's size
    against `max_runs` (default: the spec's, 100,000), every distinct corpus (DataError), the local machine's
    cores and GPUs against one run's resources, Ray's temp dir and a cluster address (UnavailableError).
    A lock held by another driver raises UnavailableError. SIGTERM is handled like Ctrl-C (runs in flight
    checkpoint, the ledger is rewritten, state.json says inactive) and then raises Terminated; SIGINT always
    interrupts, even in a process started with SIGINT ignored. A full disk stops the sweep the same way and
    raises UnavailableError naming the file.
    """
    opts = SweepOptions(address=address, run_fn=run_fn, retry_failed=retry_failed, num_cpus=num_cpus,
                        on_progress=on_progress, stop=stop, poll_s=poll_s, max_runs=max_runs)
    t0 = time.time()
    with StopSignals(sigint=True) as signals:
        spec, plan, sweep_dir = prepare(spec, root, opts.max_runs)
        check_installed(spec.tracking.log_to, "tracking.log_to")
        opts = replace(opts, run_fn=resolve_run_fn(opts.run_fn, spec))
        workers = max((r.config.workers for r in plan.runs), default=1)
        check_cluster(spec.resources, opts.address, opts.num_cpus, workers)
        lock = SweepLock(sweep_dir)
        if not lock.acquire():
            raise UnavailableError(f"{sweep_dir}: already being run by process {lock.holder()} (one driver per "
                                   "sweep directory); wait for it to finish or stop it")
        try:
            return drive(plan, sweep_dir, opts, signals, t0, lock.owner)
        finally:
            clear_stop(sweep_dir)  # before release: any request now is for this driver or a gone one
            lock.release()


def compile_cache_dir(where: str, sweep_dir: Path, run_id: str) -> str:
    """The Inductor cache directory of a run ([resources] compile_cache): the sweep's, the run's own, or ""
    for torch's default."""
    if where == "system":
        return ""
    base = sweep_dir if where == "sweep" else run_dir(sweep_dir, run_id)
    return str((base / COMPILE_CACHE_DIR).resolve())


def remove_stale_tmp(sweep_dir: Path, before: float) -> None:
    """Temp files of writers killed before this driver started, in the sweep dir and every run dir (no run is
    in flight yet: this driver holds the lock)."""
    io.remove_stale_tmp(sweep_dir, before)
    with contextlib.suppress(OSError), os.scandir(sweep_dir / RUNS_DIR) as it:
        for entry in it:
            if entry.is_dir():
                io.remove_stale_tmp(entry.path, before)


def drive(plan: Plan, sweep_dir: Path, opts: SweepOptions, signals: StopSignals, t0: float,
          owner: dict[str, Any] | None = None) -> SweepOutcome:
    """The locked part of run_sweep: decide what to run, start Ray if needed, schedule, record. `opts.run_fn`
    is resolved (a callable); `owner` names this driver's hold of the lock (what `sweep stop` addresses)."""
    remove_stale_tmp(sweep_dir, t0)
    if any(r.auto_compile for r in plan.runs):  # compile = "auto": decided as `sweep plan` states it
        from hyperp.sweeps import compile as auto_compile  # noqa: PLC0415
        from hyperp.sweeps.estimate import DEFAULT_MFU, estimate_throughput  # noqa: PLC0415

        finished = read_ledger(sweep_dir)
        speed = estimate_throughput(plan, finished, 0.0, DEFAULT_MFU)[0]
        for decision in auto_compile.resolve(plan, finished, speed):
            log.info("compile auto: %s", decision.describe())
    d = Driver(plan, sweep_dir, opts.run_fn, opts.retry_failed)
    d.load()
    state = {"sweep": plan.spec.name, "pid": os.getpid(), "host": socket.gethostname(), "started_at": t0}
    if not d.has_work():
        write_spec_files(plan, sweep_dir)
        d.write_outputs(state | {"updated_at": time.time(), "running": [], "queued": 0, "active": False,
                                 "counts": d.counts()})
        return outcome(d, False, False, t0)
    ray, started_ray = connect_ray(opts.address, opts.num_cpus)
    try:
        signals.install()  # ray.init sets its own SIGTERM handler (exit at once); take SIGTERM back
        limit = capacity(ray, plan.spec, local=started_ray and not opts.address)
        write_spec_files(plan, sweep_dir)
        if d.tracking is not None:
            prepare_tracking(d.tracking, plan.spec.name)
        stopped = Scheduler(ray, d, limit, state, opts, owner).run()
        report(d, opts)
        final = state | {"updated_at": time.time(), "running": [], "queued": len(d.queue), "active": False,
                         "interrupted": stopped is not None, "counts": d.counts()}
        if isinstance(stopped, UnavailableError):  # the disk is full: the last rewrite may fail too
            with contextlib.suppress(UnavailableError):
                d.write_outputs(final)
            raise stopped
        d.write_outputs(final)
        if isinstance(stopped, KeyboardInterrupt) and signals.terminated:
            raise signals.error()
        return outcome(d, stopped is not None, started_ray, t0)
    finally:
        if started_ray:
            ray.shutdown()


def report(d: Driver, opts: SweepOptions) -> None:
    """Hand the sweep's progress to the caller's `on_progress`, if any."""
    if opts.on_progress is not None:
        opts.on_progress(d.progress())


class Scheduler:
    """The loop of one sweep on Ray: submit what fits, wait, record, until no work is left. `run` returns None,
    or what stopped it (KeyboardInterrupt, which is also how SIGTERM arrives, or an UnavailableError of the
    driver's own writes) after cancelling the runs in flight."""

    def __init__(self, ray, d: Driver, limit: int, state: dict[str, Any], opts: SweepOptions,
                 owner: dict[str, Any] | None = None):
        self.ray, self.d, self.limit, self.state, self.opts, self.owner = ray, d, limit, state, opts, owner
        spec = d.spec
        # Ray keeps a CPU task's worker process for the next task (torch, the corpus and torch.optim's dynamo
        # import paid once per worker); GPU tasks get a fresh process by Ray's default, which releases the
        # device. max_calls is fixed per remote function (`.options()` refuses it).
        self.remote = ray.remote(execute) if spec.resources.reuse_workers else ray.remote(max_calls=1)(execute)
        self.last_ledger, self.last_state, self.ledger_every, self.changed = 0.0, 0.0, 2.0, True

    def run(self) -> BaseException | None:
        d = self.d
        try:
            while d.has_work():
                if self.stopping():
                    raise KeyboardInterrupt
                self.submit()
                self.heartbeat()
                self.collect()
                self.rewrite_ledger()
                report(d, self.opts)
        except (KeyboardInterrupt, UnavailableError) as e:  # SIGTERM arrives as a KeyboardInterrupt (hyperp.signals)
            d.cancelled = [job.run.run_id for job in d.in_flight.values()]
            cancel_in_flight(self.ray, list(d.in_flight))
            d.in_flight.clear()
            return e
        return None

    def stopping(self) -> bool:
        """`opts.stop` is set, or `hyperp sweep stop` asked this driver to stop (hyperp.sweeps.stop)."""
        return (self.opts.stop is not None and self.opts.stop.is_set()) or \
            stop_requested(self.d.sweep_dir, self.owner)

    def submit(self) -> None:
        """Submit from the queue while slots are free. A run of w workers takes w of the `limit` slots; the
        queue's head waits for its slots rather than let later one-worker runs take them first (a
        data-parallel run is never starved)."""
        d, spec = self.d, self.d.spec
        while d.queue and sum(j.run.config.workers for j in d.in_flight.values()) + \
                d.queue[0].config.workers <= max(self.limit, d.queue[0].config.workers):
            run = d.queue.popleft()
            d.queued.discard(run.run_id)
            ray_train = run.config.workers > 1  # the task only waits: Ray Train reserves the workers
            ref = self.remote.options(num_cpus=0 if ray_train else spec.resources.cpus,
                                      num_gpus=0 if ray_train else spec.resources.gpus,
                                      max_retries=spec.max_retries, retry_exceptions=False,
                                      name=f"hyperp-{spec.name}-{run.run_id}").remote(
                d.run_fn_for(run), run.config.to_json(), str(run_dir(d.sweep_dir, run.run_id).resolve()),
                spec.resources.threads, spec.resources.gpus, spec.resources.cpus, spec.max_retries,
                compile_cache_dir(spec.resources.compile_cache, d.sweep_dir, run.run_id))
            d.in_flight[ref] = Job(run, time.time())
            d.busy.add(run.run_id)
            d.submitted += 1
            self.changed = True

    def heartbeat(self) -> None:
        """state.json for `sweep status`: soon after a change, and every 2 s regardless."""
        now, d = time.time(), self.d
        if (self.changed and now - self.last_state > 0.5) or now - self.last_state > 2.0:
            io.write_json(d.sweep_dir / STATE_FILE, self.state | {
                "updated_at": now, "active": True, "running": [j.run.run_id for j in d.in_flight.values()],
                "running_cells": {j.run.run_id: j.run.cell_id for j in d.in_flight.values()},
                "queued": len(d.queue), "counts": d.counts()})
            self.last_state, self.changed = now, False

    def collect(self) -> None:
        """Wait up to poll_s for a run to finish; record it and every other finished one, then refill."""
        ray, d = self.ray, self.d
        ready, _ = ray.wait(list(d.in_flight), num_returns=1, timeout=self.opts.poll_s)
        if not ready:
            return
        rest = [r for r in d.in_flight if r not in ready]
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
        for ref in list(ready) + list(more):
            job = d.in_flight.pop(ref)
            d.busy.discard(job.run.run_id)
            d.record(job.run, result_of(ray, d, job, ref))
        d.refill()
        self.changed = True

    def rewrite_ledger(self) -> None:
        """runs.parquet and searches.json every few seconds, keeping the rewrites under ~5% of the time."""
        if time.time() - self.last_ledger > self.ledger_every:
            t = time.time()
            self.d.write_outputs()
            self.ledger_every = max(2.0, 20 * (time.time() - t))
            self.last_ledger = time.time()


def result_of(ray, d: Driver, job: Job, ref) -> dict[str, Any]:
    """The worker's result, or a failed / infra_failed result with a one-line error when there is none."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the wrapper itself raised
        cause = getattr(e, "cause", None) or e
        return {"status": FAILED, "error": first_line(f"{type(cause).__name__}: {cause}")}
    except ray.exceptions.RayError as e:  # worker/node lost after all retries
        return d.infra_result(job.run, e)


def write_spec_files(plan: Plan, sweep_dir: Path) -> None:
    """spec.toml as given (a changed spec archives the old one under history/), and plan.json."""
    spec = plan.spec
    old = sweep_dir / SPEC_FILE
    if spec.text and old.is_file() and old.read_text() != spec.text:
        io.write_bytes(sweep_dir / "history" / f"spec-{time.strftime('%Y%m%d-%H%M%S')}.toml", old.read_bytes())
    if spec.text and (not old.is_file() or old.read_text() != spec.text):  # a spec built in code has no text
        io.write_bytes(old, spec.text.encode())
    io.write_json(sweep_dir / PLAN_FILE, plan_json(plan))


def settings(plan: Plan, row: dict[str, Any]) -> dict[str, Any]:
    """The plan's varying settings of a ledger row: its columns, else (a command sweep's values in a record
    read back from disk) the keys of its extra_json."""
    extra = json.loads(row.get("extra_json") or "{}") if any(k not in row for k in plan.varying) else {}
    return {k: row[k] if k in row else extra.get(k) for k in plan.varying}


def outcome(d: Driver, interrupted: bool, started_ray: bool, t0: float) -> SweepOutcome:
    plan = d.plan
    pending = {r.run_id for r in plan.runs if r.search == "grid" and r.run_id not in d.final}
    pending = len(pending | d.queued | set(d.cancelled))
    failed = [{"run_id": row["run_id"], "status": row["status"], **settings(plan, row),
               "error": first_line(str(row.get("error") or ""))}
              for row in sorted(d.current_rows(), key=lambda r: r["run_id"])
              if row.get("status") in (FAILED, INFRA_FAILED)]
    return SweepOutcome(sweep_dir=d.sweep_dir, plan=plan, submitted=d.submitted, counts=d.counts(),
                        pending=pending, interrupted=interrupted, started_ray=started_ray,
                        elapsed_s=time.time() - t0, searches=[s.summary(d.final) for s in d.searches],
                        failed_runs=failed)
