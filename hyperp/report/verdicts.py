"""The report's checks (`hyperp.checks`): LR transfer along each axis that varies, stability where curves were
logged, the LM head where its init std varies; each with its verdict, the interval that decided it and the
check's figure. The checks that train models of their own (coord, sphere) read no ledger: skipped, said so."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from hyperp.checks.transfer import AXES, REGRET_TOL, SLOPE_TOL, TransferCheck, check_transfer
from hyperp.errors import FitInputError
from hyperp.fitting.lr import LrOptima
from hyperp.fitting.report import fmt
from hyperp.plots.style import group_label, number
from hyperp.report.doc import Heading, Para, table
from hyperp.report.ledger import Sweep
from hyperp.report.parts import (Options, Part, attempt, figure, loss_text, slope_text, value_interval,
                                 verdict_blocks, warnings_block)

GAIN = "final_norm_gain_max"  # the ledger column of a run's largest final-norm gain (the head check's)
OWN_MODELS = "trains tiny models of its own (hyperp check {}); a ledger holds nothing it reads"


def not_from_ledgers() -> Part:
    return Part(skipped=[(f"{c} check", OWN_MODELS.format(c)) for c in ("coord", "sphere")])


# ---------------------------------------------------------------- transfer


def transfer(sw: Sweep, options: Options, lr: LrOptima | None) -> Part:
    """`check_transfer` along every transfer axis among the cell columns, by the other cell columns."""
    if not sw.axes:
        return Part().skip("transfer check", f"no transfer axis ({', '.join(AXES)}) varies among the cells "
                                             f"(cell columns: {', '.join(sw.cells) or 'none'})")
    if lr is None:
        return Part().skip("transfer check", "no cell has an LR optimum (see the LR optima)")
    part = Part()
    for axis in sw.axes:
        part.add(attempt(f"transfer along {axis}", lambda axis=axis: _transfer(sw, axis, options, lr)))
    return part


def _transfer(sw: Sweep, axis: str, options: Options, lr: LrOptima) -> Part:
    by = [c for c in sw.cells if c != axis]
    runs, left_out = _usable(sw.runs, axis, by, lr)
    if runs.empty:
        raise FitInputError(f"no group has two values of {axis} with an LR optimum")
    checks = check_transfer(runs, axis, by=by, n_boot=options.n_boot, seed=options.seed, source=str(sw.dir))
    along = f"{axis}" + (f", by {', '.join(by)}" if by else "")
    part = Part(blocks=[Heading(f"LR transfer along {along}", 3), Para(_transfer_intro(sw, axis, by, checks)),
                        _slopes_table(axis, by, checks)], reported=[f"transfer along {axis}"], skipped=left_out)
    for c in checks:
        blocks, verdict = verdict_blocks(f"transfer along {axis}", group_label(c.group), c)
        part.blocks += blocks
        part.verdicts.append(verdict)
    part.blocks.append(_scales_table(axis, by, checks))
    part.blocks += warnings_block(w for c in checks for w in c.warnings)

    def draw():
        from hyperp.plots import plot_transfer  # noqa: PLC0415 (matplotlib)
        from hyperp.plots.transfer import method_name  # noqa: PLC0415

        return plot_transfer(checks, name=None if by else method_name(runs))

    part.blocks.append(figure(f"transfer-{axis}", draw, f"{sw.name}: eta* per {axis} with the drift and its "
                                                        f"allowed cone (left), the regret of the proxy's eta* (right)",
                              options))
    return part


def _usable(runs: pd.DataFrame, axis: str, by: list[str], lr: LrOptima) -> tuple[pd.DataFrame, list]:
    """The runs of the cells with an LR optimum, in the groups of `by` with two scales or more; and what was
    left out, with the reason (a sweep still running has cells with too few LRs yet)."""
    keep = pd.Series(True, index=runs.index)
    for s in lr.skipped:
        keep &= ~pd.concat([runs[k].astype(str) == str(v) for k, v in s.items() if k != "n_points"], axis=1).all(axis=1)
    runs = runs[keep]
    left = [(f"transfer along {axis}: {group_label({k: v for k, v in s.items() if k != 'n_points'})}",
             f"fewer than 3 learning rates ({s['n_points']} runs)") for s in lr.skipped]
    if by:
        scales = runs.groupby(by)[axis].transform("nunique")
        for keys, g in runs[scales < 2].groupby(by):
            keys = keys if isinstance(keys, tuple) else (keys,)
            left.append((f"transfer along {axis}: {group_label(dict(zip(by, keys)))}",
                         f"one {axis} with an LR optimum ({number(g[axis].iloc[0])}): nothing to transfer to"))
        runs = runs[scales >= 2]
    return runs, left


def _transfer_intro(sw: Sweep, axis: str, by: list[str], checks: list[TransferCheck]) -> str:
    follows = [c for c, lead in sw.follows.items() if lead == axis]
    co = f" ({', '.join(follows)} follow{'s' if len(follows) == 1 else ''} {axis}: one value per {axis})" \
        if follows else ""
    proxy = number(checks[0].proxy) if checks else "?"
    flags = "".join(f" --by {b}" for b in by)
    return (f"The proxy is {axis} = {proxy}{co}; its eta* is reused at every {axis} (each scheme's rule maps the "
            f"base LR to its groups). Verdicts by interval (method.md section 11): fail when some regret's lower "
            f"bound exceeds its allowance ({REGRET_TOL:.0%} of the loss) or the slope's whole interval lies beyond "
            f"+-{SLOPE_TOL}; pass only when every {axis} is bracketed, the slope's interval lies within +-{SLOPE_TOL} "
            f"and every regret's upper bound within its allowance; inconclusive otherwise. The same numbers: "
            f"hyperp check transfer {sw.dir} --axis {axis}{flags}.")


def _group_cells(c: TransferCheck, by: list[str]) -> list[str]:
    return [number(c.group[k]) for k in by]


def _slopes_table(axis: str, by: list[str], checks: list[TransferCheck]):
    """Each group's drift of eta* along the axis (the whole range and each step), and its verdict."""
    level = f"{checks[0].slope_interval.level:.0%}" if checks else "95%"
    rows = [[*_group_cells(c, by), slope_text(c.slope, c.slope_interval.low, c.slope_interval.high),
             "; ".join(f"{number(s.low_scale)} -> {number(s.high_scale)}: "
                       f"{slope_text(s.slope, s.interval.low, s.interval.high)}" for s in c.local_slopes) or "-",
             c.verdict, c.decided_by or "-"] for c in checks]
    return table([*by, f"slope of ln eta* on ln {axis} [{level}]", f"local slopes [{level}]", "verdict",
                  "decided by"], rows, f"LR transfer along {axis}: the drift of eta* and the verdict",
                 id=f"slopes:{axis}")


