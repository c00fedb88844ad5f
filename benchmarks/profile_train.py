"""Where a training step's time goes: torch.profiler's self CPU time per op and input shapes, for hyperp's model
under `adamw` (its own optimizer) and for a GPT-style reference model.py (`hyperp bench train --reference`'s
interface, its own configure_optimizers), side by side, per step. Both models run interleaved, warmed up first;
the table lists the ops (the matmuls of every shape as one line: their shapes differ between the models) by how
much more time hyperp's model spends in them than the reference (its last lines: where the reference spends
more). At --threads 1 the op times are the work done; with more threads they
include the threads' waits.

Read it for where time goes within one model, not to compare the two: the profiler slows nanoGPT's model and not
hyperp's (1 thread, 2026-12-05: nanoGPT 2,332 ms per forward+backward without it and 2,448 with it, hyperp 2,423
and 2,415), so the models' op sums compare them wrongly; `hyperp bench train` and the removal A/Bs of
results/bench/nanogpt.txt (session 14) give the comparison.

Usage: python benchmarks/profile_train.py --reference /path/to/nanoGPT/model.py [--threads 1] [--steps 3]
       [--model an-earlier/model.py --layers an-earlier/layers.py]   # profile an earlier hyperp model instead
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
from bench_model_ab import load_module  # noqa: E402

from hyperp.config import RunConfig  # noqa: E402
from hyperp.trainer.bench import MATCHED_MLP_RATIO, prepare, reference_contestant  # noqa: E402
from hyperp.trainer.data import load_corpus, train_batch  # noqa: E402
from hyperp.trainer.loop import build  # noqa: E402
from hyperp.trainer.optim import build_optimizers  # noqa: E402

WARMUP = 5  # untimed steps of each model first (the allocator settles)
MATMULS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::addmv_", "aten::mv"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="a GPT-style model.py (GPT, GPTConfig)")
    ap.add_argument("--model", help="an earlier hyperp/trainer/model.py to profile instead of the current one")
    ap.add_argument("--layers", help="the layers.py that earlier model.py imports (default: the current one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps of each model")
    ap.add_argument("--rows", type=int, default=40)
    args = ap.parse_args()
    cfg = RunConfig(width=256, depth=4, head_dim=32, seq_len=256, batch_tokens=8192, tokens=8192, param="adamw",
                    threads=args.threads)
    cfg, device = prepare(cfg, MATCHED_MLP_RATIO)
    model, opt, hp = build(cfg, device)
    if args.model:
        earlier = load_module(args.model, layers=args.layers).Transformer(cfg, hp.residual_alpha, hp.logit_mult)
        earlier.load_state_dict(model.state_dict())
        model, opt = earlier, build_optimizers(earlier, hp, cfg)
    ref = reference_contestant(args.reference, cfg, device, compile=False)
    x, y = train_batch(load_corpus(cfg.data, cfg.val_percent), 0, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    x, y = x.contiguous(), y.contiguous()
    models = {"hyperp": (model, opt), "reference": (ref.model, ref.opt)}

    def step(m, o):
        _, loss = m(x, y)
        loss.backward()
        o.step()
        o.zero_grad()

    for _ in range(WARMUP):
        for m, o in models.values():
            step(m, o)
    per_op = {name: collections.Counter() for name in models}
    for _ in range(args.steps):
        for name, (m, o) in models.items():
            with profile(record_shapes=True) as prof:
                step(m, o)
            for e in prof.key_averages():
                key = "matmuls (aten::mm, addmm_, bmm; every shape)" if e.key in MATMULS else e.key
                per_op[name][key] += e.self_cpu_time_total / 1e3 / args.steps
    h, r = per_op["hyperp"], per_op["reference"]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; width {cfg.d_model}, depth {cfg.depth}, "
          f"{cfg.batch_tokens} tokens, hyperp at mlp_ratio 8/3 under adamw; reference {args.reference}")
    print(f"self CPU ms per step (profiled): hyperp {sum(h.values()):.0f}, reference {sum(r.values()):.0f}")
    keys = sorted(set(h) | set(r), key=lambda k: r[k] - h[k])
    shown = keys[: args.rows - 5] + keys[-5:]
    print(f"{'hyperp':>8} {'ref':>8} {'diff':>8}  op")
    for k in dict.fromkeys(shown):
        print(f"{h[k]:8.1f} {r[k]:8.1f} {h[k] - r[k]:+8.1f}  {k[:80]}")


if __name__ == "__main__":
    main()
