"""compile = "auto": torch.compile a sweep's runs where it pays on this machine, decided per shape.

A shape is the runs that compile to the same graphs (`shape_key`: the model's shape, the batch, the scheme,
the device). Its n planned runs compile when what they save pays for the compilations:

    n * t * (1 - 1/s) > c_cold + (n - 1) * c_warm    and    t * (1 - 1/s) > c_warm

t: a run's eager training seconds (the plan's estimate: planned FLOPs over the measured throughput); s: the
compiled over the eager steady throughput; c_cold: a shape's first compilation; c_warm: a later one, which
finds the graphs in the cache ([resources] compile_cache = "sweep", the default; with "run" every
compilation is cold, so c_warm = c_cold).

Measured, never assumed, from the first source that has them:
1. this sweep's finished runs on the planned device type, where a shape has both compiled and eager runs: s
   from steady throughputs (FLOPs over the training time less `warmup_s`), c from the `warmup_s` of its
   compiled runs less the median of its eager runs' (c_cold: the shape's first compiled run, c_warm: the
   others'); a shape without both borrows the medians over the shapes that have them;
2. the JSON file [resources] compile_costs names, its entry for the device type: {"device_type", "speedup",
   "cold_s", "warm_s", ...} (benchmarks/bench_compile_sweep.py writes one from a sweep run eager, compiled
   and compiled with a shared cache);
else every auto run stays eager and the plan says why. `decide` only reads; `apply` sets the configs.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hyperp.schema import COMPLETED
from hyperp.sweeps.spec import SpecError

# What a compiled graph depends on, besides the code: a run's shape, batch, scheme (its constants: residual
# multiplier, logit multiplier) and device. Ledger columns; `width` is the resolved model width.
SHAPE_FIELDS = ("param", "depth", "width", "head_dim", "n_kv_heads", "seq_len", "batch_tokens", "vocab_size",
                "mlp_ratio", "attn_gate", "fused_gate_up", "moe_every", "sparsity", "top_k", "shared_expert")


@dataclass(frozen=True)
class CompileCosts:
    speedup: float  # compiled over eager steady throughput
    cold_s: float  # a shape's first compilation, seconds
    warm_s: float  # a later compilation of the shape (from the cache)
    source: str  # where the figures come from


@dataclass(frozen=True)
class ShapeDecision:
    key: tuple  # shape_key
    shape: str  # the shape's settings, for the plan
    runs: int  # the shape's planned auto runs
    eager_s: float  # one run's estimated eager training seconds
    saving_s: float  # what compiling saves one run, t (1 - 1/s)
    cost_s: float  # what the shape's compilations cost in all, c_cold + (n - 1) c_warm
    compile: bool
    costs: CompileCosts | None  # None: nothing measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.costs is None:
            return f"{self.shape}: eager (no measured compile cost on this device; see hyperp.sweeps.compile)"
        c = self.costs
        verdict = "compiled" if self.compile else "eager"
        return (f"{self.shape}: {verdict} ({self.runs} runs save {self.saving_s:.0f} s each of {self.eager_s:.0f} s "
                f"against {self.cost_s:.0f} s of compilation; speed-up {c.speedup:.2f}, compile {c.cold_s:.0f} s cold / "
                f"{c.warm_s:.0f} s warm, {c.source})")


def shape_key(values: dict[str, Any]) -> tuple:
    return tuple(values.get(k) for k in SHAPE_FIELDS)


def config_shape(cfg) -> tuple:
    return shape_key(cfg.to_dict() | {"width": cfg.d_model})


def shape_label(key: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(SHAPE_FIELDS, key) if k in ("param", "depth", "width", "seq_len",
                                                                         "batch_tokens"))


def measured_costs(ledger, device_type: str, cache: str) -> tuple[dict[tuple, CompileCosts], CompileCosts | None]:
    """Per shape with compiled and eager finished runs on `device_type`, and their medians (None: no shape)."""
    need = {"compile", "warmup_s", "wall_time_s", "flops", "status", "device_type", "started_at", *SHAPE_FIELDS}
    if ledger is None or not len(ledger) or not need <= set(ledger.columns):
        return {}, None
    done = ledger[(ledger.status == COMPLETED) & (ledger.device_type == device_type) & ledger.warmup_s.notna()
                  & (ledger.wall_time_s > ledger.warmup_s)]
    per_shape: dict[tuple, CompileCosts] = {}
    done = done.reset_index(drop=True)  # ledgers concatenated share index labels
    for key, rows in done.groupby(list(SHAPE_FIELDS), dropna=False, sort=False):
        on = rows.compile.astype(bool).to_numpy()
        compiled, eager = rows[on], rows[~on]
        if not len(compiled) or not len(eager):
            continue
        steady = (rows.flops / (rows.wall_time_s - rows.warmup_s)).to_numpy()
        speedup = statistics.median(steady[on]) / statistics.median(steady[~on])
        extra = (compiled.sort_values("started_at").warmup_s - statistics.median(eager.warmup_s)).clip(lower=0)
        cold = float(extra.iloc[0])
        warm = cold if cache == "run" or len(extra) < 2 else float(statistics.median(extra.iloc[1:]))
        per_shape[key] = CompileCosts(float(speedup), cold, warm,
                                      f"measured on {len(compiled)} compiled and {len(eager)} eager runs of the shape")
    if not per_shape:
        return {}, None
    values = list(per_shape.values())
    pooled = CompileCosts(statistics.median(c.speedup for c in values), statistics.median(c.cold_s for c in values),
                          statistics.median(c.warm_s for c in values),
                          f"medians over {len(values)} measured shapes of this sweep")
    return per_shape, pooled


def file_costs(path: str, device_type: str, cache: str) -> CompileCosts | None:
    """The entry for `device_type` of a compile-costs JSON (an object or a list of them); None when absent."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SpecError("resources.compile_costs", f"cannot read {path}: {e}") from None
    entries = data if isinstance(data, list) else [data]
    for e in entries:
        if not isinstance(e, dict) or e.get("device_type") != device_type:
            continue
        try:
            speedup, cold, warm = (float(e[k]) for k in ("speedup", "cold_s", "warm_s"))
        except (KeyError, TypeError, ValueError):
            raise SpecError("resources.compile_costs", f"{path}: expected numbers speedup, cold_s and warm_s "
                                                       f"in the {device_type} entry") from None
        return CompileCosts(speedup, cold, cold if cache == "run" else warm,
                            f"from {path} ({e.get('hardware', device_type)})")
    return None


