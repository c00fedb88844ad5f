"""The transfer check on LR sweeps whose optimum is known (synthetic tables, then real tiny runs along an axis
whose effect on training is known exactly): a rule that transfers passes, a broken one fails."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import hyperp.trainer.loop as loop
from hyperp.checks.transfer import FAIL, INCONCLUSIVE, PASS, REGRET_TOL, SLOPE_TOL, _loss_at, check_transfer
from hyperp.cli import app
from hyperp.fitting.table import FitInputError
from hyperp.schema import write_records
from hyperp.config import RunConfig
from hyperp.trainer.loop import train

WIDTHS = (64, 128, 256, 512)
LRS = 0.02 * np.geomspace(1 / 8, 8, 9)
CURV = 0.04  # loss rise per (ln lr)^2: a 2x miss costs 0.019 nats


def sweep(eta_of_width, seeds=(0,), noise=0.0, loss_at_opt=lambda w: 3.0 - 0.1 * math.log2(w / 64)):
    rows = []
    for w in WIDTHS:
        for seed in seeds:
            rng = np.random.default_rng([w, seed])
            for lr in LRS:
                loss = loss_at_opt(w) + CURV * math.log(lr / eta_of_width(w)) ** 2 + rng.normal(0, noise)
                rows.append({"width": w, "lr": lr, "seed": seed, "val_loss": loss, "status": "completed"})
    return pd.DataFrame(rows)


def test_a_width_independent_optimum_passes_with_zero_regret():
    (res,) = check_transfer(sweep(lambda w: 0.02), "width", n_boot=200)
    assert res.verdict == PASS, res.why
    assert abs(res.slope) < 1e-9 and all(abs(p.regret) < 1e-9 for p in res.points)


def test_an_optimum_falling_like_one_over_width_fails_with_the_regret_it_costs():
    """The standard-parameterization failure: eta* ~ 1/w. Transferring the w=64 optimum to w=512 misses by 8x,
    which costs CURV * ln(8)^2 = 0.173 nats (measured on the parabola exactly)."""
    (res,) = check_transfer(sweep(lambda w: 0.02 * 64 / w), "width", n_boot=200)
    assert res.verdict == FAIL
    assert res.slope == pytest.approx(-1.0, abs=1e-6) and res.slope_interval.high < 0
    last = res.points[-1]
    assert last.scale == 512 and last.regret == pytest.approx(CURV * math.log(8) ** 2, rel=1e-6)
    assert last.regret_rel > REGRET_TOL


def test_seed_noise_is_measured_and_a_mild_drift_under_it_never_fails():
    """A mild drift (eta* ~ w^-0.05) under loss noise 0.02 per run: the pooled SD recovers the injected noise,
    and a drift this small (its regret < 0.001 nats) is never called a failure."""
    (res,) = check_transfer(sweep(lambda w: 0.02 * (w / 64) ** -0.05, seeds=(0, 1, 2), noise=0.02), "width",
                            n_boot=300)
    sds = [p.noise_sd for p in res.points]
    assert all(0.012 < s < 0.03 for s in sds), sds
    assert res.verdict != FAIL, res.why


def test_a_flat_optimum_buried_in_noise_is_inconclusive_not_a_pass():
    """The optimum is flat, but 3 seeds at noise 0.02 cannot place the slope within +-SLOPE_TOL: the interval
    contains 0 and reaches past the tolerance, which proves nothing (method.md section 11)."""
    (res,) = check_transfer(sweep(lambda w: 0.02, seeds=(0, 1, 2), noise=0.02), "width", n_boot=400)
    assert all(p.optimum.bracketed for p in res.points)
    lo, hi = res.slope_interval.low, res.slope_interval.high
    assert lo <= 0 <= hi and (lo < -SLOPE_TOL or hi > SLOPE_TOL), (lo, hi)  # premise: a straddling interval
    assert res.verdict == INCONCLUSIVE, res.why
    assert res.decided_by and res.to_decide and "no drift" not in res.why
    assert f"[{lo:.3f}, {hi:.3f}]" in res.why  # the message quotes the interval that decided


def test_a_clean_flat_optimum_passes_on_its_intervals():
    """Flat optimum, small noise (0.002) and 3 seeds: the slope's whole interval lies within +-SLOPE_TOL and
    every regret's upper bound within its allowance."""
    (res,) = check_transfer(sweep(lambda w: 0.02, seeds=(0, 1, 2), noise=0.002), "width", n_boot=400)
    assert res.verdict == PASS, res.why
    assert -SLOPE_TOL <= res.slope_interval.low and res.slope_interval.high <= SLOPE_TOL
    assert all(p.regret_interval.high <= p.allowance for p in res.points)
    assert all(p.regret_interval.low <= p.regret <= p.regret_interval.high for p in res.points)


