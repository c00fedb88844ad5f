"""`hyperp sweep plan|run|status|ls`: declarative sweeps (hyperp.sweeps) from the command line.

    hyperp sweep plan SPEC [--json] [--out ROOT] [--throughput FLOPS] [--mfu F]
    hyperp sweep run SPEC [--address auto|ray://host:port] [--out ROOT] [--retry-failed] [--num-cpus N]
                          [--run-fn module:function] [--quiet] [--json]
    hyperp sweep status DIR [--json] [--watch [--interval S] [--count N] | --wait [--interval S]]
    hyperp sweep ls [ROOT] [--json]
    hyperp sweep stop SWEEP [--out ROOT] [--wait] [--json]

ROOT (default ./sweeps) holds one directory per sweep, named by the spec's `name`. Exit codes: the table of
hyperp/errors.py (README "Exit codes"); `sweep run` exits 1 when a run failed, infra-failed or is left pending.
`plan`, `status` and `ls` only read: they create no file.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hyperp.cli.core import (PLAIN_PROGRESS_S, SUBAPPS, JsonFlag, PlainProgress, command, duration, new_app,
                             print_json, warn)
from hyperp.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED

DESIGN_PANEL = "Design rounds (hyperp design)"
from hyperp.schema import COMPLETED, DIVERGED, FAILED, INFRA_FAILED, RUNS_FILE, STATUSES
from hyperp.sweeps.estimate import DEFAULT_MFU

app = new_app(SUBAPPS["sweep"][1])

DEFAULT_ROOT = Path("sweeps")
WATCH_INTERVAL_S = 5.0  # seconds between refreshes of `sweep status --watch`

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
    """List the runs of SPEC with their FLOPs and an estimated cost, without running or writing anything; on a
    sweep that has run (its directory under --out holds a ledger), each run's status and what is done and left."""
    from hyperp.sweeps.estimate import plan_summary  # noqa: PLC0415
    from hyperp.sweeps.plan import prepare  # noqa: PLC0415

    _, p, _ = prepare(spec, out, max_runs)
    summary = plan_summary(p, out, throughput, mfu)
    if as_json:
        print_json(summary)
    else:
        show_plan(summary, p)


def show_plan(summary: dict[str, Any], p) -> None:
    """The runs as a table, a line per LR search, the totals and where the estimates came from."""
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    fields = [k for k in p.varying if k != "tokens"]  # tokens has its own column
    status = ["status"] if "progress" in summary else []  # a sweep that has run: each run's status
    table = Table(title=f"sweep {p.spec.name}: {summary['n_runs']} runs in {summary['n_cells']} cells")
    for col in ["run_id", *fields, "search", *status, "n_params", "tokens", "FLOPs", "est. time"]:
        left = col in ("run_id", "search", "param", "status")
        table.add_column(col, no_wrap=True, justify="left" if left else "right")
    for r in summary["runs"]:
        table.add_row(r["run_id"], *[_fmt(r.get(k)) for k in fields], r["search"], *[r[c] for c in status],
                      _count(r["n_params"]), _count(r["tokens"]), _flops(r["flops"]), duration(r["est_seconds"]))
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
    else:
        con.print(f"total {summary['total_flops']:.3g} FLOPs"
                  + (f" (+ up to {summary['max_search_flops']:.3g} for LR searches)" if summary["searches"] else "")
                  + f"; {time_line}; throughput {summary['throughput_flops_per_s']:.3g} FLOP/s per run "
                  f"({summary['throughput_source']}); start-up {duration(summary['startup_seconds_per_run'])} "
                  f"per run ({summary['startup_source']})")
    for d in summary.get("compile_auto", []):  # compile = "auto": per shape, compiled or eager and why
        con.print(f"compile auto, {d['description']}")
    if "progress" in summary:
        con.print(progress_text(summary["progress"], summary["local_parallel_runs"]))


