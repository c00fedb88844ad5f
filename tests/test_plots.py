"""Figures: every plot kind renders to PNG and SVG from its fit result, through the API and the CLI."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyperp.fitting import compare_methods, fit_chinchilla, fit_law, fit_optimal_lr
from hyperp.cli.plot import app
from hyperp.plots.fits import plot_chinchilla, plot_compute, plot_law, plot_lr
from hyperp.plots.stability import indicator_columns, plot_stability, stability_frame
from hyperp.plots.style import save_figure

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep_dir(tmp_path):
    """A sweep directory: runs.parquet (two methods, three sizes, LR sweeps) and curves.parquet."""
    rng = np.random.default_rng(0)
    runs, curves = [], []
    for param, k in (("muon", 1.0), ("hyperp", 1.6)):
        for n in (1e7, 3e7, 1e8):
            best = 0.02 * (n / 1e7) ** -0.3
            for lr in best * np.geomspace(0.25, 4, 6):
                flops = 6 * n * 20 * n
                rid = f"{param}-{n:g}-{lr:.3g}"
                runs.append({"run_id": rid, "param": param, "n_params": n, "tokens": 20 * n, "flops": flops,
                             "lr": lr, "status": "completed",
                             "val_loss": 1.7 + 400 * (k * flops) ** -0.15 + 0.04 * np.log(lr / best) ** 2})
                for step in range(1, 11):
                    curves.append({"run_id": rid, "step": step, "tokens": step * 2 * n, "train_loss": 4 / step,
                                   "attn_z": 5 + lr * step, "grad_norm": 1 / step, "my_indicator": rng.random()})
            runs.append({"run_id": f"{param}-{n:g}-div", "param": param, "n_params": n, "tokens": 20 * n,
                         "flops": 6 * n * 20 * n, "lr": best * 30, "status": "diverged", "val_loss": np.nan})
    pd.DataFrame(runs).to_parquet(tmp_path / "runs.parquet")
    pd.DataFrame(curves).to_parquet(tmp_path / "curves.parquet")
    return tmp_path


def check_image(path):
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    else:
        assert b"<svg" in data[:2000] and len(data) > 5_000


def test_lr_plot_stars_one_optimum_per_group(tmp_path):
    res = fit_optimal_lr(pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet"), by=["param", "n_params"], n_boot=0)
    fig = plot_lr(res)
    ax = fig.axes[0]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == len(res.optima) == 6
    assert len(fig.legends[0].get_texts()) == 6
    for suffix in (".png", ".svg"):
        check_image(save_figure(fig, tmp_path / f"lr{suffix}"))


def test_law_plot_shows_exponent_and_band(tmp_path):
    laws = fit_law(pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet"), "n_params", "lr_opt", by=["param"],
                   n_boot=100)
    fig = plot_law(laws)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(f"b = {lf.fit.b:.3f}" in t for lf, t in zip(laws, texts))
    assert len(ax.collections) == len(laws)  # one bootstrap band per law
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_compute_plot_has_loss_and_cel_panels(tmp_path):
    res = compare_methods(pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet"), "muon", best_of=["n_params"],
                          n_boot=50)
    fig = plot_compute(res)
    loss_ax, cel_ax = fig.axes[:2]
    assert "CEL" in cel_ax.get_ylabel() and loss_ax.get_xscale() == "log"
    cel_line = [ln for ln in cel_ax.lines if ln.get_label() == "hyperp"][0]
    assert np.allclose(cel_line.get_ydata(), 1.6, rtol=0.05)  # the synthetic methods differ by 1.6x compute


def chinchilla_figure(n_sizes: int, n_ratios: int):
    """A Chinchilla fit of a synthetic grid of runs (a few starts) and its figure."""
    n, ratio = np.meshgrid(np.geomspace(5e7, 5e9, n_sizes), np.geomspace(5, 100, n_ratios))
    n, d = n.ravel(), (n * ratio).ravel()
    loss = 1.8 + 480 / n**0.35 + 2100 / d**0.37
    starts = np.array(list(itertools.product([5.0], [5.0, 10.0], [0.0, 0.5], [0.5], [0.5])))
    fit = fit_chinchilla(n, d, loss, starts=starts, n_boot=0)
    return n, d, loss, fit, plot_chinchilla(fit, n, d, loss)


def test_chinchilla_plot_draws_contours_and_frontier(tmp_path):
    n, d, loss, fit, fig = chinchilla_figure(6, 5)
    ax = fig.axes[0]
    frontier = [ln for ln in ax.lines if "frontier" in ln.get_label()][0]
    c = frontier.get_xdata()
    assert np.allclose(frontier.get_ydata(), fit.optimal_allocation(c)[0])
    check_image(save_figure(fig, tmp_path / "chin.svg"))


def test_stability_joins_scale_from_runs_and_finds_indicators(tmp_path):
    d = sweep_dir(tmp_path)
    curves, runs = pd.read_parquet(d / "curves.parquet"), pd.read_parquet(d / "runs.parquet")
    df = stability_frame(curves, runs)
    assert df["n_params"].notna().all()
    assert indicator_columns(df) == ["attn_z", "grad_norm", "my_indicator"]
    fig = plot_stability(df)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()][:3] == ["attn_z", "grad_norm", "my_indicator"]
    with pytest.raises(Exception, match="n_params"):
        stability_frame(curves, None)


@pytest.mark.parametrize("cmd", [
    ["lr", "{d}", "--by", "param", "--by", "n_params"],
    ["law", "{d}", "--x", "n_params", "--y", "lr_opt", "--by", "param", "-B", "50"],
    ["compute", "{d}", "--baseline", "muon", "--best-of", "n_params", "-B", "50"],
    ["stability", "{d}"],
])
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_cli_writes_png_and_svg(tmp_path, cmd, suffix):
    d = sweep_dir(tmp_path)
    out = tmp_path / f"fig{suffix}"
    res = runner.invoke(app, [c.format(d=d) for c in cmd] + ["-o", str(out)])
    assert res.exit_code == 0, res.output
    check_image(out)


def test_cli_plot_errors_are_clean(tmp_path):
    d = sweep_dir(tmp_path)
    res = runner.invoke(app, ["lr", str(d), "-o", str(tmp_path / "fig.jpg")])
    assert res.exit_code == 2 and ".png" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["compute", str(d), "--baseline", "nope", "-o", str(tmp_path / "f.png")])
    assert res.exit_code == 2 and "baseline 'nope' not found" in res.output


def test_cli_chinchilla_plot_with_column_mapping(tmp_path):
    n, ratio = np.meshgrid(np.geomspace(5e7, 5e9, 5), np.geomspace(5, 100, 4))
    n, d = n.ravel(), (n * ratio).ravel()
    loss = 1.8 + 480 / n**0.35 + 2100 / d**0.37
    pd.DataFrame({"Model Size": n, "Training FLOP": 6 * n * d, "loss": loss}).to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "chin.png"
    res = runner.invoke(app, ["chinchilla", str(tmp_path / "c.csv"), "-m", "Model Size=n_params",
                              "-m", "Training FLOP=flops", "-m", "loss=val_loss", "-o", str(out)])
    assert res.exit_code == 0, res.output
    check_image(out)


def test_stability_reads_a_sweep_layout_and_a_trainer_output(tmp_path):
    """Sweeps keep curves in runs/<run_id>/curves.parquet (no run_id column); a trainer output has one run."""
    (tmp_path / "flat").mkdir()
    src = sweep_dir(tmp_path / "flat")
    curves, runs = pd.read_parquet(src / "curves.parquet"), pd.read_parquet(src / "runs.parquet")
    sweep = tmp_path / "sweep"
    for rid, c in curves.groupby("run_id"):
        (sweep / "runs" / rid).mkdir(parents=True)
        c.drop(columns="run_id").to_parquet(sweep / "runs" / rid / "curves.parquet")
    runs.to_parquet(sweep / "runs.parquet")
    out = tmp_path / "sweep.png"
    res = runner.invoke(app, ["stability", str(sweep), "-o", str(out), "--where", "param=hyperp"])
    assert res.exit_code == 0, res.output
    check_image(out)
    one = tmp_path / "trainer"
    one.mkdir()
    rid = runs["run_id"].iloc[0]
    curves[curves["run_id"] == rid].drop(columns="run_id").to_parquet(one / "curves.parquet")
    runs[runs["run_id"] == rid].to_parquet(one / "runs.parquet")
    res = runner.invoke(app, ["stability", str(one), "-o", str(tmp_path / "one.svg")])
    assert res.exit_code == 0, res.output
    check_image(tmp_path / "one.svg")


def test_readable_numbers_and_scheme_families():
    from hyperp.plots.style import families, readable

    assert [readable(v) for v in (65536, 2**20, 131072, 1e6, 6e18, 0.0213)] == ["64k", "1M", "128k", "1M", "6e18",
                                                                                 "0.0213"]
    groups = [{"param": p, "tokens": t} for p in ("hyperp", "muonh") for t in (2**17, 2**18, 2**19)]
    styles = families(groups)
    colors = [np.array(c[0] if not isinstance(c[0], str) else mpl_rgb(c[0])) for c in styles]
    # one marker per budget, shared across schemes; within a scheme the colour darkens with the budget
    assert [s[1] for s in styles[:3]] == [s[1] for s in styles[3:]] and len({s[1] for s in styles}) == 3
    for fam in (colors[:3], colors[3:]):
        assert fam[0].sum() > fam[1].sum() > fam[2].sum()
    assert not np.allclose(colors[2], colors[5])  # two schemes, two hues


def mpl_rgb(c):
    from matplotlib.colors import to_rgb

    return to_rgb(c)


def test_compute_plot_marks_the_held_out_point_and_lr_plot_draws_intervals(tmp_path):
    c = np.geomspace(1e15, 1e19, 5)
    laws = pd.DataFrame([{"param": p, "flops": ci, "val_loss": 1.7 + 400 * (k * ci) ** -0.15, "status": "completed"}
                         for p, k in (("muon", 1.0), ("hyperp", 1.6)) for ci in c])
    res = compare_methods(laws, "muon", n_boot=50)
    assert all(f.holdout is not None for f in res.fits.values())
    labels = [t.get_text() for t in plot_compute(res).axes[0].get_legend().get_texts()]
    assert sum("held out" in t for t in labels) == len(res.fits)
    df = pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet")
    opt = fit_optimal_lr(df, by=["param", "n_params"], n_boot=100)
    ax = plot_lr(opt).axes[0]
    assert len(ax.collections) >= sum(np.isfinite(o.lr_interval.low) for o in opt.optima) > 0


def test_stability_colours_by_the_setting_that_varies(tmp_path):
    from hyperp.plots.stability import varying_scale

    curves = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "n_params": 1e6, "lr": [0.01, 0.01, 0.02, 0.02],
                           "tokens": [1, 2, 1, 2], "attn_z": [1.0, 2.0, 1.5, 2.5]})
    assert varying_scale(curves) == "lr"
    assert varying_scale(curves.assign(n_params=[1e6, 1e6, 2e6, 2e6])) == "n_params"


# ---------------------------------------------------------------- figures that read right (issue 22, item 5)

def legend_texts(fig) -> list[str]:
    """Every legend text of a figure: its axes' legends and its own."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def written_value(text: str) -> float:
    """The number a label spells: 16.5k, 1.2M, 6e18, 3e-3 (k and M as 1e3 and 1e6)."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1.0)
    return float(text[:-1] if scale != 1.0 else text) * scale


def test_number_format_is_compact_and_means_its_value():
    from hyperp.plots.style import number

    assert [number(v) for v in (16512.3, 1.2e6, 3e-3, 0.0213, 65536, 6e18, 999.7)] == [
        "16.5k", "1.2M", "3e-3", "0.0213", "64k", "6e18", "1k"]
    for v in np.geomspace(1e-6, 1e12, 97) * 1.2345:
        text = number(v)
        assert "e+" not in text and "e-0" not in text, text
        # a binary suffix (64k = 65536) reads within 5% of the decimal one
        assert written_value(text) == pytest.approx(v, rel=0.05), (v, text)


def curves_of(runs: list[dict]) -> pd.DataFrame:
    """Curves of the given runs (one dict of settings per run), 5 logged steps each; run i's attn_z starts at
    i + 0.1, so that a drawn line tells which run it is."""
    return pd.DataFrame([{**r, "step": s, "tokens": 1000 * s, "attn_z": i + 0.1 * s} for i, r in enumerate(runs)
                         for s in range(1, 6)])


def line_colors_by(fig, df: pd.DataFrame, column: str) -> dict:
    """{value of `column`: set of colours} over the first panel's lines (one per run)."""
    values = df.drop_duplicates("run_id")[column].tolist()
    lines = fig.axes[0].lines
    assert len(lines) == len(values)
    out: dict = {}
    for ln in lines:
        run = round(ln.get_ydata()[0] - 0.1)
        out.setdefault(values[run], set()).add(tuple(np.round(mpl_rgb(ln.get_color()), 6)))
    return out