def test_a_clear_drift_under_noise_fails_on_its_regret_lower_bound():
    """eta* ~ w^-0.5 under noise 0.005: at w = 512 the transferred LR is 2.8x off, costing CURV ln(2.8)^2 =
    0.043 nats against an allowance of 1% of 2.7: the regret's whole interval lies above it."""
    (res,) = check_transfer(sweep(lambda w: 0.02 * (w / 64) ** -0.5, seeds=(0, 1), noise=0.005), "width",
                            n_boot=400)
    last = res.points[-1]
    assert res.verdict == FAIL, res.why
    assert last.regret_interval.low > last.allowance and res.decided_by.startswith("regret")
    assert last.regret == pytest.approx(CURV * math.log(8 ** 0.5) ** 2, abs=0.01)


def test_the_papers_depth_summary_fails_without_depth_mup_and_passes_with_it():
    """method.md section 9 quotes the paper's depth sweeps: eta* ~ d^-0.64 over depth 8 to 24 without
    depth-muP, flat with it (the paper's tables themselves are not in shared/, so their summary slopes stand in
    for them). The same sweep design (9 LRs, 3 seeds, noise 0.002) fails the first and passes the second."""
    def depth_sweep(exponent: float) -> pd.DataFrame:
        rows = []
        for d in (8, 12, 16, 24):
            for seed in range(3):
                rng = np.random.default_rng([d, seed])
                for lr in LRS:
                    eta = 0.02 * (d / 8) ** exponent
                    loss = 3.0 - 0.05 * math.log2(d / 8) + CURV * math.log(lr / eta) ** 2 + rng.normal(0, 0.002)
                    rows.append({"depth": d, "lr": lr, "seed": seed, "val_loss": loss, "status": "completed"})
        return pd.DataFrame(rows)

    (without,) = check_transfer(depth_sweep(-0.64), "depth", n_boot=400)
    assert without.verdict == FAIL and without.slope_interval.high < -SLOPE_TOL, without.why
    assert without.slope == pytest.approx(-0.64, abs=0.05)
    (with_rule,) = check_transfer(depth_sweep(0.0), "depth", n_boot=400)
    assert with_rule.verdict == PASS, with_rule.why


def test_a_regret_read_off_measured_means_has_only_a_lower_bound_and_no_false_fail():
    """A flat optimum under noise 0.03 with 2 seeds leaves some scales unbracketed, where the regret is read
    off the measured means: the best of 9 noisy means sits low by selection, so its point regret is biased
    upward. Its interval is a lower bound only (Bonferroni over the LRs the best was picked from), which must
    not fail a flat optimum, and an infinite upper bound can never pass it."""
    (res,) = check_transfer(sweep(lambda w: 0.02, seeds=(0, 1), noise=0.03), "width", n_boot=300)
    means_path = [p for p in res.points if math.isinf(p.regret_interval.high)]
    assert means_path, "premise: some scale's regret is read off the measured means"
    assert all(p.regret_interval.low <= p.regret for p in means_path)
    assert res.verdict == INCONCLUSIVE, res.why


def test_an_unbracketed_scale_makes_it_inconclusive_not_a_pass():
    (res,) = check_transfer(sweep(lambda w: 0.02 if w < 512 else 5.0), "width", n_boot=100)
    # at 512 the optimum (5.0) is beyond the sweep: its optimum is the edge, not an optimum
    assert not res.points[-1].optimum.bracketed
    assert res.verdict in (FAIL, INCONCLUSIVE) and res.verdict != PASS
    assert any("width=512" in w for w in res.warnings)