def _scales_table(axis: str, by: list[str], checks: list[TransferCheck]):
    """Each scale of each group: its optimum, and the regret of the proxy's eta* there against its allowance."""
    level = f"{checks[0].slope_interval.level:.0%}" if checks else "95%"
    rows = [[*_group_cells(c, by), number(p.scale),
             value_interval(p.optimum.lr_opt, p.optimum.lr_interval.low, p.optimum.lr_interval.high),
             "yes" if p.optimum.bracketed else f"no: {p.optimum.reason}", loss_text(p.optimum.loss_opt),
             value_interval(p.regret, p.regret_interval.low, p.regret_interval.high),
             f"{p.regret_rel:.2%}" if pd.notna(p.regret_rel) else "-", fmt(p.allowance, 3), fmt(p.noise_sd, 3),
             p.optimum.n_points] for c in checks for p in c.points]
    caption = f"LR transfer along {axis}: the optimum at each value of {axis} and the regret of the proxy's eta* there"
    return table([*by, axis, f"eta* [{level}]", "bracketed", "loss*", f"regret at the proxy's eta*, nats [{level}]",
                  "regret / loss*", "allowance", "seed SD", "runs"], rows, caption, id=f"transfer:{axis}")


# ---------------------------------------------------------------- stability


def stability(sw: Sweep, options: Options) -> Part:
    """`check_groups` (the best-LR runs of each scale, by the other cell columns) where the runs logged curves,
    and each group's indicators figure."""
    curves = sw.curves
    if curves is None:
        return Part().skip("stability check", "no run of the ledger has curves (runs/<id>/curves.parquet)")
    return attempt("stability check", lambda: _stability(sw, curves, options))


def _scale(sw: Sweep) -> str:
    numeric = [c for c in sw.cells if pd.api.types.is_numeric_dtype(sw.runs[c])
               and not pd.api.types.is_bool_dtype(sw.runs[c])]
    return next(iter([*sw.axes, *numeric]), "n_params")


def _stability(sw: Sweep, curves: pd.DataFrame, options: Options) -> Part:
    from hyperp.checks.stability import GROWTH_TOL, SCALE_TOL, check_groups, checked_runs  # noqa: PLC0415
    from hyperp.plots.stability import stability_frame  # noqa: PLC0415

    scale = _scale(sw)
    key = "tokens_run" if scale == "tokens" else scale  # the runs' budget, beside the curves' tokens
    by = [c for c in sw.cells if c != scale]
    groups = checked_runs(sw.runs, key, by)
    read = curves[curves["run_id"].isin({i for _, ids in groups for i in ids})]  # the runs the check reads
    df = stability_frame(read, sw.settings(), scale=key, source=str(sw.dir))
    checks = check_groups(df, sw.runs, scale=key, by=by, source=str(sw.dir))
    part = Part(blocks=[Heading(f"Stability across {scale}" + (f", by {', '.join(by)}" if by else ""), 3), Para(
        f"On the best-LR runs of each {scale} (every seed of that LR): each indicator's growth per e-fold of tokens "
        f"in the second half of training against {GROWTH_TOL}, and the slope of its final value on ln {scale} "
        f"against {SCALE_TOL}, each by its 95% interval. hyperp check stability {sw.dir} --scale {key}"
        + "".join(f" --by {b}" for b in by) + ".")], reported=["stability"])
    for res, (keys, ids) in zip(checks, groups):
        group = (df[df["run_id"].isin(ids)], key, [t.name for t in res.trends])  # the indicators it judged
        part.add(_stability_group(sw, group, res, group_label(keys), options))
    return part


