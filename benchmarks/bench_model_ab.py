"""A change to the model against the model before it: an earlier `hyperp/trainer/model.py` (from git) loaded
beside the current one in one process, the same weights in both, forward+backward alternated with the GPT
block of `hyperp bench train` (the order rotated every round), paired per-round ratios to the earlier model, in wall
time and in process CPU time (at --threads 1 the CPU time is the work done, robust to other processes' load),
and each model's minor page faults per forward+backward (fresh pages from the OS: a count, not a timing, so
it does not depend on the machine's noise; a fault costs about a microsecond plus zeroing 4 KiB).
Both models must compute the same function (same loss printed first); the per-round pairing resolves a few
percent, which `hyperp bench train`'s run-to-run spread does not. The earlier model.py takes the layers it
shares with the MoE from `hyperp/trainer/layers.py`: the current one, or an earlier one given as --before-layers.

Usage: git show HEAD~1:hyperp/trainer/model.py > /tmp/before.py
       git show HEAD~1:hyperp/trainer/layers.py > /tmp/before_layers.py  # when layers.py changed
       python benchmarks/bench_model_ab.py --before /tmp/before.py [--before-layers /tmp/before_layers.py]
              [--rounds 20] [--width 256] [--depth 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import sys
import time

import torch

from hyperp.trainer.bench import MATCHED_MLP_RATIO, contestants, prepare
from hyperp.config import RunConfig

DROPPED = 3  # warm-up rounds


LAYERS = "hyperp.trainer.layers"


def load_module(path: str, name: str = "model_before", layers: str | None = None):
    """The module at `path`; with `layers`, it imports that file as hyperp.trainer.layers while it loads."""
    current = sys.modules.get(LAYERS)
    if layers:
        sys.modules[LAYERS] = load_module(layers, "layers_before")
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if current is not None:
            sys.modules[LAYERS] = current
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="an earlier hyperp/trainer/model.py")
    ap.add_argument("--before-layers", help="an earlier hyperp/trainer/layers.py (default: the current one)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cfg = RunConfig(width=args.width, depth=args.depth, head_dim=32, seq_len=256, batch_tokens=8192,
                    threads=args.threads)
    cfg, device = prepare(cfg, MATCHED_MLP_RATIO)
    after, gpt = (c.model for c in contestants(cfg, ["adamw"], device, False))
    before = load_module(args.before, layers=args.before_layers).Transformer(cfg)
    before.load_state_dict(after.state_dict())
    x, y = (torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len)) for _ in range(2))
    with torch.no_grad():
        print(f"loss before {before(x, y)[1].item():.6f}, after {after(x, y)[1].item():.6f}")
    models = {"before": before, "after": after, "gpt-block": gpt}
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    faults: dict[str, list[int]] = {k: [] for k in models}  # minor page faults: fresh memory from the OS
    for r in range(args.rounds + DROPPED):
        names = list(models)[r % 3:] + list(models)[: r % 3]
        for name in names:
            t, c, f = time.perf_counter(), time.process_time(), minor_faults()
            _, loss = models[name](x, y)
            loss.backward()
            models[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            faults[name].append(minor_faults() - f)
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; width "
          f"{cfg.d_model}, depth {cfg.depth}, {cfg.batch_tokens} tokens; forward+backward, {args.rounds} rounds; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for kind, series in (("wall", times), ("CPU", cpu)):
        for name in models:
            t = series[name][DROPPED:]
            ratios = [b / a for b, a in zip(series["before"][DROPPED:], t)]
            q1, med, q3 = statistics.quantiles(ratios, n=4)
            print(f"{kind:>4} {name:>10}: median {1e3 * statistics.median(t):.0f} ms; before's time / this one's, "
                  f"per round: median {med:.3f}, quartiles {q1:.3f}-{q3:.3f}")
    for name in models:  # each fault maps a zeroed 4 KiB page: memory handed back to the OS and taken again
        print(f"page faults {name:>10}: median {statistics.median(faults[name][DROPPED:]):,.0f} per forward+backward")


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


if __name__ == "__main__":
    main()