def test_groups_and_bad_input():
    df = pd.concat([sweep(lambda w: 0.02).assign(param="hyperp"),
                    sweep(lambda w: 0.02 * 64 / w).assign(param="sp")])
    res = {r.group["param"]: r.verdict for r in check_transfer(df, "width", by=["param"], n_boot=50)}
    assert res == {"hyperp": PASS, "sp": FAIL}
    with pytest.raises(FitInputError, match="proxy"):
        check_transfer(df, "width", by=["param"], proxy=100)
    with pytest.raises(FitInputError, match="needs >= 2 scales"):
        check_transfer(df[df.width == 64], "width")


def test_local_slopes_follow_a_drift_that_changes_along_the_axis():
    """eta* flat from 64 to 128, then falling like 1/w: the local slopes are 0 then -1 (exactly, on noiseless
    parabolas), while the overall slope averages them."""
    (res,) = check_transfer(sweep(lambda w: 0.02 * min(1.0, 128 / w)), "width", n_boot=200)
    local = [(s.low_scale, s.high_scale, s.slope) for s in res.local_slopes]
    assert [(a, b) for a, b, _ in local] == [(64, 128), (128, 256), (256, 512)]
    assert [s for _, _, s in local] == pytest.approx([0.0, -1.0, -1.0], abs=1e-6)
    assert all(s.interval.low <= s.slope <= s.interval.high for s in res.local_slopes)
    assert -1.0 < res.slope < 0.0


# ---------------------------------------------------------------- on real tiny runs

# 30 steps of 256 tokens, validated once at the end; peak_tflops given: no MFU probe, nothing here reads MFU
RUN_SHAPE = dict(depth=1, width=16, head_dim=16, seq_len=32, batch_tokens=256, tokens=256 * 30, val_tokens=1024,
                 eval_every=30, threads=1, peak_tflops=1.0)
# Factor-2 grid around the tiny proxy's optimum (measured: vertex 0.26 at 2.65 nats; 3.29 at 0.05, 2.90 at 0.8,
# diverged at 1.6).
RUN_LRS = 0.05 * 2.0 ** np.arange(6)
BROKEN_POWER = 2  # the broken rule: every group's LR times (top_k / 1)^2


def lr_sweep(lrs, top_k: int) -> list[dict]:
    return [train(RunConfig(param="hyperp", lr=float(lr), top_k=top_k, **RUN_SHAPE)).row for lr in lrs]


def same_losses(a: list[dict], b: list[dict]) -> bool:
    """Bit-identical final losses and statuses (a diverged run's NaN equals NaN)."""
    return [r["status"] for r in a] == [r["status"] for r in b] and np.array_equal(
        [r["val_loss"] for r in a], [r["val_loss"] for r in b], equal_nan=True)


def scaled_lr_rule(monkeypatch, power: int) -> None:
    """Patch the scheme so every group's LR is multiplied by top_k^power (the trainer builds through
    hyperp.trainer.loop.resolve_hparams)."""
    real = loop.resolve_hparams

    def broken(cfg):
        hp = real(cfg)
        groups = {g: dataclasses.replace(hp.group(g), lr=hp.group(g).lr * cfg.top_k ** power)
                  for g in ("hidden", "head", "embed", "vector")}
        return dataclasses.replace(hp, **groups)

    monkeypatch.setattr(loop, "resolve_hparams", broken)


@pytest.fixture(scope="module")
def proxy_runs() -> list[dict]:
    """The proxy's LR sweep at top_k = 1, where the broken rule's factor 1^2 leaves every LR as hyperp's."""
    return lr_sweep(RUN_LRS, top_k=1)


