"""`hyperp sweep plan|run|status|ls`: the Typer app mounted by hyperp.cli as `app.add_typer(app, name="sweep")`.

    hyperp sweep plan SPEC [--json] [--out ROOT] [--throughput FLOPS] [--mfu F]
    hyperp sweep run SPEC [--address auto|ray://host:port] [--out ROOT] [--retry-failed] [--num-cpus N]
                          [--run-fn module:function] [--quiet]
    hyperp sweep status DIR [--json]
    hyperp sweep ls [ROOT] [--json]

ROOT (default ./sweeps) holds one directory per sweep, named by the spec's `name`.
Exit codes: 0 done; 1 runs left unfinished by infra failures; 2 bad spec or arguments; 130 interrupted.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import typer

from hyperp.sweeps import ledger
from hyperp.sweeps.spec import BracketSearch, OptunaSearch, Plan, SpecError

app = typer.Typer(help="Declarative sweeps: plan, run on Ray (local or a cluster), inspect the ledger.",
                  no_args_is_help=True, add_completion=False)

DEFAULT_ROOT = Path("sweeps")
DEFAULT_MFU = 0.1  # assumed model FLOP utilization for cost estimates when nothing was measured


def _console():
    from rich.console import Console  # noqa: PLC0415

    c = Console()
    if not c.is_terminal:
        c = Console(width=200, soft_wrap=True)
    return c


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    return str(v)


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


# ---------------------------------------------------------------- plan


def estimate_throughput(plan: Plan, root: Path, throughput: float, mfu: float) -> tuple[float, str]:
    """FLOP/s of one run: given, measured from this sweep's finished runs, or a matmul probe x assumed MFU."""
    if throughput > 0:
        return throughput, "given (--throughput)"
    df = ledger.read_ledger(root / plan.spec.name)
    if len(df) and {"flops", "wall_time_s", "status"} <= set(df.columns):
        done = df[(df.status == ledger.COMPLETED) & (df.wall_time_s > 0)]
        if len(done):
            return float(statistics.median(done.flops / done.wall_time_s)), f"measured on {len(done)} finished runs"
    import torch  # noqa: PLC0415

    from hyperp.trainer.metrics import matmul_peak_flops  # noqa: PLC0415

    device = "cuda" if plan.spec.resources.gpus and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(plan.spec.resources.threads)
    peak = matmul_peak_flops(device, seconds=0.2)
    return peak * mfu, f"matmul probe on {device} ({peak:.3g} FLOP/s) x assumed MFU {mfu:g}"


def plan_summary(plan: Plan, root: Path, throughput: float = 0.0, mfu: float = DEFAULT_MFU) -> dict[str, Any]:
    import os  # noqa: PLC0415

    speed, source = estimate_throughput(plan, root, throughput, mfu)
    runs = [{"run_id": r.run_id, "cell_id": r.cell_id, "search": r.search,
             **plan.varying_values(r.config, r.info), "n_params": r.info["n_params"],
             "n_params_active": r.info["n_params_active"], "tokens": r.config.tokens,
             "flops": r.info["flops_planned"], "est_seconds": r.info["flops_planned"] / speed} for r in plan.runs]
    searches = []
    extra_flops = 0.0
    for c in plan.searches:
        per_run = c.info["flops_planned"]
        if isinstance(c.search, BracketSearch):
            extra = c.search.max_extend
            desc = f"bracket grid {list(c.search.grid)} + up to {extra} extensions"
        else:
            assert isinstance(c.search, OptunaSearch)
            extra = c.search.trials
            desc = f"optuna {c.search.trials} trials, lr in [{c.search.low:g}, {c.search.high:g}]"
        extra_flops += extra * per_run
        searches.append({"cell_id": c.cell_id, **plan.varying_values(c.config, c.info, lr=False),
                         "search": c.search.to_dict(), "description": desc, "flops_per_run": per_run,
                         "max_additional_runs": extra})
    total = sum(r["flops"] for r in runs)
    spec = plan.spec
    slots = max(1, math.floor((os.cpu_count() or 1) / spec.resources.cpus))
    if spec.max_concurrent:
        slots = min(slots, spec.max_concurrent)
    return {"sweep": spec.name, "n_runs": len(runs), "n_cells": len(plan.cells), "varying": plan.varying,
            "runs": runs, "searches": searches, "total_flops": total, "max_search_flops": extra_flops,
            "throughput_flops_per_s": speed, "throughput_source": source, "est_run_seconds": total / speed,
            "local_parallel_runs": slots, "est_local_wall_seconds": total / speed / slots,
            "resources": {"cpus": spec.resources.cpus, "gpus": spec.resources.gpus},
            "max_retries": spec.max_retries, "max_concurrent": spec.max_concurrent}