def test_stability_colours_runs_by_the_lr_when_only_the_lr_varies():
    lrs = (1e-3, 3e-3, 0.01)
    df = curves_of([{"run_id": f"r{i}", "n_params": 16512, "lr": lr, "seed": 0} for i, lr in enumerate(lrs)])
    fig = plot_stability(df)
    colors = line_colors_by(fig, df, "lr")
    assert all(len(c) == 1 for c in colors.values()) and len(set.union(*colors.values())) == 3
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "lr"
    assert legend_texts(fig) == ["1e-3", "3e-3", "0.01"]


def test_stability_names_the_other_varying_settings_and_obeys_a_given_column():
    runs = [{"run_id": f"r{n}-{lr}-{s}", "n_params": n, "lr": lr, "seed": s}
            for n in (16512, 1.2e6) for lr in (1e-3, 0.01) for s in (0, 1)]
    df = curves_of(runs)
    fig = plot_stability(df)
    colors = line_colors_by(fig, df, "n_params")
    assert all(len(c) == 1 for c in colors.values()) and colors[16512] != colors[1.2e6]  # one colour per size
    assert fig.legends[0].get_title().get_text() == "n_params (lr, seed also vary)"
    assert legend_texts(fig) == ["16.5k", "1.2M"]
    by_lr = plot_stability(df, scale="lr")
    assert all(len(c) == 1 for c in line_colors_by(by_lr, df, "lr").values())
    assert by_lr.legends[0].get_title().get_text() == "lr (n_params, seed also vary)"


