"""Small runs packed on one GPU: a sweep with `[resources] gpus = 0.25` (Ray runs 4 at once on each GPU) against
the same sweep with `gpus = 1` (one at a time), both through the CLI as a user runs them, in one invocation.

A small model cannot fill a large GPU: its kernels are short and the host-side work between them (Python,
launches, the optimizer's small ops) leaves the GPU idle; runs that share the GPU fill those gaps. Printed per
mode: end-to-end wall, the runs' median tokens/s each, and the sweep's tokens/s (all runs' tokens / wall), then
the packed sweep's throughput over the unpacked one's (the reference).

Needs CUDA and Ray. Usage: python benchmarks/bench_pack.py [--runs 8] [--steps 300] [--width 256] [--depth 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hyperp import io

PACKED = 0.25  # a quarter of a GPU per run: 4 runs share one
BATCH_TOKENS = 8192
SEQ_LEN = 256


def spec_text(name: str, runs: int, steps: int, width: int, depth: int, gpus: float, cpus: int) -> str:
    seeds = ", ".join(str(i) for i in range(runs))
    return (f'name = "{name}"\nversion_tag = "{name}-{time.time_ns()}"\n'  # fresh run ids: nothing is skipped
            f"[base]\ndepth = {depth}\naspect_ratio = {width // depth}\nhead_dim = 32\nseq_len = {SEQ_LEN}\n"
            f'batch_tokens = {BATCH_TOKENS}\ntokens = {BATCH_TOKENS * steps}\ndevice = "cuda"\n'
            f"[axes]\nseed = [{seeds}]\n[resources]\ncpus = {cpus}\ngpus = {gpus}\n")


def one_sweep(tmp: Path, gpus: float, args) -> dict[str, float]:
    name = f"pack{int(gpus * 100)}"
    spec = tmp / f"{name}.toml"
    spec.write_text(spec_text(name, args.runs, args.steps, args.width, args.depth, gpus, args.cpus))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hyperp", "sweep", "run", str(spec), "--out", str(tmp / "sweeps"),
                    "--quiet"], check=True)
    wall = time.perf_counter() - t0
    df = io.read_parquet(tmp / "sweeps" / name / "runs.parquet")
    if not (df.status == "completed").all() or len(df) != args.runs:
        raise SystemExit(f"{name}: expected {args.runs} completed runs, got {df.status.value_counts().to_dict()}")
    return {"gpus_per_run": gpus, "wall_s": wall, "run_tokens_per_s": statistics.median(df.tokens_per_s),
            "sweep_tokens_per_s": float(df.tokens_trained.sum()) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300, help=f"steps of {BATCH_TOKENS} tokens per run")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs per run")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_pack: needs a CUDA GPU")
    tmp = Path(tempfile.mkdtemp(prefix="bench_pack_"))
    rows = [one_sweep(tmp, 1.0, args), one_sweep(tmp, PACKED, args)]
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; {args.runs} runs of width {args.width}, "
          f"depth {args.depth}, {args.steps} steps of {BATCH_TOKENS} tokens, {args.cpus} CPUs each")
    for r in rows:
        ratio = r["sweep_tokens_per_s"] / rows[0]["sweep_tokens_per_s"]
        print(f"gpus = {r['gpus_per_run']:<4}  wall {r['wall_s']:7.1f} s  per run {r['run_tokens_per_s']:10,.0f} "
              f"tok/s  sweep {r['sweep_tokens_per_s']:10,.0f} tok/s  ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
