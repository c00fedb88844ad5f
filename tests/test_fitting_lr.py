"""Optimal LR: parabola in ln(lr), bracketing, diverged runs, bootstrap coverage, table and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hyperp.fitting import fit_lr_curve, fit_optimal_lr
from hyperp.cli.fit import app

LR_TRUE = 0.01
LRS = LR_TRUE * np.geomspace(1 / 8, 8, 9)


def parabola(lr, c0=3.0, curv=0.05):
    return c0 + curv * (np.log(lr) - np.log(LR_TRUE)) ** 2


def test_exact_parabola_recovers_vertex():
    opt = fit_lr_curve(LRS, parabola(LRS), n_boot=50)
    assert opt.bracketed and opt.reason == "bracketed"
    assert np.isclose(opt.lr_opt, LR_TRUE, rtol=1e-9)
    assert np.isclose(opt.loss_opt, 3.0, rtol=1e-12)
    assert np.isclose(opt.r2, 1.0)
    c0, c1, c2 = opt.coef
    assert np.isclose(np.exp(-c1 / (2 * c2)), LR_TRUE)  # method.md's formula on the reported coefficients


def test_unbracketed_group_is_flagged_and_falls_back_to_best_observed():
    lrs = LRS[:4]  # all below the optimum: the loss still falls at the largest LR
    loss = parabola(lrs) + np.array([0.0, 0.002, -0.001, 0.0])
    opt = fit_lr_curve(lrs, loss, n_boot=50)
    assert not opt.bracketed and opt.reason == "vertex outside swept range"
    assert opt.lr_opt == lrs[np.argmin(loss)] and opt.loss_opt == loss.min()


def test_concave_and_noisy_groups_are_flagged():
    concave = fit_lr_curve(LRS, 3.0 - 0.05 * np.log(LRS / LR_TRUE) ** 2, n_boot=0)
    assert not concave.bracketed and concave.reason == "curvature <= 0"
    rng = np.random.default_rng(0)
    flat = fit_lr_curve(LRS, 3.0 + 0.001 * np.log(LRS / LR_TRUE) ** 2 + rng.normal(0, 0.05, LRS.size), n_boot=0,
                        r2_min=0.5)
    assert flat.r2 < 0.5 and not flat.bracketed and flat.reason in ("poor fit", "curvature <= 0",
                                                                      "vertex outside swept range")
    assert flat.lr_opt in LRS


def test_diverged_runs_bound_the_optimum_but_never_enter_the_fit():
    lrs = LR_TRUE * np.array([0.125, 0.25, 0.5, 1.0, 2.0])
    loss = parabola(lrs / 2.5)  # optimum at 2.5 * LR_TRUE, above the largest completed LR
    plain = fit_lr_curve(lrs, loss, n_boot=0)
    assert not plain.bracketed  # the vertex is beyond the swept completed LRs
    bounded = fit_lr_curve(lrs, loss, diverged_lr=[4 * LR_TRUE, 8 * LR_TRUE], n_boot=0)
    assert bounded.bracketed and np.isclose(bounded.lr_opt, 2.5 * LR_TRUE)  # below the first diverged LR
    assert bounded.coef == plain.coef  # diverged LRs changed the bracket only, not the least squares
    beyond = fit_lr_curve(lrs, loss, diverged_lr=[2.2 * LR_TRUE], n_boot=0)
    assert not beyond.bracketed  # a run at 2.2x diverged, so the vertex at 2.5x is not an optimum


def test_table_fit_ignores_diverged_losses():
    rows = [{"depth": 2, "lr": lr, "val_loss": parabola(lr), "status": "completed"} for lr in LRS]
    rows.append({"depth": 2, "lr": 1.0, "val_loss": 0.0, "status": "diverged"})  # a bogus loss must not count
    res = fit_optimal_lr(pd.DataFrame(rows), by=["depth"], n_boot=0)
    (opt,) = res.optima
    assert np.isclose(opt.lr_opt, LR_TRUE) and opt.n_points == LRS.size and opt.n_diverged == 1


def test_bootstrap_interval_covers_the_true_optimum_in_most_seeds():
    hits, n_seeds = 0, 80
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        loss = parabola(LRS) + rng.normal(0, 0.01, LRS.size)
        opt = fit_lr_curve(LRS, loss, n_boot=300, seed=seed)
        hits += opt.lr_interval.contains(LR_TRUE)
    assert hits / n_seeds >= 0.85, hits / n_seeds


def test_cli_lr_json(tmp_path):
    rows = [{"depth": d, "lr": lr, "val_loss": parabola(lr, c0=3.0 + d), "status": "completed"}
            for d in (2, 4) for lr in LRS]
    pd.DataFrame(rows).to_parquet(tmp_path / "runs.parquet")
    res = CliRunner().invoke(app, ["lr", str(tmp_path), "--by", "depth", "--json", "-B", "50"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output)["groups"]
    assert [g["depth"] for g in groups] == [2, 4]
    assert all(np.isclose(g["lr_opt"], LR_TRUE) and g["bracketed"] for g in groups)
    table = CliRunner().invoke(app, ["lr", str(tmp_path), "--by", "depth", "-B", "20"])
    assert table.exit_code == 0 and "Optimal learning rate" in table.output
