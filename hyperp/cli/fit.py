"""`hyperp fit ...`: a thin command-line layer over the fitting API (hyperp.fitting).

Each command reads a table (Parquet, CSV or sweep directory), calls one API function and prints a rich table,
or strict JSON with --json; -o/--output also writes the JSON to a file. Input problems (a missing or mistyped
column, with a did-you-mean) exit with code 2 and a one-line message, never a traceback.

This module is loaded when `hyperp fit`, `plot`, `check` or `predict` runs (hyperp.cli loads nouns lazily).
Its defaults come from hyperp.fitting.defaults, which imports nothing, and each command imports the fitting
library (numpy, scipy, pandas) in its body, so `--help` loads none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hyperp import io
from hyperp.cli.core import SUBAPPS, JsonFlag, command, json_text, new_app, warn
from hyperp.errors import FitInputError
from hyperp.fitting.defaults import BOOT_STARTS, CHINCHILLA_N_BOOT, DEFAULT_LEVEL, DEFAULT_N_BOOT, HUBER_DELTA, R2_MIN

app = new_app(SUBAPPS["fit"][1])

# Options shared by every command (the plot CLI reuses them).
TableArg = Annotated[Path, typer.Argument(help="Parquet/CSV table or a sweep directory with runs.parquet.")]
MapOpt = Annotated[list[str] | None, typer.Option(
    "--map", "-m", help="Rename a column: 'SOURCE=TARGET', e.g. --map 'Model Size=n_params'. Repeatable.")]
WhereOpt = Annotated[list[str] | None, typer.Option(
    "--where", "-w", help="Keep rows with COL=VALUE (compared as text). Repeatable: filters on different columns "
                          "all apply; values given for one column are alternatives.")]
AllStatusOpt = Annotated[bool, typer.Option(
    "--all-status", help="Fit every non-diverged row, not only status=completed. Diverged rows never enter a fit.")]
BootOpt = Annotated[int, typer.Option("--bootstrap", "-B", min=0, help="Bootstrap replicates (0: no intervals).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Bootstrap seed.")]
LevelOpt = Annotated[float, typer.Option("--level", min=0.5, max=0.999, help="Interval confidence level.")]
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON result to this file.")]
ByOpt = Annotated[list[str] | None, typer.Option("--by", help="Group column. Repeatable.")]
LrColOpt = Annotated[str, typer.Option(help="LR column.")]
LossColOpt = Annotated[str, typer.Option(help="Loss column.")]
XOpt = Annotated[str, typer.Option("--x", help="x column (e.g. tokens, n_params).")]
SkipSparseOpt = Annotated[bool, typer.Option(help="Skip groups with < 3 learning rates.")]
WorkersOpt = Annotated[int, typer.Option(min=1, help="Threads for the batched L-BFGS.")]
BestOfOpt = Annotated[list[str] | None, typer.Option(
    "--best-of", help="Keep the best LR per method and value of this column, its loss the mean over its seeds "
                      "(where the table has lr and seed). Repeatable.")]
EveryLrOpt = Annotated[bool, typer.Option(
    "--every-lr", help="Fit every run as a point of the law even where one size has several LRs (by default the "
                       "best LR of each is kept, seeds averaged, and the fit says so).")]
TransferAlongOpt = Annotated[str | None, typer.Option(
    "--transfer-along", help="The paper's protocol: tune the base LR at the smallest value of this axis (width, "
                             "depth, tokens, top_k) and use the loss at that LR at every scale (read off each "
                             "scale's LR parabola), instead of each scale's best run.")]


def compute_table(df, transfer_along: str | None, best_of: list[str] | None, method_col: str, x: str, y: str,
                  source: str):
    """The runs `fit compute` and `plot compute` read: the table itself, or under --transfer-along one row per
    (method, scale) at the proxy's LR."""
    if transfer_along is None:
        return df
    from hyperp.checks.transfer import transferred_runs  # noqa: PLC0415

    if best_of:
        raise FitInputError("--transfer-along: keeps one run per scale already; drop --best-of")
    return transferred_runs(df, transfer_along, by=[method_col], keep=[x], loss_col=y, source=source)


def read(table: Path, mapping: list[str] | None, where: list[str] | None):
    """Load TABLE with --map and --where applied."""
    from hyperp.fitting.table import load_table, parse_mapping, parse_where  # noqa: PLC0415 (pandas)

    return load_table(table, parse_mapping(mapping or []), parse_where(where or []))


def emit(result: Any, rich_table, as_json: bool, output: Path | None) -> None:
    """Print the result (JSON or rich table) and optionally save the JSON."""
    text = json_text(result.to_dict())
    if output is not None:
        io.write_bytes(output, (text + "\n").encode())  # atomic: a crash never leaves a torn file
    if as_json:
        typer.echo(text)
        return
    if rich_table is not None:
        from rich.console import Console  # noqa: PLC0415

        Console(width=160).print(rich_table)
    print_warnings(result)


