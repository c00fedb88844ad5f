"""The coordinate check (muP's; method.md section 9): is the forward pass width-independent?

Train a few steps of the same tiny model at several widths on one fixed batch and compare the RMS of each
block's attention and MLP outputs at init and after the steps. A branch's spread is its max/min RMS ratio
across widths. Necessary, not sufficient: a flat check with a drifting optimum is common, which is why
`check transfer` measures the optimum itself.

The spread of one init is noisy (a 64-wide model has 4 heads), so the check runs `seeds` seeds (seed i
draws its own init and its own batch; seeds first_seed, first_seed + 1, ..., with first_seed = 0 unless a
`seed` override is given) and judges each (moment, branch) by a Student-t interval at LEVEL over the seeds'
ln spreads, i.e. an interval for the geometric mean of the spread (its lower bound clipped at 1x, the least
a max/min ratio can be). Verdict (method.md section 11: equivalence, not absence of evidence):
- pass: every (moment, branch)'s upper bound lies within BAND (the data show the branches are flat);
- fail: some (moment, branch)'s lower bound lies beyond BAND (the data show one is not);
- inconclusive: anything else, and always with one seed (no interval), with `decided_by` (the interval that
  decided) and `to_decide` (the number of seeds that would narrow it, if the seed-to-seed SD holds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WIDTHS = (64, 128, 256)  # 4x growth
BAND = 1.5  # largest max/min ratio of a branch RMS across widths that still counts as flat
STEPS = 5
SEEDS = 3
LEVEL = 0.95
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
MAX_SEEDS_SUGGESTED = 100  # beyond this, more seeds are not the way to decide it


def finite(x: float | None) -> float | None:
    """x, or None when it is missing or not finite (strict JSON)."""
    return x if x is not None and math.isfinite(x) else None


def seed_interval(values: Sequence[float], level: float = LEVEL, *, log: bool = False) -> tuple[float, float] | None:
    """Student-t interval at `level` for the mean of `values` (one per seed), or of ln(values) with `log`
    (returned exponentiated: an interval for the geometric mean). None with fewer than two values, or with
    `log` when some value is not positive."""
    xs = [float(v) for v in values]
    if len(xs) < 2 or not all(math.isfinite(v) for v in xs) or (log and min(xs) <= 0):
        return None
    from scipy.stats import t as student_t  # noqa: PLC0415 (scipy: only when a check runs)

    if log:
        xs = [math.log(v) for v in xs]
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    return (math.exp(low), math.exp(high)) if log else (low, high)


def seeds_to_decide(values: Sequence[float], bound: float, have: int, level: float = LEVEL, *,
                    log: bool = False) -> int | None:
    """The number of seeds whose t-interval would lie wholly on one side of `bound`, if the seeds' mean and
    SD held; None when that would take more than MAX_SEEDS_SUGGESTED (the mean sits at the bound)."""
    from scipy.stats import t as student_t  # noqa: PLC0415

    xs = [math.log(v) for v in values] if log else [float(v) for v in values]
    b = math.log(bound) if log else bound
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    margin = abs(b - mean)
    for k in range(max(have + 1, 2), MAX_SEEDS_SUGGESTED + 1):
        if float(student_t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k) < margin:
            return k
    return None


@dataclass(frozen=True)
class Spread:
    """One (moment, branch)'s spread across widths: max/min RMS ratio per seed, their geometric mean and its
    t-interval (None with one seed)."""

    moment: str  # "init" or "after"
    branch: str  # "rms_attn", "rms_mlp"
    per_seed: tuple[float, ...]
    point: float  # geometric mean over seeds of the per-seed ratio (the interval's centre)
    low: float | None
    high: float | None

    def label(self, steps: int) -> str:
        return f"spread of {self.branch} {'at init' if self.moment == 'init' else f'after {steps} steps'}"

    def value_text(self) -> str:
        if not math.isfinite(self.point):
            return "not finite"
        iv = "" if self.low is None else f" [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.point:.2f}x{iv}"

    def text(self, steps: int) -> str:
        return f"{self.label(steps)}: {self.value_text()}"

    def to_dict(self) -> dict[str, Any]:
        return {"moment": self.moment, "branch": self.branch, "per_seed": [finite(v) for v in self.per_seed],
                "spread": finite(self.point), "low": finite(self.low), "high": finite(self.high)}


@dataclass(frozen=True)
class CoordCheck:
    param: str
    widths: tuple[int, ...]
    steps: int
    seeds: int  # how many seeds (each its own init and batch)
    rms: dict[str, dict[str, list[float]]]  # moment ("init", "after") -> branch -> RMS per width (mean over seeds)
    spreads: tuple[Spread, ...]  # per (moment, branch): per-seed ratios, geometric mean, interval
    spread: float  # the largest geometric mean over seeds of the per-seed max/min ratio, over (moment, branch)
    verdict: str
    why: str
    decided_by: str = ""  # the interval that decided the verdict, with its numbers
    to_decide: str = ""  # for an inconclusive verdict: what would narrow the deciding interval
    thresholds: dict[str, float] = field(default_factory=lambda: {"band": BAND, "level": LEVEL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "widths": list(self.widths), "steps": self.steps, "seeds": self.seeds,
                "rms": {m: {k: [finite(v) for v in vals] for k, vals in b.items()} for m, b in self.rms.items()},
                "spreads": [s.to_dict() for s in self.spreads], "spread": finite(self.spread),
                "verdict": self.verdict, "why": self.why, "decided_by": self.decided_by, "to_decide": self.to_decide,
                "thresholds": dict(self.thresholds), "warnings": list(self.warnings)}


def branch_rms(param: str, width: int, steps: int = STEPS, lr: float | None = None,
               **overrides: Any) -> list[dict[str, float]]:
    """RMS of each block's attention and MLP output (averaged over blocks) at init and after each of `steps`
    optimizer steps on one fixed batch of the stdlib corpus (the init and the batch drawn from `seed`).

    The base token budget defaults to the check's own few steps, so the token rule's factor is 1 and the steps
    run at the base LR: a 5-step "budget" against the 1M-token default would multiply a HyperP LR by 5.5x, an
    LR no run of the proxy ever uses (the factor is the same at every width, so it is not what is checked)."""
    from hyperp.config import RunConfig  # noqa: PLC0415 (torch: only when a check runs)
    from hyperp.trainer.data import load_corpus, train_batch  # noqa: PLC0415
    from hyperp.trainer.loop import build  # noqa: PLC0415

    base = {"depth": 2, "head_dim": 16, "seq_len": 64, "batch_tokens": 1024} | overrides
    base.setdefault("base_tokens", base["batch_tokens"] * steps)
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
                seeds: int = SEEDS, **overrides: Any) -> CoordCheck:
    """Run the coordinate check of `param` (at its default or the given base LR) across `widths`, once per
    seed."""
    if seeds < 1:
        from hyperp.errors import InputError  # noqa: PLC0415

        raise InputError(f"seeds: at least 1, got {seeds}")
    first = int(overrides.pop("seed", 0))
    moments = (("init", 0), ("after", -1))
    by_seed = []  # seed -> moment -> branch -> RMS per width
    for seed in range(first, first + seeds):
        runs = [branch_rms(param, w, steps, lr, seed=seed, **overrides) for w in widths]
        by_seed.append({m: {k: [r[i][k] for r in runs] for k in runs[0][i]} for m, i in moments})
    rms = {m: {k: [sum(s[m][k][j] for s in by_seed) / seeds for j in range(len(widths))] for k in branches}
           for m, branches in by_seed[0].items()}
    spreads = []
    for m, branches in by_seed[0].items():
        for k in branches:
            ratios = tuple(max(s[m][k]) / min(s[m][k]) for s in by_seed)
            point = math.exp(sum(math.log(r) for r in ratios) / seeds)
            iv = seed_interval(ratios, log=True)
            low, high = (None, None) if iv is None else (max(1.0, iv[0]), iv[1])
            spreads.append(Spread(m, k, ratios, point, low, high))
    verdict, why, decided_by, to_decide = _verdict(spreads, seeds, steps, widths)
    return CoordCheck(param=param, widths=tuple(widths), steps=steps, seeds=seeds, rms=rms, spreads=tuple(spreads),
                      spread=max(s.point for s in spreads), verdict=verdict, why=why, decided_by=decided_by,
                      to_decide=to_decide)


def _verdict(spreads: Sequence[Spread], seeds: int, steps: int, widths: Sequence[int]) -> tuple[str, str, str, str]:
    """(verdict, why, decided_by, to_decide): each spread's interval against BAND (method.md section 11)."""
    span = f"across widths {min(widths)}-{max(widths)}"
    if seeds < 2:
        s = max(spreads, key=lambda q: q.point)
        side = "within" if s.point <= BAND else "beyond"
        return (INCONCLUSIVE, f"one seed: no interval (the largest {s.label(steps)} {span} is {s.point:.2f}x, "
                              f"{side} {BAND}x on this seed alone)",
                s.text(steps), f"run with --seeds {SEEDS} (or more): seeds give the interval")
    unknown = [s for s in spreads if s.low is None]
    if unknown:  # a diverged run (a non-finite RMS) leaves no interval
        s = unknown[0]
        return (INCONCLUSIVE, f"the {s.label(steps)} is not finite on some seed (per seed: "
                              f"{', '.join(f'{r:.3g}' for r in s.per_seed)}): no interval",
                s.text(steps), "a smaller --lr (a run diverged), or other seeds")
    beyond = [s for s in spreads if s.low > BAND]
    if beyond:
        s = max(beyond, key=lambda q: q.low)
        return (FAIL, f"the {s.label(steps)} {span} lies wholly beyond {BAND}x: {s.point:.2f}x "
                      f"[{s.low:.2f}, {s.high:.2f}] over {seeds} seeds", s.text(steps), "")
    s = max(spreads, key=lambda q: q.high)
    if s.high <= BAND:
        return (PASS, f"every spread {span} lies within {BAND}x at {LEVEL:.0%} over {seeds} seeds (the closest: "
                      f"{s.text(steps)})", s.text(steps), "")
    need = seeds_to_decide(s.per_seed, BAND, seeds, log=True)
    to_decide = (f"more seeds: about {need} (--seeds {need}) if the seed-to-seed spread holds" if need else
                 f"its mean sits at the band's edge ({s.point:.2f}x against {BAND}x): more seeds alone may not "
                 f"decide it")
    return (INCONCLUSIVE, f"the {s.label(steps)} {span} straddles {BAND}x: {s.point:.2f}x [{s.low:.2f}, "
                          f"{s.high:.2f}] over {seeds} seeds cannot tell a spread beyond the band from one within",
            s.text(steps), to_decide)