def progress_text(pr: dict[str, Any], slots: int) -> str:
    """A sweep that has run: done, failed and left, in runs and FLOPs, and the time of what is left."""
    added = f" ({pr['search_runs_done']} added by LR searches)" if pr["search_runs_done"] else ""
    failed = f"; {pr['runs_failed']} failed (run again with --retry-failed)" if pr["runs_failed"] else ""
    searching = f"; {pr['searches_open']} LR searches still open may add runs" if pr["searches_open"] else ""
    left = (f"{pr['runs_left']} runs, {_flops(pr['flops_left'])} FLOPs, about {duration(pr['est_left_run_seconds'])} "
            f"of run time, {duration(pr['est_left_local_wall_seconds'])} on this machine at {slots} runs in parallel"
            if pr["runs_left"] else "no planned run")
    return f"done: {pr['runs_done']} runs{added}, {_flops(pr['flops_done'])} FLOPs{failed}; left: {left}{searching}"


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


class SweepProgress:
    """A sweep's progress as the CLI draws it, from the driver's `on_progress` reports: a rich bar (done /
    running / failed / diverged counts and an ETA) on a terminal, else a plain line of the counts every
    `every_s` seconds (batch logs). A context manager: the bar is taken down on exit."""

    def __init__(self, console, live: bool, every_s: float = PLAIN_PROGRESS_S):
        self.console, self.bar, self.task = console, None, None
        self.plain = None if live else PlainProgress(every_s)

    def __call__(self, p) -> None:
        if self.plain is not None:
            self.plain(lambda: progress_line(p))
            return
        if self.bar is None:
            self.start(p.sweep)
        c = p.counts
        stats = (f"[green]done {c[COMPLETED]}[/] [cyan]running {p.running}[/] queued {p.queued} "
                 f"[red]failed {p.failed}[/] [yellow]diverged {c[DIVERGED]}[/]")
        self.bar.update(self.task, completed=p.finished_now, total=p.finished_now + p.running + p.queued,
                        stats=stats)

    def start(self, name: str) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,  # noqa: PLC0415
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=self.console)
        self.task = self.bar.add_task(name, total=None, stats="")
        self.bar.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress_line(p) -> str:
    """One plain line of a running sweep's counts (hyperp.sweeps.status.Progress)."""
    c = p.counts
    return (f"{p.sweep}: {c[COMPLETED]} completed, {c[DIVERGED]} diverged, {p.failed} failed, "
            f"{p.running} running, {p.queued} pending")


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
        as_json: JsonFlag = False,
        design: Annotated[str | None, typer.Option(
            rich_help_panel=DESIGN_PANEL, help="Then design rounds for this question (transfer, exponent, cel, "
                                               "loss, ab; see `hyperp design`): run a designed batch, refit, design "
                                               "again, until --target-width or --budget-flops.")] = None,
        axis: Annotated[str | None, typer.Option(rich_help_panel=DESIGN_PANEL, help="The question's scale axis.")]
        = None,
        by: Annotated[list[str] | None, typer.Option(
            "--by", rich_help_panel=DESIGN_PANEL, help="Group columns (default param). Repeatable.")] = None,
        where: Annotated[list[str] | None, typer.Option(
            "--where", "-w", rich_help_panel=DESIGN_PANEL, help="Keep the group: COL=VALUE. Repeatable.")] = None,
        method: Annotated[str | None, typer.Option(rich_help_panel=DESIGN_PANEL,
                                                   help="cel: the method; ab: the variant.")] = None,
        baseline: Annotated[str | None, typer.Option(rich_help_panel=DESIGN_PANEL, help="cel, ab: the baseline.")]
        = None,
        method_col: Annotated[str, typer.Option(rich_help_panel=DESIGN_PANEL, help="cel, ab: the method column.")]
        = "param",
        at: Annotated[float | None, typer.Option(rich_help_panel=DESIGN_PANEL,
                                                 help="cel: the target FLOPs; ab: the --axis value.")] = None,
        budget_flops: Annotated[float | None, typer.Option(
            rich_help_panel=DESIGN_PANEL, help="FLOPs all rounds may spend.")] = None,
        target_width: Annotated[float | None, typer.Option(
            rich_help_panel=DESIGN_PANEL, help="Stop once the question's interval is this narrow.")] = None,
        rounds: Annotated[int, typer.Option(min=1, rich_help_panel=DESIGN_PANEL, help="At most this many rounds.")]
        = 3):
    """Run SPEC (or resume it: only missing, infra-failed or stale runs are scheduled); with --design, then
    design rounds on its sweep."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.sweeps.cluster import worker_env  # noqa: PLC0415
    from hyperp.sweeps.runner import run_sweep  # noqa: PLC0415
    from hyperp.sweeps.spec import load_spec  # noqa: PLC0415

    if design is not None:
        check_design_args(design, budget_flops, target_width, axis, where, baseline, at)  # before anything runs
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--run-fn mymodule:fn` from the working directory, as `python -m` does
    worker_env(address)  # a ray:// address without Ray's client fails here, before anything is written
    console = Console(stderr=True)

    def run_spec(path):
        with SweepProgress(console, console.is_terminal, progress_every) as progress:
            done = run_sweep(load_spec(path), out, address=address, run_fn=run_fn, retry_failed=retry_failed,
                             num_cpus=num_cpus, on_progress=None if quiet else progress, max_runs=max_runs)
        if done.interrupted or done.pending:
            show_run(done, as_json, retry_failed)  # exits: a round stops where the runs stopped
        return done

    res = run_spec(spec)
    history = None
    if design is not None:
        from hyperp.design.rounds import design_rounds  # noqa: PLC0415
        from hyperp.fitting.table import parse_where  # noqa: PLC0415

        batches = []
        history = design_rounds(res.sweep_dir, design, lambda p: batches.append(run_spec(p)), rounds=rounds,
                                budget_flops=budget_flops, target_width=target_width,
                                echo=lambda m: typer.echo(m, err=True), axis=axis, by=tuple(by or ("param",)),
                                where=parse_where(where or []), method=method, baseline=baseline,
                                method_col=method_col, at=at)
        res = batches[-1] if batches else res
    show_run(res, as_json, retry_failed, {} if history is None else {"design_rounds": history})


def check_design_args(question: str, budget_flops: float | None, target_width: float | None,
                      axis: str | None = None, where: list[str] | None = None, baseline: str | None = None,
                      at: float | None = None) -> None:
    """--design's flags that need no table (the question's own, hyperp.design.questions.check_flags; --where's
    syntax; the stopping rule), checked before any run starts: a typo found after the spec ran would cost the
    whole spec's time."""
    from hyperp.design.questions import check_flags  # noqa: PLC0415
    from hyperp.errors import InputError  # noqa: PLC0415
    from hyperp.fitting.table import parse_where  # noqa: PLC0415

    check_flags(question, axis, at, flag="--design")
    if budget_flops is None and target_width is None:
        raise InputError("--design: give --budget-flops, --target-width or both")
    for name, x in (("--budget-flops", budget_flops), ("--target-width", target_width)):
        if x is not None and not (math.isfinite(x) and x > 0):
            raise InputError(f"{name}: expected a positive number, got {x:g}")
    if question in ("cel", "ab") and baseline is None:  # its value is checked once the table is read
        raise InputError(f"--baseline: the {question} question needs the baseline (a value of --method-col)")
    parse_where(where or [])  # COL=VALUE (a FitInputError, an InputError: exit 2)


