"""One result protocol for every law fit (success, message, n_failed, predict, band, to_dict), refits that do not
converge reported and left out, per-point weights, and unweighted results bit-identical to before weights."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import hyperp.fitting.chinchilla as chinchilla_module
import hyperp.fitting.compute as compute_module
import hyperp.fitting.powerlaw as powerlaw_module
from hyperp.fitting import (FitInputError, FitResult, compare_methods, fit_chinchilla, fit_law, fit_loss_compute,
                            fit_lr_curve, fit_power_law)
from hyperp.fitting.profile import minimize_profile
from hyperp.fitting.result import CONVERGED, ITERATION_LIMIT, NOT_FINITE

X = np.geomspace(1e7, 1e10, 8)
C = np.geomspace(1e15, 1e19, 7)
SMALL_STARTS = np.array(list(itertools.product([5.0, 10.0], [5.0, 10.0], [0.0, 0.5], [0.5], [0.5])))
TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def noise(size: int, sd: float, seed: int = 7) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).normal(0, sd, size))


def chinchilla_runs(sd: float = 0.01, seed: int = 2):
    nn, rr = np.meshgrid(np.geomspace(5e7, 1e10, 6), np.geomspace(2, 200, 5))
    n, d = nn.ravel(), (nn * rr).ravel()
    loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
    return n, d, loss * noise(n.size, sd, seed)


def lr_sweep(sd: float):
    lrs = 0.01 * np.geomspace(1 / 4, 4, 7)
    return lrs, (3.0 + 0.05 * np.log(lrs / 0.01) ** 2) * noise(lrs.size, sd, 5)


def every_law(sd: float, n_boot: int = 100):
    """(name, fit, points x, observed y) for each law fitted to data with log-normal noise sd."""
    out = []
    for space, offset in itertools.product(("linear", "log"), (False, True)):
        y = (40.0 * X**-0.3 + (1.7 if offset else 0.0)) * noise(X.size, sd)
        out.append((f"power-{space}-{offset}", fit_power_law(X, y, offset=offset, space=space, n_boot=n_boot), X, y))
    loss = (2.0 + 300.0 * C**-0.15) * noise(C.size, sd)
    out.append(("compute", fit_loss_compute(C, loss, n_boot=n_boot), C, loss))
    n, d, loss = chinchilla_runs(sd)
    out.append(("chinchilla", fit_chinchilla(n, d, loss, starts=SMALL_STARTS, n_boot=n_boot // 5, boot_starts=2),
                (n, d), loss))
    lrs, loss = lr_sweep(sd)
    out.append(("lr", fit_lr_curve(lrs, loss, n_boot=n_boot), lrs, loss))
    return out


# ---------------------------------------------------------------- the protocol


@pytest.mark.parametrize("name, fit, x, y", every_law(sd=0.0), ids=lambda v: v if isinstance(v, str) else "")
def test_every_law_satisfies_the_protocol_and_reproduces_noise_free_data(name, fit, x, y):
    assert isinstance(fit, FitResult)
    assert fit.success is True and fit.message.startswith("converged") and fit.n_failed == 0
    assert np.allclose(fit.predict(x), y, rtol=1e-6)
    d = fit.to_dict()
    assert d["success"] is True and d["message"] == fit.message


@pytest.mark.parametrize("name, fit, x, y", every_law(sd=0.004), ids=lambda v: v if isinstance(v, str) else "")
def test_band_contains_the_fitted_curve_at_the_data(name, fit, x, y):
    pred = fit.predict(x)
    assert np.all(np.abs(pred / y - 1) < 0.02)  # the fitted values: within 5 noise sd of the data
    lo, hi = fit.band(x)
    assert lo.shape == hi.shape == pred.shape
    assert np.all(lo <= pred * (1 + 1e-9)) and np.all(pred <= hi * (1 + 1e-9)) and np.all(lo < hi)
    lo90, hi90 = fit.band(x, 0.5)
    assert np.all(lo <= lo90) and np.all(hi90 <= hi)  # a lower level gives a narrower band


def test_chinchilla_takes_n_d_as_a_pair_an_array_or_two_arguments():
    n, d, loss = chinchilla_runs()
    fit = fit_chinchilla(n, d, loss, starts=SMALL_STARTS, n_boot=10, boot_starts=2)
    two = fit.predict(n, d)
    assert np.array_equal(fit.predict((n, d)), two) and np.array_equal(fit.predict(np.column_stack([n, d])), two)
    assert np.array_equal(fit.band((n, d))[0], fit.band(np.column_stack([n, d]))[0])
    with pytest.raises(ValueError, match="pair"):
        fit.predict(n)


def test_band_without_replicates_is_nan_not_an_error():
    fit = fit_power_law(X, 40.0 * X**-0.3, n_boot=0)
    lo, hi = fit.band(X)
    assert np.isnan(lo).all() and np.isnan(hi).all()


# ---------------------------------------------------------------- refits that do not converge


def test_profile_search_reports_rows_it_could_not_finish():
    grid = np.linspace(-1.0, 1.0, 11)
    centers = np.array([0.13, 0.47, np.nan])  # the last row has no finite objective anywhere

    def table(g):
        return (g[None, :] - centers[:, None]) ** 2

    def rows(t, idx):
        return (t - centers[idx]) ** 2

    theta, _, status = minimize_profile(table, rows, grid)
    assert np.allclose(theta[:2], centers[:2], atol=1e-6)
    assert status.tolist() == [CONVERGED, CONVERGED, NOT_FINITE]
    _, _, status = minimize_profile(table, rows, grid, max_iter=1)
    assert status.tolist() == [ITERATION_LIMIT, ITERATION_LIMIT, NOT_FINITE]


def test_bootstrap_refits_that_hit_the_iteration_limit_are_counted_and_left_out(monkeypatch):
    real = powerlaw_module._log_offset_lm
    monkeypatch.setattr(powerlaw_module, "_log_offset_lm", lambda lx, data, start: real(lx, data, start, max_iter=1))
    y = (40.0 * X**-0.3 + 1.7) * noise(X.size, 0.004)
    fit = fit_power_law(X, y, offset=True, space="log", n_boot=50)
    assert fit.success  # the point estimate is scipy's, not the batched refits'
    assert 0 < fit.n_failed <= 50 and fit.to_dict()["n_failed"] == fit.n_failed
    assert np.isnan(fit.boot_params).any(axis=1).sum() == fit.n_failed
    assert any(w.startswith(f"{fit.n_failed} of 50 bootstrap refits did not converge (") and "iteration limit" in w
               and "left out" in w for w in fit.warnings)
    assert any("leave-one-out refits did not converge" in w for w in fit.warnings)


def test_a_main_fit_that_does_not_converge_says_so(monkeypatch):
    real = compute_module.minimize_profile
    monkeypatch.setattr(compute_module, "minimize_profile", lambda g, r, grid: real(g, r, grid, max_iter=1))
    fit = fit_loss_compute(C, (2.0 + 300.0 * C**-0.15) * noise(C.size, 0.004), n_boot=20)
    assert not fit.success and "iteration limit" in fit.message and fit.n_failed == 20
    assert fit.warnings[0].startswith("the fit did not converge")
    assert np.isnan(fit.intervals["b"].low) and np.isnan(fit.band(C)[0]).all()


def test_chinchilla_reports_starts_and_refits_stopped_by_the_iteration_limit(monkeypatch):
    real = chinchilla_module.minimize_lbfgs_batch
    monkeypatch.setattr(chinchilla_module, "minimize_lbfgs_batch", lambda fg, x0, **kw: real(fg, x0, max_iter=2, **kw))
    fit = fit_chinchilla(*chinchilla_runs(), starts=SMALL_STARTS, n_boot=10, boot_starts=2)
    assert not fit.success and fit.message.endswith("hit the iteration limit") and fit.n_failed == 10
    assert any(w.startswith("10 of 10 bootstrap refits did not converge") for w in fit.warnings)
    assert np.isnan(fit.intervals["alpha"].low)


# ---------------------------------------------------------------- weights


def outlier(y: np.ndarray, k: int = 5, factor: float = 1.3):
    """y with point k scaled by factor, and weights that all but ignore it."""
    y = y.copy()
    y[k] *= factor
    w = np.ones(y.size)
    w[k] = 1e-8
    return y, w


@pytest.mark.parametrize("space, offset", [("linear", False), ("log", False), ("linear", True), ("log", True)])
def test_weights_that_down_weight_an_outlier_recover_the_power_law(space, offset):
    y, w = outlier(40.0 * X**-0.3 + (1.7 if offset else 0.0), factor=1.5)
    plain = fit_power_law(X, y, offset=offset, space=space, n_boot=0)
    weighted = fit_power_law(X, y, offset=offset, space=space, weights=w, n_boot=20)
    assert abs(plain.b + 0.3) > 0.01
    assert abs(weighted.b + 0.3) < 1e-4 and weighted.weighted and weighted.to_dict()["weighted"]


def test_weights_that_down_weight_an_outlier_recover_the_compute_law_and_chinchilla():
    loss, w = outlier(2.0 + 300.0 * C**-0.15, k=3)
    assert abs(fit_loss_compute(C, loss, n_boot=0).b - 0.15) > 0.01
    assert abs(fit_loss_compute(C, loss, weights=w, n_boot=0).b - 0.15) < 1e-4
    n, d, clean = chinchilla_runs(sd=0.0)
    loss, w = outlier(clean, k=12, factor=1.5)
    plain = fit_chinchilla(n, d, loss, starts=SMALL_STARTS, n_boot=0)
    weighted = fit_chinchilla(n, d, loss, weights=w, starts=SMALL_STARTS, n_boot=0)
    assert abs(plain.alpha - TRUE["alpha"]) > 5e-4  # Huber bounds an outlier's pull; weights remove it
    assert abs(weighted.alpha - TRUE["alpha"]) < 1e-5 and abs(weighted.beta - TRUE["beta"]) < 1e-5


def same(f, g) -> bool:
    return f.to_dict() == g.to_dict() and np.array_equal(f.boot_params, g.boot_params, equal_nan=True)


def test_unit_or_equal_weights_are_the_unweighted_fit_and_zero_weight_leaves_a_point_out():
    y = 40.0 * X**-0.3 * noise(X.size, 0.01)
    for space in ("linear", "log"):
        plain = fit_power_law(X, y, space=space, n_boot=30)
        assert same(fit_power_law(X, y, space=space, weights=np.ones(X.size), n_boot=30), plain)
        assert same(fit_power_law(X, y, space=space, weights=np.full(X.size, 3.0), n_boot=30), plain)
        w = np.ones(X.size)
        w[2] = 0.0
        keep = w > 0
        assert same(fit_power_law(X, y, space=space, weights=w, n_boot=30),
                    fit_power_law(X[keep], y[keep], space=space, n_boot=30))
    loss = (2.0 + 300.0 * C**-0.15) * noise(C.size, 0.004)
    assert same(fit_loss_compute(C, loss, weights=np.ones(C.size), n_boot=30), fit_loss_compute(C, loss, n_boot=30))
    n, d, loss = chinchilla_runs()
    assert same(fit_chinchilla(n, d, loss, weights=np.ones(n.size), starts=SMALL_STARTS, n_boot=5, boot_starts=2),
                fit_chinchilla(n, d, loss, starts=SMALL_STARTS, n_boot=5, boot_starts=2))


def test_an_integer_weight_is_a_repeated_point():
    """Weight 2 on a point minimizes the same objective as that point given twice."""
    y = (40.0 * X**-0.3 + 1.7) * noise(X.size, 0.01)
    w = np.where(np.arange(X.size) % 3 == 0, 2.0, 1.0)
    rep_x, rep_y = np.repeat(X, w.astype(int)), np.repeat(y, w.astype(int))
    for space, offset in itertools.product(("linear", "log"), (False, True)):
        f = fit_power_law(X, y, offset=offset, space=space, weights=w, n_boot=0)
        g = fit_power_law(rep_x, rep_y, offset=offset, space=space, n_boot=0)
        assert np.allclose([f.a, f.b, f.c], [g.a, g.b, g.c], rtol=1e-5, atol=1e-9), (space, offset)
    loss = (2.0 + 300.0 * C**-0.15) * noise(C.size, 0.01)
    wc = np.where(np.arange(C.size) % 3 == 0, 2.0, 1.0)
    f = fit_loss_compute(C, loss, weights=wc, n_boot=0)
    g = fit_loss_compute(np.repeat(C, wc.astype(int)), np.repeat(loss, wc.astype(int)), n_boot=0)
    assert np.allclose([f.A, f.b, f.E], [g.A, g.b, g.E], rtol=1e-6)


def test_table_level_weight_columns():
    rng = np.random.default_rng(0)
    rows = [{"group": g, "x": x, "y": 40.0 * x**-0.3 * (1.3 if (g == "a" and i == 4) else 1.0),
             "w": 1e-8 if (g == "a" and i == 4) else 1.0, "status": "completed"}
            for g in ("a", "b") for i, x in enumerate(X)]
    df = pd.DataFrame(rows)
    laws = {lf.group["group"]: lf.fit for lf in fit_law(df, "x", "y", ["group"], weight_col="w", n_boot=10)}
    assert abs(laws["a"].b + 0.3) < 1e-4 and laws["a"].weighted and not laws["b"].weighted
    with pytest.raises(FitInputError, match="weight_col"):
        fit_law(df, "x", "lr_opt", weight_col="w")
    runs = pd.DataFrame([{"param": p, "flops": c, "val_loss": (2.0 + 300.0 * c**-0.15) * (1.2 if i == 3 else 1.0)
                          + rng.normal(0, 1e-4), "w": 1e-8 if i == 3 else 1.0, "status": "completed"}
                         for p in ("base", "other") for i, c in enumerate(C)])
    res = compare_methods(runs, "base", weight_col="w", n_boot=0)
    assert abs(res.fits["base"].b - 0.15) < 0.01 and res.fits["base"].weighted
    assert abs(compare_methods(runs, "base", n_boot=0).fits["base"].b - 0.15) > 0.01


def test_bad_weights_are_input_errors():
    y = 40.0 * X**-0.3
    with pytest.raises(FitInputError, match="finite and >= 0"):
        fit_power_law(X, y, weights=-np.ones(X.size))
    with pytest.raises(FitInputError, match="same length"):
        fit_loss_compute(C, 2.0 + C**-0.1, weights=np.ones(3))
    n, d, loss = chinchilla_runs()
    with pytest.raises(FitInputError, match="finite and >= 0"):
        fit_chinchilla(n, d, loss, weights=np.full(n.size, np.nan), starts=SMALL_STARTS, n_boot=0)


# ---------------------------------------------------------------- unweighted results unchanged

# float.hex of (parameters, then each interval's ends in key order, then the sum of the bootstrap replicates),
# recorded with the code before weights and convergence reporting existed (commit 74fe882). Bit-identical
# means what it says; a different numpy/BLAS build may round differently and move the last bits.
BEFORE = {
    "linear-False": ["0x1.427ffd86fe60fp+5", "-0x1.33ad1eb08da5bp-2", "0x0.0p+0", "0x1.ffff41b2328fdp-1",
                     "0x1.647dd44b2ab8ap-9", "0x1.3e903e0685d1dp+5", "0x1.46e97d917b63fp+5",
                     "-0x1.3479199fcd8bbp-2", "-0x1.32f321a6e0356p-2", "0x0.0p+0", "0x0.0p+0",
                     "0x1.f4852ff647b6bp+10"],
    "linear-True": ["0x1.1c77dd8d74f03p+6", "-0x1.59eb7fc1b81f1p-2", "0x1.b6b078654ec19p+0", "0x1.ff0dfe745c501p-1",
                    "0x1.01694acaea628p-8", "0x1.fa5110fc89956p+4", "0x1.4ddf5242d83bdp+7", "-0x1.91506e5611dacp-2",
                    "-0x1.258bf11d00c3cp-2", "0x1.b208769baa018p+0", "0x1.baebee7b1273dp+0",
                    "0x1.0386066d28f9ep+12"],
    "log-False": ["0x1.3de8662028532p+5", "-0x1.32e170ef6c003p-2", "0x0.0p+0", "0x1.fffdf293bd29ep-1",
                  "0x1.8f442997d6519p-9", "0x1.370f40a5926bfp+5", "0x1.45031adb354dap+5", "-0x1.341189e756464p-2",
                  "-0x1.31c0199ce6de4p-2", "0x0.0p+0", "0x0.0p+0", "0x1.eda5eec4c2288p+10"],
    "log-True": ["0x1.2b1936fa23629p+6", "-0x1.5d36a6de01a91p-2", "0x1.b6f06cde386d1p+0", "0x1.faab68dec8df2p-1",
                 "0x1.02f47eeb54987p-8", "0x1.763ef1b15fdbcp+2", "0x1.33303897c10a4p+13", "-0x1.4425e8a5512f0p-1",
                 "-0x1.71d707dd11c85p-3", "0x1.a7882e25c6e1ap+0", "0x1.c14387975a3cbp+0", "0x1.da8611a74ceaep+13"],
    "compute": ["0x1.4d1a1e504ba41p+8", "0x1.39a26c2535393p-3", "0x1.013ca1bd40c70p+1", "0x1.fff44a5421d61p-1",
                "0x1.f03041b2b691ep+7", "0x1.b170347055a40p+8", "0x1.f50c14652992ep+0", "0x1.07acd0ae59e31p+1",
                "0x1.26ed2347174f6p-3", "0x1.4ae6e6a036363p-3", "0x1.01c1453610c32p+14", "0x1.34ad2def5be18p+1"],
    "chinchilla": ["0x1.c347445ef0fefp+0", "0x1.2f2f41ea03910p+8", "0x1.e845517018d7ep+10", "0x1.4a512605d99d4p-2",
                   "0x1.773843d48a9fdp-2", "0x1.c976629234868p-13", "0x1.a3ebaa17ccfe1p+7", "0x1.01e8019cef5dbp+10",
                   "0x1.e6906708c02e6p+9", "0x1.b21f4805bdd70p+11", "0x1.bb51c054b3593p+0", "0x1.d364349fb8ffap+0",
                   "0x1.35766010c431dp-2", "0x1.971db215b26f1p-2", "0x1.4f76643722f9ap-2", "0x1.95d5d7a9bba61p-2",
                   "0x1.bd84af5cf8d2fp-2", "0x1.178358ffbab3ap-1", "0x1.d0f94e008a98cp-2", "0x1.213da85183968p-1",
                   "0x1.14600a1f2629cp+14"],
}


def numbers(fit, names) -> list[str]:
    out = [getattr(fit, k) for k in names]
    for k in sorted(fit.intervals):
        out += [fit.intervals[k].low, fit.intervals[k].high]
    return [float(v).hex() for v in (*out, float(np.sum(fit.boot_params)))]


def unweighted_numbers() -> dict[str, list[str]]:
    noise_x = np.exp(np.random.default_rng(7).normal(0, 0.004, X.size))
    out = {}
    for space, offset in itertools.product(("linear", "log"), (False, True)):
        y = (40.0 * X**-0.3 + (1.7 if offset else 0.0)) * noise_x
        f = fit_power_law(X, y, offset=offset, space=space, n_boot=50, seed=3)
        out[f"{space}-{offset}"] = numbers(f, ("a", "b", "c", "r2", "loo_rel_err"))
    f = fit_loss_compute(C, (2.0 + 300.0 * C**-0.15) * noise_x[:7], n_boot=50, seed=3)
    out["compute"] = [*numbers(f, ("A", "b", "E", "r2")), float(f.holdout.predicted).hex()]
    nn, rr = np.meshgrid(np.geomspace(5e7, 1e10, 6), np.geomspace(2, 200, 5))
    n, d = nn.ravel(), (nn * rr).ravel()
    loss = (1.8 + 480.0 / n**0.35 + 2100.0 / d**0.37) * np.exp(np.random.default_rng(2).normal(0, 0.01, n.size))
    f = fit_chinchilla(n, d, loss, starts=SMALL_STARTS, n_boot=8, boot_starts=2, seed=1)
    out["chinchilla"] = numbers(f, ("E", "A", "B", "alpha", "beta", "objective"))
    return out


def test_unweighted_results_are_bit_identical_to_before():
    got = unweighted_numbers()
    for key, want in BEFORE.items():
        assert got[key] == want, key
