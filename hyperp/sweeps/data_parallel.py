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

A cancelled run (Ctrl-C, a cancelled sweep: a KeyboardInterrupt where `fit` waits) writes the trainer's stop
file; every rank stops after the same step, rank 0 checkpoints it, and `fit` raises KeyboardInterrupt once the
workers are done (or after STOP_WAIT_S), so the rerun resumes from that step, as a one-worker run does.
"""

from __future__ import annotations

import functools
import json
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.config import RunConfig
from hyperp.trainer.distributed import STOP_FILE

TRAIN_DIR = "ray_train"  # Ray Train's storage (its run state), inside the run's directory
ROW_FILE = "worker_row.pkl"  # rank 0's row, from the worker to `fit`
STOP_WAIT_S = 4.0  # a cancelled run's wait for its workers' last step and checkpoint (within the sweep's
# CANCEL_GRACE_S of hyperp.sweeps.cluster, after which the task's worker is killed)

RunFn = Callable[[RunConfig, str], dict[str, Any]]
Setup = Callable[[RunConfig], None]


def worker(run_fn: RunFn, setup: Setup | None, cfg_json: str, out_dir: str, _config: dict | None = None) -> None:
    """The body of every Ray Train worker: the run function on this rank; rank 0 leaves its row for `fit`
    (pickled: a row holds NaNs and any type a run function returns)."""
    import ray.train  # noqa: PLC0415

    cfg = RunConfig.from_dict(json.loads(cfg_json))
    if setup is not None:
        setup(cfg)
    try:
        row = dict(run_fn(cfg, out_dir))
    except KeyboardInterrupt:
        if (Path(out_dir) / STOP_FILE).exists():
            return  # stopped as asked (rank 0 checkpointed): a clean end, not a failure Ray Train would retry
        raise
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
    (out / STOP_FILE).unlink(missing_ok=True)
    result = fit_or_stop(trainer.fit, out, finished=(out / ROW_FILE).is_file)
    if result.error is not None:
        raise result.error
    row = pickle.loads((out / ROW_FILE).read_bytes())
    (out / ROW_FILE).unlink()
    return row


def fit_or_stop(fit_fn: Callable[[], Any], out: Path, finished: Callable[[], bool] = lambda: False) -> Any:
    """fit_fn() in a thread, this thread waiting: a KeyboardInterrupt here writes the stop file, waits up to
    STOP_WAIT_S for the workers to stop (rank 0 checkpoints), and is raised again, unless fit_fn has returned
    and `finished()` says the work was done all the same (the stop came during the last step): then its result
    stands, and the run is not trained again."""
    box: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join cut by KeyboardInterrupt can return early ever after

    def call() -> None:
        try:
            box["result"] = fit_fn()
        except BaseException as e:  # noqa: BLE001 (handed to the waiting thread)
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=call, daemon=True, name="hyperp-ray-train").start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        io.write_bytes(out / STOP_FILE, b"")
        done.wait(STOP_WAIT_S)
        if not ("result" in box and finished()):
            raise
        (out / STOP_FILE).unlink(missing_ok=True)  # the run stands as finished: no stop left behind in it
    if "error" in box:
        raise box["error"]
    return box["result"]
