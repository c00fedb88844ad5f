"""Run functions for tests and benchmarks: stand-ins for the trainer with known behaviour.

A run function has the signature `run_fn(cfg: RunConfig, out_dir: str) -> dict` (a ledger row; `status`
"completed" or "diverged"; raising marks the run `failed`). It must be a module-level function of an
importable module so that Ray workers can unpickle it by reference, which is why these live in the package.

`stub_run` behaves according to the run's `tags` (a RunConfig field, so each behaviour is its own run id):

- `sleep = "<seconds>"`: sleep, then return;
- `raise = "<message>"`: raise RuntimeError(message);
- `disk_full = "1"`: raise OSError(ENOSPC) naming a file of out_dir, as a write to a full disk does;
- `diverge = "1"`: return status "diverged";
- `crash_once = "1"`: on the first attempt SIGKILL its own worker process (an infra failure), then succeed;
- `lr_opt = "<lr>"`: val_loss = 1 + (ln lr - ln lr_opt)^2, a known optimum for LR-search tests;
  with `diverge_above = "<lr>"` runs with a larger lr diverge;
- `seed_noise = "<sd>"`: adds a normal draw of that SD to val_loss, fixed by (seed, lr): a seed-to-seed spread;
- `report_env = "<NAME>"`: the row gets `env_<NAME>`, that environment variable in the worker ("" when unset).

`train_or_raise` and `train_or_die` are the real trainer with one fault each (an exception; a lost worker).
"""

from __future__ import annotations

import errno
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from hyperp.config import RunConfig


# The [base] of a tiny real-trainer run (about a second on one core), shared by sweep tests and benchmarks.
TINY_BASE_TOML = """
[base]
depth = 1
aspect_ratio = 32
head_dim = 16
seq_len = 32
batch_tokens = 512
tokens = 4096
val_tokens = 512
peak_tflops = 1.0
"""


def stub_run(cfg: RunConfig, out_dir: str) -> dict[str, Any]:
    tags = cfg.tags
    start = time.perf_counter()
    if "crash_once" in tags:
        marker = Path(out_dir) / "crashed"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    if "sleep" in tags:
        time.sleep(float(tags["sleep"]))
    if "raise" in tags:
        raise RuntimeError(tags["raise"])
    if "disk_full" in tags:
        path = Path(out_dir) / "checkpoint.pt"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    lr = cfg.base_lr
    loss = 1.0 + (math.log(lr) - math.log(float(tags.get("lr_opt", 0.01)))) ** 2
    if "seed_noise" in tags:
        loss += float(tags["seed_noise"]) * random.Random(f"{cfg.seed}:{lr!r}").gauss(0.0, 1.0)
    diverged = tags.get("diverge") == "1" or ("diverge_above" in tags and lr > float(tags["diverge_above"]))
    trained = cfg.total_steps * cfg.batch_tokens
    return {"status": "diverged" if diverged else "completed", "val_loss": math.nan if diverged else loss,
            "best_val_loss": math.nan if diverged else loss, "train_loss": loss, "lr": lr,
            "steps": cfg.total_steps, "tokens_trained": trained, "wall_time_s": time.perf_counter() - start,
            "hardware": "stub", "error": ""} | _reported_env(tags)


def _reported_env(tags: dict[str, str]) -> dict[str, str]:
    name = tags.get("report_env")
    return {f"env_{name}": os.environ.get(name, "")} if name else {}


def train_or_raise(cfg: RunConfig, out_dir: str) -> dict[str, Any]:
    """The real trainer, except that a run tagged `raise = "<message>"` raises RuntimeError(message)."""
    if "raise" in cfg.tags:
        raise RuntimeError(cfg.tags["raise"])
    from hyperp.sweeps.worker import train_run  # noqa: PLC0415

    return train_run(cfg, out_dir)


def train_or_die(cfg: RunConfig, out_dir: str) -> dict[str, Any]:
    """The real trainer, except that the process calling `on_step` (rank 0 of a data-parallel run) exits at once
    after step `die_at_step` (a tag) of its first attempt, as a lost worker does: no checkpoint, no record."""
    from hyperp.trainer.loop import train  # noqa: PLC0415

    marker, step = Path(out_dir) / "died", int(cfg.tags.get("die_at_step", 0))

    def on_step(info) -> None:
        if info.step == step and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    return train(cfg, out_dir, on_step=on_step, run_id=Path(out_dir).name).row
