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


def test_chinchilla_plot_draws_contours_and_frontier(tmp_path):
    n, ratio = np.meshgrid(np.geomspace(5e7, 5e9, 6), np.geomspace(5, 100, 5))
    n, d = n.ravel(), (n * ratio).ravel()
    loss = 1.8 + 480 / n**0.35 + 2100 / d**0.37
    starts = np.array(list(itertools.product([5.0], [5.0, 10.0], [0.0, 0.5], [0.5], [0.5])))
    fit = fit_chinchilla(n, d, loss, starts=starts, n_boot=0)
    fig = plot_chinchilla(fit, n, d, loss)
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
