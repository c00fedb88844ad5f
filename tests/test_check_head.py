"""The head diagnostic: at width 32 the default head (std 0.02, cap 0.64) binds and the final norm's gain
grows (measured 10.5x in 60 steps at lr 0.1); a head of std 0.5 (cap 16) leaves the gain at 1."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from hyperp.checks.head import FAIL, GAIN_TOL, PASS, check_head
from hyperp.cli import app
from hyperp.trainer.config import RunConfig
from hyperp.trainer.loop import train

SHAPE = dict(depth=1, width=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=1024 * 60, lr=0.1,
             val_tokens=2048, stats_every=10)


def run(std: float, param: str = "hyperp") -> dict:
    return train(RunConfig(param=param, head_init_std=std, **SHAPE)).row


def test_a_binding_head_fails_and_a_free_one_passes(tmp_path):
    bound, free = run(0.02), run(0.5)
    assert bound["final_norm_gain_max"] > GAIN_TOL >= free["final_norm_gain_max"]
    assert check_head(pd.DataFrame([free])).verdict == PASS
    res = check_head(pd.DataFrame([bound, free]))
    assert res.verdict == FAIL and [r["binds"] for r in res.runs] == [True, False]
    assert res.runs[0]["cap"] == 0.02 * 32
    table = tmp_path / "runs.parquet"
    pd.DataFrame([bound, free]).drop(columns=["tags"], errors="ignore").to_parquet(table)
    out = CliRunner().invoke(app, ["check", "head", str(table)])
    assert out.exit_code == 1 and "binds" in out.stdout
