"""The cost model of `hyperp sweep plan`: FLOPs and time of every planned run, measured where it can be.

A run's time is its planned FLOPs over one run's throughput, plus what it spends outside training (worker
start, imports, data, model). Both come from this sweep's finished runs in its ledger when it has some
(median FLOP/s of completed runs, median `elapsed_s - wall_time_s`); before any run finished, the
throughput is a matmul probe on this machine times an assumed MFU, and the start-up a fresh Python timed
importing torch and the trainer. A command's FLOPs are unknown: its runs take what this sweep's finished runs
took. On a sweep that has run, `progress` says what is done and what is left: runs and FLOPs, and the time the
runs left take at the throughput its finished runs measured. Nothing is written.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperp.io import read_json
from hyperp.schema import COMPLETED, DIVERGED, FAILED, SEARCH_FILE

if TYPE_CHECKING:  # the CLI reads DEFAULT_MFU for its help: this module loads nothing of the plan's
    from hyperp.sweeps.plan import Plan

DEFAULT_MFU = 0.1  # assumed model FLOP utilization for cost estimates when nothing was measured
# What a worker spends outside training (start Python, import torch, load data, build the model), timed once
# when this sweep has no finished run to measure it from:
STARTUP_PROBE = "import time; t = time.perf_counter(); import torch, hyperp.trainer.loop; print(time.perf_counter() - t)"


def finished_runs(df, column: str):
    """Completed runs with a measured training time and `column` (None when the ledger lacks the columns)."""
    if not len(df) or not {column, "wall_time_s", "status"} <= set(df.columns):
        return None
    return df[(df.status == COMPLETED) & (df.wall_time_s > 0)]


def estimate_throughput(plan: Plan, runs, throughput: float, mfu: float) -> tuple[float, str]:
    """FLOP/s of one run: given, measured from this sweep's finished runs (`runs`, its ledger), or a matmul
    probe x assumed MFU."""
    if throughput > 0:
        return throughput, "given (--throughput)"
    done = finished_runs(runs, "flops")
    if done is not None and len(done):
        return float(statistics.median(done.flops / done.wall_time_s)), f"measured on {len(done)} finished runs"
    import torch  # noqa: PLC0415

    from hyperp.trainer.metrics import matmul_peak_flops  # noqa: PLC0415

    device = "cuda" if plan.spec.resources.gpus and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(plan.spec.resources.threads)
    peak = matmul_peak_flops(device, seconds=0.2)
    return peak * mfu, f"matmul probe on {device} ({peak:.3g} FLOP/s) x assumed MFU {mfu:g}"


def estimate_startup(runs) -> tuple[float, str]:
    """Seconds a run spends outside training (worker start, imports, data, model): measured, not assumed.

    From this sweep's finished runs (median of elapsed_s - wall_time_s) when there are any, else timed once
    here: a fresh Python importing torch and the trainer (a lower bound: data loading is not in it).
    """
    done = finished_runs(runs, "elapsed_s")
    if done is not None and len(done):
        gap = (done.elapsed_s - done.wall_time_s).clip(lower=0)
        return float(statistics.median(gap)), f"measured on {len(done)} finished runs"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", STARTUP_PROBE], capture_output=True, text=True, check=False)
    if proc.returncode:
        return time.perf_counter() - t, "probe: starting Python (importing torch failed)"
    return time.perf_counter() - t, "probe: a fresh Python importing torch and the trainer"


def command_seconds(runs) -> tuple[float, str]:
    """Seconds a command's run takes: the median `elapsed_s` of this sweep's completed runs (NaN before any)."""
    done = finished_runs(runs, "elapsed_s")
    if done is not None and len(done):
        return float(statistics.median(done.elapsed_s)), f"a whole run, measured on {len(done)} finished runs"
    return math.nan, "a whole run: unknown until runs of this sweep finish"


def plan_summary(plan: Plan, root: Path, throughput: float = 0.0, mfu: float = DEFAULT_MFU) -> dict[str, Any]:
    """The plan with its cost: every run's FLOPs and estimated seconds, the LR searches' most extra FLOPs, the
    wall time on this machine at the runs it fits in parallel, and where each estimate came from."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    finished = ledger.read_ledger(root / plan.spec.name)  # read once, for both estimates
    if plan.spec.command is None:
        speed, source = estimate_throughput(plan, finished, throughput, mfu)
        startup, startup_source = estimate_startup(finished)
    else:  # a command's FLOPs are unknown: a run takes what this sweep's finished runs took
        speed, source = math.nan, "unknown for a command"
        startup, startup_source = command_seconds(finished)
    from hyperp.sweeps import compile as auto_compile  # noqa: PLC0415

    compiled = auto_compile.resolve(plan, finished, speed) if math.isfinite(speed) else []
    runs = [{"run_id": r.run_id, "cell_id": r.cell_id, "search": r.search,
             **plan.varying_values(r.config, r.info), "n_params": r.info.get("n_params"),
             "n_params_active": r.info.get("n_params_active"), "tokens": getattr(r.config, "tokens", None),
             "flops": r.info.get("flops_planned", math.nan),
             "est_seconds": r.info.get("flops_planned", 0.0) / speed + startup if math.isfinite(speed) else startup}
            for r in plan.runs]
    searches = [{"cell_id": c.cell_id, **plan.varying_values(c.config, c.info, lr=False),
                 "search": c.search.to_dict(), "description": c.search.describe(),
                 "flops_per_run": c.info.get("flops_planned", math.nan),
                 "max_additional_runs": c.search.max_additional_runs} for c in plan.searches]
    run_seconds = sum(r["est_seconds"] for r in runs)
    spec = plan.spec
    slots = max(1, math.floor((os.cpu_count() or 1) / spec.resources.cpus))
    if spec.max_concurrent:
        slots = min(slots, spec.max_concurrent)
    progress = plan_progress(plan, finished, runs, slots, root / spec.name)
    summary = {"sweep": spec.name, "n_runs": len(runs), "n_cells": len(plan.cells), "varying": plan.varying,
               "runs": runs, "searches": searches, "total_flops": sum(r["flops"] for r in runs),
               "max_search_flops": sum((s["max_additional_runs"] * s["flops_per_run"] for s in searches), 0.0),
               "throughput_flops_per_s": speed, "throughput_source": source,
               "startup_seconds_per_run": startup, "startup_source": startup_source, "est_run_seconds": run_seconds,
               "local_parallel_runs": slots, "est_local_wall_seconds": run_seconds / slots,
               "resources": {"cpus": spec.resources.cpus, "gpus": spec.resources.gpus},
               "max_retries": spec.max_retries, "max_concurrent": spec.max_concurrent}
    if compiled:  # compile = "auto": the decision per shape and why
        summary["compile_auto"] = [d.to_dict() | {"description": d.describe()} for d in compiled]
    if progress is not None:  # a sweep that has run: what is done, what is left (before any run: as above)
        summary["progress"] = progress
    return summary


