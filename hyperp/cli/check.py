"""`hyperp check ...`: HyperP's claims as checks (hyperp.checks). Each prints its numbers and a verdict whose
thresholds it states, or strict JSON with --json. Exit code 0 when the verdict is pass or inconclusive, 1 when
it is fail (README "Exit codes"), 2 on bad input.

coord and sphere train a few steps of tiny models themselves (seconds), moe-rms 8 tiny MoE models a seed (a minute
or more); transfer and stability read a sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperp import io
from hyperp.cli.core import SUBAPPS, JsonFlag, command, json_text, new_app, print_json, warn
from hyperp.cli.fit import ByOpt, LossColOpt, LrColOpt, MapOpt, OutOpt, SeedOpt, TableArg, WhereOpt, read
from hyperp.errors import EXIT_RUNS_FAILED
from hyperp.fitting.defaults import DEFAULT_N_BOOT

app = new_app(SUBAPPS["check"][1])

ParamOpt = Annotated[str, typer.Option("--param", help="Scheme: hyperp, muonh, muon or adamw.")]
CheckBootOpt = Annotated[int, typer.Option("--bootstrap", "-B", min=0, help="Bootstrap replicates for intervals.")]


def report(results: list, title: str, lines, as_json: bool, output: Path | None = None) -> None:
    """Print each result (JSON, or its lines, verdict and warnings), save the JSON to `output` when given,
    and exit 1 when any verdict is fail."""
    data = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
    if output is not None:
        io.write_bytes(output, (json_text(data) + "\n").encode())  # atomic: never a torn file
    if as_json:
        print_json(data)
    else:
        from rich.console import Console  # noqa: PLC0415

        con = Console(width=160)
        con.print(f"[bold]{title}[/bold]")
        for r in results:
            for line in lines(r):
                con.print(line, highlight=False)
            colour = {"pass": "green", "fail": "red"}.get(r.verdict, "yellow")
            limits = ", ".join(f"{k}={v:g}" for k, v in r.thresholds.items())
            con.print(f"verdict: [{colour}]{r.verdict}[/{colour}] ({r.why}); thresholds: {limits}", highlight=False)
            if getattr(r, "to_decide", ""):
                con.print(f"to decide it: {r.to_decide}", highlight=False)
            for w in r.warnings:
                warn(w)
    if any(r.verdict == "fail" for r in results):
        raise typer.Exit(EXIT_RUNS_FAILED)


@command(app, "coord")
def coord_cmd(param: ParamOpt = "hyperp",
              widths: Annotated[list[int] | None, typer.Option("--width", help="A width to compare. Repeatable "
                                                                                "(default 64, 128, 256).")] = None,
              steps: Annotated[int, typer.Option(min=0, help="Optimizer steps before the second reading.")] = 5,
              lr: Annotated[float | None, typer.Option(help="Base LR (default: the scheme's).")] = None,
              seeds: Annotated[int, typer.Option(min=1, help="Seeds (each its own init and batch); the verdict "
                                                             "needs their interval, so 1 is never a pass.")] = 3,
              as_json: JsonFlag = False) -> None:
    """Coordinate check: block output RMS across widths at init and after a few steps, over seeds (pass when
    every branch's spread interval lies within the band)."""
    from hyperp.checks.coord import WIDTHS, check_coord  # noqa: PLC0415 (torch)

    res = check_coord(param, tuple(widths or WIDTHS), steps, lr, seeds=seeds)

    def lines(r):
        spreads = {(s.moment, s.branch): s for s in r.spreads}
        return [f"{m} {k}: " + ", ".join(f"{v:.3g}" for v in vals) + f"; spread {spreads[m, k].value_text()}"
                + ("" if r.seeds < 2 else ", per seed " + ", ".join(f"{x:.2f}" for x in spreads[m, k].per_seed))
                for m, branches in r.rms.items() for k, vals in branches.items()]

    report([res], f"coordinate check of {param}: branch RMS by width {list(res.widths)}"
                  f"{f' (mean of {seeds} seeds)' if seeds > 1 else ''}", lines, as_json)


@command(app, "transfer")
def transfer_cmd(table: TableArg,
                 axis: Annotated[str, typer.Option(help="The scale axis: width, depth, tokens or top_k.")],
                 by: ByOpt = None,
                 proxy: Annotated[float | None, typer.Option(help="Proxy scale (default: the smallest).")] = None,
                 lr_col: LrColOpt = "lr", loss_col: LossColOpt = "val_loss", mapping: MapOpt = None,
                 where: WhereOpt = None, n_boot: CheckBootOpt = DEFAULT_N_BOOT, seed: SeedOpt = 0,
                 as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """LR transfer along an axis: eta* per scale, the drift slope with its interval, the regret of the
    transferred LR at each scale against the seed-to-seed noise floor (method.md section 9)."""
    from hyperp.checks.transfer import check_transfer  # noqa: PLC0415
    from hyperp.fitting.report import readable  # noqa: PLC0415

    results = check_transfer(read(table, mapping, where), axis, by=by or [], proxy=proxy, lr_col=lr_col,
                             loss_col=loss_col, n_boot=n_boot, seed=seed, source=str(table))

    def lines(r):
        head = ", ".join(f"{k}={v}" for k, v in r.group.items())
        out = [f"{head + ': ' if head else ''}slope d ln eta*/d ln {axis} = {r.slope:.3f} "
               f"[{r.slope_interval.low:.3f}, {r.slope_interval.high:.3f}], proxy {axis}={readable(r.proxy)}"]
        for p in r.points:
            o = p.optimum
            out.append(f"  {axis}={readable(p.scale)}: eta*={o.lr_opt:.4g} [{o.lr_interval.low:.3g}, {o.lr_interval.high:.3g}]"
                       f"{'' if o.bracketed else ' (not bracketed)'}, loss*={o.loss_opt:.4f}, regret at "
                       f"{p.transferred_lr:.4g}: {p.regret:.4f} nats ({p.regret_rel:.2%}), seed SD {p.noise_sd:.4f}")
        out += [f"  local slope {readable(s.low_scale)} -> {readable(s.high_scale)}: {s.slope:.3f} "
                f"[{s.interval.low:.3f}, {s.interval.high:.3f}]" for s in r.local_slopes]
        return out

    report(results, f"transfer along {axis}", lines, as_json, output)


@command(app, "ab")
def ab_cmd(table: TableArg,
           column: Annotated[str, typer.Option("--col", help="The option compared (a column: fused_gate_up, "
                                                             "depth_lr_groups, ...).")],
           baseline: Annotated[str, typer.Option(help="The baseline's value of --col (compared as text).")],
           variant: Annotated[str | None, typer.Option(help="The variant's value (default: the one other "
                                                            "value).")] = None,
           by: ByOpt = None,
           transfer_along: Annotated[str | None, typer.Option(
               help="The paper's protocol: read each arm at the base LR tuned at this --by column's smallest value "
                    "(default: each at its own optimum).")] = None,
           trend: Annotated[str | None, typer.Option(
               help="A numeric column (e.g. flops): the difference's trend against its log over the groups, "
                    "and where it crosses 0.")] = None,
           lr_col: LrColOpt = "lr", loss_col: LossColOpt = "val_loss", mapping: MapOpt = None,
           where: WhereOpt = None, as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """A/B of one option (or two schemes, --col param): the optimum loss with the variant minus with the baseline,
    per group of --by, its interval from the runs' noise (seeds, else the parabolas' residuals), and a verdict
    against 1% of the baseline's loss (pass: within it; fail: beyond it)."""
    from hyperp.checks.ab import check_ab  # noqa: PLC0415

    res = check_ab(read(table, mapping, where), column, baseline, variant, by=by or [], transfer_along=transfer_along,
                   trend_x=trend, lr_col=lr_col, loss_col=loss_col, source=str(table))

    def lines(r):
        def read(g) -> str:
            return "" if r.protocol == "tuned" else f", at the transferred LRs {g.read[0]:.4f} -> {g.read[1]:.4f}"

        out = [f"{', '.join(f'{k}={v}' for k, v in g.group.items()) or 'all runs'}: L* {g.baseline.loss_opt:.4f} "
               f"(lr {g.baseline.lr_opt:.3g}) -> {g.variant.loss_opt:.4f} (lr {g.variant.lr_opt:.3g}){read(g)}; {g.why}; "
               f"noise SD {g.sigma:.4f} ({g.sigma_source}, {g.dof} dof): {g.verdict}" for g in r.groups]
        if r.trend is not None:
            t = r.trend
            cross = (f"crosses 0 at {t.x} = {t.crossing:.3g} [{t.crossing_interval.low:.3g}, "
                     f"{t.crossing_interval.high:.3g}]" if t.crossing == t.crossing else "no crossing shown")
            out.append(f"trend: {t.slope:+.4f} [{t.interval.low:+.4f}, {t.interval.high:+.4f}] nats per e-fold of "
                       f"{t.x}; {cross}")
        return out

    report([res], f"A/B of {column}: {res.variant} against {res.baseline}", lines, as_json, output)


@command(app, "sphere")
def sphere_cmd(param: ParamOpt = "hyperp",
               steps: Annotated[int, typer.Option(min=1, help="Training steps of the tiny model.")] = 20,
               seeds: Annotated[int, typer.Option(min=1, help="Seeds (each its own init and batches); the verdict "
                                                              "needs their interval, so 1 is never a pass.")] = 3,
               as_json: JsonFlag = False) -> None:
    """Sphere facts on trained tiny models, over seeds: radius drift, and weight decay acting only at O(eta^2)."""
    from hyperp.checks.sphere import check_sphere  # noqa: PLC0415 (torch)

    res = check_sphere(param, steps, seeds)
    report([res], f"sphere check of {param} after {steps} steps, {seeds} seed{'s' if seeds > 1 else ''}",
           lambda r: [f"radius drift per seed: {', '.join(f'{v:.2e}' for v in r.drift.per_seed)}",
                      f"decay effect ratio at lr/10 vs lr per seed: {', '.join(f'{v:.4f}' for v in r.ratio.per_seed)}",
                      f"decided by: {r.decided_by}"], as_json)


@command(app, "moe-rms")
def moe_rms_cmd(top_ks: Annotated[list[int] | None, typer.Option(
                    "--top-k", help="A top_k (routed experts per token) to compare. Repeatable "
                                    "(default 1, 2, 4, 8).")] = None,
                sparsity: Annotated[int, typer.Option(min=1, help="S: top_k * S experts at every top_k.")] = 4,
                seeds: Annotated[int, typer.Option(min=1, help="Seeds (each its own init and batches); the verdict "
                                                               "needs their interval, so 1 is never a pass.")] = 3,
                steps: Annotated[int, typer.Option(min=0, help="Training steps before the second reading.")] = 64,
                lr: Annotated[float | None, typer.Option(help="Base LR (default: the scheme's).")] = None,
                param: ParamOpt = "hyperp",
                threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default).")] = 0,
                as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """SqrtGate's mechanism: the MoE output RMS across top_k with SqrtGate and classic gating, at init and after
    training the moe_granularity study's model, over seeds (pass when SqrtGate's top_k max/min RMS ratio
    interval lies within the band; classic gating is reported as the contrast)."""
    import sys  # noqa: PLC0415

    from hyperp.checks.moe_rms import TOP_KS, check_moe_rms  # noqa: PLC0415 (torch)

    def progress(done: int, total: int) -> None:
        if not as_json and sys.stderr.isatty():
            print(f"\rrun {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    res = check_moe_rms(tuple(top_ks or TOP_KS), sparsity, seeds, steps, lr, param, progress,
                        **({"threads": threads} if threads else {}))

    def num(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)  # None: a diverged cell's value (JSON has no NaN)

    def lines(r):
        cells = {(c["sqrt_gate"], c["moment"], c["top_k"]): c for c in r.cells}
        slopes = {(s["sqrt_gate"], s["moment"]): s for s in r.slopes}
        out = []
        for q in r.ratios:
            when = "init" if q.moment == "init" else f"after {r.steps} steps"
            rms = ", ".join(f"{k}: {num(cells[q.sqrt_gate, q.moment, k]['rms'], '.4f')}" for k in r.top_ks)
            s = slopes[q.sqrt_gate, q.moment]
            iv = "" if s["low"] is None else f" [{num(s['low'], '.3f')}, {num(s['high'], '.3f')}]"
            out.append(f"{'SqrtGate' if q.sqrt_gate else 'classic'} {when}: RMS by top_k {rms}; ratio "
                       f"{q.k_max}/{q.k_min} {q.value_text()} ({q.direction})"
                       + ("" if r.seeds < 2 else ", per seed " + ", ".join(f"{v:.3f}" for v in q.per_seed))
                       + f"; ln-ln slope {num(s['slope'], '.3f')}{iv}")
            local = [x for x in r.local_ratios if (x.sqrt_gate, x.moment) == (q.sqrt_gate, q.moment)]
            out.append("  adjacent ratios: " + ", ".join(f"{x.k_max}/{x.k_min} {x.value_text()}" for x in local))
        out += [f"{g.to_dict()['gating']}: {g.verdict}" + (f" (the band would say {g.band_verdict})"
                                                            if g.verdict != g.band_verdict else "")
                for g in r.gates]
        return out

    report([res], f"MoE output RMS across top_k {list(res.top_ks)} at sparsity {sparsity}, {param}, "
                  f"{seeds} seed{'s' if seeds > 1 else ''}", lines, as_json, output)


@command(app, "stability")
def stability_cmd(table: Annotated[Path, typer.Argument(
                      help="A sweep directory (runs/<id>/curves.parquet beside runs.parquet).")],
                  scale: Annotated[str | None, typer.Option(help="Scale column (default: the run setting that "
                                                                 "varies: n_params, tokens_run, width, ...).")] = None,
                  by: ByOpt = None,
                  all_runs: Annotated[bool, typer.Option("--all-runs", help="Every run, not only the best LR of "
                                                                             "each scale.")] = False,
                  where: WhereOpt = None, as_json: JsonFlag = False, output: OutOpt = None) -> None:
    """Stability indicators (attention/router Z, branch RMS, outliers) bounded or growing, within runs and
    across scale; by default on the best-LR run of each scale."""
    from hyperp.checks.stability import check_groups  # noqa: PLC0415
    from hyperp.fitting.table import FitInputError, filter_rows, parse_where  # noqa: PLC0415
    from hyperp.plots.stability import read_curves, stability_frame, varying_scale  # noqa: PLC0415

    curves, runs = read_curves(table)
    if runs is None:
        raise FitInputError(f"{table}: no runs.parquet beside the curves")
    runs = filter_rows(runs, parse_where(where or []), str(table))
    scale = scale or varying_scale(runs.rename(columns={"tokens": "tokens_run"}))
    df = stability_frame(curves, runs, scale=scale, source=str(table))
    results = check_groups(df, runs, scale=scale, by=by or [], all_runs=all_runs, source=str(table))
    report(results, f"stability indicators across {scale}",
           lambda r: [f"{t.name}: {t.decided_by} (growth per e-fold of {r.x}): {t.verdict}" for t in r.trends],
           as_json, output)


@command(app, "head")
def head_cmd(table: TableArg, mapping: MapOpt = None, where: WhereOpt = None, as_json: JsonFlag = False,
             output: OutOpt = None) -> None:
    """Head diagnostic (method.md section 10): runs of the sphere schemes whose final norm's gain grew far above 1,
    the sign that the LM head's fixed radius caps the logits."""
    from hyperp.checks.head import check_head  # noqa: PLC0415

    res = check_head(read(table, mapping, where), source=str(table))
    report([res], "LM head diagnostic (cap = head_init_std * width; gain = the final norm's largest RMS gain)",
           lambda r: [f"{x['param']} width {x['width']} std {x['head_init_std']:g}: cap {x['cap']:.3g}, gain "
                      f"{x['gain_max']:.3g} [{x['gain_low']:.3g}, {x['gain_high']:.3g}] ({x['seeds']} seeds): "
                      f"{x['cell']}" for x in r.runs], as_json, output)
