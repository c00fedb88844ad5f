"""`hyperp sweep plan|run|status|ls`: declarative sweeps (hyperp.sweeps) from the command line.

    hyperp sweep plan SPEC [--json] [--out ROOT] [--throughput FLOPS] [--mfu F]
    hyperp sweep run SPEC [--address auto|ray://host:port] [--out ROOT] [--retry-failed] [--num-cpus N]
                          [--run-fn module:function] [--quiet] [--json]
    hyperp sweep status DIR [--json] [--watch [--interval S] [--count N] | --wait [--interval S]]
    hyperp sweep ls [ROOT] [--json]

ROOT (default ./sweeps) holds one directory per sweep, named by the spec's `name`. Exit codes: the table of
hyperp/errors.py (README "Exit codes"); `sweep run` exits 1 when a run failed, infra-failed or is left pending.
`plan`, `status` and `ls` only read: they create no file.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hyperp.cli.core import (PLAIN_PROGRESS_S, SUBAPPS, JsonFlag, PlainProgress, command, duration, new_app,
                             print_json, warn)
from hyperp.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED, InputError

app = new_app(SUBAPPS["sweep"][1])

DEFAULT_ROOT = Path("sweeps")
DEFAULT_MFU = 0.1  # assumed model FLOP utilization for cost estimates when nothing was measured
WATCH_INTERVAL_S = 5.0  # seconds between refreshes of `sweep status --watch`
# What a worker spends outside training (start Python, import torch, load data, build the model), timed once
# when this sweep has no finished run to measure it from:
STARTUP_PROBE = "import time; t = time.perf_counter(); import torch, hyperp.trainer.loop; print(time.perf_counter() - t)"

SpecArg = Annotated[Path, typer.Argument(help="Sweep spec (TOML).")]
RootOpt = Annotated[Path, typer.Option("--out", help="Sweeps root; the sweep lives in OUT/<name>.")]
SweepDirArg = Annotated[Path, typer.Argument(help="A sweep directory (ROOT/<name>), or the spec it was run from "
                                                    "(its directory under ./sweeps).")]


def _console():
    from rich.console import Console  # noqa: PLC0415

    c = Console()
    if not c.is_terminal:
        c = Console(width=200, soft_wrap=True)
    return c


def _count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _flops(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "-"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


# ---------------------------------------------------------------- plan


def estimate_throughput(plan, runs, throughput: float, mfu: float) -> tuple[float, str]:
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


def finished_runs(df, column: str):
    """Completed runs with a measured training time and `column` (None when the ledger lacks the columns)."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    if not len(df) or not {column, "wall_time_s", "status"} <= set(df.columns):
        return None
    return df[(df.status == ledger.COMPLETED) & (df.wall_time_s > 0)]


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


def plan_summary(plan, root: Path, throughput: float = 0.0, mfu: float = DEFAULT_MFU) -> dict[str, Any]:
    from hyperp.sweeps.spec import BracketSearch, OptunaSearch  # noqa: PLC0415

    from hyperp.sweeps import ledger  # noqa: PLC0415

    finished = ledger.read_ledger(root / plan.spec.name)  # read once, for both estimates
    if plan.spec.command is None:
        speed, source = estimate_throughput(plan, finished, throughput, mfu)
        startup, startup_source = estimate_startup(finished)
    else:  # a command's FLOPs are unknown: a run takes what this sweep's finished runs took
        speed, source = math.nan, "unknown for a command"
        startup, startup_source = command_seconds(finished)
    runs = [{"run_id": r.run_id, "cell_id": r.cell_id, "search": r.search,
             **plan.varying_values(r.config, r.info), "n_params": r.info.get("n_params"),
             "n_params_active": r.info.get("n_params_active"), "tokens": getattr(r.config, "tokens", None),
             "flops": r.info.get("flops_planned", math.nan),
             "est_seconds": r.info.get("flops_planned", 0.0) / speed + startup if math.isfinite(speed) else startup}
            for r in plan.runs]
    searches = []
    extra_flops = 0.0
    for c in plan.searches:
        per_run = c.info.get("flops_planned", math.nan)
        if isinstance(c.search, BracketSearch):
            extra = c.search.max_extend
            desc = f"bracket grid {list(c.search.grid)} + up to {extra} extensions"
        else:
            assert isinstance(c.search, OptunaSearch)
            extra = c.search.trials
            desc = f"optuna {c.search.trials} trials, lr in [{c.search.low:g}, {c.search.high:g}]"
        repeats = c.search.seeds - 1  # the best lr again with other seeds, once the search is done
        if repeats:
            extra += repeats
            desc += f", then the best lr with {repeats} more seed{'s' if repeats > 1 else ''}"
        extra_flops += extra * per_run
        searches.append({"cell_id": c.cell_id, **plan.varying_values(c.config, c.info, lr=False),
                         "search": c.search.to_dict(), "description": desc, "flops_per_run": per_run,
                         "max_additional_runs": extra})
    total = sum(r["flops"] for r in runs)
    run_seconds = sum(r["est_seconds"] for r in runs)
    spec = plan.spec
    slots = max(1, math.floor((os.cpu_count() or 1) / spec.resources.cpus))
    if spec.max_concurrent:
        slots = min(slots, spec.max_concurrent)
    return {"sweep": spec.name, "n_runs": len(runs), "n_cells": len(plan.cells), "varying": plan.varying,
            "runs": runs, "searches": searches, "total_flops": total, "max_search_flops": extra_flops,
            "throughput_flops_per_s": speed, "throughput_source": source,
            "startup_seconds_per_run": startup, "startup_source": startup_source, "est_run_seconds": run_seconds,
            "local_parallel_runs": slots, "est_local_wall_seconds": run_seconds / slots,
            "resources": {"cpus": spec.resources.cpus, "gpus": spec.resources.gpus},
            "max_retries": spec.max_retries, "max_concurrent": spec.max_concurrent}


