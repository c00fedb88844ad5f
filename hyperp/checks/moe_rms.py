"""SqrtGate's mechanism measured directly (method.md section 5): the MoE block's output RMS across granularity.

The claim. With k routed experts per token and gates g_i summing to 1, classic gating y = sum g_i E_i(x) has
E|y|^2 = sum g_i^2 E|E_i|^2 for uncorrelated experts of equal RMS, so its RMS falls from the single expert's
(one-hot gates) to 1/sqrt(k) of it (uniform gates) as k grows; SqrtGate y = sum sqrt(g_i) E_i(x) has
E|y|^2 = sum g_i E|E_i|^2 = E|E|^2 whatever the gates, so its RMS stays flat in k. At fixed sparsity S each
expert's hidden size is mlp_hidden / k, and an expert's output RMS does not depend on its hidden size at
init (the down projection's 1/sqrt(fan_in) cancels it), so the comparison across k isolates the gating.

The measurement. For each seed, gating (SqrtGate, classic) and top_k, a tiny MoE model (by default the
moe_granularity study's: depth 2, width 32, MoE in every block, sparsity 4, head std 0.3) is built and
trained by the trainer's own setup and loop (`hyperp.trainer.loop.setup` / `advance`: its optimizer, LR
schedule, gradient clipping and load-balancing loss) for `steps` steps of the stdlib corpus. Before the
first step and after the last, a forward hook on every MoE layer reads the layer's output (the block's MLP
branch before the residual multiplier) on the corpus's fixed validation windows (the same tokens for every
seed, gating and top_k): its RMS over all tokens and channels, per layer, then the mean over MoE layers.
The hook also reads sum_i g_i^2 of each token's gates (the mean over tokens): classic gating's RMS factor
for uncorrelated experts is its square root, so it says how much of a fall the router's sharpness allows.
A seed draws the init and the training batches; both gatings share them at a given (seed, top_k) (the
gating changes no parameter), so the comparison is paired.

The quantity judged. Per (gating, moment), each seed's ratio RMS(largest top_k) / RMS(smallest top_k): 1
when flat, sqrt(k_min / k_max) (0.35 for 1 -> 8) for classic gating under uniform gates and uncorrelated
experts; its geometric mean over seeds and a Student-t interval at LEVEL over the seeds' ln ratios (the
coord check's `seed_interval`). Also reported: the log-log slope of RMS against top_k per seed (0 flat,
-0.5 for 1/sqrt(k)) with its t-interval, the same ratio between adjacent top_ks (`local_ratios`), and per cell
the RMS of the layer's input (about its RMSNorm's gain: training can rescale the expert inputs there, which
the sphere schemes' fixed expert radii cannot) and the mean validation loss before and after training.

Verdict (method.md section 11: equivalence, not absence of evidence), for SqrtGate (the claim), on both
moments' ratio intervals against the band [1/BAND, BAND], BAND = the coord check's 1.5 (the largest RMS
ratio across a scale range that this project calls flat, fixed before these runs; the classic prediction
for top_k 1 -> 8, 0.35, lies far outside it and flatness at 1 far inside, so the band separates the two
hypotheses without being tuned to either):
- pass: both intervals lie within the band;
- fail: some interval lies wholly outside it;
- inconclusive: anything else, and always with one seed (no interval), with `decided_by` (the interval
  that decided) and `to_decide` (the number of seeds that would narrow it, if the seed-to-seed SD holds).
Classic gating is the contrast, not a claim: its verdict is "informational", with the same band applied as
`band_verdict` and the direction of each ratio (falls: interval below 1; rises: above 1; contains 1:
neither, undecided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hyperp.checks.coord import BAND, LEVEL, finite, seed_interval, seeds_to_decide
from hyperp.errors import InputError

TOP_KS = (1, 2, 4, 8)
SPARSITY = 4
STEPS = 64
SEEDS = 3
VAL_TOKENS = 8192  # the measurement tokens: the trainer's validation windows (8 batches of 1,024 tokens)
# the moe_granularity study's model (examples/study/moe_granularity.toml); base shape = the model itself and
# base tokens = the run's, so every LR factor is 1 and the runs train at the scheme's base LR
MODEL: dict[str, Any] = {"depth": 2, "width": 32, "head_dim": 16, "seq_len": 128, "batch_tokens": 1024,
                         "head_init_std": 0.3, "moe_every": 1}
PASS, FAIL, INCONCLUSIVE, INFORMATIONAL = "pass", "fail", "inconclusive", "informational"
MOMENTS = ("init", "after")


def gate_name(sqrt_gate: bool) -> str:
    return "SqrtGate" if sqrt_gate else "classic gating"


# ---------------------------------------------------------------------------------------------------------
# measuring


def moe_layers(model) -> list:
    """The model's MoE layers, in block order."""
    from hyperp.trainer.moe import MoE  # noqa: PLC0415 (torch)

    return [m for m in model.modules() if isinstance(m, MoE)]


