"""Newton-Schulz on CUDA: the Triton kernel against torch's own bf16 iteration (cuBLAS matmuls), both beside the
fp32 torch reference for accuracy, at the shapes of issue 10: a square 1024 x 1024 matrix, a 2048 x 8192 one
(an MLP matrix of a width-2048 model) and a batched expert bank.

Each figure is the median of `--reps` timed calls after `--warmup` untimed ones (the first Triton call also
autotunes its tiles for the shape), timed with CUDA events. TFLOP/s counts `hyperp.kernels.ns.ns_flops`.
The error is ||NS(G) - NS_fp32(G)||_F / ||NS_fp32(G)||_F on the same Gaussian G.

Without CUDA the script times the torch iteration alone (fp32 and bf16) and says so: the kernel's speed is a
GPU figure. Usage: python benchmarks/bench_ns.py [--shapes 1024x1024,2048x8192,32x1024x1408] [--reps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from hyperp.kernels.ns import newton_schulz_torch, ns_flops

SHAPES = "1024x1024,2048x8192,32x1024x1408"  # the last: 32 experts of a width-1024 model, hidden 1408 each


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(int(n) for n in s.split("x")) for s in text.split(",")]
    except ValueError:
        raise SystemExit(f"--shapes: expected shapes like 1024x1024,8x256x512, got {text!r}") from None
    if any(len(s) < 2 or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes: each shape needs at least rows x cols, all positive, got {text!r}")
    return shapes


def timed_ms(fn, device: str, warmup: int, reps: int) -> float:
    """Median milliseconds of one call of fn."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def contenders(device: str) -> dict:
    """name -> function of G; the first is the speed reference."""
    out = {"torch bf16": lambda G: newton_schulz_torch(G, dtype=torch.bfloat16)}
    if device == "cuda":
        from hyperp.kernels import newton_schulz as kernel  # noqa: PLC0415 (needs triton)

        if kernel.available():
            out["triton bf16"] = lambda G: kernel.newton_schulz_triton(G, dtype=torch.bfloat16)
    else:
        out["torch fp32"] = newton_schulz_torch
    return out


def bench_shape(shape: tuple[int, ...], device: str, warmup: int, reps: int) -> list[dict]:
    G = torch.randn(*shape, device=device, generator=torch.Generator(device).manual_seed(0))
    reference = newton_schulz_torch(G)  # fp32
    flops = ns_flops(shape, steps=5)
    rows = []
    for name, fn in contenders(device).items():
        ms = timed_ms(lambda: fn(G), device, warmup, reps)
        error = ((fn(G).float() - reference).norm() / reference.norm()).item()
        rows.append({"shape": "x".join(map(str, shape)), "impl": name, "ms": ms, "tflops": flops / ms / 1e9,
                     "error_vs_fp32": error})
    for r in rows:
        r["speed_vs_first"] = rows[0]["ms"] / r["ms"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated [batch x] rows x cols")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.machine()} CPU, no CUDA"
    rows = [r for s in shapes for r in bench_shape(s, device, args.warmup, args.reps)]
    if args.json:
        print(json.dumps({"machine": machine, "torch": torch.__version__, "rows": rows}, allow_nan=False))
        return
    print(f"{machine}, torch {torch.__version__}; Newton-Schulz, 5 iterations (per_iter), medians of {args.reps}")
    if device != "cuda":
        print("no CUDA: the Triton kernel is not timed (its speed is a GPU figure); torch alone below")
    print(f"{'shape':>14} {'impl':>12} {'ms':>9} {'TFLOP/s':>8} {'vs first':>8} {'error vs fp32':>13}")
    for r in rows:
        print(f"{r['shape']:>14} {r['impl']:>12} {r['ms']:9.3f} {r['tflops']:8.1f} {r['speed_vs_first']:7.2f}x "
              f"{r['error_vs_fp32']:13.2e}")


if __name__ == "__main__":
    main()