MaxRunsOpt = Annotated[int | None, typer.Option(
    min=1, help="Refuse a grid larger than this many runs (default: the spec's max_runs, 100,000).")]


@command(app)
def plan(spec: SpecArg, as_json: JsonFlag = False,
         out: Annotated[Path, typer.Option("--out", help="Sweeps root (to reuse the throughput and start-up "
                                                         "measured on finished runs).")] = DEFAULT_ROOT,
         throughput: Annotated[float, typer.Option(help="FLOP/s of one run for the cost estimate; 0: measured "
                                                        "on finished runs, else a matmul probe x --mfu.")] = 0.0,
         mfu: Annotated[float, typer.Option(help="Assumed MFU when the throughput is neither given nor "
                                                 "measured.")] = DEFAULT_MFU,
         max_runs: MaxRunsOpt = None):
    """List the runs of SPEC with their FLOPs and an estimated cost, without running or writing anything."""
    from hyperp.sweeps.runner import prepare  # noqa: PLC0415

    _, p, _ = prepare(spec, out, max_runs)
    summary = plan_summary(p, out, throughput, mfu)
    if as_json:
        print_json(summary)
        return
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    fields = [k for k in p.varying if k != "tokens"]  # tokens has its own column
    table = Table(title=f"sweep {p.spec.name}: {summary['n_runs']} runs in {summary['n_cells']} cells")
    for col in ["run_id", *fields, "search", "n_params", "tokens", "FLOPs", "est. time"]:
        table.add_column(col, no_wrap=True, justify="left" if col in ("run_id", "search", "param") else "right")
    for r in summary["runs"]:
        table.add_row(r["run_id"], *[_fmt(r.get(k)) for k in fields], r["search"], _count(r["n_params"]),
                      _count(r["tokens"]), _flops(r["flops"]), duration(r["est_seconds"]))
    if summary["runs"]:
        con.print(table)
    for s in summary["searches"]:
        per_run = f" ({s['flops_per_run']:.3g} FLOPs per run)" if math.isfinite(s["flops_per_run"]) else ""
        con.print(f"cell {cell_label(s, p)}: {s['description']}{per_run}")
    time_line = (f"about {duration(summary['est_run_seconds'])} of run time, "
                 f"{duration(summary['est_local_wall_seconds'])} on this machine at "
                 f"{summary['local_parallel_runs']} runs in parallel")
    if p.spec.command is not None:  # no FLOPs: the time of a whole run, measured once runs finish
        con.print(f"{summary['n_runs']} command runs; {time_line}; {duration(summary['startup_seconds_per_run'])} "
                  f"per run ({summary['startup_source']})")
        return
    con.print(f"total {summary['total_flops']:.3g} FLOPs"
              + (f" (+ up to {summary['max_search_flops']:.3g} for LR searches)" if summary["searches"] else "")
              + f"; {time_line}; throughput {summary['throughput_flops_per_s']:.3g} "
              f"FLOP/s per run ({summary['throughput_source']}); start-up {duration(summary['startup_seconds_per_run'])} "
              f"per run ({summary['startup_source']})")


