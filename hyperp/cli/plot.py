"""`hyperp plot ...`: figures from a table. Each command runs the matching fit and draws its result.

matplotlib (hyperp.plots) and the fitting library (numpy, scipy, pandas) load inside each command; the
options shared with `hyperp fit` (hyperp.cli.fit) and their defaults (hyperp.fitting.defaults) load none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, command, new_app, print_json
from hyperp.cli.fit import (AllStatusOpt, BestOfOpt, BootOpt, ByOpt, EveryLrOpt, LevelOpt, LossColOpt, LrColOpt,
                            MapOpt, SeedOpt, SkipSparseOpt, TableArg, TransferAlongOpt, WhereOpt, WorkersOpt, XOpt,
                            compute_table, print_warnings, read)
from hyperp.fitting.defaults import DEFAULT_LEVEL, DEFAULT_N_BOOT
from hyperp.schema import CURVES_FILE, RUNS_FILE


app = new_app(SUBAPPS["plot"][1])

OutFile = Annotated[Path, typer.Option("--output", "-o", help="Figure file: .png, .svg or .pdf.")]
TitleOpt = Annotated[str | None, typer.Option(help="Figure title (default: describes the fit).")]
# Plots show bands, which need fewer replicates than reported intervals.
PlotBootOpt = Annotated[int, typer.Option("--bootstrap", "-B", min=0, help="Bootstrap replicates for the bands.")]
PLOT_N_BOOT = 400



def _done(path: Path, as_json: bool) -> None:
    if as_json:
        print_json({"figure": path})
    else:
        typer.echo(f"wrote {path}")


@command(app, "lr")
def lr_plot(table: TableArg, output: OutFile, by: ByOpt = None, lr_col: LrColOpt = "lr",
            loss_col: LossColOpt = "val_loss", mapping: MapOpt = None, where: WhereOpt = None,
            all_status: AllStatusOpt = False, skip_sparse: SkipSparseOpt = False, title: TitleOpt = None,
            as_json: JsonFlag = False) -> None:
    """Loss versus LR per group with the fitted parabolas and starred optima."""
    from hyperp.fitting.lr import fit_optimal_lr  # noqa: PLC0415
    from hyperp.plots import plot_lr, save_figure  # noqa: PLC0415 (matplotlib)

    res = fit_optimal_lr(read(table, mapping, where), by or [], lr_col=lr_col, loss_col=loss_col,
                         all_status=all_status, n_boot=0, skip_sparse=skip_sparse, source=str(table))
    _done(save_figure(plot_lr(res, title), output), as_json)


@command(app, "law")
def law_plot(table: TableArg, output: OutFile, x: XOpt,
             y: Annotated[str, typer.Option("--y", help="y column, or lr_opt / loss_opt (per-group optima).")]
             = "loss_opt", by: ByOpt = None,
             offset: Annotated[bool, typer.Option(help="Fit y = a x^b + c.")] = False,
             space: Annotated[str, typer.Option(help="linear (curve_fit) or log (least squares on log y).")]
             = "linear",
             include_unbracketed: Annotated[bool, typer.Option(help="Keep unbracketed optima.")] = False,
             mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
             n_boot: PlotBootOpt = PLOT_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
             title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """Power law in log-log with the fit, its bootstrap band and the exponent in the legend."""
    from hyperp.fitting.powerlaw import fit_law  # noqa: PLC0415
    from hyperp.plots import plot_law, save_figure  # noqa: PLC0415 (matplotlib)

    laws = fit_law(read(table, mapping, where), x, y, by or [], offset=offset, space=space,
                   all_status=all_status, include_unbracketed=include_unbracketed, n_boot=n_boot, seed=seed,
                   level=level, source=str(table))
    _done(save_figure(plot_law(laws, title), output), as_json)


@command(app, "compute")
def compute_plot(table: TableArg, output: OutFile,
                 baseline: Annotated[str, typer.Option(help="Baseline method (a value of --method-col).")],
                 method_col: Annotated[str, typer.Option(help="Column naming the method.")] = "param",
                 x: Annotated[str, typer.Option("--x", help="Compute column.")] = "flops",
                 y: Annotated[str, typer.Option("--y", help="Loss column.")] = "val_loss",
                 best_of: BestOfOpt = None, every_lr: EveryLrOpt = False, transfer_along: TransferAlongOpt = None,
                 mapping: MapOpt = None, where: WhereOpt = None, all_status: AllStatusOpt = False,
                 n_boot: PlotBootOpt = PLOT_N_BOOT, seed: SeedOpt = 0, level: LevelOpt = DEFAULT_LEVEL,
                 title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """Loss versus FLOPs per method with fitted curves, and CEL versus FLOPs."""
    from hyperp.fitting.compute import compare_methods  # noqa: PLC0415
    from hyperp.plots import plot_compute, save_figure  # noqa: PLC0415 (matplotlib)

    df = compute_table(read(table, mapping, where), transfer_along, best_of, method_col, x, y, str(table))
    res = compare_methods(df, baseline, method_col=method_col, x=x, y=y, best_of=best_of or [], every_lr=every_lr,
                          all_status=all_status, n_boot=n_boot, seed=seed, level=level, source=str(table))
    print_warnings(res)
    _done(save_figure(plot_compute(res, title), output), as_json)


@command(app, "chinchilla")
def chinchilla_plot(table: TableArg, output: OutFile,
                    drop_worst: Annotated[int, typer.Option(min=0, help="Drop the K highest-loss runs first.")] = 0,
                    n_col: Annotated[str, typer.Option(help="Parameter-count column.")] = "n_params",
                    tokens_col: Annotated[str, typer.Option(help="Token column (else flops / 6N).")] = "tokens",
                    flops_col: Annotated[str, typer.Option(help="FLOP column, used when there is no token "
                                                                "column.")] = "flops",
                    loss_col: LossColOpt = "val_loss", mapping: MapOpt = None, where: WhereOpt = None,
                    all_status: AllStatusOpt = False, every_lr: EveryLrOpt = False, workers: WorkersOpt = 1,
                    title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """Iso-loss contours of the Chinchilla fit in (C, N) with the compute-efficient frontier."""
    from hyperp.fitting.chinchilla import chinchilla_inputs, fit_chinchilla  # noqa: PLC0415
    from hyperp.plots import plot_chinchilla, save_figure  # noqa: PLC0415 (matplotlib)

    n, d, loss = points = chinchilla_inputs(read(table, mapping, where), n_col=n_col, tokens_col=tokens_col,
                                            loss_col=loss_col, flops_col=flops_col, all_status=all_status,
                                            every_lr=every_lr, source=str(table))
    fit = fit_chinchilla(n, d, loss, drop_worst=drop_worst, n_boot=0, workers=workers, notes=points.notes)
    print_warnings(fit)
    keep = fit.kept
    _done(save_figure(plot_chinchilla(fit, n[keep], d[keep], loss[keep], title), output), as_json)


@command(app, "stability")
def stability_plot(table: Annotated[Path, typer.Argument(
                       help=f"Curves table (Parquet/CSV), a sweep directory (runs/<id>/{CURVES_FILE}) or a "
                            f"trainer output directory ({CURVES_FILE}).")],
                   output: OutFile,
                   runs: Annotated[Path | None, typer.Option(
                       help=f"Runs table for the scale column (default: the directory's {RUNS_FILE}).")] = None,
                   scale: Annotated[str | None, typer.Option(
                       help="Column that sets a run's colour (default: the run setting that varies among the "
                            "runs: n_params, tokens_run, width, depth, top_k, lr, ..., seed last).")] = None,
                   x: Annotated[str, typer.Option("--x", help="x axis column.")] = "tokens",
                   metric: Annotated[list[str] | None, typer.Option(
                       "--metric", help="Indicator column to draw (default: every numeric indicator). "
                                        "Repeatable.")] = None,
                   mapping: MapOpt = None, where: WhereOpt = None, title: TitleOpt = None,
                   as_json: JsonFlag = False) -> None:
    """Stability indicators versus tokens, one line per run coloured by the run setting that varies (or --scale).

    --where filters on curve columns and on the runs' settings; a run setting named like a curve column
    is NAME_run (e.g. tokens_run, the run's budget)."""
    from hyperp.fitting.table import apply_mapping, filter_rows, load_table, parse_mapping, parse_where  # noqa: PLC0415
    from hyperp.plots import indicator_columns, plot_stability, read_curves, save_figure, stability_frame  # noqa: PLC0415

    curves, runs_df = read_curves(table)
    curves = apply_mapping(curves, parse_mapping(mapping or []), str(table))
    if runs is not None:
        runs_df = load_table(runs)
    df = stability_frame(curves, runs_df, scale=scale, source=str(table))
    df = filter_rows(df, parse_where(where or []), str(table))  # after the join: --where param=hyperp works
    metrics = metric or indicator_columns(curves, scale, x)  # from the curves, not the joined run settings
    _done(save_figure(plot_stability(df, scale=scale, x=x, metrics=metrics, title=title), output), as_json)


@command(app, "curves")
def curves_plot(sweep: Annotated[Path, typer.Argument(
                    help=f"A sweep directory (runs/<id>/{CURVES_FILE} and {RUNS_FILE}), a trainer output "
                         f"directory or a curves table.")],
                output: OutFile,
                by: Annotated[str | None, typer.Option(
                    help="Column that sets a run's colour (default: the run setting that varies, as in "
                         "`plot stability`).")] = None,
                x: Annotated[str, typer.Option("--x", help="x axis: tokens, step or flops (tokens x the run's "
                                                           "FLOPs per token).")] = "tokens",
                y: Annotated[str, typer.Option("--y", help="Curve column: train_loss, val_loss or any logged "
                                                           "indicator.")] = "train_loss",
                where: WhereOpt = None, title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """Loss (or an indicator) against tokens for every run of a sweep, coloured by the setting that varies
    (or --by), diverged runs marked with an x. --where filters on the runs' settings (tokens_run: the budget)."""
    from hyperp.fitting.table import filter_rows, parse_where  # noqa: PLC0415
    from hyperp.plots import curves_frame, plot_curves, read_curves, save_figure  # noqa: PLC0415 (matplotlib)

    curves, runs_df = read_curves(sweep)
    df = filter_rows(curves_frame(curves, runs_df, y=y, source=str(sweep)), parse_where(where or []), str(sweep))
    _done(save_figure(plot_curves(df, by=by, x=x, y=y, title=title, source=str(sweep)), output), as_json)


@command(app, "transfer")
def transfer_plot(table: TableArg, output: OutFile,
                  axis: Annotated[str, typer.Option(help="The scale axis: width, depth, tokens or top_k.")],
                  by: ByOpt = None,
                  proxy: Annotated[float | None, typer.Option(help="Proxy scale (default: the smallest).")] = None,
                  lr_col: LrColOpt = "lr", loss_col: LossColOpt = "val_loss", mapping: MapOpt = None,
                  where: WhereOpt = None, n_boot: BootOpt = DEFAULT_N_BOOT, seed: SeedOpt = 0,
                  title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """The LR-transfer figure of `hyperp check transfer`: eta* per scale with the drift line and the allowed
    cone, and the transfer regret at each scale against the check's allowance. The bootstrap defaults to the
    check's (same replicates, same seed), so the verdicts in the legend are the check's."""
    from hyperp.checks.transfer import check_transfer  # noqa: PLC0415
    from hyperp.plots import plot_transfer, save_figure  # noqa: PLC0415 (matplotlib)
    from hyperp.plots.transfer import method_name  # noqa: PLC0415

    df = read(table, mapping, where)
    checks = check_transfer(df, axis, by=by or [], proxy=proxy, lr_col=lr_col, loss_col=loss_col, n_boot=n_boot,
                            seed=seed, source=str(table))
    name = None if by else method_name(df)  # the one group of a check without --by is named by its method
    _done(save_figure(plot_transfer(checks, title, name=name), output), as_json)


@command(app, "head")
def head_plot(table: TableArg, output: OutFile, mapping: MapOpt = None, where: WhereOpt = None,
              title: TitleOpt = None, as_json: JsonFlag = False) -> None:
    """The head-radius figure: per scheme, the best loss and its run's final-norm gain against head_init_std
    (method.md section 10; `hyperp check head` judges the same runs)."""
    from hyperp.plots import plot_head, save_figure  # noqa: PLC0415 (matplotlib)

    _done(save_figure(plot_head(read(table, mapping, where), title, source=str(table)), output), as_json)