def decide_shape(key: tuple, runs: int, eager_s: float, costs: CompileCosts | None) -> ShapeDecision:
    if costs is None or not math.isfinite(eager_s):
        return ShapeDecision(key, shape_label(key), runs, eager_s, math.nan, math.nan, False, costs)
    saving = eager_s * (1 - 1 / costs.speedup) if costs.speedup > 0 else -math.inf
    cost = costs.cold_s + (runs - 1) * costs.warm_s
    return ShapeDecision(key, shape_label(key), runs, eager_s, saving, cost,
                         runs * saving > cost and saving > costs.warm_s, costs)


def decide(plan, ledger, throughput: float, device_type: str) -> list[ShapeDecision]:
    """One decision per shape of the plan's compile = "auto" runs (none: an empty list). `throughput`: one run's
    eager FLOP/s (the plan's estimate)."""
    auto = [r for r in plan.runs if r.auto_compile]
    if not auto:
        return []
    res = plan.spec.resources
    per_shape, pooled = measured_costs(ledger, device_type, res.compile_cache)
    fallback = pooled or file_costs(res.compile_costs, device_type, res.compile_cache)
    shapes: dict[tuple, list] = {}
    for r in auto:
        shapes.setdefault(config_shape(r.config), []).append(r)
    out = []
    for key, runs in shapes.items():
        eager_s = statistics.median(r.info.get("flops_planned", math.nan) / throughput for r in runs)
        out.append(decide_shape(key, len(runs), eager_s, per_shape.get(key, fallback)))
    return out


def apply(plan, decisions: list[ShapeDecision]) -> None:
    """Set `compile` on the plan's auto runs and cells (their LR searches' runs follow the cell) as decided."""
    on = {d.key for d in decisions if d.compile}
    for item in [*plan.runs, *plan.cells.values()]:
        if item.auto_compile:
            item.config = item.config.replace(compile=config_shape(item.config) in on)


def resolve(plan, ledger, throughput: float) -> list[ShapeDecision]:
    """Decide and apply compile = "auto" for a plan, from its sweep's ledger (what `sweep plan` states and
    `sweep run` does)."""
    device_type = "cuda" if plan.spec.resources.gpus else "cpu"
    decisions = decide(plan, ledger, throughput, device_type)
    apply(plan, decisions)
    return decisions
