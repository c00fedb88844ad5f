"""The sphere's two facts on a real model (method.md section 3): MuonH and AdamH keep every matrix on its
sphere, and weight decay is a first-order no-op there.

A tiny model of the scheme trains `steps` steps on the stdlib corpus. Then:
- radius drift: max over matrices of | ||W||_F / r - 1 | (r fixed at the first step), within DRIFT_TOL;
- weight decay: for each trained hidden matrix W and the Newton-Schulz direction D of a fresh gradient, the
  sphere step with decay minus the step without, at lr and lr/10 (in float64). A first-order effect shrinks
  10x with the LR, a second-order one 100x: the ratio must be at most WD_RATIO_MAX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyperp.errors import InputError

SPHERE_SCHEMES = ("hyperp", "muonh")
DRIFT_TOL = 1e-4  # float32 retraction error after a few dozen steps is ~1e-6; a missing retraction is >> 1e-3
WD_LR = 1e-2  # the LR pair at which the decay's effect is compared (and WD_LR / 10)
WD = 0.1
WD_RATIO_MAX = 0.03  # second order gives ~0.01 for a 10x smaller LR, first order ~0.1
STEPS = 20
PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class SphereCheck:
    param: str
    steps: int
    radius_drift: float
    wd_ratio: float  # worst over matrices of |decay effect at lr/10| / |decay effect at lr|
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"drift_tol": DRIFT_TOL,
                                                                  "wd_ratio_max": WD_RATIO_MAX})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "steps": self.steps, "radius_drift": self.radius_drift, "wd_ratio": self.wd_ratio,
                "verdict": self.verdict, "why": self.why, "thresholds": dict(self.thresholds),
                "warnings": list(self.warnings)}


def check_sphere(param: str = "hyperp", steps: int = STEPS, **overrides: Any) -> SphereCheck:
    if param not in SPHERE_SCHEMES:
        raise InputError(f"param: the sphere check applies to {', '.join(SPHERE_SCHEMES)}, got {param!r}")
    opt = _trained(param, steps, overrides)
    drift = opt.radius_drift()
    ratio = _wd_ratio(opt)
    ok = drift <= DRIFT_TOL and ratio <= WD_RATIO_MAX
    why = (f"radius drift {drift:.2e} ({'within' if drift <= DRIFT_TOL else 'beyond'} {DRIFT_TOL:g}); weight decay's "
           f"effect shrinks {1 / ratio if ratio else float('inf'):.0f}x for a 10x smaller LR "
           f"({'second' if ratio <= WD_RATIO_MAX else 'first'} order)")
    return SphereCheck(param=param, steps=steps, radius_drift=drift, wd_ratio=ratio, verdict=PASS if ok else FAIL,
                       why=why)


def _trained(param: str, steps: int, overrides: dict[str, Any]):
    from hyperp.trainer.config import RunConfig  # noqa: PLC0415 (torch: only when a check runs)
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
