"""The report's scaling-law fits (`hyperp.fitting`): loss against compute per method with the CEL over a
baseline (both protocols: each size at its own best LR, and the proxy's LR transferred), and Chinchilla's
L(N, D) where both the model size and the token budget vary; each with its warnings and figure."""

from __future__ import annotations

from hyperp.fitting.compute import MIN_POINTS, ComputeComparison, compare_methods
from hyperp.fitting.defaults import CHINCHILLA_N_BOOT
from hyperp.fitting.report import fmt
from hyperp.plots.style import number
from hyperp.report.doc import Block, Heading, Para, table
from hyperp.report.ledger import Sweep
from hyperp.report.parts import Options, Part, attempt, figure, flops_text, loss_text, value_interval, warnings_block

BASELINES = ("muon", "adamw")  # the paper's baselines: the first present is the default CEL baseline
SIZE_AXES = ("depth", "width")  # cell columns that set a model's size
MIN_CHINCHILLA_POINTS = 6  # distinct (N, D) pairs `predict` asks of a Chinchilla law (5 parameters)


def default_baseline(methods) -> str:
    methods = sorted(str(m) for m in methods)
    return next((b for b in BASELINES if b in methods), methods[0])


# ---------------------------------------------------------------- loss against compute


def compute(sw: Sweep, options: Options) -> Part:
    """`compare_methods` where several methods each have >= MIN_POINTS model sizes and nothing else varies."""
    why = _compute_skip(sw)
    if why:
        return Part().skip("compute fits", why)
    return attempt("compute fits", lambda: _compute(sw, options))


def _compute_skip(sw: Sweep) -> str:
    if "param" not in sw.cells:
        return "one method only: CEL compares methods (param does not vary)"
    if "flops" not in sw.runs.columns or "n_params" not in sw.runs.columns:
        return "the ledger has no flops or n_params column"
    others = [c for c in sw.cells if c not in ("param", *SIZE_AXES)]
    if others:
        return f"the cells also vary {', '.join(others)}: a method's compute law needs its model sizes alone"
    done = sw.runs[sw.runs["status"] == "completed"]
    sizes = done.groupby("param")["n_params"].nunique().reindex(sw.runs["param"].unique(), fill_value=0)
    if sizes.min() < MIN_POINTS:
        return (f"{sizes.idxmin()} has {sizes.min()} model size(s) with a completed run; L = A C^-b + E needs "
                f"{MIN_POINTS}")
    return ""


def _compute(sw: Sweep, options: Options) -> Part:
    from hyperp.checks.transfer import transferred_runs  # noqa: PLC0415

    baseline = options.baseline or default_baseline(sw.runs["param"].unique())
    size = next((c for c in sw.cells if c in SIZE_AXES), "n_params")
    kw = dict(n_boot=options.n_boot, seed=options.seed, source=str(sw.dir))
    part = Part(blocks=[Heading(f"Loss against compute, CEL over {baseline}", 3), Para(
        f"Per method L(C) = A C^-b + E (bounded least squares, residual bootstrap), and the compute efficiency "
        f"leverage of each method over {baseline} at {baseline}'s runs (the compute {baseline} needs for its loss "
        f"over the compute the method's law needs for it).")], reported=["compute fits"])
    per_size = compare_methods(sw.runs, baseline, best_of=[size], **kw)
    part.add(_protocol(sw, per_size, size, "per-size", f"each {size} at its own best LR (seeds averaged): "
                                                 f"hyperp fit compute {sw.dir} --baseline {baseline} --best-of {size}",
                       options))
    if size in SIZE_AXES:
        runs = transferred_runs(sw.runs, size, by=["param"], keep=["flops"], source=str(sw.dir))
        part.add(_protocol(sw, compare_methods(runs, baseline, **kw), size, "transferred",
                           f"the paper's protocol, the proxy's eta* at every {size}: hyperp fit compute {sw.dir} "
                           f"--baseline {baseline} --transfer-along {size}", options))
    return part


