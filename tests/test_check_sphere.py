"""The sphere check passes for MuonH/AdamH and fails when the retraction is broken."""

import pytest

from hyperp.checks.sphere import FAIL, PASS, WD_RATIO_MAX, check_sphere
from hyperp.errors import InputError


def test_hyperp_stays_on_its_sphere_and_decay_is_second_order():
    res = check_sphere("hyperp", steps=10)
    assert res.verdict == PASS, res.why
    assert res.radius_drift < 1e-5 and 0.003 < res.wd_ratio < WD_RATIO_MAX  # ~0.01: second order


def test_a_step_without_retraction_fails(monkeypatch):
    import hyperp.trainer.optim as optim

    def no_retraction(p, direction, radius, lr, weight_decay=0.0):
        p.add_(direction * (radius / optim.frob(direction)), alpha=-lr)

    monkeypatch.setattr(optim, "sphere_step", no_retraction)
    res = check_sphere("hyperp", steps=10)
    assert res.verdict == FAIL and res.radius_drift > 1e-3


def test_schemes_without_a_sphere_are_refused():
    with pytest.raises(InputError, match="param"):
        check_sphere("adamw")
