"""The worker side of a sweep: the body of each run's Ray task (`execute`), the run functions, process setup.

`execute(run_fn, cfg_json, out_dir, ...)` runs in a Ray worker process: torch gets `threads = max(1, int(cpus))`
threads unless the config sets `threads`, GPUs are hidden from a run that asked for none, an `attempt.json` is
bumped, and `run_fn(cfg, out_dir)` is called (or, for a run of several workers, handed to Ray Train by
hyperp.sweeps.data_parallel). It never raises for errors of the run itself: an exception becomes a `failed`
result with its message (a full disk an `infra_failed` one), a returned row with status `diverged` stays so.
A SIGTERM of the worker ends it as Ray's own handler does, so Ray treats it as a lost worker and retries it.

The run function is the trainer (`train_run`), `command_run` for a spec with a `[command]` table, or any
"package.module:function" (`resolve_run_fn`). This module is imported by every worker: it imports no torch,
no Ray and nothing of the driver's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.config import RunConfig
from hyperp.errors import Terminated, UnavailableError, first_line
from hyperp.schema import (ATTEMPT_FILE, CHECKPOINT_FILE, COMPLETED, CURVES_FILE, DIVERGED, ERROR_FILE, FAILED,
                           INFRA_FAILED)
from hyperp.sweeps.command import command_run, config_from_json
from hyperp.sweeps.spec import SpecError, SweepSpec
from hyperp.tracking import RunLabel, Tracking, read_curves, tracked

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # where Inductor keeps compiled graphs (FX graph, AOTAutograd)

RunFn = Callable[[RunConfig, str], dict[str, Any]]  # (a CommandConfig for command_run)


def train_run(cfg: RunConfig, out_dir: str, on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """The default run function: `hyperp.trainer.loop.train` (checkpoints to and resumes from out_dir), writing
    progress.json; `on_step` also sees every step (a sweep's trackers, `TrackedRun`)."""
    from hyperp.trainer.loop import train  # noqa: PLC0415
    from hyperp.trainer.progress import ProgressWriter  # noqa: PLC0415 (progress.json for `sweep status --watch`)

    progress = ProgressWriter(out_dir)

    def each_step(info: Any) -> None:
        progress(info)
        if on_step is not None:
            on_step(info)

    return train(cfg, out_dir, on_step=each_step, run_id=Path(out_dir).name).row  # the id under the spec's version_tag


@dataclass(frozen=True)
class TrackedRun:
    """A run function that also logs the run to trackers (hyperp.tracking; a spec's `[tracking]`, `hyperp train
    --log-to`): its config, each step as the trainer takes it (`train_run`; any other run function's curves.parquet
    once it returns) and its record, under `run_id` (default: the run directory's name), `sweep` and `cell`.
    Only the first rank of a data-parallel run logs. Trackers never fail the run (hyperp.tracking.Guarded)."""

    run_fn: RunFn
    tracking: Tracking  # its dir absolute: workers may run elsewhere
    sweep: str
    cell: str
    run_id: str = ""

    def __call__(self, cfg: RunConfig, out_dir: str) -> dict[str, Any]:
        if not first_rank():
            return self.run_fn(cfg, out_dir)
        label = RunLabel(self.run_id or Path(out_dir).name, self.sweep, self.cell)
        with tracked(self.tracking, label, json.loads(cfg.to_json())) as trackers:
            if self.run_fn is train_run:
                row = train_run(cfg, out_dir, on_step=trackers.on_step)
            else:
                row = self.run_fn(cfg, out_dir)
                trackers.log_curves(read_curves(Path(out_dir) / CURVES_FILE))
            trackers.log_final(dict(row))
        return row


def first_rank() -> bool:
    """False in the ranks after the first of a data-parallel run (torch.distributed initialised by Ray Train)."""
    dist = sys.modules.get("torch.distributed")
    return dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


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
    prev = io.read_json(out / ATTEMPT_FILE, {}) or {}
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


def setup_process(cfg: RunConfig, threads: int, gpus: float, compile_cache: str = "") -> None:
    """A run's process (a Ray task, or each Ray Train worker of a data-parallel run): its thread count, no GPU
    visible when it asked for none, and for a compiled run the directory of Inductor's caches (`compile_cache`;
    empty: torch's default, the host's temp directory), read by torch at each compilation."""
    if not gpus and cfg.device == "auto":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    _set_threads(cfg.threads or threads)
    if getattr(cfg, "compile", False):
        if compile_cache:
            os.environ[INDUCTOR_CACHE_ENV] = compile_cache
        else:  # a warm worker may hold an earlier run's directory
            os.environ.pop(INDUCTOR_CACHE_ENV, None)


def execute(run_fn: RunFn, cfg_json: str, out_dir: str, threads: int, gpus: float = 0.0, cpus: float = 1.0,
            max_retries: int = 0, compile_cache: str = "") -> dict[str, Any]:
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

            setup = functools.partial(setup_process, threads=threads, gpus=gpus, compile_cache=compile_cache)
            row = data_parallel.fit(run_fn, cfg, out, cpus=cpus, gpus=gpus, max_retries=max_retries, setup=setup)
        else:
            setup_process(cfg, threads, gpus, compile_cache)
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
