"""`hyperp design SWEEP --question Q ...`: the runs that would decide a question, for a compute budget
(hyperp.design). Prints the question's current interval, the chosen runs with their FLOPs and gain, and the
interval the design predicts; `-o DESIGN.toml` writes a spec `hyperp sweep run` accepts as is. Read-only on
the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp import io
from hyperp.cli.core import SUBAPPS, JsonFlag, as_count, command, json_text, new_app, warn
from hyperp.cli.fit import WhereOpt

app = new_app(SUBAPPS["design"][1])  # one command: typer makes `hyperp design` that command itself


@command(app, "design")
def design_command(
        sweep: Annotated[Path, typer.Argument(help="A sweep directory (spec.toml and runs.parquet).")],
        question: Annotated[str, typer.Option(help="transfer (drift slope along --axis), exponent (the LR law's "
                                                   "token exponent), cel (CEL of --method over --baseline at "
                                                   "--at), loss (the loss at --depth/--width and --tokens, as "
                                                   "predict's compute law gives it) or ab (the optimum-loss "
                                                   "difference of --method over --baseline in --method-col at "
                                                   "--axis = --at, as `check ab` gives it).")],
        axis: Annotated[str | None, typer.Option(help="The scale axis: width, depth, tokens or top_k (exponent: "
                                                      "tokens).")] = None,
        by: Annotated[list[str] | None, typer.Option(
            "--by", help="Columns that split groups (as `check transfer --by`); each must hold one value after "
                         "--where. Repeatable (default: param).")] = None,
        where: WhereOpt = None,
        method: Annotated[str | None, typer.Option(help="cel: the method; ab: the variant (a value of "
                                                        "--method-col).")] = None,
        baseline: Annotated[str | None, typer.Option(help="cel, ab: the baseline (a value of --method-col).")] = None,
        method_col: Annotated[str, typer.Option(help="cel, ab: the column naming the method or option.")] = "param",
        at: Annotated[float | None, typer.Option(help="cel: the target compute in FLOPs (1e13 works); ab: the "
                                                      "--axis value the difference is read at (default: the "
                                                      "axis's one value).")] = None,
        depth: Annotated[int | None, typer.Option(help="loss: the target's depth.")] = None,
        width: Annotated[int | None, typer.Option(help="loss: the target's width (default: the sweep's aspect "
                                                       "ratio x depth).")] = None,
        tokens: Annotated[int | None, typer.Option(parser=as_count, help="loss: the target's tokens (1e9 works).")]
        = None,
        budget_flops: Annotated[float | None, typer.Option(help="Spend at most this many FLOPs.")] = None,
        budget_fraction: Annotated[float | None, typer.Option(
            help="Spend at most this fraction of the FLOPs the group's runs have cost so far.")] = None,
        target_width: Annotated[float | None, typer.Option(
            help="Add runs until the predicted interval is this narrow (in the number's units).")] = None,
        pool: Annotated[Path | None, typer.Option(
            help="A spec whose runs are the candidates (default: seeds, replicates of a cell's LR window, LR "
                 "points and a new scale (not for ab) that the sweep's axes express).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the simulated outcomes (a design is reproducible).")] = 0,
        sims: Annotated[int | None, typer.Option(min=2, help="Simulated outcome sets per candidate (default 8).")]
        = None,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="Write DESIGN.toml: the sweep's spec plus the chosen runs as [[runs]].")] = None,
        as_json: JsonFlag = False) -> None:
    """Which runs would narrow a question's interval most per FLOP, simulated from the sweep's own noise."""
    from hyperp.design.candidates import SweepContext  # noqa: PLC0415 (pandas, torch for the accounting)
    from hyperp.design.sweep import design_sweep, design_toml  # noqa: PLC0415
    from hyperp.fitting.table import parse_where  # noqa: PLC0415

    d = design_sweep(sweep, question, axis=axis, by=tuple(by or ("param",)), where=parse_where(where or []),
                     method=method, baseline=baseline, method_col=method_col, at=at, budget_flops=budget_flops,
                     budget_fraction=budget_fraction, target_width=target_width, pool=pool, seed=seed, n_sims=sims,
                     target={k: v for k, v in (("depth", depth), ("width", width), ("tokens", tokens)) if v})
    if output is not None:
        io.write_bytes(output, design_toml(d, SweepContext.load(sweep)).encode())
    data = d.to_dict() | {"design_toml": None if output is None else str(output)}
    if as_json:
        typer.echo(json_text(data))
        return
    _render(d, output)


def _render(d, output: Path | None) -> None:
    from rich.console import Console  # noqa: PLC0415

    from hyperp.fitting.report import fmt, make_table  # noqa: PLC0415

    con = Console(width=160)
    cur, pred = d.current, d.predicted
    con.print(f"[bold]{d.question.describe()}[/bold] (as `{d.question.command}` reports it)", highlight=False)
    con.print(f"now:       {fmt(cur.value)} [{fmt(cur.low)}, {fmt(cur.high)}], width {fmt(cur.width)}", highlight=False)
    rows = [[c.kind, c.label, len(c.settings), fmt(c.flops), fmt(g)] for c, g in zip(d.chosen, d.gains)]
    con.print(make_table("chosen runs, in the order chosen", ["kind", "runs", "n", "FLOPs", "width per FLOP"], rows))
    con.print(f"predicted: {fmt(pred.value)} [{fmt(pred.low)}, {fmt(pred.high)}], width {fmt(pred.width)}, "
              f"for {fmt(d.cost_flops)} FLOPs", highlight=False)
    con.print(f"noise: {d.noise}", highlight=False)
    if output is not None:
        con.print(f"wrote {output}: run it with `hyperp sweep run {output} --out <the sweep's root>`", highlight=False)
    for n in d.notes:
        warn(n)
