"""The sphere's two facts on a real model (method.md section 3): MuonH and AdamH keep every matrix on its
sphere, and weight decay is a first-order no-op there.

A tiny model of the scheme trains `steps` steps on the stdlib corpus, once per seed (seed i draws its own init
and batches; seeds first_seed, first_seed + 1, ..., with first_seed = 0 unless a `seed` override is given).
Then, per seed:
- radius drift: max over matrices of | ||W||_F / r - 1 | (r fixed at the first step), within DRIFT_TOL;
- weight decay: for each trained hidden matrix W and the Newton-Schulz direction D of a fresh gradient, the
  sphere step with decay minus the step without, at lr and lr/10 (in float64). A first-order effect shrinks
  10x with the LR, a second-order one 100x: the ratio (the worst over matrices) must be at most WD_RATIO_MAX.

Verdict (method.md section 11): each quantity's Student-t interval at LEVEL over the seeds (the drift's mean
on a linear scale, its lower bound clipped at 0; the ratio's geometric mean on a log scale) against its
tolerance.
- pass: every seed's drift and ratio lie within their tolerances, and both upper bounds too;
- fail: a lower bound lies beyond its tolerance;
- inconclusive: anything else, and always with one seed (no interval), with `decided_by` (the interval that
  decided) and `to_decide` (what would narrow it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hyperp.checks.coord import LEVEL, SEEDS, finite, seed_interval, seeds_to_decide
from hyperp.errors import InputError

SPHERE_SCHEMES = ("hyperp", "muonh")
DRIFT_TOL = 1e-4  # float32 retraction error after a few dozen steps is ~1e-6; a missing retraction is >> 1e-3
WD_LR = 1e-2  # the LR pair at which the decay's effect is compared (and WD_LR / 10)
WD = 0.1
WD_RATIO_MAX = 0.03  # second order gives ~0.01 for a 10x smaller LR, first order ~0.1
STEPS = 20
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Estimate:
    """One quantity over the seeds: per-seed values, their centre (mean, or geometric mean on a log scale) and
    its t-interval (None with one seed)."""

    name: str  # "radius drift" or "decay ratio"
    per_seed: tuple[float, ...]
    point: float
    low: float | None
    high: float | None
    tol: float
    log: bool

    def _fmt(self, v: float) -> str:
        return f"{v:.4f}" if self.log else f"{v:.2e}"

    def short(self) -> str:
        iv = "" if self.low is None else f" [{self._fmt(self.low)}, {self._fmt(self.high)}]"
        return f"{self._fmt(self.point)}{iv}"

    def text(self) -> str:
        kind = "geometric mean" if self.log else "mean"
        n = len(self.per_seed)
        return (f"{self.name} {self.short()} ({kind} of {n} seed{'s' if n > 1 else ''}, "
                f"largest {self._fmt(max(self.per_seed))}; tolerance {self.tol:g})")

    def to_dict(self) -> dict[str, Any]:
        return {"per_seed": [finite(v) for v in self.per_seed], "point": finite(self.point), "low": finite(self.low),
                "high": finite(self.high), "tol": self.tol, "scale": "log" if self.log else "linear"}


def estimate(name: str, values: list[float], tol: float, log: bool) -> Estimate:
    log = log and min(values) > 0  # a zero ratio (decay without any effect) falls back to the linear scale
    n = len(values)
    point = math.exp(sum(math.log(v) for v in values) / n) if log else sum(values) / n
    iv = seed_interval(values, log=log)
    low, high = (None, None) if iv is None else (iv[0] if log else max(0.0, iv[0]), iv[1])
    return Estimate(name, tuple(values), point, low, high, tol, log)


@dataclass(frozen=True)
class SphereCheck:
    param: str
    steps: int
    seeds: int  # how many seeds (each its own init and batches)
    radius_drift: float  # the largest over seeds (each seed's: the worst over matrices)
    wd_ratio: float  # the largest over seeds of the worst over matrices of |decay effect at lr/10| / |at lr|
    drift: Estimate  # per-seed drifts, their mean and its interval
    ratio: Estimate  # per-seed ratios, their geometric mean and its interval
    verdict: str
    why: str
    decided_by: str = ""  # the interval that decided the verdict, with its numbers
    to_decide: str = ""  # for an inconclusive verdict: what would narrow the deciding interval
    thresholds: dict[str, float] = field(default_factory=lambda: {"drift_tol": DRIFT_TOL,
                                                                  "wd_ratio_max": WD_RATIO_MAX, "level": LEVEL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "steps": self.steps, "seeds": self.seeds,
                "radius_drift": finite(self.radius_drift), "wd_ratio": finite(self.wd_ratio), "drift": self.drift.to_dict(), "ratio": self.ratio.to_dict(),
                "verdict": self.verdict, "why": self.why, "decided_by": self.decided_by, "to_decide": self.to_decide,
                "thresholds": dict(self.thresholds), "warnings": list(self.warnings)}


def check_sphere(param: str = "hyperp", steps: int = STEPS, seeds: int = SEEDS, **overrides: Any) -> SphereCheck:
    if param not in SPHERE_SCHEMES:
        raise InputError(f"param: the sphere check applies to {', '.join(SPHERE_SCHEMES)}, got {param!r}")
    if seeds < 1:
        raise InputError(f"seeds: at least 1, got {seeds}")
    first = int(overrides.pop("seed", 0))
    drifts, ratios = [], []
    for seed in range(first, first + seeds):
        opt = _trained(param, steps, overrides | {"seed": seed})
        drifts.append(float(opt.radius_drift()))
        ratios.append(_wd_ratio(opt))
    drift = estimate("radius drift", drifts, DRIFT_TOL, log=False)
    ratio = estimate("decay ratio", ratios, WD_RATIO_MAX, log=True)
    verdict, decided, to_decide = _verdict(drift, ratio, seeds)
    return SphereCheck(param=param, steps=steps, seeds=seeds, radius_drift=max(drifts), wd_ratio=max(ratios),
                       drift=drift, ratio=ratio, verdict=verdict, why=_why(verdict, drift, ratio, decided),
                       decided_by=decided.text(), to_decide=to_decide)


def _verdict(drift: Estimate, ratio: Estimate, seeds: int) -> tuple[str, Estimate, str]:
    """(verdict, the deciding estimate, to_decide): method.md section 11, each interval against its tolerance."""
    both = (drift, ratio)
    if seeds < 2:
        return INCONCLUSIVE, max(both, key=lambda e: e.point / e.tol), \
            f"run with --seeds {SEEDS} (or more): seeds give the interval"
    unknown = [e for e in both if e.low is None]
    if unknown:  # a non-finite value on some seed leaves no interval
        return INCONCLUSIVE, unknown[0], "other seeds or fewer steps (a value is not finite)"
    beyond = [e for e in both if e.low > e.tol]
    if beyond:
        return FAIL, max(beyond, key=lambda e: e.low / e.tol), ""
    open_ = [e for e in both if not (max(e.per_seed) <= e.tol and e.high <= e.tol)]
    if not open_:
        return PASS, max(both, key=lambda e: e.high / e.tol), ""
    e = max(open_, key=lambda q: q.high / q.tol)
    if e.high <= e.tol:  # the interval lies within, but some seed's value does not
        return INCONCLUSIVE, e, "more seeds: a seed lies beyond the tolerance while the interval lies within it"
    need = seeds_to_decide(e.per_seed, e.tol, seeds, log=e.log)
    return INCONCLUSIVE, e, (f"more seeds: about {need} (--seeds {need}) if the seed-to-seed spread holds" if need
                             else "its centre sits at the tolerance: more seeds alone may not decide it")


def _why(verdict: str, drift: Estimate, ratio: Estimate, decided: Estimate) -> str:
    wd = ("weight decay has no measurable effect on the step" if ratio.point <= 0 else
          f"weight decay's effect shrinks {1 / ratio.point:.0f}x for a 10x smaller LR")
    d, r = f"radius drift {drift.short()}", f"decay ratio {ratio.short()}"
    if len(decided.per_seed) < 2:
        return f"one seed: no interval ({d}; {r}: {wd})"
    if decided.low is None:
        return f"the {decided.name} is not finite on some seed: no interval ({d}; {r})"
    if verdict == PASS:
        return (f"{d} within {DRIFT_TOL:g} and {r} within {WD_RATIO_MAX:g} ({wd}: second order), on every seed "
                f"and at {LEVEL:.0%}")
    if verdict == FAIL:
        if decided is drift:
            return f"the matrices leave their sphere: {d} lies wholly beyond {DRIFT_TOL:g} ({r})"
        return f"weight decay acts at first order: {r} lies wholly beyond {WD_RATIO_MAX:g} ({wd}; {d})"
    name, tol = decided.name, decided.tol
    if decided.high <= tol:
        return f"{name} {decided.short()} lies within {tol:g}, but a seed's value does not (largest " \
               f"{decided._fmt(max(decided.per_seed))})"
    return f"{name} {decided.short()} straddles {tol:g}: it cannot tell a value beyond the tolerance from one within"


def _trained(param: str, steps: int, overrides: dict[str, Any]):
    from hyperp.config import RunConfig  # noqa: PLC0415 (torch: only when a check runs)
    from hyperp.trainer.data import load_corpus, train_batch  # noqa: PLC0415
    from hyperp.trainer.loop import build  # noqa: PLC0415

    base = {"depth": 2, "width": 64, "head_dim": 16, "seq_len": 64, "batch_tokens": 1024} | overrides
    cfg = RunConfig(param=param, tokens=base["batch_tokens"] * steps, **base)
    model, opt, _ = build(cfg, "cpu")
    corpus = load_corpus(cfg.data, cfg.val_percent)
    for step in range(steps + 1):
        x, y = train_batch(corpus, step, cfg.batch_size, cfg.seq_len, cfg.seed)
        _, loss = model(x, y)
        (loss + model.aux_loss()).backward()
        if step < steps:  # the last batch leaves its gradient for the decay comparison
            opt.step()
            opt.zero_grad()
    return opt


def _wd_ratio(opt) -> float:
    from hyperp.trainer.optim import newton_schulz, sphere_step  # noqa: PLC0415

    worst = 0.0
    for g in opt.param_groups:
        if g["name"] != "hidden":
            continue
        for p in g["params"]:
            w, d = p.detach().double(), newton_schulz(p.grad.detach(), "per_iter", 5, "torch").double()
            r = w.norm(dim=(-2, -1), keepdim=True)

            def effect(lr: float) -> float:
                with_wd, without = w.clone(), w.clone()
                sphere_step(with_wd, d, r, lr, WD)
                sphere_step(without, d, r, lr, 0.0)
                return (with_wd - without).norm().item()

            big = effect(WD_LR)
            if big > 0:
                worst = max(worst, effect(WD_LR / 10) / big)
    return worst
