"""`hyperp predict TABLE --param P --depth D [--width W] --tokens T`: the optimal LR of every parameter group
and the predicted loss at a target shape and budget, from the laws the sweep's runs support
(hyperp.fitting.predict), with intervals and how far beyond the fitted range the target lies."""

from __future__ import annotations

from typing import Annotated

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, as_count, command, new_app, print_json, warn
from hyperp.cli.fit import BootOpt, LevelOpt, MapOpt, SeedOpt, TableArg, WhereOpt, read
from hyperp.fitting.defaults import DEFAULT_LEVEL

app = new_app(SUBAPPS["predict"][1])  # one command: typer makes `hyperp predict` that command itself


@command(app, "predict")
def predict_command(table: TableArg,
                    param: Annotated[str, typer.Option(help="Scheme of the target (a value of the method column).")],
                    tokens: Annotated[int, typer.Option(parser=as_count,
                                                        help="Target token budget (1e11 works).")],
                    depth: Annotated[int | None, typer.Option(help="Target depth (default: the sweep's).")] = None,
                    width: Annotated[int | None, typer.Option(help="Target width (default: aspect_ratio x depth).")]
                    = None,
                    top_k: Annotated[int | None, typer.Option(help="MoE granularity of the target.")] = None,
                    loss_law: Annotated[str, typer.Option(help="compute (L = A C^-b + E over the best run of each "
                                                               "size) or chinchilla (L(N, D)).")] = "compute",
                    lr_x: Annotated[str, typer.Option(help="The column the LR law runs along.")] = "tokens",
                    method_col: Annotated[str, typer.Option(help="Column naming the scheme.")] = "param",
                    mapping: MapOpt = None, where: WhereOpt = None, n_boot: BootOpt = 1000, seed: SeedOpt = 0,
                    level: LevelOpt = DEFAULT_LEVEL, as_json: JsonFlag = False) -> None:
    """Optimal LRs and loss at a target scale from a sweep's fitted laws (with intervals and extrapolation)."""
    from hyperp.fitting.predict import predict  # noqa: PLC0415 (torch for the target's parameter count)
    from hyperp.fitting.table import FitInputError  # noqa: PLC0415

    if loss_law not in ("compute", "chinchilla"):
        raise FitInputError(f"--loss-law: expected compute or chinchilla, got {loss_law!r}")
    target = {"param": param, "depth": depth, "width": width, "top_k": top_k, "tokens": tokens}
    res = predict(read(table, mapping, where), target, method_col=method_col, lr_x=lr_x, loss_law=loss_law,
                  n_boot=n_boot, seed=seed, level=level, source=str(table))
    if as_json:
        print_json(res.to_dict())
        return
    t = res.target
    typer.echo(f"target: {t['param']}, depth {t['depth']}, width {t['width']}, {t['n_params']:,} parameters, "
               f"{t['tokens']:,} tokens, {t['flops_planned']:.3g} FLOPs")
    typer.echo(f"base lr {res.lr:.4g} [{res.lr_interval.low:.4g}, {res.lr_interval.high:.4g}]; by group: "
               + ", ".join(f"{g} {v['optimizer']} lr {v['lr']:.4g}" + (f" wd {v['weight_decay']:g}"
                                                                          if v["weight_decay"] else "")
                           for g, v in res.groups.items()))
    typer.echo(f"loss {res.loss:.4f} [{res.loss_interval.low:.4f}, {res.loss_interval.high:.4f}] "
               f"({res.loss_law} law, {level:.0%} interval)")
    typer.echo("beyond the fitted range: " + ", ".join(f"{k} {v:.3g}x" for k, v in res.extrapolation.items()))
    for w in res.warnings:
        warn(w)
