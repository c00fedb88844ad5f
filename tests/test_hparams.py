"""resolve_hparams reproduces method.md section 2's table, written out here independently."""

import math

import pytest

from hyperp.config import RunConfig
from hyperp.trainer.hparams import resolve_hparams

SHAPES = [(4, 2**20), (8, 2**22), (16, 2**24), (2, 2**18)]  # (depth, tokens) with proxy d0=4, T0=2^20


def cfg_for(param, depth, tokens, **kw):
    return RunConfig(param=param, depth=depth, tokens=tokens, base_depth=4, base_width=128, base_tokens=2**20,
                     lr=0.01, weight_decay=0.1, aspect_ratio=32, **kw)


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_hyperp_row(depth, tokens):
    hp = resolve_hparams(cfg_for("hyperp", depth, tokens))
    factor = math.sqrt(4 / depth) * (tokens / 2**20) ** -0.32
    assert hp.hidden.lr == pytest.approx(0.01 * factor)
    assert hp.residual_alpha == pytest.approx(1 / math.sqrt(2 * depth))
    assert hp.logit_mult == 1.0
    assert [hp.group(g).optimizer for g in ("hidden", "head", "embed", "vector")] == ["muonh", "adamh", "adamw", "adamw"]
    assert all(hp.group(g).weight_decay == 0 for g in ("hidden", "head", "embed", "vector"))
    # the paper's code applies the whole factor to every group (token_scaling="all", the default)
    assert hp.head.lr == pytest.approx(0.01 * factor) and hp.embed.lr == pytest.approx(0.01 * factor)


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_hyperp_token_factor_on_hidden_only(depth, tokens):
    hp = resolve_hparams(cfg_for("hyperp", depth, tokens, token_scaling="hidden"))
    assert hp.hidden.lr == pytest.approx(0.01 * math.sqrt(4 / depth) * (tokens / 2**20) ** -0.32)
    assert hp.embed.lr == pytest.approx(0.01 * math.sqrt(4 / depth))


def test_token_exponent_is_a_parameter():
    hp = resolve_hparams(cfg_for("hyperp", 4, 2**22, token_exponent=0.5))
    assert hp.hidden.lr == pytest.approx(0.01 * 4**-0.5)


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_muonh_row(depth, tokens):
    hp = resolve_hparams(cfg_for("muonh", depth, tokens))
    assert hp.hidden.lr == pytest.approx(0.01) and hp.residual_alpha == 1.0 and hp.logit_mult == 1.0
    assert [hp.group(g).optimizer for g in ("hidden", "head")] == ["muonh", "adamh"]
    assert all(hp.group(g).weight_decay == 0 for g in ("hidden", "head", "embed", "vector"))


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_muon_mup_row(depth, tokens):
    hp = resolve_hparams(cfg_for("muon", depth, tokens))
    width = 32 * depth
    assert hp.hidden.lr == pytest.approx(0.01 * math.sqrt(4 / depth))  # no token factor
    assert hp.residual_alpha == pytest.approx(1 / math.sqrt(2 * depth))
    assert hp.logit_mult == pytest.approx(128 / width)  # w0 / w
    assert hp.hidden.weight_decay == pytest.approx(0.1 * 4 / depth)  # lambda * d0 / d on matrices
    assert hp.head.weight_decay == 0  # method.md 2: the authors' no-decay group holds lm_head
    assert hp.vector.weight_decay == 0 and hp.embed.weight_decay == 0
    assert [hp.group(g).optimizer for g in ("hidden", "head", "embed")] == ["muon", "adamw", "adamw"]


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_adamw_row(depth, tokens):
    hp = resolve_hparams(cfg_for("adamw", depth, tokens))
    assert hp.hidden.lr == pytest.approx(0.01) and hp.head.lr == pytest.approx(0.01)
    assert hp.residual_alpha == 1.0 and hp.logit_mult == 1.0
    assert hp.hidden.weight_decay == pytest.approx(0.1) and hp.vector.weight_decay == 0
    assert hp.head.weight_decay == pytest.approx(0.1)  # lambda on every matrix, the head included
    assert all(hp.group(g).optimizer == "adamw" for g in ("hidden", "head", "embed", "vector"))


def test_proxy_shape_gets_base_lr():
    for param in ("hyperp", "muonh", "muon", "adamw"):
        assert resolve_hparams(cfg_for(param, 4, 2**20)).hidden.lr == pytest.approx(0.01)


def test_resolved_is_serialisable():
    import json

    d = resolve_hparams(cfg_for("hyperp", 8, 2**21)).to_dict()
    assert json.loads(json.dumps(d))["hidden"]["optimizer"] == "muonh"


def test_adam_lr_mult_scales_adamw_groups_beside_muon_type_matrices():
    for param, scaled in [("hyperp", {"embed", "vector"}), ("muon", {"head", "embed", "vector"}), ("adamw", set())]:
        base = resolve_hparams(cfg_for(param, 4, 2**20))
        hp = resolve_hparams(cfg_for(param, 4, 2**20, adam_lr_mult=0.1))
        for g in ("hidden", "head", "embed", "vector"):
            factor = 0.1 if g in scaled else 1.0
            assert hp.group(g).lr == pytest.approx(base.group(g).lr * factor), (param, g)


@pytest.mark.parametrize("depth,tokens", SHAPES)
def test_token_rule_on_gives_muonh_the_token_factor_only(depth, tokens):
    """token_rule="on": muonh as the authors' scripts run it, (T/T0)^-0.32 and nothing else of hyperp's."""
    hp = resolve_hparams(cfg_for("muonh", depth, tokens, token_rule="on"))
    factor = (tokens / 2**20) ** -0.32
    assert [hp.group(g).lr for g in ("hidden", "head", "embed", "vector")] == pytest.approx([0.01 * factor] * 4)
    assert hp.token_factor == pytest.approx(factor) and hp.depth_factor == 1.0 and hp.residual_alpha == 1.0


def test_token_rule_off_removes_hyperps_token_factor():
    hp = resolve_hparams(cfg_for("hyperp", 8, 2**22, token_rule="off"))
    assert hp.token_factor == 1.0 and hp.hidden.lr == pytest.approx(0.01 * math.sqrt(4 / 8))


@pytest.mark.parametrize("param", ["hyperp", "muon"])
def test_depth_factor_on_hidden_only(param):
    """depth_lr_groups="hidden": sqrt(d0/d) on the hidden matrices, every other group at the proxy's factor."""
    depth, tokens = 16, 2**20
    hp = resolve_hparams(cfg_for(param, depth, tokens, depth_lr_groups="hidden"))
    assert hp.hidden.lr == pytest.approx(0.01 * math.sqrt(4 / depth))
    assert [hp.group(g).lr for g in ("head", "embed", "vector")] == pytest.approx([0.01] * 3)
    assert hp.residual_alpha == pytest.approx(1 / math.sqrt(2 * depth))  # the rest of depth-muP stays
