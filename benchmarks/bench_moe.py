"""MoE training throughput against the dense model of equal active parameters, and where the time goes.

    python benchmarks/bench_moe.py [--threads 2] [--reps 8] [--out results/moe/bench.md]

1. Model: tokens/s of a training step (forward, aux loss, backward, optimizer) of an MoE model (S=8, k=4,
   MoE in every block) and of the dense model with the same width, depth, batch and active parameters.
   Steps of the two models alternate, so load from other processes hits both alike; the median and the
   best step are reported (the best is the figure least disturbed by a shared machine).
2. Layer: one MoE layer forward + backward with grouped dispatch (torch._grouped_mm), the padded-bmm
   fallback, and a Python loop over experts (the reference), against the dense SwiGLU of equal FLOPs.
3. Breakdown: torch.profiler over MoE training steps, each profiled separately, the fastest reported; the
   forward phases are the record_function ranges of hyperp/trainer/moe.py, the backward is listed by
   autograd node, the optimizer by optimizer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from hyperp.config import RunConfig
from hyperp.trainer.loop import build
from hyperp.trainer.metrics import count_params
from hyperp.trainer.layers import SwiGLU, mlp_hidden
from hyperp.trainer.moe import MoE

MOE = dict(moe_every=1, sparsity=8, top_k=4)
SHAPE = dict(depth=4, aspect_ratio=32, head_dim=32, seq_len=256, batch_tokens=8192, tokens=2**20)
WARMUP_STEPS = 2
PHASES = ("moe.router", "moe.dispatch", "moe.experts", "moe.combine", "moe.balance")
TOP_BACKWARD_NODES = 8


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


# ---- 1. whole-model training steps ----

class Stepper:
    """One model, its optimizers and a fixed random batch; `step()` times forward+backward and optimizer."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.model, self.opt, _ = build(cfg, "cpu")
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=gen)
        self.fwd_bwd: list[float] = []
        self.optim: list[float] = []

    def step(self, record: bool = True) -> None:
        t0 = time.perf_counter()
        with record_function("step.forward"):
            _, loss = self.model(self.x, self.x)
            loss = loss + self.model.aux_loss()
        with record_function("step.backward"):
            loss.backward()
        t1 = time.perf_counter()
        with record_function("step.optimizer"):
            self.opt.step()
            self.opt.zero_grad()
        t2 = time.perf_counter()
        if record:
            self.fwd_bwd.append(t1 - t0)
            self.optim.append(t2 - t1)

    def summary(self) -> dict[str, float]:
        total = [a + b for a, b in zip(self.fwd_bwd, self.optim)]
        tokens = self.cfg.batch_tokens
        return {"fwd_bwd_ms": 1e3 * statistics.median(self.fwd_bwd), "opt_ms": 1e3 * statistics.median(self.optim),
                "step_ms": 1e3 * statistics.median(total),
                "tok_s": tokens / statistics.median(total), "tok_s_best": tokens / min(total),
                "tok_s_fwd_bwd": tokens / statistics.median(self.fwd_bwd),
                "tok_s_fwd_bwd_best": tokens / min(self.fwd_bwd)}


