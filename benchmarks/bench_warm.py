"""Warm workers: a sweep of tiny real runs end to end, with Ray's worker processes reused across runs (the
default, `[resources] reuse_workers = true`) against a fresh process per run (`reuse_workers = false`, the
reference measured in the same invocation), alternating which goes first.

Each sweep runs through the CLI in a subprocess (`hyperp sweep run`: CLI imports, Ray start, the runs, the
ledger), as a user runs it. Printed per mode: end-to-end wall, the runs' training time (sum of wall_time_s),
that training spread over the cores (the floor a perfect scheduler reaches), their ratio, and the median and
largest per-run overhead (elapsed_s - wall_time_s: what a run costs inside its worker besides training steps).

Usage: python benchmarks/bench_warm.py [--runs 12] [--steps 32] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hyperp import io

CORES = 2  # the sweep's local Ray gets this many CPUs, one run per CPU


def spec_text(name: str, runs: int, steps: int, reuse: bool, tag: str) -> str:
    seeds = ", ".join(str(i) for i in range(runs))
    return (f'name = "{name}"\nversion_tag = "{tag}"\n'  # a fresh tag: fresh run ids, nothing skipped
            "[base]\ndepth = 2\naspect_ratio = 32\nhead_dim = 16\nseq_len = 64\nbatch_tokens = 1024\n"
            f"tokens = {1024 * steps}\nval_tokens = 2048\npeak_tflops = 1.0\n"
            f"[axes]\nseed = [{seeds}]\n[resources]\ncpus = 1\nreuse_workers = {str(reuse).lower()}\n")


def one_sweep(tmp: Path, runs: int, steps: int, reuse: bool, tag: str) -> dict[str, float]:
    name = f"warm{int(reuse)}_{tag}"
    spec = tmp / f"{name}.toml"
    spec.write_text(spec_text(name, runs, steps, reuse, tag))
    t0 = time.perf_counter()
    subprocess.run([shutil.which("hyperp") or "hyperp", "sweep", "run", str(spec), "--out", str(tmp / "sweeps"),
                    "--num-cpus", str(CORES)], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    df = io.read_parquet(tmp / "sweeps" / name / "runs.parquet")
    assert (df.status == "completed").all() and len(df) == runs, df.status.value_counts()
    overhead = (df.elapsed_s - df.wall_time_s).tolist()
    train = float(df.wall_time_s.sum())
    return {"wall": wall, "train": train, "floor": train / CORES, "ratio": wall / (train / CORES),
            "overhead_median": statistics.median(overhead), "overhead_max": max(overhead)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=32, help="steps of each run (depth 2, width 64, 1,024 tokens)")
    ap.add_argument("--reps", type=int, default=2, help="rounds; the order of the two modes alternates")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_warm_"))
    print(f"python {platform.python_version()}, {os.cpu_count()} cores ({platform.machine()}), load avg "
          f"{os.getloadavg()[0]:.2f}; {args.runs} runs of {args.steps} steps, {CORES} at a time")
    try:
        for rep in range(args.reps):
            for reuse in ((True, False) if rep % 2 == 0 else (False, True)):
                r = one_sweep(tmp, args.runs, args.steps, reuse, f"r{rep}")
                mode = "warm workers (reuse)    " if reuse else "fresh process per run  "
                print(f"round {rep + 1} {mode}: wall {r['wall']:5.1f} s, training {r['train']:5.1f} s "
                      f"({r['floor']:.1f} s over {CORES} cores) -> {r['ratio']:.1f}x; per-run overhead median "
                      f"{r['overhead_median']:.2f} s, max {r['overhead_max']:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
