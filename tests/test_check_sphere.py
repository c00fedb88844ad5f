"""The sphere check passes MuonH/AdamH over seeds, fails when the retraction is broken, and never passes on one
seed or on an interval that reaches past a tolerance."""

import json

import pytest

from hyperp.checks.sphere import (DRIFT_TOL, FAIL, INCONCLUSIVE, PASS, WD_RATIO_MAX, _verdict, check_sphere,
                                  estimate)
from hyperp.errors import InputError


@pytest.mark.parametrize("param", ["hyperp", "muonh"])
def test_sphere_schemes_stay_on_their_sphere_and_decay_is_second_order(param):
    res = check_sphere(param, steps=10)
    assert res.verdict == PASS and res.seeds == 3 and not res.to_decide, res.why
    assert res.radius_drift < 1e-5 and 0.003 < res.wd_ratio < WD_RATIO_MAX  # ~0.01: second order
    assert len(res.drift.per_seed) == len(res.ratio.per_seed) == 3
    assert res.drift.high < DRIFT_TOL and res.ratio.high < WD_RATIO_MAX and "second order" in res.why


def test_a_step_without_retraction_fails(monkeypatch):
    import hyperp.trainer.optim as optim

    def no_retraction(p, direction, radius, lr, weight_decay=0.0):
        p.add_(direction * (radius / optim.frob(direction)), alpha=-lr)

    monkeypatch.setattr(optim, "sphere_step", no_retraction)
    res = check_sphere("hyperp", steps=10)
    assert res.verdict == FAIL and res.radius_drift > 1e-3 and res.drift.low > DRIFT_TOL
    assert res.decided_by.startswith("radius drift") and "leave their sphere" in res.why


def test_one_seed_never_passes():
    res = check_sphere("hyperp", steps=5, seeds=1)
    assert res.radius_drift < 1e-5 and res.wd_ratio < WD_RATIO_MAX  # within on this seed
    assert res.verdict == INCONCLUSIVE and res.why.startswith("one seed: no interval") and "--seeds 3" in res.to_decide
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["seeds"] == 1 and d["drift"]["low"] is None and d["ratio"]["high"] is None


def test_verdict_is_earned_by_the_interval():
    drift = estimate("radius drift", [3e-7, 2e-7, 4e-7], DRIFT_TOL, log=False)
    # every seed's ratio within 0.03, but their interval reaches past it: open
    straddling = estimate("decay ratio", [0.012, 0.028, 0.02], WD_RATIO_MAX, log=True)
    verdict, decided, to_decide = _verdict(drift, straddling, 3)
    assert verdict == INCONCLUSIVE and decided is straddling and "seeds" in to_decide
    first_order = estimate("decay ratio", [0.1, 0.11, 0.09], WD_RATIO_MAX, log=True)
    assert _verdict(drift, first_order, 3)[:2] == (FAIL, first_order)


def test_schemes_without_a_sphere_are_refused():
    with pytest.raises(InputError, match="param"):
        check_sphere("adamw")
    with pytest.raises(InputError, match="seeds"):
        check_sphere("hyperp", seeds=0)