# ---------------------------------------------------------------- run


def failed_runs(res) -> list[dict[str, Any]]:
    """SweepOutcome.failed_runs with the plan's varying settings gathered under `settings`."""
    return [{"run_id": f["run_id"], "status": f["status"], "settings": {k: f.get(k) for k in res.plan.varying},
             "error": f["error"]} for f in res.failed_runs]


def report_failed(failed: list[dict[str, Any]]) -> None:
    """One line per failed run on stderr: status, its varying settings, the first line of its error."""
    for f in failed:
        settings = " ".join(f"{k}={_fmt(v)}" for k, v in f["settings"].items())
        typer.echo(f"{f['status']}: {settings or f['run_id']} ({f['run_id']}): {f['error']}", err=True)


def plain_progress_thread(sweep_dir: Path, every_s: float, stop: threading.Event) -> threading.Thread:
    """A plain line of the sweep's counts every `every_s` seconds, read from its files (for batch logs)."""
    plain = PlainProgress(every_s)

    def line() -> str:
        t = sweep_status(sweep_dir)["totals"]
        return (f"{sweep_dir.name}: {t['completed']} completed, {t['diverged']} diverged, "
                f"{t['failed'] + t['infra_failed']} failed, {t['running']} running, {t['pending']} pending")

    def loop() -> None:
        while not stop.wait(1.0):
            try:
                plain(line)
            except (OSError, ValueError, InputError):  # a file mid-rewrite: the next line will do
                pass

    thread = threading.Thread(target=loop, daemon=True, name="hyperp-progress")
    thread.start()
    return thread