def bench_models(reps: int) -> tuple[str, dict]:
    moe_cfg = RunConfig(**SHAPE, **MOE)
    dense_cfg = RunConfig(**SHAPE)
    runs = {"dense": Stepper(dense_cfg), "moe": Stepper(moe_cfg)}
    for s in runs.values():
        for _ in range(WARMUP_STEPS):
            s.step(record=False)
    for _ in range(reps):  # alternate, so a busy neighbour slows both alike
        for s in runs.values():
            s.step()
    res = {name: s.summary() for name, s in runs.items()}
    counts = {name: count_params(s.model, s.cfg) for name, s in runs.items()}
    expert_hidden = runs["moe"].model.blocks[0].mlp.hidden
    lines = [f"shape: depth {moe_cfg.depth}, width {moe_cfg.d_model}, seq_len {moe_cfg.seq_len}, "
             f"batch {moe_cfg.batch_tokens} tokens, param {moe_cfg.param}; MoE S={moe_cfg.sparsity} "
             f"k={moe_cfg.top_k} ({moe_cfg.n_experts} experts of hidden {expert_hidden}) "
             f"in every block; {reps} timed steps each, alternating",
             "",
             "| model | params total | params active | fwd+bwd ms | optimizer ms | step ms | tokens/s (median) "
             "| tokens/s (best) | fwd+bwd tokens/s (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in runs:
        r, c = res[name], counts[name]
        lines.append(f"| {name} | {c.total:,} | {c.active:,} | {r['fwd_bwd_ms']:.1f} | {r['opt_ms']:.1f} | "
                     f"{r['step_ms']:.1f} | {r['tok_s']:,.0f} | {r['tok_s_best']:,.0f} | {r['tok_s_fwd_bwd']:,.0f} |")
    ratio = res["moe"]["tok_s"] / res["dense"]["tok_s"]
    ratio_best = res["moe"]["tok_s_best"] / res["dense"]["tok_s_best"]
    ratio_fb = res["moe"]["tok_s_fwd_bwd"] / res["dense"]["tok_s_fwd_bwd"]
    lines += ["", f"MoE / dense tokens/s, full step: {ratio:.2f}x (median), {ratio_best:.2f}x (best step); "
                  f"forward+backward only: {ratio_fb:.2f}x (median). Target >= 0.6x."]
    return "\n".join(lines), runs


# ---- 2. one layer: dispatch variants ----

def loop_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """A Python loop over experts (no sorting): the slow baseline the batched dispatch replaces."""
    logits, expert, gates = moe.route(x)
    weights = gates.sqrt() if moe.sqrt_gate else gates
    y = torch.zeros_like(x)
    for e in range(moe.n_routed):
        token, slot = (expert == e).nonzero(as_tuple=True)
        xe = x[token]
        out = F.linear(F.silu(F.linear(xe, moe.gate_bank[e])) * F.linear(xe, moe.up_bank[e]), moe.down_bank[e])
        y = y.index_add(0, token, out * weights[token, slot].unsqueeze(-1))
    return y


def time_calls(fn: Callable[[], None], reps: int) -> str:
    """'median (best)' milliseconds of `reps` calls after a warm-up."""
    for _ in range(WARMUP_STEPS):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return f"{ms(statistics.median(out))} ({ms(min(out))})"


def bench_layer(reps: int) -> str:
    cfg = RunConfig(**SHAPE, **MOE)
    w, n = cfg.d_model, cfg.batch_tokens
    torch.manual_seed(0)
    x = torch.randn(n, w, requires_grad=True)
    moe = MoE(cfg)
    dense = SwiGLU(w, mlp_hidden(cfg))  # the active MLP of one token: k experts of mlp_hidden / k

    def fwd_bwd(fn):
        def run():
            fn(x).pow(2).mean().backward()
        return run

    variants = {}
    for dispatch in ("grouped", "padded"):
        m = MoE(cfg)
        m.load_state_dict(moe.state_dict())
        m.dispatch = dispatch
        variants[f"MoE, {dispatch} dispatch"] = m
    variants["MoE, Python loop over experts"] = lambda t: loop_reference(moe, t)
    variants["dense SwiGLU (hidden 4w)"] = dense
    lines = [f"one layer, {n} tokens x width {w}; median (best) of {reps} calls", "",
             "| layer | forward ms | forward+backward ms |", "|---|---|---|"]
    for name, fn in variants.items():
        with torch.no_grad():
            fwd = time_calls(lambda fn=fn: fn(x), reps)
        lines.append(f"| {name} | {fwd} | {time_calls(fwd_bwd(fn), reps)} |")
    return "\n".join(lines)


# ---- 3. where the time goes ----

def bench_breakdown(stepper: Stepper, steps: int) -> str:
    """Per-phase time of the fastest of `steps` separately profiled MoE training steps.

    The fastest step is the one least disturbed by other processes on a shared machine (a busy core stalls
    every multi-threaded op), so its phases are consistent with each other.
    """
    per_step: list[dict[str, float]] = []
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            stepper.step(record=False)
        per_step.append({e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()})
    best = min(per_step, key=lambda t: t["step.forward"] + t["step.backward"] + t["step.optimizer"])
    at = lambda key: best.get(key, 0.0)  # noqa: E731 (ms)
    backward_nodes = {k for k in best if k.startswith("autograd::engine::evaluate_function:")}
    forward, backward, optim = at("step.forward"), at("step.backward"), at("step.optimizer")
    moe = {name: at(name) for name in PHASES}
    pct = lambda v: f"{100 * v / (forward + backward + optim):.0f}%"  # noqa: E731
    lines = [f"MoE model (S=8, k=4, every block, {stepper.cfg.depth} layers), torch.profiler: the fastest of "
             f"{steps} separately profiled training steps; ms (profiler overhead included), share of the step.", "",
             "| phase | ms/step | share |", "|---|---|---|",
             f"| forward, whole model | {forward:.1f} | {pct(forward)} |"]
    for name, v in moe.items():
        lines.append(f"| &nbsp; {name} (all layers) | {v:.1f} | {pct(v)} |")
    other = forward - sum(moe.values())
    lines.append(f"| &nbsp; attention, norms, embedding, head, loss | {other:.1f} | {pct(other)} |")
    lines.append(f"| backward, whole model | {backward:.1f} | {pct(backward)} |")
    for key in sorted(backward_nodes, key=lambda k: -at(k))[:TOP_BACKWARD_NODES]:
        lines.append(f"| &nbsp; {key.split(': ', 1)[1]} | {at(key):.1f} | {pct(at(key))} |")
    lines.append(f"| optimizer (MuonH Newton-Schulz per expert, AdamH, AdamW) | {optim:.1f} | {pct(optim)} |")
    for name in ("Optimizer.step#MuonH.step", "Optimizer.step#AdamH.step", "Optimizer.step#AdamW.step"):
        lines.append(f"| &nbsp; {name.split('#')[1]} | {at(name):.1f} | {pct(at(name))} |")
    lines += ["", "moe.router: router matmul, top-k, softmax; moe.dispatch: sort of the token slots by expert, "
                  "bincount, gather of the token rows; moe.experts: the three grouped expert matmuls and the "
                  "SwiGLU product; moe.combine: gate scaling and index_add_ back to tokens; moe.balance: Switch "
                  "loss and stats bookkeeping. Backward nodes: _GroupedMMBackward = expert matmul gradients "
                  "(input and weight); IndexSelectBackward0 = scatter-add of the gathered rows' gradient to tokens; "
                  "IndexAddBackward0 = gather of the output gradient per slot; MulBackward0 = all elementwise "
                  "products (SwiGLU, gates, residual scaling, RoPE); MmBackward0 = dense matmuls (attention "
                  "projections, router, head)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    header = (f"# MoE benchmark\n\ntorch {torch.__version__}, CPU, {torch.get_num_threads()} threads of "
              f"{os.cpu_count()} cores (benchmarks/bench_moe.py)\n")
    model_md, runs = bench_models(args.reps)
    sections = [header, "## Model throughput\n", model_md, "\n## One layer: dispatch variants\n",
                bench_layer(args.reps), "\n## Where the time goes (MoE model)\n",
                bench_breakdown(runs["moe"], args.profile_steps)]
    sections.append(f"\n1-minute load average before / after: {load:.2f} / {os.getloadavg()[0]:.2f} "
                    f"(above ~0 the machine was shared with other processes during the run)")
    report = "\n".join(sections) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