def test_law_draws_the_fitted_range_solid_and_the_extrapolation_dashed(tmp_path):
    laws = fit_law(pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet"), "n_params", "lr_opt", by=["param"],
                   n_boot=0)
    ax = plot_law(laws).axes[0]
    lo, hi = 1e7, 1e8  # the swept sizes of sweep_dir
    dashed = [ln for ln in ax.lines if ln.get_gid() == "extrapolation"]
    assert len(dashed) == 2 * len(laws)  # below and above the data, per law
    for ln in dashed:
        x = ln.get_xdata()
        assert ln.get_linestyle() == "--" and (np.all(x <= lo * 1.000001) or np.all(x >= hi * 0.999999))
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-" and ln.get_label().startswith("param=")]
    assert len(solid) == len(laws)
    assert all(np.isclose(ln.get_xdata().min(), lo) and np.isclose(ln.get_xdata().max(), hi) for ln in solid)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[-1] == "extrapolation"
    assert not any("e+0" in t or t.startswith("all") for t in texts)


def test_compute_and_chinchilla_curves_dash_beyond_their_data(tmp_path):
    res = compare_methods(pd.read_parquet(sweep_dir(tmp_path) / "runs.parquet"), "muon", best_of=["n_params"],
                          n_boot=0)
    loss_ax = plot_compute(res).axes[0]
    c_max = max(np.array(f.points)[:, 0].max() for f in res.fits.values())
    assert any(ln.get_linestyle() == "--" and ln.get_xdata().min() >= c_max * 0.999999
               for ln in loss_ax.lines if ln.get_gid() == "extrapolation")
    assert "extrapolation" in [t.get_text() for t in loss_ax.get_legend().get_texts()]
    n, d, loss, _, fig = chinchilla_figure(5, 4)
    beyond = [ln.get_xdata() for ln in fig.axes[0].lines if ln.get_gid() == "extrapolation"]
    c = 6 * n * d  # the runs' compute: the frontier is dashed below the least and above the most
    assert len(beyond) == 2
    assert all(x.max() <= c.min() * 1.000001 or x.min() >= c.max() * 0.999999 for x in beyond)
    assert "extrapolation" in legend_texts(fig)


