"""A run's live progress, `progress.json` in its out dir, for `hyperp sweep status --watch`.

Written atomically (hyperp.io) from the trainer's `on_step` callback at most every PROGRESS_EVERY_S seconds
(time-based, so the cost is one small file per few seconds whatever the step time), and once at the last
step. Nothing reads it but the watch view: it is not part of the ledger.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from hyperp import io

PROGRESS_FILE = "progress.json"
PROGRESS_EVERY_S = 3.0  # seconds between writes: fresh enough for a view refreshed every few seconds


class ProgressWriter:
    """An `on_step` callback writing step, total, train loss, tokens/s and ETA to `out_dir/progress.json`."""

    def __init__(self, out_dir: str | Path, every_s: float = PROGRESS_EVERY_S):
        self.path = Path(out_dir) / PROGRESS_FILE
        self.every_s = every_s
        self.last = float("-inf")

    def __call__(self, info: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and info.step < info.total_steps:
            return
        self.last = now
        tokens_left = (info.total_steps - info.step) * (info.tokens / max(info.step, 1))
        io.write_json(self.path, {
            "step": info.step, "total_steps": info.total_steps, "tokens": info.tokens,
            "train_loss": info.loss if math.isfinite(info.loss) else None,
            "tokens_per_s": info.tokens_per_s,
            "eta_s": tokens_left / info.tokens_per_s if info.tokens_per_s > 0 else None,
            "updated_at": time.time()})


def read_progress(out_dir: str | Path) -> dict[str, Any] | None:
    """The last progress a run wrote, or None (not started, or not written yet)."""
    import json  # noqa: PLC0415

    try:
        return json.loads((Path(out_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
