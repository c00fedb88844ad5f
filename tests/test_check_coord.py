"""The coordinate check passes HyperP's width rule, fails a rule that ignores width, and never passes without an
interval (one seed, or an interval that reaches past the band)."""

import json

from hyperp.checks.coord import BAND, FAIL, INCONCLUSIVE, PASS, Spread, _verdict, check_coord

def test_hyperp_width_rule_is_flat_in_width():
    res = check_coord("hyperp")
    assert res.verdict == PASS and res.seeds == 3 and res.spread <= BAND, res.why
    assert all(s.high <= BAND and len(s.per_seed) == 3 for s in res.spreads) and not res.to_decide
    assert set(res.rms) == {"init", "after"} and all(len(v) == 3 for v in res.rms["after"].values())
    assert res.decided_by.startswith("spread of ") and res.decided_by in res.why


def test_a_rule_without_width_scaling_fails():
    """Standard AdamW at a fixed LR (no width rule) blows the activations up as width grows."""
    res = check_coord("adamw", lr=1e-2)
    assert res.verdict == FAIL and res.spread > 2 * BAND and "beyond" in res.why, res.why
    assert res.decided_by.startswith("spread of rms_mlp after 5 steps") and not res.to_decide
    assert max(s.low for s in res.spreads) > BAND


def test_one_seed_never_passes():
    res = check_coord("hyperp", widths=(64, 128), seeds=1)
    assert res.spread <= BAND  # flat on this seed: the old single-seed rule passed it
    assert res.verdict == INCONCLUSIVE and res.why.startswith("one seed: no interval") and "--seeds 3" in res.to_decide
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: no interval is null, not NaN
    assert d["seeds"] == 1 and all(s["low"] is None and s["high"] is None for s in d["spreads"])


def spread(point, low, high, moment="after", branch="rms_attn"):
    return Spread(moment, branch, (point, point), point, low, high)


def test_verdict_is_earned_by_the_interval():
    flat = spread(1.1, 1.0, 1.2, "init")
    assert _verdict([flat, spread(1.2, 1.1, 1.4)], 3, 5, (64, 256))[0] == PASS
    # a point estimate within the band is not enough: an interval reaching past it leaves it open
    verdict, why, decided_by, to_decide = _verdict([flat, spread(1.3, 1.05, 1.9)], 3, 5, (64, 256))
    assert verdict == INCONCLUSIVE and "straddles 1.5x" in why and "1.30x [1.05, 1.90]" in decided_by
    assert "seeds" in to_decide
    verdict, why, decided_by, _ = _verdict([flat, spread(3.0, 1.6, 5.0, branch="rms_mlp")], 3, 5, (64, 256))
    assert verdict == FAIL and "rms_mlp after 5 steps" in decided_by and "wholly beyond" in why