def show_run(res, as_json: bool, retry_failed: bool, extra: dict[str, Any] | None = None) -> None:
    """The outcome of `sweep run`: counts (or JSON), failed runs, unbracketed searches; exit 130 when
    interrupted, 1 when runs failed or are left."""
    c = res.counts
    failed = failed_runs(res)
    if as_json:
        print_json({"sweep": res.plan.spec.name, "dir": res.sweep_dir, "counts": c, "submitted": res.submitted,
                    "pending": res.pending, "interrupted": res.interrupted, "elapsed_s": res.elapsed_s,
                    "failed_runs": failed, "searches": res.searches, **(extra or {})})
    else:
        msg = (f"{res.plan.spec.name}: {c[COMPLETED]} completed, {c[DIVERGED]} diverged, "
               f"{c[FAILED]} failed, {c[INFRA_FAILED]} infra_failed; {res.submitted} runs submitted "
               f"in {res.elapsed_s:.1f}s; ledger {res.sweep_dir / RUNS_FILE}")
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
    from hyperp.sweeps.ledger import find_sweep_dir  # noqa: PLC0415
    from hyperp.sweeps.status import sweep_status  # noqa: PLC0415

    if not (watch or wait):
        show_status(sweep_status(find_sweep_dir(sweep_dir, DEFAULT_ROOT)), as_json)
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
    from hyperp.sweeps.ledger import find_sweep_dir  # noqa: PLC0415
    from hyperp.sweeps.status import starting  # noqa: PLC0415

    return path if starting(path) else find_sweep_dir(path, DEFAULT_ROOT)


