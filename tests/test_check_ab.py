"""hyperp check ab (hyperp.checks.ab): the optimum-loss difference of two arms, its interval and its verdict
(method.md section 11), on runs drawn from known parabolas with known noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyperp.checks.ab import check_ab
from hyperp.fitting.table import FitInputError

LRS = np.exp(np.linspace(np.log(0.005), np.log(0.08), 7))


def arm(value, shift=0.0, sd=0.002, seeds=3, lr_opt=0.02, lrs=LRS, rng=None, depth=2):
    """Runs of loss 2 + shift + 0.05 ln(lr/lr_opt)^2 + noise, `seeds` seeds at every LR."""
    rng = rng or np.random.default_rng(0)
    rows = [{"fused": value, "depth": depth, "lr": lr, "seed": s, "status": "completed",
             "val_loss": 2.0 + shift + 0.05 * np.log(lr / lr_opt) ** 2 + rng.normal(0, sd)}
            for lr in lrs for s in range(seeds)]
    return pd.DataFrame(rows)


def test_equal_arms_pass_and_a_shift_beyond_the_tolerance_fails():
    rng = np.random.default_rng(1)
    same = check_ab(pd.concat([arm("False", rng=rng), arm("True", rng=rng)]), "fused", "False")
    assert same.verdict == "pass" and abs(same.groups[0].delta) < 0.02  # tol = 1% of 2.0
    worse = check_ab(pd.concat([arm("False", rng=rng), arm("True", shift=0.05, rng=rng)]), "fused", "False")
    g = worse.groups[0]
    assert worse.verdict == "fail" and g.better == "baseline" and g.interval.low > 0.02
    assert g.delta == pytest.approx(0.05, abs=0.01)


def test_interval_covers_a_zero_difference_at_its_level():
    """Over 200 draws of two equal arms (2 seeds per LR), the 95% interval holds the true difference 0 in about
    95% of them: the standard error is the noise's, not the bootstrap of a 3-point fit."""
    rng = np.random.default_rng(2)
    hits = []
    for _ in range(200):
        df = pd.concat([arm("a", sd=0.01, seeds=2, rng=rng), arm("b", sd=0.01, seeds=2, rng=rng)])
        g = check_ab(df, "fused", "a").groups[0]
        hits.append(g.interval.low <= 0.0 <= g.interval.high)
    assert 0.88 <= np.mean(hits) <= 0.995


def test_no_pass_without_a_noise_estimate_or_a_bracketed_optimum():
    three = LRS[2:5]  # a parabola through 3 points, no repeated LR: no noise estimate
    df = pd.concat([arm("False", seeds=1, lrs=three), arm("True", seeds=1, lrs=three)])
    g = check_ab(df, "fused", "False").groups[0]
    assert g.verdict == "inconclusive" and "no noise estimate" in g.why
    edge = pd.concat([arm("False"), arm("True", lr_opt=0.2)])  # the variant's best LR at the grid's edge
    g = check_ab(edge, "fused", "False").groups[0]
    assert g.verdict == "inconclusive" and "not bracketed" in g.why


def test_seed_noise_is_pooled_within_each_arm_not_across_arms():
    """Arms 0.05 apart at the same LRs: the noise SD is the seeds' (0.002), not inflated by the arms' gap."""
    df = pd.concat([arm("False", sd=0.002), arm("True", shift=0.05, sd=0.002)])
    g = check_ab(df, "fused", "False").groups[0]
    assert g.sigma < 0.005


def test_groups_by_size_and_the_overall_verdict():
    rng = np.random.default_rng(3)
    df = pd.concat([arm("False", rng=rng), arm("True", rng=rng),
                    arm("False", depth=4, rng=rng), arm("True", shift=0.1, depth=4, rng=rng)])
    res = check_ab(df, "fused", "False", by=["depth"])
    assert [g.verdict for g in res.groups] == ["pass", "fail"] and res.verdict == "fail"
    assert [g.group for g in res.groups] == [{"depth": 2}, {"depth": 4}]


def test_bad_values_name_the_column():
    df = pd.concat([arm("False"), arm("True")])
    with pytest.raises(FitInputError, match="--baseline 'maybe' is no value of fused"):
        check_ab(df, "fused", "maybe")
    with pytest.raises(FitInputError, match="variant 'x' is no other value of fused"):
        check_ab(df, "fused", "False", variant="x")


def test_the_papers_protocol_reads_each_arm_at_its_proxys_lr():
    """At depth 4 the variant's optimum moves to 0.04 with the same best loss: tuned per size the arms are
    equal; transferred from depth 2 (0.02 for both) the variant pays 0.05 ln(2)^2 = 0.024 nats there."""
    rng = np.random.default_rng(4)
    df = pd.concat([arm("a", rng=rng, sd=0.001), arm("b", rng=rng, sd=0.001),
                    arm("a", depth=4, rng=rng, sd=0.001), arm("b", depth=4, lr_opt=0.04, rng=rng, sd=0.001)])
    tuned = check_ab(df, "fused", "a", by=["depth"])
    assert [g.verdict for g in tuned.groups] == ["pass", "pass"]
    moved = check_ab(df, "fused", "a", by=["depth"], transfer_along="depth")
    g2, g4 = moved.groups
    assert moved.protocol == "transferred" and g2.verdict == "pass"
    assert g4.delta == pytest.approx(0.05 * np.log(2) ** 2, abs=0.004)
    assert g4.verdict == "fail" and g4.better == "baseline"
    with pytest.raises(FitInputError, match="--transfer-along width must be one of the --by columns"):
        check_ab(df, "fused", "a", by=["depth"], transfer_along="width")


def test_trend_of_the_difference_against_compute_and_its_crossing():
    """The variant's gap is 0.02 ln(x / 1e12) nats at x = 1e11, 1e12, 1e13: slope 0.02 per e-fold, zero at 1e12."""
    rng = np.random.default_rng(5)
    frames = []
    for depth, x in ((2, 1e11), (3, 1e12), (4, 1e13)):
        for value, shift in (("a", 0.0), ("b", 0.02 * np.log(x / 1e12))):
            frames.append(arm(value, shift=shift, depth=depth, sd=0.001, rng=rng).assign(flops=x))
    res = check_ab(pd.concat(frames), "fused", "a", by=["depth"], trend_x="flops")
    t = res.trend
    assert t.interval.low <= 0.02 <= t.interval.high and t.interval.low > 0
    assert t.crossing_interval.low <= 1e12 <= t.crossing_interval.high
    assert t.crossing == pytest.approx(1e12, rel=0.5)
    flat = check_ab(pd.concat([f.assign(val_loss=f.val_loss - (f.fused == "b") * 0.02 * np.log(f.flops / 1e12))
                               for f in frames]), "fused", "a", by=["depth"], trend_x="flops").trend
    assert flat.interval.low <= 0 <= flat.interval.high and np.isnan(flat.crossing)  # no slope shown: no crossing


def test_what_would_decide_an_open_interval():
    from hyperp.checks.ab import _to_decide

    assert "4.0x the runs would fail" in _to_decide(0.03, half=0.02, tol=0.02)  # needs half-width 0.01: (2)^2
    assert "4.0x the runs would pass" in _to_decide(-0.01, half=0.02, tol=0.02)  # needs half-width 0.01
    assert "no number of runs" in _to_decide(0.02, half=0.01, tol=0.02)
