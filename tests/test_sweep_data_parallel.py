"""Data-parallel runs in a sweep: Ray Train workers (gloo on CPU) scheduled beside one-worker runs, recorded
once, and a lost worker resumed from the run's checkpoint. One sweep exercises all of it (Ray Train's start is
the cost: about a minute on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperp.sweeps.ledger import read_ledger
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.spec import loads_spec, make_plan
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.trainer.config import RunConfig
from hyperp.trainer.loop import train

pytest.importorskip("ray.train")

REL = 1e-4  # as in test_distributed.py: the all-reduce's rounding
SPEC = ('name = "dp"\nmax_retries = 2\ncheckpoints_per_run = 4\n' + TINY_BASE_TOML +
        "[axes]\ndepth = [1, 2]\ntokens = [8192]\n"  # 16 steps, a checkpoint every 4
        '[[override]]\nwhere = { depth = 2 }\nset = { workers = 2, tags = { die_at_step = "10" } }\n'
        "[resources]\ncpus = 1\n")


def test_a_sweep_mixes_one_and_two_worker_runs_and_a_lost_worker_resumes(tmp_path: Path):
    spec = tmp_path / "dp.toml"
    spec.write_text(SPEC)
    out = run_sweep(spec, tmp_path / "sweeps", run_fn="hyperp.sweeps.stubs:train_or_die", progress=False)
    assert out.counts["completed"] == 2 and not out.failed_runs
    df = read_ledger(out.sweep_dir)
    assert len(df) == 2 and df.run_id.is_unique
    dp = df[df.depth == 2].iloc[0]
    assert dp.hardware.startswith("2 workers") and dp.workers == 2
    assert (out.sweep_dir / "runs" / dp.run_id / "died").is_file()  # rank 0 was lost once at step 10 ...
    assert dp.resumed_step == 8  # ... and the group restarted from the step-8 checkpoint
    (run,) = [r for r in make_plan(loads_spec(SPEC)).runs if r.config.depth == 2]
    straight = train(run.config.replace(workers=1)).row  # one process, never interrupted
    assert dp.val_loss == pytest.approx(straight["val_loss"], rel=REL)
    assert json.loads(dp.config_json)["workers"] == 2
    assert run_sweep(spec, tmp_path / "sweeps", run_fn="hyperp.sweeps.stubs:train_or_die",
                     progress=False).submitted == 0  # recorded once: nothing left to run