@command(app)
def run(spec: SpecArg,
        address: Annotated[str | None, typer.Option(help="Ray cluster to join: auto (this node's cluster) or "
                                                         "ray://host:port (needs hyperp[cluster]); default: start "
                                                         "a local Ray sized to this machine.")] = None,
        out: RootOpt = DEFAULT_ROOT,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also re-run runs that raised.")] = False,
        num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray (default: all cores).")] = None,
        run_fn: Annotated[str | None, typer.Option("--run-fn", help="module:function to call instead of the "
                                                                    "trainer (importable from the working "
                                                                    "directory).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress lines.")] = False,
        progress_every: Annotated[float, typer.Option(
            help="Seconds between plain progress lines when stderr is not a terminal.")] = PLAIN_PROGRESS_S,
        max_runs: MaxRunsOpt = None,
        as_json: JsonFlag = False):
    """Run SPEC (or resume it: only missing, infra-failed or stale runs are scheduled)."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.sweeps import ledger  # noqa: PLC0415
    from hyperp.sweeps.runner import run_sweep, worker_env  # noqa: PLC0415
    from hyperp.sweeps.spec import load_spec  # noqa: PLC0415

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--run-fn mymodule:fn` from the working directory, as `python -m` does
    worker_env(address)  # a ray:// address without Ray's client fails here, before anything is written
    console = Console(stderr=True)
    live = not quiet and console.is_terminal
    stop = threading.Event()
    if not quiet and not live:
        plain_progress_thread(out / load_spec(spec).name, progress_every, stop)
    try:
        res = run_sweep(spec, out, address=address, run_fn=run_fn, retry_failed=retry_failed, num_cpus=num_cpus,
                        progress=live, console=console, max_runs=max_runs)
    finally:
        stop.set()
    c = res.counts
    failed = failed_runs(res)
    if as_json:
        print_json({"sweep": res.plan.spec.name, "dir": res.sweep_dir, "counts": c, "submitted": res.submitted,
                    "pending": res.pending, "interrupted": res.interrupted, "elapsed_s": res.elapsed_s,
                    "failed_runs": failed, "searches": res.searches})
    else:
        msg = (f"{res.plan.spec.name}: {c[ledger.COMPLETED]} completed, {c[ledger.DIVERGED]} diverged, "
               f"{c[ledger.FAILED]} failed, {c[ledger.INFRA_FAILED]} infra_failed; {res.submitted} runs submitted "
               f"in {res.elapsed_s:.1f}s; ledger {res.sweep_dir / ledger.LEDGER_FILE}")
        typer.echo(msg if res.submitted or res.interrupted else f"nothing to run. {msg}")
    report_failed(failed)
    if failed and not res.submitted and not retry_failed and not as_json:
        typer.echo(f"{len(failed)} failed runs are kept as they are; --retry-failed runs them again", err=True)
    for s in res.searches:
        if s["search"] == "bracket" and s["done"] and not s["bracketed"]:
            warn(f"cell {cell_label(s, res.plan)}: {unbracketed_hint(s)}")
    if res.interrupted:
        typer.echo(f"error: interrupted: {res.pending} runs left; run the same command again to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed or res.pending:
        if res.pending:
            typer.echo(f"error: {res.pending} runs left unfinished; run the same command again", err=True)
        raise typer.Exit(EXIT_RUNS_FAILED)


def unbracketed_hint(search: dict[str, Any]) -> str:
    """One line on a bracket search that ended unbracketed: why, where its best run sits, what to try."""
    line = f"lr not bracketed ({search['reason']})"
    grid = ", ".join(f"{lr:g}" for lr in search.get("next_grid") or [])
    if not grid:
        return line
    if search.get("edge") == "interior":
        return (f"{line}; the best lr {search['best_lr']:g} is interior, so noise or a flat optimum: "
                f"add seeds (seeds = 3) or try grid = [{grid}]")
    return f"{line}; the best lr {search['best_lr']:g} is at the {search['edge']} edge: try grid = [{grid}]"


def cell_label(search: dict[str, Any], plan) -> str:
    """A cell named by its varying settings (param=hyperp tokens=65536), not by its hash."""
    cell = plan.cells.get(search["cell_id"])
    if cell is None:
        return search["cell_id"]
    values = plan.varying_values(cell.config, cell.info, lr=False)
    return " ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or search["cell_id"]


# ---------------------------------------------------------------- status and ls
def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    """Per cell: planned, completed, diverged, failed, infra_failed, running, pending runs, best lr."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    plan = ledger.read_json(sweep_dir / ledger.PLAN_FILE)
    if plan is None:
        raise InputError(f"{sweep_dir}: not a sweep directory (no {ledger.PLAN_FILE})")
    records = ledger.load_records(sweep_dir)
    searches = {s["cell_id"]: s for s in ledger.read_json(sweep_dir / ledger.SEARCH_FILE, []) or []}
    state = ledger.read_json(sweep_dir / ledger.STATE_FILE, {}) or {}
    active = ledger.is_running(sweep_dir)
    running = set(state.get("running", [])) if active else set()
    cells: dict[str, dict[str, Any]] = {}
    for c in plan["cells"]:
        cells[c["cell_id"]] = {"cell_id": c["cell_id"], **c["fields"], "search": (c["search"] or {}).get("search", "grid"),
                               "planned": 0, **{s: 0 for s in ledger.STATUSES}, "running": 0, "pending": 0,
                               "best_lr": math.nan, "best_val_loss": math.nan, "note": ""}
    planned = {r["run_id"]: r["cell_id"] for r in plan["runs"]}
    plan_fields = {r["run_id"]: r["fields"] for r in plan["runs"]}
    for rid, cid in planned.items():
        cells[cid]["planned"] += 1
    stale = 0
    seen: set[str] = set()
    for rid, row in records.items():
        cid = row.get("cell_id")
        if cid not in cells or (rid not in planned and cells[cid]["search"] == "grid"):
            stale += 1
            continue
        seen.add(rid)
        cell = cells[cid]
        if rid not in planned:
            cell["planned"] += 1  # a run added by an LR search
        status = row.get("status")
        if status in ledger.STATUSES:
            cell[status] += 1
        loss = row.get("val_loss", math.nan)
        if status == ledger.COMPLETED and loss == loss and not (cell["best_val_loss"] <= loss):
            cell["best_val_loss"], cell["best_lr"] = loss, row.get("lr")
    running_cells = state.get("running_cells", {}) if active else {}
    for rid in running:
        cid = planned.get(rid) or running_cells.get(rid)
        if cid in cells:
            cells[cid]["running"] += 1
    for rid, cid in planned.items():
        if rid not in seen and rid not in running:
            cells[cid]["pending"] += 1
    for cid, s in searches.items():
        if cid in cells:
            if s["search"] == "bracket":
                cells[cid]["note"] = ("bracketed" if s["bracketed"] else s.get("reason", "")) if s["done"] else "searching"
            else:
                cells[cid]["note"] = f"{s['finished']}/{s['trials']} trials" + ("" if s["done"] else ", searching")
    rows = list(cells.values())
    totals = {k: sum(r[k] for r in rows) for k in ("planned", *ledger.STATUSES, "running", "pending")}
    in_flight = [run_progress(sweep_dir, rid, plan_fields.get(rid) or cells.get(running_cells.get(rid), {}))
                 for rid in sorted(running)]
    searching = [s for cid, s in searches.items() if cid in cells and not search_done(s)]
    finished = not active and totals["running"] == totals["pending"] == 0 and not searching
    return {"sweep": plan["sweep"], "dir": str(sweep_dir), "active": active, "starting": False, "finished": finished,
            "updated_at": state.get("updated_at"), "varying": [k for k in plan["varying"] if k != "lr"],
            "cells": rows, "totals": totals, "stale_records": stale, "in_flight": in_flight}