def _protocol(sw: Sweep, res: ComputeComparison, size: str, name: str, what: str, options: Options) -> Part:
    from hyperp.plots import plot_compute  # noqa: PLC0415 (matplotlib)

    sizes = _baseline_sizes(sw, res.baseline, size)
    level = next(iter(res.fits.values())).intervals["b"].level
    fits = [[m, fmt(f.A, 3), value_interval(f.b, f.intervals["b"].low, f.intervals["b"].high),
             value_interval(f.E, f.intervals["E"].low, f.intervals["E"].high), fmt(f.r2, 3), f.n_points,
             "-" if f.holdout is None else f"{fmt(f.holdout.predicted)} vs {fmt(f.holdout.observed)} "
                                           f"({f.holdout.rel_err:+.2%})"] for m, f in res.fits.items()]
    cel = [[p.method, sizes.get(p.compute, "-"), flops_text(p.compute), loss_text(p.baseline_loss),
            value_interval(p.cel, p.interval.low, p.interval.high)] for p in res.cel_points]
    blocks: list[Block] = [
        Para(what, lead=f"{name.capitalize()}:"),
        table(["method", "A", f"b [{level:.0%}]", f"E [{level:.0%}]", "R^2", "sizes", "largest size held out: "
               "predicted vs observed"], fits, f"L(C) = A C^-b + E, {name}", id=f"compute-fits:{name}"),
        table(["method", f"{res.baseline}'s {size}", f"{res.baseline}'s run (FLOPs)", f"{res.baseline}'s loss",
               f"CEL [{level:.0%}]"], cel, f"CEL over {res.baseline}, {name}", id=f"cel:{name}"),
        *warnings_block(res.warnings),
        figure(f"compute-{name}", lambda: plot_compute(res), f"{sw.name}: loss against compute and CEL over "
                                                     f"{res.baseline}, {name}", options)]
    return Part(blocks=blocks)


def _baseline_sizes(sw: Sweep, baseline: str, size: str) -> dict[float, str]:
    """{FLOPs of a baseline run: its model size} where one size has those FLOPs (every size at one budget)."""
    if size not in sw.runs.columns:
        return {}
    runs = sw.runs[sw.runs["param"].astype(str) == baseline]
    per_flops = runs.groupby("flops")[size].unique()
    return {float(f): number(v[0]) for f, v in per_flops.items() if len(v) == 1}


# ---------------------------------------------------------------- Chinchilla


def chinchilla(sw: Sweep, options: Options) -> Part:
    """`fit_chinchilla` per method where the model size and the token budget both vary."""
    cols = {"n_params", "tokens"}
    if not cols <= set(sw.runs.columns):
        return Part().skip("Chinchilla fit", "the ledger has no n_params or tokens column")
    done = sw.runs[sw.runs["status"] == "completed"]
    fixed = [c for c in sorted(cols) if done[c].nunique() < 2]
    pairs = len(done[sorted(cols)].drop_duplicates())
    if fixed:
        return Part().skip("Chinchilla fit", f"L(N, D) needs both N and D to vary; {fixed[0]} has one value "
                                             f"among the completed runs")
    if pairs < MIN_CHINCHILLA_POINTS:
        return Part().skip("Chinchilla fit", f"L(N, D) has 5 parameters: it needs >= {MIN_CHINCHILLA_POINTS} "
                                             f"(N, D) pairs, the completed runs have {pairs}")
    methods = sorted(done["param"].dropna().unique()) if "param" in done.columns else [None]
    part = Part(blocks=[Heading("Chinchilla approach 3: L(N, D) = E + A/N^alpha + B/D^beta", 3)],
                reported=["Chinchilla fit"])
    for m in methods:
        part.add(attempt(f"Chinchilla fit of {m}", lambda m=m: _chinchilla(sw, m, options)))
    return part


def _chinchilla(sw: Sweep, method: str | None, options: Options) -> Part:
    from hyperp.fitting.chinchilla import chinchilla_inputs, fit_chinchilla  # noqa: PLC0415
    from hyperp.plots import plot_chinchilla  # noqa: PLC0415 (matplotlib)

    runs = sw.runs if method is None else sw.runs[sw.runs["param"] == method]
    n, d, loss = points = chinchilla_inputs(runs, source=str(sw.dir))
    fit = fit_chinchilla(n, d, loss, n_boot=min(options.n_boot, CHINCHILLA_N_BOOT), seed=options.seed,
                         notes=points.notes)
    names = ("E", "A", "B", "alpha", "beta", "exponent_n", "exponent_d")
    rows = [[k, value_interval(getattr(fit, k), fit.intervals[k].low, fit.intervals[k].high)] for k in names]
    label = method or sw.name
    keep = fit.kept
    return Part(blocks=[table(["parameter", "value [interval]"], rows, f"{label}: {fit.n_points} (N, D) points",
                              id=f"chinchilla:{label}"),
                        *warnings_block(fit.warnings),
                        figure(f"chinchilla-{label}", lambda: plot_chinchilla(fit, n[keep], d[keep], loss[keep]),
                               f"{sw.name}: iso-loss contours of {label}'s L(N, D)", options)])