def follow(sweep_dir: Path, as_json: bool, watch: bool, interval: float, count: int) -> dict[str, Any]:
    """Poll the sweep until it is finished (or --count refreshes of a watch): a watch shows every poll, a wait
    only the last. Returns the last status."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.sweeps.status import starting, starting_status, sweep_status  # noqa: PLC0415

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
    report_failed(st["failed_runs"])


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
    from hyperp.sweeps.status import sweep_list  # noqa: PLC0415

    out = sweep_list(root)
    if as_json:
        print_json(out)
        return
    if not out:
        typer.echo(f"no sweeps under {root}")
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"sweeps under {root}")
    cols = ["sweep", "planned", "searches", *STATUSES, "cpu_hours", "flops", "running", "updated"]
    shown = {"running": lambda v: "yes" if v else "no", "cpu_hours": lambda v: f"{v:.2f}" if math.isfinite(v) else "-",
             "flops": _flops}
    for col in cols:
        table.add_column({"cpu_hours": "CPU-h", "flops": "FLOPs"}.get(col, col), no_wrap=True)
    for r in out:
        table.add_row(*[shown.get(c, str)(r[c]) for c in cols])
    _console().print(table)


# ---------------------------------------------------------------- stop


@command(app)
def stop(sweep: Annotated[Path, typer.Argument(help="A sweep directory, its name under --out, or the spec it was run "
                                                   "from.")],
         out: RootOpt = DEFAULT_ROOT,
         wait: Annotated[bool, typer.Option("--wait", help="Return once the driver has exited (bound it with "
                                                          "`timeout`).")] = False,
         as_json: JsonFlag = False):
    """Ask the sweep's running driver to checkpoint its runs and exit (as Ctrl-C does; `sweep run` resumes), from
    another terminal or host: a stop request in the sweep directory, and SIGINT when the driver runs on this host."""
    from hyperp.sweeps.stop import request_stop, wait_stopped  # noqa: PLC0415

    res = request_stop(stop_dir(sweep, out))
    if wait and res["asked"]:
        wait_stopped(Path(res["dir"]))
    if as_json:
        print_json(res)
    elif not res["asked"]:
        typer.echo(f"{res['dir']}: no driver is running; nothing to stop")
    else:
        how = (["sent it SIGINT"] if res["signalled"] else []) + ([f"wrote {res['file']}"] if res["file"] else [])
        typer.echo(f"asked the driver of {res['dir']} (pid {res['pid']} on {res['host'] or '?'}) to stop: "
                   f"{' and '.join(how)}; its runs checkpoint and `hyperp sweep run` resumes them"
                   + ("; it has exited" if wait else ""))


def stop_dir(path: Path, root: Path) -> Path:
    """The sweep `sweep stop` addresses: a directory a driver has locked (it may not have written its plan yet),
    that name under `root`, or what `sweep status` reads."""
    from hyperp.schema import LOCK_FILE  # noqa: PLC0415
    from hyperp.sweeps.ledger import find_sweep_dir  # noqa: PLC0415

    for candidate in (path, root / path):
        if (candidate / LOCK_FILE).is_file():
            return candidate
    return find_sweep_dir(path, root)