def starting_status(sweep_dir: Path) -> dict[str, Any]:
    """The status of a sweep whose driver holds the lock and has not written its plan yet: the keys of
    `sweep_status`, nothing counted."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    totals = {k: 0 for k in ("planned", *ledger.STATUSES, "running", "pending")}
    return {"sweep": sweep_dir.name, "dir": str(sweep_dir), "active": True, "starting": True, "finished": False,
            "updated_at": None, "varying": [], "cells": [], "totals": totals, "stale_records": 0, "in_flight": []}


def search_done(search: dict[str, Any]) -> bool:
    """An LR search that wants no more runs: done, and its seed repeats of the best LR recorded."""
    return bool(search.get("done")) and search.get("seed_runs_done", 0) >= len(search.get("seed_run_ids") or [])


def run_progress(sweep_dir: Path, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A run in flight: its settings and the last progress.json its trainer wrote (None before the first)."""
    from hyperp.sweeps import ledger  # noqa: PLC0415
    from hyperp.trainer.progress import read_progress  # noqa: PLC0415

    p = read_progress(ledger.run_dir(sweep_dir, run_id)) or {}
    keys = ("step", "total_steps", "train_loss", "tokens_per_s", "eta_s", "updated_at")
    return {"run_id": run_id, "settings": fields, **{k: p.get(k) for k in keys}}


@command(app)
def status(sweep_dir: SweepDirArg, as_json: JsonFlag = False,
           watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every --interval seconds: the runs "
                                                                    "in flight (step, loss, tokens/s, ETA) and the "
                                                                    "counts, until the sweep is finished (exit 0; 1 "
                                                                    "when runs failed) or Ctrl-C (exit 0). "
                                                                    "Read-only.")] = False,
           wait: Annotated[bool, typer.Option("--wait", help="Print nothing until the sweep is finished (no driver, "
                                                            "no run running or pending, every LR search done), "
                                                            "then its status; exit 0, or 1 when runs failed or "
                                                            "infra-failed. Waits through a driver that is starting "
                                                            "or stopped (bound it with `timeout`).")] = False,
           interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes of --watch or --wait.")]
           = WATCH_INTERVAL_S,
           count: Annotated[int, typer.Option(min=0, help="With --watch, stop after this many refreshes "
                                                          "(0: until the sweep is finished or Ctrl-C).")] = 0):
    """The cells of a sweep by status: completed, diverged, failed, infra_failed, running, pending; best lr."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    if not (watch or wait):
        show_status(sweep_status(ledger.find_sweep_dir(sweep_dir, DEFAULT_ROOT)), as_json)
        return
    try:
        st = follow(follow_dir(sweep_dir), as_json, watch, interval, count)
    except KeyboardInterrupt:
        if watch:
            return  # leaving a watch is the normal way out: exit 0
        raise  # a wait cut short did not see the sweep finish: exit 130
    if st["finished"]:
        raise typer.Exit(finished_code(st))


def follow_dir(path: Path) -> Path:
    """The sweep to watch or wait on: `path` itself while a driver holds its lock but has not written its plan
    yet (it is starting), else what `sweep status` reads."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    if starting(path):
        return path
    return ledger.find_sweep_dir(path, DEFAULT_ROOT)


