"""Checkpoints: model and optimizer state plus the loop state, written atomically, loaded weights-only.

A checkpoint is only resumed by the config that wrote it (compared as canonical JSON): a changed config
starts afresh rather than silently continuing a different run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from hyperp import io
from hyperp.trainer.config import RunConfig

CHECKPOINT = "checkpoint.pt"


def save(out: Path, cfg: RunConfig, model: torch.nn.Module, opt, state) -> Path:
    payload = {"config": cfg.to_json(), "model": model.state_dict(), "optim": opt.state_dict(),
               "loop": dataclasses.asdict(state)}
    return io.atomic_write(out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))


def load(out: Path, cfg: RunConfig, model: torch.nn.Module, opt):
    """Restore model and optimizer in place and return the loop state, or None when there is nothing to resume."""
    from hyperp.trainer.loop import LoopState  # noqa: PLC0415 (loop imports this module)

    path = out / CHECKPOINT
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("config") != cfg.to_json():
        return None
    model.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optim"])
    return LoopState(**payload["loop"])


def remove(out: Path) -> None:
    (out / CHECKPOINT).unlink(missing_ok=True)
