"""Loss versus compute: bounded fit, CEL identities, coverage, hold-out, table and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyperp.fitting import FitInputError, cel_at_points, compare_methods, compute_efficiency, fit_loss_compute
from hyperp.cli.fit import app

C = np.geomspace(1e18, 1e21, 8)
A, B_EXP, E = 400.0, 0.15, 1.8


def law(c, k=1.0):
    """The reference law; k > 1 is a method that gets the same loss with k times less compute."""
    return A * (k * c) ** -B_EXP + E


def test_noise_free_law_is_recovered_and_holdout_is_exact():
    f = fit_loss_compute(C, law(C), n_boot=20)
    assert np.allclose([f.A, f.b, f.E], [A, B_EXP, E], rtol=1e-6)
    assert f.holdout is not None and f.holdout.compute == C.max()
    assert abs(f.holdout.rel_err) < 1e-8


def test_bounds_hold_on_data_that_want_to_break_them():
    rising = fit_loss_compute(C, 2.0 + 0.01 * np.log(C / C[0]), n_boot=0)  # loss grows with compute
    assert rising.A >= 0 and rising.b >= 0 and 0 <= rising.E <= 2.0
    steep = fit_loss_compute(C, 1e3 * C**-0.2, n_boot=0)  # no floor: E wants to be negative
    assert steep.E >= 0 and steep.E <= steep.predict(C).min() + 1e-9


def test_cel_against_itself_is_one_everywhere():
    exact = fit_loss_compute(C, law(C), n_boot=50)
    assert np.allclose([p.cel for p in cel_at_points(exact, C, law(C))], 1.0, rtol=1e-6)
    rng = np.random.default_rng(0)
    noisy = fit_loss_compute(C, law(C) + rng.normal(0, 0.01, C.size), n_boot=50)
    grid = np.geomspace(1e17, 1e22, 11)
    assert np.allclose([p.cel for p in compute_efficiency(noisy, noisy, grid)], 1.0, rtol=1e-9)


def test_cel_of_a_shifted_law_is_the_shift_factor():
    k = 2.5
    base = fit_loss_compute(C, law(C), n_boot=20)
    shifted = fit_loss_compute(C, law(C, k), n_boot=20)
    assert np.allclose([p.cel for p in cel_at_points(shifted, C, law(C))], k, rtol=1e-5)
    assert np.allclose([p.cel for p in compute_efficiency(shifted, base, [1e19, 6e21])], k, rtol=1e-5)


def test_unreachable_loss_gives_zero_cel():
    f = fit_loss_compute(C, law(C), n_boot=0)
    (p,) = cel_at_points(f, [1e20], [E - 0.1])
    assert p.cel == 0.0


def test_bootstrap_intervals_cover_truth_in_most_seeds():
    hits = {"b": 0, "E": 0, "cel": 0}
    n_seeds = 50
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        base = fit_loss_compute(C, law(C) + rng.normal(0, 0.004, C.size), n_boot=200, seed=seed)
        other = fit_loss_compute(C, law(C, 1.6) + rng.normal(0, 0.004, C.size), n_boot=200, seed=seed + 1000)
        hits["b"] += base.intervals["b"].contains(B_EXP)
        hits["E"] += base.intervals["E"].contains(E)
        hits["cel"] += compute_efficiency(other, base, [1e20])[0].interval.contains(1.6)
    for name, h in hits.items():
        assert h / n_seeds >= 0.85, (name, h / n_seeds)


def runs_table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for param, k in (("muon", 1.0), ("hyperp", 1.58)):
        for c in C:
            for lr_penalty in (0.0, 0.05, 0.1):  # an LR sweep: only the best run per size should count
                rows.append({"param": param, "flops": c, "n_params": c / 1e12, "status": "completed",
                             "val_loss": law(c, k) + lr_penalty + rng.normal(0, 0.002)})
        rows.append({"param": param, "flops": C[-1], "n_params": C[-1] / 1e12, "status": "diverged", "val_loss": 9.0})
    return pd.DataFrame(rows)


def test_compare_methods_on_a_table():
    res = compare_methods(runs_table(), "muon", best_of=["n_params"], at=[1e20], n_boot=100)
    assert set(res.fits) == {"muon", "hyperp"} and res.fits["muon"].n_points == C.size
    assert {p.method for p in res.cel_points} == {"hyperp"} and len(res.cel_points) == C.size
    (at,) = res.cel_at
    assert abs(at.cel - 1.58) < 0.1 and at.interval.low < at.cel < at.interval.high
    with pytest.raises(FitInputError, match="baseline 'adamw' not found"):
        compare_methods(runs_table(), "adamw", n_boot=0)


def test_cli_compute(tmp_path):
    runs_table().to_parquet(tmp_path / "runs.parquet")
    args = ["compute", str(tmp_path), "--baseline", "muon", "--best-of", "n_params", "--at", "1e20", "-B", "50"]
    res = CliRunner().invoke(app, [*args, "--json", "-o", str(tmp_path / "out.json")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out == json.loads((tmp_path / "out.json").read_text())
    assert out["baseline"] == "muon" and out["fits"]["muon"]["holdout"]["compute"] == C.max()
    assert abs(out["cel_at"][0]["cel"] - 1.58) < 0.1
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "CEL fit-to-fit" in table.output


def test_the_papers_protocol_pays_the_transfer_regret_that_per_size_tuning_hides(tmp_path):
    """Two methods with the same best loss at every depth; one's optimum stays put, the other's falls like
    1/depth. Per-size tuning (--best-of) sees equal laws; transferring the depth-2 LR (the paper's protocol)
    charges the drifting method CURV * ln(d/2)^2 nats at depth d, exactly, and its CEL over the other falls
    below 1."""
    from hyperp.checks.transfer import transferred_runs

    curv, depths = 0.04, (2, 4, 8, 16)
    rows = []
    for param, eta in (("stays", lambda d: 0.02), ("drifts", lambda d: 0.02 * 2 / d)):
        for d in depths:
            flops = 1e12 * d ** 2
            best = 1.5 + 20 * flops ** -0.1
            for lr in 0.02 * np.geomspace(1 / 16, 4, 13):
                rows.append({"param": param, "depth": d, "flops": flops, "lr": lr, "status": "completed",
                             "val_loss": best + curv * np.log(lr / eta(d)) ** 2})
    df = pd.DataFrame(rows)
    table = transferred_runs(df, "depth", by=["param"], keep=["flops"])
    for r in table.itertuples():
        expected = 0.0 if r.param == "stays" else curv * np.log(r.depth / 2) ** 2
        assert r.val_loss - r.loss_opt == pytest.approx(expected, abs=1e-9) and r.lr == pytest.approx(0.02)
    per_size = compare_methods(df, "stays", best_of=["depth"], n_boot=0)
    transferred = compare_methods(table, "stays", n_boot=0)
    assert all(p.cel == pytest.approx(1.0, rel=1e-3) for p in per_size.cel_points)
    assert all(p.cel < 1.0 for p in transferred.cel_points[1:])  # the proxy itself pays nothing
    path = tmp_path / "runs.parquet"
    df.to_parquet(path)
    res = CliRunner().invoke(app, ["compute", str(path), "--baseline", "stays", "--transfer-along", "depth", "-B", "0",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert all(p["cel"] < 1.0 for p in json.loads(res.stdout)["cel_points"][1:])
    res = CliRunner().invoke(app, ["compute", str(path), "--baseline", "stays", "--transfer-along", "depth",
                                   "--best-of", "depth"])
    assert res.exit_code == 2


def test_best_of_reads_the_best_lrs_mean_over_seeds_not_its_luckiest_seed():
    """Two methods with the same loss law; one's seeds at its best LR scatter +-0.1 about the law (mean on it),
    the other's sit on it. The luckiest seed would credit the scattered method with compute it did not save;
    the mean over seeds gives CEL 1. A neighbouring LR run once, 0.01 above the law, never wins."""
    rows = []
    for c in C:
        loss = law(c)
        for m, scatter in (("steady", (0.0, 0.0, 0.0)), ("scattered", (-0.1, 0.05, 0.05))):
            rows += [{"param": m, "flops": c, "lr": 0.02, "seed": s, "val_loss": loss + e, "status": "completed"}
                     for s, e in enumerate(scatter)]
            rows.append({"param": m, "flops": c, "lr": 0.04, "seed": 0, "val_loss": loss + 0.01,
                         "status": "completed"})
    df = pd.DataFrame(rows)
    res = compare_methods(df, "steady", best_of=["flops"], n_boot=0)
    assert [p.cel for p in res.cel_points] == pytest.approx([1.0] * C.size, rel=1e-4)
    luckiest = compare_methods(df.drop(columns="seed"), "steady", best_of=["flops"], n_boot=0)
    assert all(p.cel > 1.05 for p in luckiest.cel_points)  # what picking the luckiest run gives


def test_an_lr_sweep_is_fitted_as_its_best_lr_per_size_by_default_and_says_so(tmp_path):
    """Several LRs per (method, flops): the law is of the best run per size (seeds averaged), as --best-of flops
    gives; the result says so. Fitting every LR (the old silent default) is there only on request."""
    rows = []
    for c in C:
        for m, gap in (("base", 0.0), ("better", -0.02)):
            for lr, bad in ((0.01, 0.3), (0.02, 0.0), (0.04, 0.2)):  # far-off LRs 0.2-0.3 nats worse
                rows += [{"param": m, "flops": c, "lr": lr, "seed": s, "val_loss": law(c) + gap + bad + e,
                          "status": "completed"} for s, e in enumerate((-0.001, 0.001))]
    df = pd.DataFrame(rows)
    default = compare_methods(df, "base", n_boot=0)
    explicit = compare_methods(df, "base", best_of=["flops"], n_boot=0)
    assert default.fits["base"].b == pytest.approx(explicit.fits["base"].b)
    assert default.fits["base"].n_points == C.size  # one point per size
    assert [p.cel for p in default.cel_points] == pytest.approx([p.cel for p in explicit.cel_points])
    assert any("several learning rates" in w and "--every-lr" in w for w in default.warnings)
    assert not any("several learning rates" in w for w in explicit.warnings)
    every = compare_methods(df, "base", every_lr=True, n_boot=0)
    assert every.fits["base"].n_points == 6 * C.size and every.notes == ()
    df.to_parquet(tmp_path / "runs.parquet")
    res = CliRunner().invoke(app, ["compute", str(tmp_path / "runs.parquet"), "--baseline", "base", "-B", "0"])
    assert res.exit_code == 0 and "warning: several learning rates at one (param, flops)" in res.output


def test_a_ratio_interval_with_a_zero_lower_end_still_widens_its_upper_end():
    """Bootstrap CELs where some replicates never reach the baseline's loss give a lower end of 0: the
    small-sample widening (t/z in log) must still apply to the upper end, as it does when the lower end is
    positive, or an interval at 1 degree of freedom would exclude values it cannot exclude."""
    from hyperp.fitting.bootstrap import percentile_interval, small_sample_factor

    rng = np.random.default_rng(0)
    draws = np.exp(rng.normal(0.0, 0.3, 1000))
    zeroed = draws.copy()
    zeroed[:100] = 0.0  # 10% of replicates never reach: the 2.5th percentile is 0
    both = percentile_interval(draws, 0.95, center=1.0, dof=1, log=True)
    one = percentile_interval(zeroed, 0.95, center=1.0, dof=1, log=True)
    raw_high = float(np.percentile(zeroed, 97.5))
    assert one.low == 0.0
    assert one.high == pytest.approx(raw_high ** small_sample_factor(1, 0.95))
    assert both.low > 0 and both.high > float(np.percentile(draws, 97.5))
