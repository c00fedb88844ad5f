"""Data-parallel throughput on CPU: 2 workers of 1 thread each against 1 worker of 2 threads (the reference,
measured in the same invocation), at the same global batch, alternating which goes first.

The two workers are gloo ranks started here with torch.multiprocessing, as Ray Train starts them in a sweep
(Ray's start-up is a one-off cost, not part of a step). Each mode trains the same config for `--steps` steps
(validation once, at the end; excluded from the training time the trainer reports). Printed per mode:
tokens/s (the trainer's `tokens_per_s`: global tokens over training time), seconds per step, and for 2 workers
the communication share: the median time of one all-reduce of the model's gradients (a buffer of as many
floats as parameters, timed alone on the same ranks) times the steps, over the training time. Last, whether
the Newton-Schulz iterations are better computed on every worker (what hyperp does) or split over the workers
and shared by an all-gather of the updates, timed on the same ranks.

Usage: python benchmarks/bench_ddp.py [--width 256] [--depth 4] [--steps 6] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hyperp.kernels.ns import newton_schulz_torch
from hyperp.config import RunConfig
from hyperp.trainer.loop import train
from hyperp.trainer.metrics import hidden_shapes

ALL_REDUCE_REPS = 10


def config(width: int, depth: int, steps: int, workers: int, threads: int) -> RunConfig:
    return RunConfig(param="hyperp", depth=depth, width=width, head_dim=32, seq_len=256, batch_tokens=8192,
                     tokens=8192 * steps, val_tokens=8192, eval_every=steps, stats_every=steps, threads=threads,
                     workers=workers, peak_tflops=1.0, device="cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, cfg_json: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cfg = RunConfig.from_dict(json.loads(cfg_json))
        torch.set_num_threads(cfg.threads)
        row = train(cfg).row
        n = row["n_params"]
        buf = torch.randn(n)
        times = []
        for _ in range(ALL_REDUCE_REPS):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t0)
        ns_s, gather_s = newton_schulz_split(cfg)
        if rank == 0:
            results.put({"tokens_per_s": row["tokens_per_s"], "train_s": row["wall_time_s"], "steps": row["steps"],
                         "all_reduce_s": statistics.median(times), "n_params": n, "val_loss": row["val_loss"],
                         "ns_s": ns_s, "ns_gather_s": gather_s})
    finally:
        dist.destroy_process_group()


def newton_schulz_split(cfg: RunConfig) -> tuple[float, float]:
    """Newton-Schulz on every worker, or split and shared? (median seconds per step of each, on this rank)
    The first: every hidden matrix's iteration here (what hyperp does: identical on each rank). The second:
    this rank's 1/world of the matrices, then an all-gather of every matrix's update."""
    shapes = hidden_shapes(cfg)
    mats = [torch.randn(shape) for shape in shapes]
    world, rank = dist.get_world_size(), dist.get_rank()
    whole, split = [], []
    for _ in range(3):
        dist.barrier()
        t0 = time.perf_counter()
        for m in mats:
            newton_schulz_torch(m, cfg.ns_coeffs, cfg.ns_steps)
        whole.append(time.perf_counter() - t0)
        dist.barrier()
        t0 = time.perf_counter()
        for m in mats[rank::world]:
            newton_schulz_torch(m, cfg.ns_coeffs, cfg.ns_steps)
        flat = torch.cat([m.reshape(-1) for m in mats])
        parts = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(parts, flat)  # the size of every update, as the shared variant must move
        split.append(time.perf_counter() - t0)
    return statistics.median(whole), statistics.median(split)


def two_workers(cfg: RunConfig) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_rank, args=(free_port(), cfg.to_json(), results), nprocs=2, join=True, start_method="spawn")
    out = results.get(timeout=60)
    out["comm_share"] = out["all_reduce_s"] * out["steps"] / out["train_s"]
    return out


def one_worker(cfg: RunConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    row = train(cfg).row
    return {"tokens_per_s": row["tokens_per_s"], "train_s": row["wall_time_s"], "steps": row["steps"],
            "val_loss": row["val_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2, help="rounds; the order of the two modes alternates")
    args = ap.parse_args()
    print(time.strftime("%a %b %d %H:%M:%S %Z %Y"), f"load average {os.getloadavg()[0]:.2f}",
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"hyperp, width {args.width}, depth {args.depth}, ctx 256, global batch 8192 tokens, {args.steps} steps")
    modes = {"1 worker x 2 threads": lambda: one_worker(config(args.width, args.depth, args.steps, 1, 2)),
             "2 workers x 1 thread": lambda: two_workers(config(args.width, args.depth, args.steps, 2, 1))}
    got: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.reps):
        for name in (list(modes) if rep % 2 == 0 else list(modes)[::-1]):
            got[name].append(modes[name]())
    ref = statistics.median(r["tokens_per_s"] for r in got["1 worker x 2 threads"])
    print(f"{'mode':>22}  {'tok/s':>8}  {'s/step':>7}  {'vs 1x2':>6}  {'comm share':>10}  val_loss")
    for name, runs in got.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        step = statistics.median(r["train_s"] / r["steps"] for r in runs)
        comm = f"{100 * statistics.median(r['comm_share'] for r in runs):.1f}%" if "comm_share" in runs[0] else "-"
        print(f"{name:>22}  {tps:8,.0f}  {step:7.2f}  {tps / ref:5.2f}x  {comm:>10}  {runs[0]['val_loss']:.4f}")
    two = got["2 workers x 1 thread"]
    whole, split = (statistics.median(r[k] for r in two) for k in ("ns_s", "ns_gather_s"))
    print(f"Newton-Schulz per step on each of 2 workers: every matrix on every worker {whole:.3f} s; "
          f"half the matrices each + all-gather of the updates {split:.3f} s ({whole / split:.2f}x)")
    print(time.strftime("%H:%M:%S"), f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