def measure(model, batches, autocast=None) -> dict[str, Any]:
    """Forward `batches` ((x, y) pairs) without gradients; a hook on each MoE layer reads its output. Returns
    {"rms": per-layer RMS over all tokens and channels, "input_rms": the same of the layer's input (the
    normalised residual stream: its RMS is about the RMS of the block's mlp_norm gain), "gate_sq": per-layer mean over tokens of
    sum_i g_i^2 (the gates of the layer's top-k routing), "loss": the mean loss over the batches}."""
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    layers = moe_layers(model)
    sq, n, gsq, tokens = [0.0] * len(layers), [0] * len(layers), [0.0] * len(layers), [0] * len(layers)
    sq_in = [0.0] * len(layers)

    def hook(i):
        def read(module, inputs, out):
            y = out.detach().float()
            sq[i] += y.pow(2).sum().item()
            n[i] += y.numel()
            sq_in[i] += inputs[0].detach().float().pow(2).sum().item()  # same shape as the output
            g = module._logits.topk(module.k, dim=-1).values.softmax(dim=-1)  # the forward's gates (route())
            gsq[i] += g.pow(2).sum().item()
            tokens[i] += g.shape[0]
        return read

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    losses = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast() if autocast else contextlib.nullcontext():
            for x, y in batches:
                losses.append(model(x, y)[1].item())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"rms": [math.sqrt(s / c) if c else math.nan for s, c in zip(sq, n)],
            "input_rms": [math.sqrt(s / c) if c else math.nan for s, c in zip(sq_in, n)],
            "gate_sq": [s / c if c else math.nan for s, c in zip(gsq, tokens)],
            "loss": sum(losses) / len(losses) if losses else math.nan}


def cell_config(sqrt_gate: bool, top_k: int, sparsity: int = SPARSITY, steps: int = STEPS, seed: int = 0,
                param: str = "hyperp", lr: float | None = None, **overrides: Any):
    """The RunConfig of one cell (validated: a bad field is a ConfigError naming it)."""
    from hyperp.config import RunConfig  # noqa: PLC0415

    base = MODEL | {"val_tokens": VAL_TOKENS} | overrides
    tokens = base["batch_tokens"] * max(1, steps)
    base.setdefault("base_tokens", tokens)
    base.setdefault("base_depth", base["depth"])
    base.setdefault("base_width", base["width"])
    cfg = RunConfig(param=param, lr=lr, tokens=tokens, sparsity=sparsity, top_k=top_k, sqrt_gate=sqrt_gate,
                    seed=seed, eval_every=max(1, steps), **base)
    cfg.validate()
    return cfg