def print_warnings(result: Any) -> None:
    """The fit's warnings, one line each on stderr (they are in the JSON too)."""
    for w in getattr(result, "warnings", ()):
        warn(w)


@command(app, "lr")
def lr_cmd(table: TableArg, by: ByOpt = None, lr_col: LrColOpt = "lr",
           loss_col: LossColOpt = "val_loss",
           r2_min: Annotated[float, typer.Option(help="Below this R^2 the optimum is not bracketed.")] = R2_MIN,
           skip_sparse: SkipSparseOpt = False,
           mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
           n_boot: BootOpt = DEFAULT_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
           as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """Optimal learning rate per group: parabola in ln(lr), bootstrap interval for lr_opt."""
    from hyperp.fitting.lr import fit_optimal_lr  # noqa: PLC0415 (scipy)
    from hyperp.fitting.report import fmt, fmt_interval, make_table  # noqa: PLC0415

    df = read(table, mapping, where)
    res = fit_optimal_lr(df, by or [], lr_col=lr_col, loss_col=loss_col, all_status=all_status, r2_min=r2_min,
                         n_boot=n_boot, seed=seed, level=level, skip_sparse=skip_sparse, source=str(table))
    cols = [*res.by, "lr_opt", f"{level:.0%} interval", "loss_opt", "r2", "n", "bracketed", "reason"]
    rows = [[fmt(o.group[k]) for k in res.by] + [o.lr_opt, fmt_interval(o.lr_interval.low, o.lr_interval.high),
                                                  o.loss_opt, o.r2, o.n_points, fmt(o.bracketed), o.reason]
            for o in res.optima]
    emit(res, make_table("Optimal learning rate", cols, rows), as_json, output)


@command(app, "law")
def law_cmd(table: TableArg, x: Annotated[str, typer.Option("--x", help="x column (e.g. tokens, n_params).")],
            y: Annotated[str, typer.Option("--y", help="y column, or lr_opt / loss_opt (per-group optima).")] = "loss_opt",
            by: ByOpt = None, offset: Annotated[bool, typer.Option(help="Fit y = a x^b + c.")] = False,
            space: Annotated[str, typer.Option(help="linear (curve_fit) or log (least squares on log y).")] = "linear",
            include_unbracketed: Annotated[bool, typer.Option(help="Keep unbracketed optima.")] = False,
            lr_col: LrColOpt = "lr",
            loss_col: LossColOpt = "val_loss",
            mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
            n_boot: BootOpt = DEFAULT_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
            as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """Power law y = a x^b (+ c) per group, with leave-one-out error and a bootstrap interval for b."""
    from hyperp.fitting.powerlaw import fit_law  # noqa: PLC0415 (scipy)
    from hyperp.fitting.report import fmt, fmt_interval, make_table  # noqa: PLC0415

    if space not in ("linear", "log"):
        raise FitInputError(f"--space must be 'linear' or 'log', got {space!r}")
    df = read(table, mapping, where)
    laws = fit_law(df, x, y, by or [], offset=offset, space=space, lr_col=lr_col, loss_col=loss_col,
                   all_status=all_status, include_unbracketed=include_unbracketed, n_boot=n_boot, seed=seed,
                   level=level, source=str(table))
    keys = list(by or [])
    cols = [*keys, "a", "b", f"b {level:.0%} interval", "c", "r2", "loo_rel_err", "n", "excluded"]
    rows = [[fmt(lf.group[k]) for k in keys] + [lf.fit.a, lf.fit.b, fmt_interval(lf.fit.intervals["b"].low,
                                                                                  lf.fit.intervals["b"].high),
                                                lf.fit.c, lf.fit.r2, lf.fit.loo_rel_err, lf.fit.n_points,
                                                len(lf.excluded)] for lf in laws]
    emit(_Laws(laws), make_table(f"{y} = a {x}^b{' + c' if offset else ''} ({space} space)", cols, rows),
         as_json, output)


class _Laws:
    """A list of LawFit with the to_dict() the output layer expects."""

    def __init__(self, laws):
        self.laws = laws

    @property
    def warnings(self):
        return tuple(f"{', '.join(f'{k}={v}' for k, v in lf.group.items()) or 'law'}: {w}"
                     for lf in self.laws for w in lf.warnings)

    def to_dict(self):
        return {"laws": [lf.to_dict() for lf in self.laws], "warnings": list(self.warnings)}


@command(app, "compute")
def compute_cmd(table: TableArg,
                baseline: Annotated[str, typer.Option(help="Baseline method (a value of --method-col).")],
                method_col: Annotated[str, typer.Option(help="Column naming the method.")] = "param",
                x: Annotated[str, typer.Option("--x", help="Compute column.")] = "flops",
                y: Annotated[str, typer.Option("--y", help="Loss column.")] = "val_loss",
                at: Annotated[list[float] | None, typer.Option("--at", help="Fit-to-fit CEL at this compute. Repeatable.")] = None,
                best_of: BestOfOpt = None, every_lr: EveryLrOpt = False, transfer_along: TransferAlongOpt = None,
                mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
                n_boot: BootOpt = DEFAULT_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
                as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """Loss versus compute per method (L = A C^-b + E) and CEL over the baseline, with a hold-out check."""
    from rich.console import Console  # noqa: PLC0415

    from hyperp.fitting.compute import compare_methods  # noqa: PLC0415 (numpy, pandas)
    from hyperp.fitting.report import fmt, fmt_interval, make_table  # noqa: PLC0415

    df = compute_table(read(table, mapping, where), transfer_along, best_of, method_col, x, y, str(table))
    res = compare_methods(df, baseline, method_col=method_col, x=x, y=y, at=at or [], best_of=best_of or [],
                          every_lr=every_lr, all_status=all_status, n_boot=n_boot, seed=seed, level=level, source=str(table))
    if as_json or output is not None:
        emit(res, None, as_json, output)
    if as_json:
        return
    console = Console(width=160)
    rows = []
    for m, f in res.fits.items():
        h = f.holdout
        rows.append([m, f.A, f.b, fmt_interval(f.intervals["b"].low, f.intervals["b"].high), f.E,
                     fmt_interval(f.intervals["E"].low, f.intervals["E"].high), f.r2, f.n_points,
                     "-" if h is None else fmt(h.predicted), "-" if h is None else fmt(h.observed),
                     "-" if h is None else f"{h.rel_err:+.2%}"])
    console.print(make_table("L(C) = A C^-b + E", ["method", "A", "b", "b interval", "E", "E interval", "r2", "n",
                                                  "holdout pred", "holdout obs", "holdout err"], rows))
    for title, pts in (("CEL at baseline runs", res.cel_points), ("CEL fit-to-fit", res.cel_at)):
        if pts:
            console.print(make_table(f"{title} (over {res.baseline})", ["method", "compute", "baseline loss", "cel",
                                                                         f"{level:.0%} interval"],
                                     [[p.method, p.compute, p.baseline_loss, p.cel,
                                       fmt_interval(p.interval.low, p.interval.high)] for p in pts]))
    print_warnings(res)


@command(app, "chinchilla")
def chinchilla_cmd(table: TableArg,
                   drop_worst: Annotated[int, typer.Option(min=0, help="Drop the K highest-loss runs first.")] = 0,
                   n_col: Annotated[str, typer.Option(help="Parameter-count column.")] = "n_params",
                   tokens_col: Annotated[str, typer.Option(help="Token column (else flops / 6N).")] = "tokens",
                   flops_col: Annotated[str, typer.Option(help="FLOP column, used when there is no token column.")] = "flops",
                   loss_col: LossColOpt = "val_loss",
                   delta: Annotated[float, typer.Option(help="Huber delta.")] = HUBER_DELTA,
                   boot_starts: Annotated[int, typer.Option(min=1, help="Starts per bootstrap refit.")] = BOOT_STARTS,
                   workers: WorkersOpt = 1,
                   best_of: Annotated[str | None, typer.Option(
                       "--best-of", help="A column swept at each (N, D), e.g. lr: keep only the lowest-loss value of "
                                         "each (N, D), seeds averaged at each value.")] = None,
                   every_lr: EveryLrOpt = False, mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
                   n_boot: BootOpt = CHINCHILLA_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
                   as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """Chinchilla approach 3: L(N, D) = E + A/N^alpha + B/D^beta by Huber/LSE L-BFGS from 4,500 starts."""
    from hyperp.fitting.chinchilla import chinchilla_inputs, fit_chinchilla  # noqa: PLC0415 (numpy, pandas)
    from hyperp.fitting.report import fmt_interval, make_table  # noqa: PLC0415

    df = read(table, mapping, where)
    points = chinchilla_inputs(df, n_col=n_col, tokens_col=tokens_col, loss_col=loss_col, flops_col=flops_col,
                               all_status=all_status, best_of=best_of, every_lr=every_lr, source=str(table))
    res = fit_chinchilla(*points, drop_worst=drop_worst, delta=delta, n_boot=n_boot, boot_starts=boot_starts,
                         seed=seed, level=level, workers=workers, notes=points.notes)
    names = ("E", "A", "B", "alpha", "beta", "exponent_n", "exponent_d")
    rows = [[k, getattr(res, k), fmt_interval(res.intervals[k].low, res.intervals[k].high)] for k in names]
    title = (f"L(N, D) = E + A/N^alpha + B/D^beta  ({res.n_points} runs, {res.n_dropped} dropped, "
             f"{res.n_starts} starts, {res.n_at_best} at the best objective {res.objective:.6g})")
    emit(res, make_table(title, ["parameter", "value", f"{level:.0%} interval"], rows), as_json, output)
