"""Data-parallel runs in a sweep: Ray Train workers (gloo on CPU) scheduled beside one-worker runs, recorded
once, and a lost worker resumed from the run's checkpoint. One sweep exercises all of it (Ray Train's start is
the cost: about a minute on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperp.sweeps.ledger import read_ledger
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.spec import loads_spec
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.config import RunConfig
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
    out = run_sweep(spec, tmp_path / "sweeps", run_fn="hyperp.sweeps.stubs:train_or_die")
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
    again = run_sweep(spec, tmp_path / "sweeps", run_fn="hyperp.sweeps.stubs:train_or_die")
    assert again.submitted == 0  # recorded once: nothing left to run


CANCELLED = """
import json, sys, time
from pathlib import Path
import ray
from hyperp.sweeps import data_parallel
from hyperp.config import RunConfig
from hyperp.trainer.loop import train

def slow_run(cfg, out_dir):  # rank 0 marks each step and slows the group down, so the test can stop it midway
    def on_step(info):
        Path(out_dir, "step").write_text(str(info.step))
        time.sleep(0.05)
    return train(cfg, out_dir, on_step=on_step).row

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    data_parallel.fit(slow_run, RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2])
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_cancelled_data_parallel_run_checkpoints_where_it_stopped(tmp_path: Path):
    """Ctrl-C (or a cancelled sweep) where the driver waits: every rank stops after the same step, rank 0
    checkpoints it, and the rerun resumes there (here on one worker) to the loss of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from hyperp.trainer import checkpoint

    cfg = RunConfig.from_dict(json.loads(make_plan(loads_spec(SPEC)).runs[0].config.to_json())).replace(
        workers=2, tokens=64 * 1024, checkpoint_every=0, threads=1)  # 128 steps, no periodic checkpoint
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", CANCELLED, cfg.to_json(), str(out)],
                            env=dict(os.environ, RAY_DEDUP_LOGS="0"))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            step = out / "step"
            if step.is_file() and step.read_text().strip() and int(step.read_text()) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    assert (out / checkpoint.CHECKPOINT).is_file(), "no checkpoint of the step where the run stopped"
    resumed = train(cfg.replace(workers=1), out)
    assert 3 <= resumed.row["resumed_step"] < cfg.total_steps
    straight = train(cfg.replace(workers=1))
    assert resumed.row["val_loss"] == pytest.approx(straight.row["val_loss"], rel=REL)


def interrupt_main_after(seconds: float) -> None:
    """A Ctrl-C in the main thread (where `fit` waits) after `seconds`."""
    import _thread
    import threading

    threading.Timer(seconds, _thread.interrupt_main).start()


def test_fit_or_stop_asks_the_workers_to_stop_and_raises(tmp_path: Path):
    import time

    from hyperp.sweeps.data_parallel import fit_or_stop
    from hyperp.trainer.distributed import STOP_FILE

    def workers() -> str:  # stop within 0.1 s of being asked, as ranks do after their step
        deadline = time.time() + 30
        while not (tmp_path / STOP_FILE).exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        return "stopped"

    interrupt_main_after(0.2)
    with pytest.raises(KeyboardInterrupt):
        fit_or_stop(workers, tmp_path)
    assert (tmp_path / STOP_FILE).exists()


def test_fit_or_stop_keeps_a_run_that_finished_as_it_was_stopped(tmp_path: Path):
    import time

    from hyperp.sweeps.data_parallel import fit_or_stop
    from hyperp.trainer.distributed import STOP_FILE

    def last_step() -> str:
        time.sleep(1.5)
        (tmp_path / "row").write_text("done")  # the workers' row: the run completed anyway
        return "result"

    interrupt_main_after(0.3)
    assert fit_or_stop(last_step, tmp_path, finished=(tmp_path / "row").is_file) == "result"
    assert not (tmp_path / STOP_FILE).exists()
    (tmp_path / "row").unlink()
    interrupt_main_after(0.3)
    with pytest.raises(KeyboardInterrupt):  # not finished: stopped
        fit_or_stop(lambda: time.sleep(1.5), tmp_path, finished=(tmp_path / "row").is_file)


def test_fit_or_stop_passes_the_workers_error_on(tmp_path: Path):
    from hyperp.sweeps.data_parallel import fit_or_stop

    def broken():
        raise ValueError("a worker failed")

    with pytest.raises(ValueError, match="a worker failed"):
        fit_or_stop(broken, tmp_path)