def starting(sweep_dir: Path) -> bool:
    """A driver holds the sweep's lock and has not written plan.json yet."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    return not (sweep_dir / ledger.PLAN_FILE).is_file() and ledger.is_running(sweep_dir)


def follow(sweep_dir: Path, as_json: bool, watch: bool, interval: float, count: int) -> dict[str, Any]:
    """Poll the sweep until it is finished (or --count refreshes of a watch): a watch shows every poll, a wait
    only the last. Returns the last status."""
    from rich.console import Console  # noqa: PLC0415

    console = Console()
    n = 0
    while True:
        st = starting_status(sweep_dir) if starting(sweep_dir) else sweep_status(sweep_dir)
        done = st["finished"]
        if watch and console.is_terminal and not as_json:
            console.clear()
        if watch or done:
            show_status(st, as_json, indent=None if as_json and watch else 2)
        n += 1
        if done or (watch and count and n >= count):
            return st
        time.sleep(interval)


def finished_code(st: dict[str, Any]) -> int:
    """The exit code of a watch or wait that saw the sweep finish: 1 when some runs failed or infra-failed."""
    failed = st["totals"]["failed"] + st["totals"]["infra_failed"]
    return EXIT_RUNS_FAILED if failed else EXIT_OK


def show_status(st: dict[str, Any], as_json: bool, indent: int | None = 2) -> None:
    if st["starting"] and not as_json:
        typer.echo(f"{st['dir']}: a driver is starting (it holds the lock and has not written its plan yet)")
        return
    if as_json:
        print_json(st, indent)  # with --watch: one JSON object per line per refresh
        return
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    t = st["totals"]
    state = "running" if st["active"] else "finished" if st["finished"] else "stopped, runs left"
    title = (f"sweep {st['sweep']} ({state}): {t['completed']} completed, "
             f"{t['diverged']} diverged, {t['failed']} failed, {t['infra_failed']} infra_failed, "
             f"{t['running']} running, {t['pending']} pending")
    table = Table(title=title)
    cols = ["cell_id", *st["varying"], "search", "planned", "completed", "diverged", "failed", "infra_failed",
            "running", "pending", "best_lr", "best_val_loss", "note"]
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in st["cells"]:
        table.add_row(*[_fmt(r.get(c, "")) for c in cols])
    con.print(table)
    if st["in_flight"]:
        con.print(in_flight_table(st))
    if st["stale_records"]:
        con.print(f"{st['stale_records']} records under runs/ belong to no cell of the current spec "
                  "(kept, not in runs.parquet)")


def in_flight_table(st: dict[str, Any]):
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="runs in flight")
    for col in ("run_id", "settings", "step", "train loss", "tokens/s", "ETA"):
        table.add_column(col, no_wrap=True)
    for r in st["in_flight"]:
        settings = " ".join(f"{k}={_fmt(v)}" for k, v in r["settings"].items() if k in st["varying"] or k == "lr")
        step = "starting" if r["step"] is None else f"{r['step']}/{r['total_steps']}"
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"
        table.add_row(r["run_id"], settings, step, _fmt(r["train_loss"]), tps, duration(r["eta_s"]))
    return table


@command(app, "ls")
def ls(root: Annotated[Path, typer.Argument(help="Sweeps root.")] = DEFAULT_ROOT, as_json: JsonFlag = False):
    """List the sweeps under ROOT with their run counts."""
    from hyperp.sweeps import ledger  # noqa: PLC0415

    out = []
    for d in ledger.sweep_dirs(root):
        plan = ledger.read_json(d / ledger.PLAN_FILE, {}) or {}
        counts = {s: 0 for s in ledger.STATUSES}
        lf = d / ledger.LEDGER_FILE
        if lf.is_file():
            import collections  # noqa: PLC0415

            import pyarrow.parquet as pq  # noqa: PLC0415 (not pandas: 0.4 s more of start-up)

            statuses = pq.ParquetFile(lf).read(columns=["status"]).column("status").to_pylist()
            counts |= collections.Counter(s for s in statuses if s is not None)
        mtime = max((f.stat().st_mtime for f in (lf, d / ledger.STATE_FILE, d / ledger.SPEC_FILE) if f.exists()))
        out.append({"sweep": d.name, "dir": str(d), "planned": len(plan.get("runs", [])),
                    "searches": sum(1 for c in plan.get("cells", []) if c.get("search")), **counts,
                    "running": ledger.is_running(d),
                    "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))})
    if as_json:
        print_json(out)
        return
    if not out:
        typer.echo(f"no sweeps under {root}")
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"sweeps under {root}")
    cols = ["sweep", "planned", "searches", *ledger.STATUSES, "running", "updated"]
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in out:
        table.add_row(*[("yes" if r[c] else "no") if c == "running" else str(r[c]) for c in cols])
    _console().print(table)
