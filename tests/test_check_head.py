"""The head diagnostic: at width 32 the default head (std 0.02, cap 0.64) binds and the final norm's gain
grows (measured 10.5x in 60 steps at lr 0.1); a head of std 0.5 (cap 16) leaves the gain at 1."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from hyperp.checks.head import FAIL, GAIN_TOL, INCONCLUSIVE, PASS, check_head
from hyperp.cli import app
from hyperp.config import RunConfig
from hyperp.trainer.loop import train

SHAPE = dict(depth=1, width=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=1024 * 60, lr=0.1,
             val_tokens=2048, stats_every=10)


def run(std: float, param: str = "hyperp", seed: int = 0) -> dict:
    return train(RunConfig(param=param, head_init_std=std, seed=seed, **SHAPE)).row


def test_a_binding_head_fails_and_a_free_one_passes_on_their_seeds_intervals(tmp_path):
    bound, free = [run(0.02, seed=s) for s in range(3)], [run(0.5, seed=s) for s in range(3)]
    assert min(r["final_norm_gain_max"] for r in bound) > GAIN_TOL >= max(r["final_norm_gain_max"] for r in free)
    assert check_head(pd.DataFrame(free)).verdict == PASS
    res = check_head(pd.DataFrame(bound + free))
    assert res.verdict == FAIL and [r["binds"] for r in res.runs] == [True] * 3 + [False] * 3
    assert res.runs[0]["cap"] == 0.02 * 32 and res.runs[0]["gain_low"] > GAIN_TOL and res.runs[0]["seeds"] == 3
    assert "std 0.02" in res.decided_by
    # one seed of each: no seed spread anywhere, so no interval: neither verdict is earned
    single = check_head(pd.DataFrame([bound[0], free[0]]))
    assert single.verdict == INCONCLUSIVE and "seeds" in single.to_decide
    # a single run beside seeded cells borrows their pooled seed SD
    borrowed = check_head(pd.DataFrame([bound[0], *free]))
    assert borrowed.verdict == FAIL and any("pooled" in w for w in borrowed.warnings)
    table = tmp_path / "runs.parquet"
    pd.DataFrame(bound + free).drop(columns=["tags"], errors="ignore").to_parquet(table)
    out = CliRunner().invoke(app, ["check", "head", str(table)])
    assert out.exit_code == 1 and "binds" in out.stdout