def transfer_runs(grids: dict, optimum: dict) -> pd.DataFrame:
    """An LR sweep per width on its own grid, the loss a parabola in ln(lr) around that width's optimum plus
    seed noise (2 seeds)."""
    rng = np.random.default_rng(1)
    return pd.DataFrame([{"param": "hyperp", "width": w, "lr": lr, "seed": s, "status": "completed",
                          "val_loss": 2 + 0.05 * np.log(lr / optimum[w]) ** 2 + rng.normal(0, 0.002)}
                         for w, grid in grids.items() for lr in grid for s in (0, 1)])


def test_transfer_legend_has_no_all_and_missing_points_say_why():
    from hyperp.checks.transfer import check_transfer
    from hyperp.plots.style import short_reason
    from hyperp.plots.transfer import NO_REGRET, method_name, plot_transfer

    grid = np.geomspace(0.0025, 0.16, 7)
    # width 64's sweep stops below its optimum (its best run at the edge); width 128's lies wholly below the
    # proxy's LR, so the proxy's LR has no loss there to compare
    df = transfer_runs({32: grid, 64: grid[grid < 0.015], 128: grid / 20}, {32: 0.02, 64: 0.02, 128: 0.002})
    (check,) = check_transfer(df, "width", n_boot=30)
    assert method_name(df) == "hyperp" and method_name(df.assign(param=df.width.astype(str))) is None
    for name, prefix in ((None, check.verdict), ("hyperp", "hyperp: ")):
        texts = legend_texts(plot_transfer([check], name=name))
        assert texts[0].startswith(prefix) and not any("all" in t or "e+0" in t for t in texts)
    fig = plot_transfer([check], name="hyperp")
    ax_eta, ax_regret = fig.axes[:2]
    lost = [p.scale for p in check.points if not np.isfinite(p.regret_rel)]
    assert lost == [64.0, 128.0]  # the proxy's LR 0.02 lies above both sweeps
    crosses = [ln for ln in ax_regret.lines if ln.get_gid() == NO_REGRET]
    assert [ln.get_marker() for ln in crosses] == ["x"] * 2
    assert sorted(ln.get_xdata()[0] for ln in crosses) == pytest.approx(lost)
    assert NO_REGRET in legend_texts(fig)
    unbracketed = [p for p in check.points if not p.optimum.bracketed]
    assert [p.scale for p in unbracketed] == [64.0]
    notes = {(round(t.xy[0]), t.get_text()) for t in ax_eta.texts}
    assert notes == {(64, short_reason(unbracketed[0].optimum.reason))}


