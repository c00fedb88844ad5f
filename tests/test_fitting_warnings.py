"""Fits that say when they cannot answer: each warning fires on data that cannot answer, and stays quiet on data
that can (the same fit, a design that separates, enough points)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hyperp.fitting import fit_chinchilla, fit_law, fit_loss_compute, fit_lr_curve, fit_power_law
from hyperp.fitting.chinchilla import chinchilla_inputs
from hyperp.cli.fit import app

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
SMALL_STARTS = np.array([[a, b, e, al, be] for a in (5.0, 10.0) for b in (5.0, 10.0) for e in (0.0, 0.5)
                         for al in (0.5,) for be in (0.5,)])


def chinchilla_loss(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def grid_runs(ratio_fixed: bool, seed: int = 0):
    """Model sizes x tokens-per-parameter (crossed), or one fixed ratio (the compute-law sweeps' design)."""
    rng = np.random.default_rng(seed)
    ratios = np.array([20.0]) if ratio_fixed else np.geomspace(2, 200, 6)
    n, r = np.meshgrid(np.geomspace(5e7, 1e10, 12), ratios)
    n, d = n.ravel(), (n * r).ravel()
    return n, d, chinchilla_loss(n, d) * np.exp(rng.normal(0, 0.005, n.size))


def test_chinchilla_flags_a_fixed_ratio_sweep_and_not_a_crossed_one():
    fixed = fit_chinchilla(*grid_runs(ratio_fixed=True), starts=SMALL_STARTS, n_boot=0)
    assert any("not separable" in w for w in fixed.warnings)
    crossed = fit_chinchilla(*grid_runs(ratio_fixed=False), starts=SMALL_STARTS, n_boot=0)
    assert not any("not separable" in w for w in crossed.warnings)
    assert crossed.warnings == () and "warnings" in crossed.to_dict()


def test_chinchilla_best_of_lr_keeps_the_best_run_of_each_point():
    n, d, loss = grid_runs(ratio_fixed=False)
    rows = [{"n_params": ni, "tokens": di, "lr": lr, "val_loss": li * (1 + 0.1 * abs(np.log2(lr / 0.01))),
             "status": "completed"} for ni, di, li in zip(n, d, loss) for lr in (0.005, 0.01, 0.02)]
    got = chinchilla_inputs(pd.DataFrame(rows), best_of="lr")
    order = np.lexsort((d, n))
    for a, b in zip(got, (n[order], d[order], loss[order])):
        assert np.allclose(a, b)  # the lr = 0.01 run of each (N, D): the lowest loss


def test_chinchilla_keeps_the_best_lr_of_each_point_by_default_and_says_so():
    n, d, loss = grid_runs(ratio_fixed=False)
    rows = [{"n_params": ni, "tokens": di, "lr": lr, "val_loss": li * (1 + 0.1 * abs(np.log2(lr / 0.01))),
             "status": "completed"} for ni, di, li in zip(n, d, loss) for lr in (0.005, 0.01, 0.02)]
    default = chinchilla_inputs(pd.DataFrame(rows))
    for a, b in zip(default, chinchilla_inputs(pd.DataFrame(rows), best_of="lr")):
        assert np.array_equal(a, b)
    assert len(default.notes) == 1 and "--every-lr" in default.notes[0]
    every = chinchilla_inputs(pd.DataFrame(rows), every_lr=True)
    assert every[0].size == 3 * n.size and every.notes == ()
    fit = fit_chinchilla(*default, starts=SMALL_STARTS, n_boot=0, notes=default.notes)
    assert fit.warnings[0] == default.notes[0]


def test_compute_law_flags_e_at_its_bound_and_few_points():
    c = np.geomspace(1e15, 1e19, 6)
    pure_power = 50.0 * c ** -0.1  # no irreducible term: E is pushed to its bound 0
    fit = fit_loss_compute(c, pure_power, n_boot=50)
    assert any(w.startswith("E = ") and "lower bound" in w for w in fit.warnings)
    four = fit_loss_compute(c[:4], 2.0 + 50.0 * c[:4] ** -0.1, n_boot=50)
    assert any("4 points for 3 parameters" in w for w in four.warnings)
    many = fit_loss_compute(np.geomspace(1e15, 1e19, 12), 2.0 + 50.0 * np.geomspace(1e15, 1e19, 12) ** -0.1,
                            n_boot=50)
    assert many.warnings == ()


def test_lr_and_power_law_warnings():
    lrs = 0.01 * np.geomspace(1 / 8, 8, 9)
    edge = fit_lr_curve(lrs[:4], 3.0 + 0.05 * np.log(lrs[:4] / 0.01) ** 2, n_boot=0)
    assert any("not bracketed" in w for w in edge.warnings)
    inside = fit_lr_curve(lrs, 3.0 + 0.05 * np.log(lrs / 0.01) ** 2, n_boot=0)
    assert inside.warnings == ()
    x = np.array([1.0, 2.0, 4.0])
    assert any("3 points for 2 parameters" in w for w in fit_power_law(x, 3 * x ** -0.3, n_boot=20).warnings)


def test_law_names_the_unbracketed_optima_it_left_out():
    rows = []
    for tokens, center in ((1e5, 0.02), (2e5, 0.015), (4e5, 0.011), (8e5, 0.5)):  # the last one is beyond the grid
        for lr in 0.01 * np.geomspace(1 / 4, 4, 7):
            rows.append({"tokens": tokens, "lr": lr, "status": "completed",
                         "val_loss": 3.0 + 0.05 * np.log(lr / center) ** 2})
    (law,) = fit_law(pd.DataFrame(rows), x="tokens", y="lr_opt", n_boot=20)
    assert len(law.excluded) == 1 and any("unbracketed optima left out" in w for w in law.warnings)


def test_cli_prints_warnings_and_puts_them_in_strict_json(tmp_path):
    n, d, loss = grid_runs(ratio_fixed=True)
    pd.DataFrame({"n_params": n, "tokens": d, "val_loss": loss, "status": "completed"}).to_parquet(tmp_path / "r.parquet")
    out = CliRunner().invoke(app, ["chinchilla", str(tmp_path / "r.parquet"), "-B", "0", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert any("not separable" in w for w in doc["warnings"])
    screen = CliRunner().invoke(app, ["chinchilla", str(tmp_path / "r.parquet"), "-B", "0"])
    assert screen.exit_code == 0 and "warning: log N and log D are not separable" in screen.output


def test_chinchilla_best_of_lr_averages_the_seeds_of_each_lr():
    n, d, loss = grid_runs(ratio_fixed=False)
    rows = [{"n_params": ni, "tokens": di, "lr": lr, "seed": s, "val_loss": li * f, "status": "completed"}
            for ni, di, li in zip(n, d, loss)
            for lr, s, f in ((0.01, 0, 0.95), (0.01, 1, 1.05), (0.02, 0, 1.02))]
    got = chinchilla_inputs(pd.DataFrame(rows), best_of="lr")
    order = np.lexsort((d, n))
    assert np.allclose(got[2], loss[order])  # lr 0.01's mean over its two seeds, not its lucky 0.95
