"""Power laws: exact recovery, agreement with scipy, bootstrap coverage, leave-one-out, optima laws, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit
from typer.testing import CliRunner

from hyperp.fitting import FitInputError, fit_law, fit_power_law
from hyperp.cli.fit import app

X = np.geomspace(1e7, 1e10, 8)


@pytest.mark.parametrize("space", ["linear", "log"])
@pytest.mark.parametrize("offset", [False, True])
def test_noise_free_law_is_recovered(space, offset):
    y = 40.0 * X**-0.3 + (1.7 if offset else 0.0)
    f = fit_power_law(X, y, offset=offset, space=space, n_boot=20)
    assert np.isclose(f.b, -0.3, rtol=1e-6) and np.isclose(f.a, 40.0, rtol=1e-5)
    assert np.isclose(f.c, 1.7 if offset else 0.0, atol=1e-6)
    assert f.r2 > 1 - 1e-9 and f.loo_rel_err < 1e-6
    assert f.n_points == X.size and len(f.points) == X.size


def test_linear_space_matches_scipy_curve_fit():
    rng = np.random.default_rng(3)
    y = 40.0 * X**-0.3 + 1.7 + rng.normal(0, 0.01, X.size)
    f = fit_power_law(X, y, offset=True, n_boot=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = curve_fit(lambda x, a, b, c: a * x**b + c, X, y, p0=[30.0, -0.25, 1.5], maxfev=20000)[0]
    sse = lambda p: np.sum((y - (p[0] * X ** p[1] + p[2])) ** 2)  # noqa: E731
    assert sse([f.a, f.b, f.c]) <= sse(ref) * (1 + 1e-9)
    assert np.allclose([f.a, f.b, f.c], ref, rtol=1e-4)


@pytest.mark.parametrize("space, noise", [("linear", "additive"), ("log", "multiplicative")])
def test_bootstrap_interval_for_b_covers_truth_in_most_seeds(space, noise):
    hits, n_seeds = 0, 60
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        clean = 40.0 * X**-0.3
        y = clean + rng.normal(0, 0.002, X.size) if noise == "additive" else clean * np.exp(rng.normal(0, 0.02, X.size))
        f = fit_power_law(X, y, space=space, n_boot=300, seed=seed)
        hits += f.intervals["b"].contains(-0.3)
    assert hits / n_seeds >= 0.85, hits / n_seeds


def test_leave_one_out_error_grows_with_noise():
    rng = np.random.default_rng(0)
    noisy = fit_power_law(X, 40.0 * X**-0.3 * np.exp(rng.normal(0, 0.05, X.size)), space="log", n_boot=0)
    assert 0.01 < noisy.loo_rel_err < 0.2


def test_bad_inputs():
    with pytest.raises(FitInputError, match="x > 0"):
        fit_power_law(np.array([-1.0, 1, 2, 3]), np.ones(4))
    with pytest.raises(FitInputError, match="distinct x"):
        fit_power_law(np.ones(5), np.ones(5))
    with pytest.raises(FitInputError, match="y > 0"):
        fit_power_law(X, -np.ones(X.size), space="log")


def lr_sweep(exponent=-0.32, seed=0) -> pd.DataFrame:
    """An LR sweep over token budgets whose optimal LR follows lr* = 0.02 (T / 1e8)^exponent."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in (1e8, 2e8, 4e8, 8e8, 1.6e9):
        best = 0.02 * (t / 1e8) ** exponent
        for lr in best * np.geomspace(0.25, 4, 7):
            rows.append({"tokens": t, "depth": 4, "lr": lr, "status": "completed",
                         "val_loss": 3 + 10 * t**-0.1 + 0.05 * np.log(lr / best) ** 2 + rng.normal(0, 1e-3)})
        rows.append({"tokens": t, "depth": 4, "lr": best * 30, "status": "diverged", "val_loss": np.nan})
    # A token budget swept only below its optimum: unbracketed, so it must stay out of the law.
    best = 0.02 * 32 ** exponent
    for lr in best * np.geomspace(0.05, 0.4, 4):
        rows.append({"tokens": 3.2e9, "depth": 4, "lr": lr, "status": "completed",
                     "val_loss": 3 + 0.05 * np.log(lr / best) ** 2})
    return pd.DataFrame(rows)


def test_law_of_optimal_lr_recovers_data_exponent():
    (law,) = fit_law(lr_sweep(), x="tokens", y="lr_opt", by=["depth"], n_boot=200)
    assert law.group == {"depth": 4} and law.fit.n_points == 5
    assert abs(law.fit.b + 0.32) < 0.01 and law.fit.intervals["b"].contains(-0.32)
    assert len(law.excluded) == 1 and law.excluded[0]["tokens"] == 3.2e9


def test_cli_law_json(tmp_path):
    lr_sweep().to_csv(tmp_path / "t.csv", index=False)
    res = CliRunner().invoke(app, ["law", str(tmp_path / "t.csv"), "--x", "tokens", "--y", "lr_opt", "--json",
                                   "-B", "50", "--space", "log"])
    assert res.exit_code == 0, res.output
    (law,) = json.loads(res.output)["laws"]
    assert law["space"] == "log" and abs(law["b"] + 0.32) < 0.01 and len(law["points"]) == 5
    assert {"low", "high"} <= set(law["intervals"]["b"]) and law["loo_rel_err"] >= 0
    bad = CliRunner().invoke(app, ["law", str(tmp_path / "t.csv"), "--x", "tokens", "--space", "cubic"])
    assert bad.exit_code == 2 and "space" in bad.output


def test_law_of_a_plain_column_per_group():
    rows = [{"param": p, "n_params": n, "val_loss": k * 40.0 * n**-0.3, "status": "completed"}
            for p, k in (("muon", 1.0), ("hyperp", 0.9)) for n in X]
    rows.append({"param": "muon", "n_params": 1e8, "val_loss": 99.0, "status": "failed"})  # not fitted
    laws = fit_law(pd.DataFrame(rows), x="n_params", y="val_loss", by=["param"], n_boot=20)
    assert [lf.group["param"] for lf in laws] == ["hyperp", "muon"]
    assert all(np.isclose(lf.fit.b, -0.3, rtol=1e-6) and lf.fit.n_points == X.size for lf in laws)
    assert np.isclose(laws[0].fit.a / laws[1].fit.a, 0.9, rtol=1e-6)
