"""`hyperp check ...` and `hyperp predict` through the CLI: strict JSON, verdicts, exit code 1 on a failed check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hyperp.cli import app
from test_check_stability import curves as stability_curves
from test_check_transfer import sweep as transfer_sweep
from test_predict import sweep as predict_sweep


def strict(text: str):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-strict JSON: {c}")))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_check_transfer_passes_a_transferring_rule_and_exits_1_on_a_broken_one(tmp_path):
    good = tmp_path / "good.parquet"
    transfer_sweep(lambda w: 0.02).to_parquet(good)
    res = invoke("check", "transfer", good, "--axis", "width", "-B", "50", "--json")
    assert res.exit_code == 0 and strict(res.stdout)["verdict"] == "pass"
    bad = tmp_path / "bad.parquet"
    transfer_sweep(lambda w: 0.02 * 64 / w).to_parquet(bad)
    res = invoke("check", "transfer", bad, "--axis", "width", "-B", "50")
    assert res.exit_code == 1 and "verdict: fail" in res.stdout
    assert invoke("check", "transfer", bad, "--axis", "widht").exit_code == 2


def test_check_coord_and_sphere_run_their_own_tiny_models():
    res = invoke("check", "coord", "--param", "adamw", "--lr", "0.01", "--json")
    assert res.exit_code == 1 and strict(res.stdout)["verdict"] == "fail"
    res = invoke("check", "sphere", "--steps", "5", "--json")
    assert res.exit_code == 0 and strict(res.stdout)["radius_drift"] < 1e-5


def test_check_stability_reads_a_sweep_directory(tmp_path):
    curves = stability_curves(lambda t, n: 5.0 + t / 8192)
    runs_dir = tmp_path / "runs"
    for rid, c in curves.groupby("run_id"):
        (runs_dir / rid).mkdir(parents=True)
        c.drop(columns=["n_params"]).to_parquet(runs_dir / rid / "curves.parquet")
    runs = curves.groupby("run_id").first().reset_index()[["run_id", "n_params"]]
    runs.assign(val_loss=2.0, status="completed", lr=0.01).to_parquet(tmp_path / "runs.parquet")
    res = invoke("check", "stability", tmp_path, "--json")
    assert res.exit_code == 1
    doc = strict(res.stdout)
    assert doc["scale"] == "n_params" and {i["indicator"]: i["verdict"] for i in doc["indicators"]}["attn_z"] == "growing"


def test_predict_prints_strict_json_with_every_group(tmp_path):
    table = tmp_path / "runs.parquet"
    predict_sweep().to_parquet(table)
    res = invoke("predict", table, "--param", "hyperp", "--depth", "24", "--width", "1536", "--tokens", "1e10",
                 "-B", "50", "--json")
    assert res.exit_code == 0, res.output
    doc = strict(res.stdout)
    assert set(doc["groups"]) == {"hidden", "head", "embed", "vector"} and doc["target"]["width"] == 1536
    assert doc["extrapolation"]["tokens"] > 100 and np.isfinite(doc["loss"])
    assert invoke("predict", table, "--param", "nope", "--tokens", "1e9").exit_code == 2


def test_every_noun_keeps_its_subcommands():
    """A Typer app with one command collapses into that command: `bench` must stay a group (`bench train`),
    `predict` is meant to be one command."""
    assert invoke("bench", "train", "--help").exit_code == 0
    assert invoke("predict", "--help").exit_code == 0 and invoke("check", "coord", "--help").exit_code == 0


def test_check_transfer_saves_the_json_it_prints_and_plot_transfer_draws_it(tmp_path):
    table = tmp_path / "bad.parquet"
    transfer_sweep(lambda w: 0.02 * 64 / w).to_parquet(table)
    saved = tmp_path / "out" / "transfer.json"
    res = invoke("check", "transfer", table, "--axis", "width", "-B", "50", "--json", "-o", saved)
    assert res.exit_code == 1 and json.loads(saved.read_text()) == strict(res.stdout)
    fig = tmp_path / "transfer.png"
    res = invoke("plot", "transfer", table, "--axis", "width", "-B", "50", "-o", fig)
    assert res.exit_code == 0, res.output
    assert fig.read_bytes().startswith(b"\x89PNG") and fig.stat().st_size > 10_000


def test_check_ab_text_json_and_exit_code(tmp_path):
    from test_check_ab import arm

    rng = np.random.default_rng(7)
    path = tmp_path / "ab.parquet"
    pd.concat([arm("a", rng=rng), arm("b", shift=0.05, rng=rng), arm("a", depth=4, rng=rng),
               arm("b", shift=0.05, depth=4, rng=rng)]).assign(flops=lambda d: 1e11 * d.depth).to_parquet(path)
    res = invoke("check", "ab", path, "--col", "fused", "--baseline", "a", "--by", "depth", "--json")
    data = strict(res.stdout)
    assert res.exit_code == 1 and data["verdict"] == "fail" and [g["better"] for g in data["groups"]] == ["baseline"] * 2
    text = invoke("check", "ab", path, "--col", "fused", "--baseline", "a", "--by", "depth", "--transfer-along",
                  "depth", "--trend", "flops")
    assert text.exit_code == 1 and "at the transferred LRs" in text.stdout and "trend:" in text.stdout
