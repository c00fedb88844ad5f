"""Checkpoints: model and optimizer state plus the loop state, written atomically, loaded weights-only.

A checkpoint is only resumed by the config that wrote it (compared as canonical JSON, but for the number of
workers and threads): a changed config starts afresh rather than silently continuing a different run.

A checkpoint that does not load (truncated, empty, random bytes, a pickle that `weights_only` refuses, keys
missing, tensors of the wrong shape for the model or optimizer) is never loaded, not even in part: it is
checked whole before anything is restored, then renamed aside to `checkpoint.pt.bad` (replacing an older
one) with a one-line warning naming it, and the run starts from scratch. So a sweep's retry of the run
succeeds instead of failing on the same file again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hyperp import io
from hyperp.config import RunConfig

CHECKPOINT = "checkpoint.pt"
BAD_SUFFIX = ".bad"
PAYLOAD_KEYS = ("config", "model", "optim", "loop")
log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Everything that moves during training and must survive a resume (stored as the payload's "loop")."""

    step: int = 0
    first_loss: float = math.nan
    train_time: float = 0.0  # seconds in training steps (eval excluded)
    opt_time: float = 0.0  # seconds in optimizer.step
    curves: list[dict[str, float]] = field(default_factory=list)
    diverged_step: int = -1


def save(out: Path, cfg: RunConfig, model: torch.nn.Module, opt, state: LoopState) -> Path:
    payload = {"config": cfg.to_json(), "model": model.state_dict(), "optim": opt.state_dict(),
               "loop": dataclasses.asdict(state)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a Python file, so a full disk is an OSError with its errno
            torch.save(payload, f)

    return io.atomic_write(out / CHECKPOINT, write)


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _optim_problem(saved: Any, opt) -> str | None:
    """Why the saved optimizer state does not fit `opt`, or None: groups, parameter counts, buffer shapes
    (a per-parameter buffer has the parameter's shape, or is a scalar like a step count or a radius)."""
    current = opt.state_dict()
    if not isinstance(saved, list) or len(saved) != len(current):
        n = len(saved) if isinstance(saved, list) else "?"
        return f"optimizer state for {n} optimizers, expected {len(current)}"
    for i, (s, o) in enumerate(zip(saved, opt.optimizers)):
        if not (isinstance(s, dict) and isinstance(s.get("state"), dict) and isinstance(s.get("param_groups"), list)):
            return f"optimizer {i}: expected a dict with state and param_groups"
        counts = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in s["param_groups"]]
        expected = [len(g["params"]) for g in o.param_groups]
        if counts != expected:
            return f"optimizer {i}: parameter groups of sizes {counts}, expected {expected}"
        params = [p for g in o.param_groups for p in g["params"]]
        for key, buffers in s["state"].items():
            if not isinstance(key, int) or not 0 <= key < len(params) or not isinstance(buffers, dict):
                return f"optimizer {i}: malformed state entry {key!r}"
            for name, v in buffers.items():
                shape = params[key].shape
                if isinstance(v, torch.Tensor) and v.numel() != 1 and v.shape != shape:
                    return (f"optimizer {i}: {name} of parameter {key} has shape {tuple(v.shape)}, "
                            f"expected {tuple(shape)}")
    return None


def problem(payload: Any, model: torch.nn.Module, opt) -> str | None:
    """Why a loaded payload cannot be restored into (model, opt), or None when it can."""
    if not isinstance(payload, dict) or any(k not in payload for k in PAYLOAD_KEYS):
        have = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        return f"expected keys {', '.join(PAYLOAD_KEYS)}, found {have}"
    if not isinstance(payload["model"], dict) or _shapes(payload["model"]) != _shapes(model.state_dict()):
        return "model tensors do not match this model (names or shapes)"
    try:
        LoopState(**payload["loop"])
    except TypeError as e:
        return f"loop state: {e}"
    return _optim_problem(payload["optim"], opt)


def set_aside(path: Path, reason: str) -> Path:
    bad = path.with_name(path.name + BAD_SUFFIX)
    os.replace(path, bad)  # replaces an older .bad
    log.warning("%s does not load (%s); moved to %s, training from scratch", path, reason, bad.name)
    return bad


def load(out: Path, cfg: RunConfig, model: torch.nn.Module, opt) -> LoopState | None:
    """Restore model and optimizer in place and return the loop state, or None when there is nothing to
    resume: no checkpoint, one of another config, or one that does not load (set aside, see above)."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        reason = problem(payload, model, opt)
    except Exception as e:  # noqa: BLE001 (any unreadable file: truncated, not a zip, refused unpickling)
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if reason is not None:
        set_aside(path, reason)
        return None
    if not same_run(payload["config"], cfg):
        return None
    opt.load_state_dict(payload["optim"])
    model.load_state_dict(payload["model"])
    return LoopState(**payload["loop"])


RESUMES_ACROSS = ("workers", "threads")  # a checkpoint resumes on another number of workers or threads


def same_run(config_json: str, cfg: RunConfig) -> bool:
    """The checkpoint's config is `cfg` but for RESUMES_ACROSS fields."""
    def key(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in RESUMES_ACROSS}

    return key(json.loads(config_json)) == key(json.loads(cfg.to_json()))


def remove(out: Path) -> None:
    (out / CHECKPOINT).unlink(missing_ok=True)
