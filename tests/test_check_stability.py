"""The stability check: bounded indicators pass, an indicator growing within runs or across scale fails."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hyperp.checks.stability import FAIL, GROWTH_TOL, PASS, check_stability, growth_rate


def curves(attn_z, sizes=(1e6, 4e6, 16e6), steps=40):
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for s in range(1, steps + 1):
            tokens = s * 8192
            rows.append({"run_id": f"r{n:g}", "n_params": n, "tokens": tokens, "attn_z": attn_z(tokens, n),
                         "rms_mlp": 1.0 + 0.01 * rng.standard_normal(), "outlier_attn": 0.0})
    return pd.DataFrame(rows)


def test_growth_rate_of_a_power_is_its_exponent_near_the_mean():
    x = np.geomspace(1e5, 1e6, 50)
    assert abs(growth_rate(x, 3.0 * np.ones_like(x))) < 1e-12
    assert 0.8 < growth_rate(x, x / 1e5) < 1.0  # v = T: g = d v/d ln T / mean v, about 0.9 over one decade


def test_bounded_indicators_pass():
    res = check_stability(curves(lambda t, n: 5.0 + 0.01 * np.sin(t)))
    assert res.verdict == PASS and all(t.verdict == "bounded" for t in res.trends)
    assert {t.name for t in res.trends} == {"attn_z", "rms_mlp", "outlier_attn"}  # a share of 0 is fine


def test_attention_logits_growing_with_training_fail():
    res = check_stability(curves(lambda t, n: 5.0 + t / 8192))  # Z rises by one per step, without bound
    attn = next(t for t in res.trends if t.name == "attn_z")
    assert res.verdict == FAIL and attn.verdict == "growing" and attn.growth_max > GROWTH_TOL


def test_an_indicator_growing_with_model_size_fails():
    res = check_stability(curves(lambda t, n: 5.0 * (n / 1e6) ** 0.5))  # flat in T, ~sqrt(N) across sizes
    attn = next(t for t in res.trends if t.name == "attn_z")
    assert attn.scale_slope == __import__("pytest").approx(0.5, abs=1e-9) and res.verdict == FAIL


def test_best_runs_picks_the_lowest_loss_run_per_scale():
    from hyperp.checks.stability import best_runs

    runs = pd.DataFrame({"run_id": list("abcdef"), "n_params": [1, 1, 1, 2, 2, 2], "lr": [0.1, 0.2, 0.4] * 2,
                         "val_loss": [3.0, 2.5, 2.9, 2.0, 2.2, np.nan],
                         "status": ["completed"] * 5 + ["diverged"]})
    assert sorted(best_runs(runs)) == ["b", "d"]
