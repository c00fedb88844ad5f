"""The coordinate check passes under HyperP and fails under a rule that ignores width."""

from hyperp.checks.coord import BAND, FAIL, PASS, check_coord


def test_hyperp_is_flat_in_width():
    res = check_coord("hyperp")
    assert res.verdict == PASS and res.spread <= BAND
    assert set(res.rms) == {"init", "after"} and all(len(v) == 3 for v in res.rms["after"].values())


def test_a_rule_without_width_scaling_fails():
    """Standard AdamW at a fixed LR (no width rule) blows the activations up as width grows."""
    res = check_coord("adamw", lr=1e-2)
    assert res.verdict == FAIL and res.spread > 2 * BAND and "beyond" in res.why
