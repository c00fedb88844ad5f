"""Predictions at a target scale recover the laws a synthetic sweep was built from, name their extrapolation,
and map the LR through the scheme's own rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hyperp.fitting.predict import predict
from hyperp.fitting.table import FitInputError
from hyperp.sweeps.spec import static_columns
from hyperp.trainer.config import RunConfig
from hyperp.trainer.hparams import resolve_hparams


def lr_true(tokens):
    return 0.1 * (tokens / 1e6) ** -0.3


def loss_true(flops):
    return 2.0 + 50.0 * flops ** -0.1


def sweep(param="hyperp"):
    rows = []
    for depth in (1, 2, 3, 4, 5, 6):
        cfg = RunConfig(param=param, depth=depth, aspect_ratio=32, head_dim=16, seq_len=64, batch_tokens=1024)
        shape = static_columns(cfg)
        tokens = 20 * shape["n_params"] // 1024 * 1024
        cfg = cfg.replace(tokens=tokens)
        shape = static_columns(cfg)
        for lr in lr_true(tokens) * np.geomspace(1 / 4, 4, 7):
            rows.append({**{k: v for k, v in cfg.to_dict().items() if k != "tags"}, "lr": lr, "n_params": shape["n_params"], "flops": shape["flops_planned"],
                         "status": "completed", "config_json": cfg.to_json(),
                         "val_loss": loss_true(shape["flops_planned"]) + 0.03 * math.log(lr / lr_true(tokens)) ** 2})
    return pd.DataFrame(rows)


def test_prediction_inside_the_sweep_recovers_both_laws():
    df = sweep()
    target = {"param": "hyperp", "depth": 4, "tokens": int(df[df.depth == 4].tokens.iloc[0]) * 2}
    p = predict(df, target, n_boot=200)
    assert p.lr == pytest.approx(lr_true(target["tokens"]), rel=0.02)
    assert p.lr_interval.low <= p.lr <= p.lr_interval.high
    assert p.loss == pytest.approx(loss_true(p.target["flops_planned"]), rel=0.01)
    hp = resolve_hparams(RunConfig(param="hyperp", depth=4, aspect_ratio=32, head_dim=16, seq_len=64,
                                   batch_tokens=1024, tokens=target["tokens"], lr=p.lr))
    assert p.groups["hidden"]["lr"] == pytest.approx(hp.hidden.lr) and p.rule["token_factor"] == hp.token_factor
    assert p.extrapolation["compute"] < 10 and not any("extrapolation" in w for w in p.warnings)


def test_far_targets_are_predicted_and_flagged_as_extrapolations():
    p = predict(sweep(), {"param": "hyperp", "depth": 24, "width": 1536, "tokens": 10**10}, n_boot=100)
    assert p.target["width"] == 1536 and p.extrapolation["tokens"] > 100
    assert any("extrapolation" in w for w in p.warnings)
    assert p.lr == pytest.approx(lr_true(10**10), rel=0.05)  # an exact law extrapolates exactly


def test_missing_scheme_and_unfittable_lr_law_are_input_errors():
    df = sweep()
    with pytest.raises(FitInputError, match="param='muon'"):
        predict(df, {"param": "muon", "depth": 2, "tokens": 10**6}, n_boot=0)
    with pytest.raises(FitInputError, match="LR law"):
        predict(df[df.depth <= 2], {"param": "hyperp", "depth": 2, "tokens": 10**6}, n_boot=0)
