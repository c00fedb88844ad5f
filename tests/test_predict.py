"""Predictions at a target scale recover the laws a synthetic sweep was built from, name their extrapolation,
and map the LR through the scheme's own rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperp.fitting.predict import predict
from hyperp.fitting.table import FitInputError
from hyperp.trainer.metrics import static_columns
from hyperp.config import RunConfig
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


# ---------------------------------------------------------------- inputs first; the shipped ledger

ROOT = Path(__file__).parents[1]
LEDGER = "examples/ledgers/predict_tiny.parquet"


def no_model(monkeypatch):
    """Building the target (torch) or fitting a law now fails the test: the inputs must be refused first."""
    import hyperp.fitting.predict as predict_module
    import hyperp.trainer.metrics

    def forbidden(*args, **kwargs):
        raise AssertionError("built or fitted before the inputs were checked")

    monkeypatch.setattr(hyperp.trainer.metrics, "static_columns", forbidden)
    monkeypatch.setattr(predict_module, "fit_law", forbidden)
    monkeypatch.setattr(predict_module, "fit_loss_compute", forbidden)


@pytest.mark.parametrize("rows, law, lacks", [
    (lambda df: df[df.depth == 3], "compute", r"LR sweep \(>= 3 learning rates, completed\) at >= 3 values of tokens; "
                                              r"the table has tokens=\d+ \(7 LRs\)$"),
    (lambda df: df.groupby("depth").head(1), "compute", r"at >= 3 values of tokens; the table has "
                                                        r"tokens=\d+ \(1 LR\), tokens=\d+ \(1 LR\), "),
    (lambda df: df.drop(columns="flops"), "compute", "missing column 'flops'"),
    (lambda df: df[df.depth <= 5], "chinchilla", r"needs >= 6 \(n_params, tokens\) pairs \(the best LR of each\); "
                                                 r"the table has 5: \(\d+, \d+\), "),
])
def test_predict_names_what_the_table_lacks_before_building_anything(monkeypatch, rows, law, lacks):
    df = rows(sweep())
    no_model(monkeypatch)
    with pytest.raises(FitInputError, match=lacks) as exc:
        predict(df, {"param": "hyperp", "depth": 8, "tokens": 10**8}, loss_law=law, n_boot=0)
    assert "\n" not in str(exc.value)


def test_one_model_size_is_refused_for_the_compute_law(monkeypatch):
    """Three token budgets at one model size feed the LR law but not the loss-compute law."""
    df = sweep()
    one_size = df[df.depth == 2]
    budgets = pd.concat([one_size.assign(tokens=one_size.tokens * k) for k in (1, 2, 4)], ignore_index=True)
    no_model(monkeypatch)
    with pytest.raises(FitInputError, match=r"compute loss law needs >= 3 model sizes .*; the table has 1: \d+$"):
        predict(budgets, {"param": "hyperp", "depth": 4, "tokens": 10**8}, n_boot=0)


def readme_predict_command() -> list[str]:
    """The README's `hyperp predict` command on the shipped ledger, as a list of arguments."""
    import shlex

    section = (ROOT / "README.md").read_text().split("### Predictions at a target scale", 1)[1]
    (line,) = [ln for ln in section.splitlines() if ln.startswith(f"hyperp predict {LEDGER} ")]
    return shlex.split(line)[1:]


def test_readme_predict_command_runs_on_the_shipped_ledger(monkeypatch):
    """The README command gives a finite loss below the ledger's best: the target (depth 4) has more compute
    than every run, so a loss-compute law fitted to the best run of each size must put it lower, and by less
    than the drop from the middle size to the largest (a decreasing convex law over a smaller factor of
    compute). Its base LR lies within the swept LRs, and the target width follows the sweep's aspect ratio."""
    from typer.testing import CliRunner

    from hyperp.cli import app

    monkeypatch.chdir(ROOT)
    args = readme_predict_command()
    res = CliRunner().invoke(app, [*args, "--json", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
    ledger = pd.read_parquet(ROOT / LEDGER)
    best = ledger.groupby("n_params").agg(loss=("val_loss", "min"), flops=("flops", "first")).sort_index()
    assert out["target"]["flops_planned"] > best.flops.max() and out["extrapolation"]["compute"] > 1
    ratio_before = best.flops.iloc[-1] / best.flops.iloc[-2]
    assert math.log(out["target"]["flops_planned"] / best.flops.iloc[-1]) < math.log(ratio_before)
    drop_before = best.loss.iloc[-2] - best.loss.iloc[-1]
    assert math.isfinite(out["loss"]) and best.loss.iloc[-1] - drop_before < out["loss"] < best.loss.iloc[-1]
    assert ledger.lr.min() <= out["lr"] <= ledger.lr.max()
    depth = int(args[args.index("--depth") + 1])
    assert out["target"]["depth"] == depth and out["target"]["width"] == depth * (ledger.width / ledger.depth).iloc[0]
    assert out["target"]["tokens"] == int(float(args[args.index("--tokens") + 1]))