DONE = (COMPLETED, DIVERGED)  # a final record: `sweep run` never runs these again
PENDING = "pending"  # the status of a planned run without a record, in a plan with progress


def plan_progress(plan: Plan, records, runs: list[dict[str, Any]], slots: int, sweep_dir: Path
                  ) -> dict[str, Any] | None:
    """What a sweep that has run has done and has left (`records`: its ledger), or None before any run of it has
    a record.

    Each planned run of `runs` gets its `status` (`pending` without a record). Done: completed and diverged runs,
    the runs LR searches added included (FLOPs: what they trained); failed: kept, run again only with
    --retry-failed; left: what the next `sweep run` runs (no record, or infra_failed), with their planned FLOPs and
    estimated seconds (`est_seconds`: this sweep's measured throughput and start-up), in all and on this machine
    at `slots` runs in parallel. LR searches still open may add runs beyond these."""
    if not len(records):
        return None
    status = dict(zip(records.run_id, records.status))
    for r in runs:
        r["status"] = status.get(r["run_id"], PENDING)
    planned = {r["run_id"] for r in runs}
    search_cells = {c.cell_id for c in plan.searches}
    added = records[~records.run_id.isin(planned) & records.cell_id.isin(search_cells) & records.status.isin(DONE)]
    done = records[records.run_id.isin(planned) & records.status.isin(DONE)]
    left = [r for r in runs if r["status"] not in (*DONE, FAILED)]
    left_seconds = sum(r["est_seconds"] for r in left)
    from hyperp.sweeps.status import finite_sum, search_done  # noqa: PLC0415 (the ledger's pyarrow: not for --help)

    open_searches = [s for s in read_json(sweep_dir / SEARCH_FILE, []) or [] if not search_done(s)]
    return {"runs_done": len(done) + len(added), "search_runs_done": len(added),
            "runs_failed": sum(r["status"] == FAILED for r in runs), "runs_left": len(left),
            "flops_done": finite_sum(trained_flops(done) + trained_flops(added)),
            "flops_left": finite_sum(r["flops"] for r in left),
            "est_left_run_seconds": left_seconds, "est_left_local_wall_seconds": left_seconds / slots,
            "searches_open": len(open_searches)}


def trained_flops(rows) -> list[float]:
    """The FLOPs each run trained (`flops`), its planned FLOPs where that is missing."""
    return [f if f == f else p for f, p in zip(rows.flops, rows.flops_planned)]
