"""QK-norm + RoPE, forward and backward, as the model computes it (`hyperp.trainer.layers.norm_rope`: the pairs
laid side by side, one complex multiplication) against the textbook form written here as the reference
(torch's rms_norm, then the halves x[:D/2], x[D/2:] rotated and concatenated), timed alternately in one process
on the shape one attention projection gives at width 256 (32 sequences of 256 tokens, 8 heads of 32).

Usage: python benchmarks/bench_rope.py [--threads 2] [--reps 40]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from hyperp.trainer.layers import norm_rope, pair_order, rope_table

THETA, EPS = 10000.0, 1e-6


def reference(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rms_norm, then RoPE on the halves of (B, T, H, D), concatenated."""
    y = F.rms_norm(x, (x.shape[-1],), weight, EPS)
    y1, y2 = y.chunk(2, dim=-1)
    return torch.cat([y1 * cos - y2 * sin, y1 * sin + y2 * cos], dim=-1)


def timed(fn, x: torch.Tensor, grad: torch.Tensor) -> float:
    t = time.perf_counter()
    fn(x).backward(grad)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, T, H, D = 32, 256, 8, 32
    table = rope_table(T, D, THETA)
    cos, sin = table[..., 0].unsqueeze(1), table[..., 1].unsqueeze(1)  # (T, 1, D/2)
    weight = torch.rand(D) + 0.5
    order = pair_order(D)
    x = torch.randn(B, T, H, D, requires_grad=True)
    grad = torch.randn(B, T, H, D)
    ours = lambda t: norm_rope(t, weight[order], table, EPS)  # noqa: E731 (input already in pair order)
    ref = lambda t: reference(t, weight, cos, sin)  # noqa: E731
    torch.testing.assert_close(ours(x.detach()[..., order]), ref(x.detach())[..., order])
    times: dict[str, list[float]] = {"norm_rope": [], "reference": []}
    for r in range(args.reps + 3):
        pair = [("norm_rope", ours), ("reference", ref)]
        for name, fn in pair if r % 2 else pair[::-1]:
            times[name].append(timed(fn, x, grad))
    med = {k: statistics.median(v[3:]) for k, v in times.items()}
    print(f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads; (B, T, H, D) = {(B, T, H, D)}; "
          f"forward+backward, medians of {args.reps}")
    print(f"reference (rms_norm + half-split RoPE): {1e3 * med['reference']:.2f} ms")
    print(f"norm_rope (pair order, complex):        {1e3 * med['norm_rope']:.2f} ms  "
          f"({med['reference'] / med['norm_rope']:.2f}x the reference)")


if __name__ == "__main__":
    main()
