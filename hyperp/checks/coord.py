"""The coordinate check (muP's; method.md section 9): is the forward pass width-independent?

Train a few steps of the same tiny model at several widths on one fixed batch and compare the RMS of each
block's attention and MLP outputs at init and after the steps. Flat across widths (the largest max/min
ratio within BAND) passes. Necessary, not sufficient: a flat check with a drifting optimum is common, which
is why `check transfer` measures the optimum itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WIDTHS = (64, 128, 256)  # 4x growth
BAND = 1.5  # largest max/min ratio of a branch RMS across widths that still counts as flat
STEPS = 5
PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class CoordCheck:
    param: str
    widths: tuple[int, ...]
    steps: int
    rms: dict[str, dict[str, list[float]]]  # moment ("init", "after") -> branch -> RMS per width
    spread: float  # largest max/min ratio across widths, over branches and moments
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"band": BAND})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "widths": list(self.widths), "steps": self.steps, "rms": self.rms,
                "spread": self.spread, "verdict": self.verdict, "why": self.why, "thresholds": dict(self.thresholds),
                "warnings": list(self.warnings)}


def branch_rms(param: str, width: int, steps: int = STEPS, lr: float | None = None,
               **overrides: Any) -> list[dict[str, float]]:
    """RMS of each block's attention and MLP output (averaged over blocks) at init and after each of `steps`
    optimizer steps on one fixed batch of the stdlib corpus."""
    from hyperp.trainer.config import RunConfig  # noqa: PLC0415 (torch: only when a check runs)
    from hyperp.trainer.data import load_corpus, train_batch  # noqa: PLC0415
    from hyperp.trainer.loop import build  # noqa: PLC0415

    base = {"depth": 2, "head_dim": 16, "seq_len": 64, "batch_tokens": 1024} | overrides
    cfg = RunConfig(param=param, width=width, tokens=base["batch_tokens"] * steps, lr=lr, **base)
    model, opt, _ = build(cfg, "cpu")
    x, y = train_batch(load_corpus(cfg.data, cfg.val_percent), 0, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
    history = []
    for s in range(steps + 1):
        stats: dict = {}
        _, loss = model(x, y, stats)
        history.append({k: sum(v) / len(v) for k, v in stats.items() if k.startswith("rms_")})
        if s < steps:
            loss.backward()
            opt.step()
            opt.zero_grad()
    return history


def check_coord(param: str, widths: Sequence[int] = WIDTHS, steps: int = STEPS, lr: float | None = None,
                **overrides: Any) -> CoordCheck:
    """Run the coordinate check of `param` (at its default or the given base LR) across `widths`."""
    runs = [branch_rms(param, w, steps, lr, **overrides) for w in widths]
    rms = {moment: {k: [r[i][k] for r in runs] for k in runs[0][i]} for moment, i in (("init", 0), ("after", -1))}
    ratios = {(m, k): max(v) / min(v) for m, branches in rms.items() for k, v in branches.items()}
    (moment, branch), spread = max(ratios.items(), key=lambda kv: kv[1])
    verdict = PASS if spread <= BAND else FAIL
    why = (f"largest spread across widths {min(widths)}-{max(widths)}: {spread:.2f}x ({branch} {moment}"
           f"{'' if moment == 'init' else f' {steps} steps'}), {'within' if verdict == PASS else 'beyond'} {BAND}x")
    return CoordCheck(param=param, widths=tuple(widths), steps=steps, rms=rms, spread=spread, verdict=verdict, why=why)