def test_lr_plot_says_why_an_optimum_is_hollow_or_missing():
    from hyperp.plots.style import short_reason

    grid = np.geomspace(0.0025, 0.16, 7)
    df = transfer_runs({32: grid, 64: grid[grid < 0.015], 128: grid[[2, 3]]}, {32: 0.02, 64: 0.02, 128: 0.02})
    res = fit_optimal_lr(df, by=["width"], n_boot=0, skip_sparse=True)
    assert [s["width"] for s in res.skipped] == [128]
    fig = plot_lr(res)
    hollow = [o for o in res.optima if not o.bracketed]
    assert [o.group["width"] for o in hollow] == [64]
    assert [(t.xy, t.get_text()) for t in fig.axes[0].texts] == [((hollow[0].lr_opt, hollow[0].loss_opt),
                                                                   short_reason(hollow[0].reason))]
    assert any(t.startswith("width=128: no optimum (< 3 LRs") for t in legend_texts(fig))


def test_head_plot_marks_a_std_without_a_completed_run():
    from hyperp.plots.head import NO_RUN, plot_head

    rows = [{"param": p, "head_init_std": std, "lr": lr, "status": "completed", "final_norm_gain_max": 1.5,
             "val_loss": 2 + (lr - 0.01) ** 2 + std} for p in ("hyperp", "muon") for std in (0.02, 0.1, 1.0)
            for lr in (0.005, 0.01, 0.02)]
    runs = pd.DataFrame(rows)
    runs.loc[(runs.param == "muon") & (runs.head_init_std == 1.0), "status"] = "diverged"
    fig = plot_head(runs)
    marks = [ln for ln in fig.axes[0].lines if ln.get_gid() == NO_RUN]
    assert [(ln.get_marker(), list(ln.get_xdata())) for ln in marks] == [("x", [1.0])]
    assert NO_RUN in legend_texts(fig)


def test_cel_panel_marks_baseline_runs_out_of_a_methods_reach():
    c = np.geomspace(1e15, 1e19, 5)
    # "floor" never gets below 2.5, the baseline does at its largest runs: no compute of floor's reaches them
    df = pd.DataFrame([{"param": p, "flops": ci, "val_loss": e + 400 * ci ** -0.15, "status": "completed"}
                       for p, e in (("muon", 1.7), ("floor", 2.5)) for ci in c])
    res = compare_methods(df, "muon", n_boot=30)
    out_of_reach = [p.compute for p in res.cel_points if p.baseline_loss < 2.5]
    assert out_of_reach
    cel_ax = plot_compute(res).axes[1]
    (marks,) = [ln for ln in cel_ax.lines if ln.get_marker() == "x"]
    assert list(marks.get_xdata()) == pytest.approx(out_of_reach)
    assert marks.get_label() == "floor: loss out of its law's reach"