def test_real_runs_transfer_exactly_along_an_axis_training_ignores(proxy_runs):
    """hyperp along top_k of a dense model. The MoE-granularity axis changes nothing in a dense model's
    training (moe_every = 0: the MLP's width, the parameters and the data ignore top_k, RunConfig.mlp_hidden,
    model.make_mlp) and hyperp has no top_k rule, so the k = 2 runs are the k = 1 runs bit for bit: the
    optimum cannot move (slope 0) and the transferred LR is each scale's own optimum (regret 0). A pass by
    construction, where hyperp's width or depth rule at this scale would be an empirical claim.

    Yet the check cannot tell it from these runs: one seed on a factor-2 grid places each optimum within about
    1.75x, so over one doubling of the axis the slope's interval reaches far past +-SLOPE_TOL. It must say
    inconclusive (the check treats the two scales' runs as independent, as they are in any real sweep) and name
    what would narrow it; a pass would be a pass on absence of evidence."""
    other = lr_sweep(RUN_LRS, top_k=2)
    assert same_losses(other, proxy_runs)  # premise: identical training
    df = pd.DataFrame(proxy_runs + other)
    (res,) = check_transfer(df, "top_k", n_boot=200)
    assert all(p.optimum.bracketed for p in res.points)
    assert res.slope == pytest.approx(0.0, abs=1e-12)  # np.polyfit's rounding on equal optima
    assert all(p.regret == pytest.approx(0.0, abs=1e-12) for p in res.points)
    assert res.slope_interval.low < -SLOPE_TOL and SLOPE_TOL < res.slope_interval.high
    assert res.verdict == INCONCLUSIVE and res.decided_by == "slope" and "more seeds" in res.to_decide, res.why


def test_real_runs_under_a_rule_scaling_lr_with_the_axis_fail(proxy_runs, monkeypatch, tmp_path):
    """A broken rule along the same axis: every group's LR times k^2. A run at k = 2 and base LR eta is then
    the proxy's run at 4 eta, so the optimum in base LR at k = 2 is the proxy's / 4: ln eta* falls by ln 4
    over ln 2 (slope -2, exact up to rounding: the k = 2 sweep, run on the proxy's grid / 4, is the proxy's
    sweep). Reusing the proxy's eta* at k = 2 trains at 4x its optimum, so the regret there is the proxy's own
    loss at 4 eta* minus its best: read off the proxy's curve, it must equal what the check reports."""
    scaled_lr_rule(monkeypatch, BROKEN_POWER)
    shift = 2.0 ** BROKEN_POWER
    scaled = lr_sweep(RUN_LRS / shift, top_k=2)
    assert same_losses(scaled, proxy_runs)  # premise: the same runs
    df = pd.DataFrame(proxy_runs + scaled)
    (res,) = check_transfer(df, "top_k", n_boot=200)
    proxy, far = res.points
    assert res.verdict == FAIL, res.why
    assert proxy.optimum.bracketed and far.optimum.bracketed
    # identical windows shifted by ln 4 in ln(lr): the vertex moves by exactly that (float rounding only)
    assert res.slope == pytest.approx(-BROKEN_POWER, abs=1e-9)
    # the interval comes from the two optima's own intervals (the proxy's spans 1.75x: about +-0.6 on the
    # slope); it would reach -SLOPE_TOL only if that span were about 40x
    assert res.slope_interval.high < -SLOPE_TOL
    # The same invariance holds for the regret, whichever way it is read: here 4 eta* lies past the last
    # completed run (only diverged LRs beyond), outside the parabola's window, so the check reports no regret
    # there (NaN, with a warning) rather than extrapolate; the slope alone fails it.
    cost = _loss_at(proxy.optimum, shift * proxy.optimum.lr_opt) - proxy.optimum.loss_opt
    assert far.regret == pytest.approx(cost, rel=1e-9, nan_ok=True)
    assert math.isfinite(far.regret) or any("outside the swept LRs" in w for w in res.warnings)

    table = tmp_path / "runs.parquet"
    write_records(table, proxy_runs + scaled)
    out = CliRunner().invoke(app, ["check", "transfer", str(table), "--axis", "top_k", "-B", "50"])
    assert out.exit_code == 1 and "verdict: fail" in out.stdout