def run_cell(sqrt_gate: bool, top_k: int, sparsity: int = SPARSITY, steps: int = STEPS, seed: int = 0,
             param: str = "hyperp", lr: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Build one MoE model with the trainer's setup, measure it, train `steps` steps with the trainer's loop,
    measure again. Returns {"init": measure(...), "after": measure(...), "diverged": bool}."""
    from hyperp.trainer.loop import advance, setup  # noqa: PLC0415 (torch: only when a check runs)

    cfg = cell_config(sqrt_gate, top_k, sparsity, steps, seed, param, lr, **overrides)
    ctx = setup(cfg, None, None)
    out = {"init": measure(ctx.model, ctx.vals, ctx.autocast)}
    diverged = False
    for _ in range(steps):
        if not advance(ctx):
            diverged = True
            break
    out["after"] = measure(ctx.model, ctx.vals, ctx.autocast)
    out["diverged"] = diverged
    return out


# ---------------------------------------------------------------------------------------------------------
# estimates and the verdict


@dataclass(frozen=True)
class Ratio:
    """One (gating, moment)'s RMS(largest top_k) / RMS(smallest top_k): per seed, the geometric mean and its
    t-interval over the seeds' ln ratios (None with one seed or a non-finite value)."""

    sqrt_gate: bool
    moment: str  # "init" or "after"
    per_seed: tuple[float, ...]
    point: float
    low: float | None
    high: float | None
    k_min: int = 1
    k_max: int = 8

    def label(self, steps: int) -> str:
        when = "at init" if self.moment == "init" else f"after {steps} steps"
        return f"RMS ratio top_k {self.k_max}/{self.k_min} under {gate_name(self.sqrt_gate)} {when}"

    def value_text(self) -> str:
        if not math.isfinite(self.point):
            return "not finite"
        iv = "" if self.low is None else f" [{self.low:.3f}, {self.high:.3f}]"
        return f"{self.point:.3f}{iv}"

    def text(self, steps: int) -> str:
        return f"{self.label(steps)}: {self.value_text()}"

    @property
    def direction(self) -> str:
        """falls (the interval lies below 1), rises (above 1), contains 1 (undecided: the interval reaches both
        sides of 1, so it says neither that the ratio is 1 nor that it moves), or no interval."""
        if self.low is None:
            return "no interval"
        return "falls" if self.high < 1 else "rises" if self.low > 1 else "contains 1"

    def to_dict(self) -> dict[str, Any]:
        return {"sqrt_gate": self.sqrt_gate, "moment": self.moment, "k_min": self.k_min, "k_max": self.k_max,
                "per_seed": [finite(v) for v in self.per_seed], "ratio": finite(self.point), "low": finite(self.low),
                "high": finite(self.high), "direction": self.direction}


def ratio_estimate(sqrt_gate: bool, moment: str, per_seed: Sequence[float], k_min: int, k_max: int) -> Ratio:
    vals = tuple(float(v) for v in per_seed)
    ok = all(math.isfinite(v) and v > 0 for v in vals)
    point = math.exp(sum(math.log(v) for v in vals) / len(vals)) if ok else math.nan
    iv = seed_interval(vals, log=True) if ok else None
    low, high = (None, None) if iv is None else iv
    return Ratio(sqrt_gate, moment, vals, point, low, high, k_min, k_max)


def _slope(top_ks: Sequence[int], rms: Sequence[float]) -> float:
    """Least-squares slope of ln RMS against ln top_k."""
    xs, ys = [math.log(k) for k in top_ks], [math.log(v) if v > 0 and math.isfinite(v) else math.nan for v in rms]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _within(r: Ratio) -> bool:
    return r.low >= 1 / BAND and r.high <= BAND


def _outside(r: Ratio) -> bool:
    return r.high < 1 / BAND or r.low > BAND


def _reach(r: Ratio) -> float:
    """How far the interval reaches from 1, in ln units (the larger end)."""
    return max(math.log(r.high), -math.log(r.low))


def band_verdict(ratios: Sequence[Ratio], seeds: int) -> tuple[str, Ratio, str]:
    """(verdict, the deciding ratio, to_decide): every ratio's interval against [1/BAND, BAND] (method.md 11)."""
    if seeds < 2:
        r = max(ratios, key=lambda q: abs(math.log(q.point)) if q.point > 0 else math.inf)
        return INCONCLUSIVE, r, f"run with --seeds {SEEDS} (or more): seeds give the interval"
    unknown = [r for r in ratios if r.low is None]
    if unknown:
        return INCONCLUSIVE, unknown[0], "a smaller --lr (a run diverged), or other seeds"
    outside = [r for r in ratios if _outside(r)]
    if outside:
        return FAIL, max(outside, key=lambda q: max(-math.log(q.high), math.log(q.low))), ""
    if all(_within(r) for r in ratios):
        return PASS, max(ratios, key=_reach), ""
    r = max((q for q in ratios if not _within(q)), key=_reach)
    bound = BAND if r.point >= 1 else 1 / BAND
    need = seeds_to_decide(r.per_seed, bound, seeds, log=True)
    return INCONCLUSIVE, r, (f"more seeds: about {need} (--seeds {need}) if the seed-to-seed spread holds" if need
                             else f"its centre sits at the band's edge ({r.point:.3f} against {bound:.3f}): more "
                                  f"seeds alone may not decide it")


def _band_text() -> str:
    return f"[{1 / BAND:.3f}, {BAND:g}]"


def gate_why(verdict: str, ratios: Sequence[Ratio], decided: Ratio, seeds: int, steps: int) -> str:
    both = "; ".join(f"{'init' if r.moment == 'init' else f'after {steps} steps'} {r.value_text()}" for r in ratios)
    if seeds < 2:
        return f"one seed: no interval (ratios {both})"
    if decided.low is None:
        return f"the {decided.label(steps)} is not finite on some seed: no interval ({both})"
    if verdict == PASS:
        return f"both ratio intervals lie within {_band_text()} at {LEVEL:.0%} over {seeds} seeds ({both})"
    if verdict == FAIL:
        return f"the {decided.text(steps)} lies wholly outside {_band_text()} over {seeds} seeds ({both})"
    return (f"the {decided.text(steps)} straddles the band {_band_text()} over {seeds} seeds: it cannot tell a "
            f"ratio outside the band from one within ({both})")


@dataclass(frozen=True)
class GateResult:
    sqrt_gate: bool
    verdict: str  # SqrtGate: pass/fail/inconclusive; classic gating: informational
    band_verdict: str  # the band's verdict (for classic gating: what the same band says of it)
    why: str
    decided_by: str
    to_decide: str
    ratios: tuple[Ratio, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sqrt_gate": self.sqrt_gate, "gating": gate_name(self.sqrt_gate),
                "role": "claim" if self.sqrt_gate else "contrast", "verdict": self.verdict,
                "band_verdict": self.band_verdict, "why": self.why, "decided_by": self.decided_by,
                "to_decide": self.to_decide, "directions": {r.moment: r.direction for r in self.ratios}}


def judge_gate(sqrt_gate: bool, ratios: Sequence[Ratio], seeds: int, steps: int) -> GateResult:
    verdict, decided, to_decide = band_verdict(ratios, seeds)
    why = gate_why(verdict, ratios, decided, seeds, steps)
    if sqrt_gate:
        return GateResult(True, verdict, verdict, why, decided.text(steps), to_decide, tuple(ratios))
    moves = ", ".join(f"{r.direction} {'at init' if r.moment == 'init' else f'after {steps} steps'}"
                      for r in ratios)
    return GateResult(False, INFORMATIONAL, verdict,
                      f"the contrast, not a claim: its ratio interval {moves}; the same band would say "
                      f"{verdict}: {why}",
                      decided.text(steps), "", tuple(ratios))


@dataclass(frozen=True)
class MoeRmsCheck:
    param: str
    top_ks: tuple[int, ...]
    sparsity: int
    steps: int
    seeds: int
    lr: float  # the base LR (the scheme's default unless given); every LR factor is 1
    model: dict[str, Any]
    cells: tuple[dict[str, Any], ...]  # per (gating, moment, top_k): RMS mean, per seed, per layer; gate_sq; loss
    ratios: tuple[Ratio, ...]
    local_ratios: tuple[Ratio, ...]  # per (gating, moment, adjacent top_ks): informational, no verdict
    slopes: tuple[dict[str, Any], ...]  # per (gating, moment): ln RMS vs ln top_k slope per seed and interval
    gates: tuple[GateResult, ...]
    verdict: str  # SqrtGate's
    why: str
    decided_by: str = ""
    to_decide: str = ""
    thresholds: dict[str, float] = field(default_factory=lambda: {"band": BAND, "level": LEVEL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "top_ks": list(self.top_ks), "sparsity": self.sparsity, "steps": self.steps,
                "seeds": self.seeds, "lr": self.lr, "model": dict(self.model),
                "measured_on": f"{self.model.get('val_tokens', VAL_TOKENS)} validation tokens of the stdlib corpus "
                               "(the trainer's fixed validation windows, evenly spaced over the validation stream)",
                "uncorrelated_prediction": {"sqrt_gate": 1.0, "classic_uniform_gates":
                                            math.sqrt(min(self.top_ks) / max(self.top_ks))},
                "cells": [dict(c) for c in self.cells], "ratios": [r.to_dict() for r in self.ratios],
                "local_ratios": [r.to_dict() for r in self.local_ratios],
                "slopes": [dict(s) for s in self.slopes], "gates": [g.to_dict() for g in self.gates],
                "verdict": self.verdict, "why": self.why, "decided_by": self.decided_by, "to_decide": self.to_decide,
                "thresholds": dict(self.thresholds), "warnings": list(self.warnings)}


def validate(top_ks: Sequence[int], sparsity: int, steps: int, seeds: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in top_ks)
    if len(set(ks)) < 2:
        raise InputError(f"top_k: at least two different values to compare, got {list(ks)}")
    if min(ks) < 1:
        raise InputError(f"top_k: every value must be >= 1, got {list(ks)}")
    if sparsity < 1:
        raise InputError(f"sparsity: at least 1 (top_k {max(ks)} > {max(ks) * sparsity} experts), got {sparsity}")
    if seeds < 1:
        raise InputError(f"seeds: at least 1, got {seeds}")
    if steps < 0:
        raise InputError(f"steps: at least 0, got {steps}")
    return tuple(sorted(set(ks)))


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def check_moe_rms(top_ks: Sequence[int] = TOP_KS, sparsity: int = SPARSITY, seeds: int = SEEDS, steps: int = STEPS,
                  lr: float | None = None, param: str = "hyperp", progress=None, **overrides: Any) -> MoeRmsCheck:
    """Measure the MoE output RMS across `top_ks` with and without SqrtGate, at init and after `steps`
    steps, once per seed (seeds first_seed, first_seed + 1, ..., first_seed = the `seed` override or 0);
    `overrides` change the model (RunConfig fields). `progress(done, total)` is called after each run."""
    ks = validate(top_ks, sparsity, steps, seeds)
    first = int(overrides.pop("seed", 0))
    for k in ks:  # every cell's config first: a bad one is one error before any training
        cell_config(True, k, sparsity, steps, first, param, lr, **overrides)
    data: dict[tuple[bool, int, int], dict] = {}  # (sqrt_gate, top_k, seed index) -> run_cell's result
    total, done = 2 * len(ks) * seeds, 0
    for s in range(seeds):
        for sqrt_gate in (True, False):
            for k in ks:
                data[sqrt_gate, k, s] = run_cell(sqrt_gate, k, sparsity, steps, first + s, param, lr, **overrides)
                done += 1
                if progress is not None:
                    progress(done, total)
    cells, ratios, local, slopes, gates = [], [], [], [], []
    for sqrt_gate in (True, False):
        gate_ratios = []
        for m in MOMENTS:
            per = {k: [_mean(data[sqrt_gate, k, s][m]["rms"]) for s in range(seeds)] for k in ks}
            for k in ks:
                runs = [data[sqrt_gate, k, s][m] for s in range(seeds)]
                n_layers = len(runs[0]["rms"])
                cells.append({"sqrt_gate": sqrt_gate, "moment": m, "top_k": k, "rms": finite(_mean(per[k])),
                              "per_seed": [finite(v) for v in per[k]],
                              "per_layer": [finite(_mean([r["rms"][i] for r in runs])) for i in range(n_layers)],
                              "input_rms": finite(_mean([_mean(r["input_rms"]) for r in runs])),
                              "gate_sq": finite(_mean([_mean(r["gate_sq"]) for r in runs])),
                              "loss": finite(_mean([r["loss"] for r in runs]))})
            r = ratio_estimate(sqrt_gate, m, [per[ks[-1]][s] / per[ks[0]][s] for s in range(seeds)], ks[0], ks[-1])
            gate_ratios.append(r)
            local += [ratio_estimate(sqrt_gate, m, [per[b][s] / per[a][s] for s in range(seeds)], a, b)
                      for a, b in zip(ks, ks[1:])]
            sl = [_slope(ks, [per[k][s] for k in ks]) for s in range(seeds)]
            iv = seed_interval(sl) if all(math.isfinite(v) for v in sl) else None
            slopes.append({"sqrt_gate": sqrt_gate, "moment": m, "per_seed": [finite(v) for v in sl],
                           "slope": finite(_mean(sl)), "low": finite(iv[0]) if iv else None,
                           "high": finite(iv[1]) if iv else None})
        ratios += gate_ratios
        gates.append(judge_gate(sqrt_gate, gate_ratios, seeds, steps))
    warnings = [f"{gate_name(g)} top_k {k} seed {first + s} diverged during training: its 'after' reading is of "
                f"a diverged model" for (g, k, s), v in data.items() if v["diverged"]]
    claim, contrast = gates
    from hyperp.config import DEFAULT_LR  # noqa: PLC0415

    return MoeRmsCheck(param=param, top_ks=ks, sparsity=sparsity, steps=steps, seeds=seeds,
                       lr=DEFAULT_LR[param] if lr is None else lr, model=MODEL | overrides,
                       cells=tuple(cells), ratios=tuple(ratios), local_ratios=tuple(local), slopes=tuple(slopes),
                       gates=tuple(gates),
                       verdict=claim.verdict, why=f"SqrtGate: {claim.why}. Classic gating: {contrast.why}",
                       decided_by=claim.decided_by, to_decide=claim.to_decide, warnings=tuple(warnings))
