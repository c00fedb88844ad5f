"""Runs of several workers (`RunConfig.workers` > 1), trained data-parallel with Ray Train.

`fit` is called where a one-worker run would call its run function: inside the sweep's Ray task (which then
holds no resources of its own: it only waits) or by `hyperp train`. Ray Train's TorchTrainer reserves one
placement group of `workers` bundles of the run's per-worker resources, so a run starts only when all its
workers fit, sets up the process group (gloo on CPU, NCCL on GPUs), and calls the run function on every
worker; hyperp.trainer.distributed makes `train` data-parallel inside it, and rank 0 writes the run's outputs.

A lost worker (or any error on one) ends the attempt: Ray Train stops the group and starts it again, up to
`max_retries` times, and the run function resumes from the run's last checkpoint, on as many workers as
before or another number (a checkpoint resumes across worker counts). The run is recorded once, by the
caller, with rank 0's row. Ray Train keeps its own bookkeeping under `<out_dir>/ray_train/`.
"""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.trainer.config import RunConfig

TRAIN_DIR = "ray_train"  # Ray Train's storage (its run state), inside the run's directory
ROW_FILE = "worker_row.pkl"  # rank 0's row, from the worker to `fit`

RunFn = Callable[[RunConfig, str], dict[str, Any]]
Setup = Callable[[RunConfig], None]


def worker(run_fn: RunFn, setup: Setup | None, cfg_json: str, out_dir: str, _config: dict | None = None) -> None:
    """The body of every Ray Train worker: the run function on this rank; rank 0 leaves its row for `fit`
    (pickled: a row holds NaNs and any type a run function returns)."""
    import ray.train  # noqa: PLC0415

    cfg = RunConfig.from_dict(json.loads(cfg_json))
    if setup is not None:
        setup(cfg)
    row = dict(run_fn(cfg, out_dir))
    if ray.train.get_context().get_world_rank() == 0:
        io.write_bytes(Path(out_dir) / ROW_FILE, pickle.dumps(row))


def fit(run_fn: RunFn, cfg: RunConfig, out_dir: str | Path, *, cpus: float = 1.0, gpus: float = 0.0,
        max_retries: int = 0, setup: Setup | None = None) -> dict[str, Any]:
    """Train `cfg` on `cfg.workers` Ray Train workers of `cpus` CPUs and `gpus` GPUs each; rank 0's row.
    Raises the training's error when the last attempt failed. Needs a connected Ray (ray.init)."""
    from ray.train import FailureConfig, RunConfig as TrainRunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    out = Path(out_dir).resolve()
    per_worker = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
    trainer = TorchTrainer(
        functools.partial(worker, run_fn, setup, cfg.to_json(), str(out)),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
        run_config=TrainRunConfig(name=out.name, storage_path=str(out / TRAIN_DIR),
                                  failure_config=FailureConfig(max_failures=max_retries)))
    (out / ROW_FILE).unlink(missing_ok=True)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    row = pickle.loads((out / ROW_FILE).read_bytes())
    (out / ROW_FILE).unlink()
    return row