def _stability_group(sw: Sweep, group: tuple, res, label: str, options: Options) -> Part:
    df, scale, metrics = group
    res = dataclasses.replace(res, why=res.why.removeprefix(f"{label}: ")) if label else res
    blocks, verdict = verdict_blocks("stability", label, res)
    rows = [[t.name, t.verdict, t.decided_by] for t in res.trends]
    name = "stability" + (f"-{label.replace('=', '-').replace(', ', '-')}" if label else "")

    def draw():
        from hyperp.plots import plot_stability  # noqa: PLC0415 (matplotlib)

        return plot_stability(df, scale=scale, metrics=metrics, title=f"Stability indicators"
                              f"{', ' + label if label else ''}: the best LR of each {scale}")

    named = f"stability:{_id(label)}" if label else "stability"
    blocks += [table(["indicator", "verdict", "decided by"], rows, id=named),
               *warnings_block(res.warnings),
               figure(name, draw, f"{sw.name}: stability indicators against tokens{', ' + label if label else ''}",
                      options)]
    return Part(blocks=blocks, verdicts=[verdict])


# ---------------------------------------------------------------- head


def head(sw: Sweep, options: Options, lr: LrOptima | None = None) -> Part:
    """`check_head` where the LM head's init std varies, its cells and figure, and each cell's best run beside its
    LR optimum (`lr`)."""
    if "head_init_std" not in sw.cells:
        return Part().skip("head check", "head_init_std does not vary: the check compares the final norm's gain "
                                         "across LM head init stds")
    return attempt("head check", lambda: _head(sw, options, lr))


def _head(sw: Sweep, options: Options, lr: LrOptima | None) -> Part:
    from hyperp.checks.head import GAIN_TOL, check_head  # noqa: PLC0415

    res = check_head(sw.runs, source=str(sw.dir))
    blocks, verdict = verdict_blocks("head", "", res)
    runs = pd.DataFrame(list(res.runs))
    rows = [[p, number(w), number(s), number(g["cap"].iloc[0]), len(g), number(g["gain_max"].max()),
             ", ".join(f"{n} {state}" for state, n in g["cell"].value_counts().items())]
            for (p, w, s), g in runs.groupby(["param", "width", "head_init_std"])]
    part = Part(blocks=[Heading("LM head radius", 3), Para(
        f"Per run of a sphere scheme (hyperp, muonh): the cap on a logit at init (head_init_std x width) and the "
        f"largest RMS of the final norm's gain; a cell binds when its gain interval lies wholly above {GAIN_TOL:g}x "
        f"(method.md section 10). hyperp check head {sw.dir}."), *blocks,
        table(["param", "width", "head_init_std", "cap", "runs", "largest gain", "cells"], rows, id="head"),
        *warnings_block(res.warnings), _head_best(sw, lr),
        figure("head", lambda: _plot_head(sw), f"{sw.name}: best loss and its run's final norm gain against the "
                                               f"head's init std", options)],
        verdicts=[verdict], reported=["head check"])
    return part


def _plot_head(sw: Sweep):
    from hyperp.plots.head import plot_head  # noqa: PLC0415 (matplotlib)

    return plot_head(sw.runs, source=str(sw.dir))


def _head_best(sw: Sweep, lr: LrOptima | None):
    """Each cell's best LR (its seeds averaged, as the head figure draws it): its loss and its final norm's gain,
    beside the cap and the cell's LR optimum."""
    from hyperp.fitting.table import fit_rows, lowest  # noqa: PLC0415

    done = fit_rows(sw.runs, source=str(sw.dir))
    done = done[np.isfinite(pd.to_numeric(done["val_loss"], errors="coerce"))]
    gains = [GAIN] if GAIN in done.columns else []
    best = lowest(done, sw.cells, "val_loss", also_mean=gains).sort_values(sw.cells)
    optima = {tuple(str(o.group[k]) for k in sw.cells): o for o in (lr.optima if lr else ())}
    rows = []
    for r in best.to_dict("records"):
        o = optima.get(tuple(str(r[k]) for k in sw.cells))
        gain = r.get(GAIN, math.nan)
        cap = number(r["head_init_std"] * r["width"]) if "width" in r else "-"
        rows.append([*(number(r[k]) for k in sw.cells), cap, number(r["lr"]),
                     loss_text(r["val_loss"]), f"{gain:.2f}x" if pd.notna(gain) else "-",
                     value_interval(o.lr_opt, o.lr_interval.low, o.lr_interval.high) if o else "-"])
    level = next((f"{o.lr_interval.level:.0%}" for o in optima.values()), "95%")
    return table([*sw.cells, "cap (head_init_std x width)", "best lr", "its loss", "its final norm gain",
                  f"eta* [{level} interval]"], rows,
                 "Each cell's best LR (its seeds' mean loss and gain) and its LR optimum", id="head-best")


def _id(label: str) -> str:
    """A group label as part of a table id: 'param=hyperp, width=32' -> 'param=hyperp,width=32'."""
    return label.replace(", ", ",")