@app.command()
def plan(spec: Path = typer.Argument(..., help="sweep spec (TOML)"),
         json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
         out: Path = typer.Option(DEFAULT_ROOT, "--out", help="sweeps root (to reuse measured throughput)"),
         throughput: float = typer.Option(0.0, help="FLOP/s of one run for the cost estimate"),
         mfu: float = typer.Option(DEFAULT_MFU, help="assumed MFU when throughput is neither given nor measured")):
    """List the runs of SPEC with their FLOPs and an estimated cost, without running anything."""
    from hyperp.sweeps.runner import prepare  # noqa: PLC0415

    try:
        _, p, _ = prepare(spec, out)
    except (SpecError, ValueError) as e:
        _fail(e)
    summary = plan_summary(p, out, throughput, mfu)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    fields = [k for k in p.varying if k != "tokens"]  # tokens has its own column
    table = Table(title=f"sweep {p.spec.name}: {summary['n_runs']} runs in {summary['n_cells']} cells")
    for col in ["run_id", *fields, "search", "n_params", "tokens", "FLOPs", "est. time"]:
        table.add_column(col, no_wrap=True, justify="left" if col in ("run_id", "search", "param") else "right")
    for r in summary["runs"]:
        table.add_row(r["run_id"], *[_fmt(r.get(k)) for k in fields], r["search"], f"{r['n_params']:,}",
                      f"{r['tokens']:,}", f"{r['flops']:.3g}", _duration(r["est_seconds"]))
    if summary["runs"]:
        con.print(table)
    for s in summary["searches"]:
        con.print(f"cell {s['cell_id']}: {s['description']} ({s['flops_per_run']:.3g} FLOPs per run)")
    con.print(f"total {summary['total_flops']:.3g} FLOPs"
              + (f" (+ up to {summary['max_search_flops']:.3g} for LR searches)" if summary["searches"] else "")
              + f"; about {_duration(summary['est_run_seconds'])} of run time, "
              f"{_duration(summary['est_local_wall_seconds'])} on this machine at "
              f"{summary['local_parallel_runs']} runs in parallel; throughput {summary['throughput_flops_per_s']:.3g} "
              f"FLOP/s per run ({summary['throughput_source']})")


# ---------------------------------------------------------------- run


@app.command()
def run(spec: Path = typer.Argument(..., help="sweep spec (TOML)"),
        address: str | None = typer.Option(None, help="Ray cluster to join: auto or ray://host:port; "
                                                       "default: start a local Ray sized to this machine"),
        out: Path = typer.Option(DEFAULT_ROOT, "--out", help="sweeps root; the sweep lives in OUT/<name>"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="also re-run runs that raised"),
        num_cpus: int | None = typer.Option(None, help="CPUs of the local Ray (default: all cores)"),
        run_fn: str | None = typer.Option(None, "--run-fn", help="module:function to call instead of the trainer"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar")):
    """Run SPEC (or resume it: only missing, infra-failed or stale runs are scheduled)."""
    from hyperp.sweeps.runner import run_sweep  # noqa: PLC0415

    try:
        res = run_sweep(spec, out, address=address, run_fn=run_fn, retry_failed=retry_failed, num_cpus=num_cpus,
                        progress=not quiet)
    except (SpecError, ValueError) as e:
        _fail(e)
    c = res.counts
    msg = (f"{res.plan.spec.name}: {c[ledger.COMPLETED]} completed, {c[ledger.DIVERGED]} diverged, "
           f"{c[ledger.FAILED]} failed, {c[ledger.INFRA_FAILED]} infra_failed; {res.submitted} runs submitted "
           f"in {res.elapsed_s:.1f}s; ledger {res.sweep_dir / ledger.LEDGER_FILE}")
    typer.echo(msg if res.submitted or res.interrupted else f"nothing to run. {msg}")
    for s in res.searches:
        if s["search"] == "bracket" and s["done"] and not s["bracketed"]:
            typer.echo(f"warning: cell {s['cell_id']}: lr not bracketed ({s['reason']})", err=True)
    if res.interrupted:
        typer.echo(f"interrupted: {res.pending} runs left; run the same command again to resume", err=True)
        raise typer.Exit(130)
    if c[ledger.INFRA_FAILED] or res.pending:
        raise typer.Exit(1)


# ---------------------------------------------------------------- status and ls


def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    """Per cell: planned, completed, diverged, failed, infra_failed, running, pending runs, best lr."""
    plan = ledger.read_json(sweep_dir / ledger.PLAN_FILE)
    if plan is None:
        raise SpecError("sweep", f"{sweep_dir} is not a sweep directory (no {ledger.PLAN_FILE})")
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
    return {"sweep": plan["sweep"], "dir": str(sweep_dir), "active": active, "updated_at": state.get("updated_at"),
            "varying": [k for k in plan["varying"] if k != "lr"], "cells": rows, "totals": totals, "stale_records": stale}


@app.command()
def status(sweep_dir: Path = typer.Argument(..., help="a sweep directory (ROOT/<name>)"),
           json_out: bool = typer.Option(False, "--json", help="print as JSON")):
    """The cells of a sweep by status: completed, diverged, failed, infra_failed, running, pending; best lr."""
    try:
        st = sweep_status(sweep_dir)
    except SpecError as e:
        _fail(e)
    if json_out:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    t = st["totals"]
    title = (f"sweep {st['sweep']} ({'running' if st['active'] else 'idle'}): {t['completed']} completed, "
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
    if st["stale_records"]:
        con.print(f"{st['stale_records']} records under runs/ belong to no cell of the current spec (kept, not in runs.parquet)")


@app.command("ls")
def ls(root: Path = typer.Argument(DEFAULT_ROOT, help="sweeps root"),
       json_out: bool = typer.Option(False, "--json", help="print as JSON")):
    """List the sweeps under ROOT with their run counts."""
    out = []
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if (p / ledger.SPEC_FILE).is_file()):
            plan = ledger.read_json(d / ledger.PLAN_FILE, {}) or {}
            counts = {s: 0 for s in ledger.STATUSES}
            lf = d / ledger.LEDGER_FILE
            if lf.is_file():
                import pandas as pd  # noqa: PLC0415

                for s, n in pd.read_parquet(lf, columns=["status"]).status.value_counts().items():
                    counts[s] = int(n)
            mtime = max((f.stat().st_mtime for f in (lf, d / ledger.STATE_FILE, d / ledger.SPEC_FILE) if f.exists()))
            out.append({"sweep": d.name, "dir": str(d), "planned": len(plan.get("runs", [])),
                        "searches": sum(1 for c in plan.get("cells", []) if c.get("search")), **counts,
                        "running": ledger.is_running(d),
                        "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))})
    if json_out:
        typer.echo(json.dumps(out, indent=2))
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
