"""Compiled sweeps (issue 27 item 3): what a sweep of one shape pays for torch.compile, per cache setting.

One sweep of `--runs` runs of one shape (they differ by LR only), each about `--seconds` of eager training
(tokens set from a short eager probe), 1 CPU per run (as many in parallel as the cores allow), run once per mode:

- off:         compile = false (warm workers)
- on:          compile = true, compile_cache = "run", reuse_workers = false: every run compiles from nothing
- shared:      compile = true, compile_cache = "sweep", reuse_workers = false: fresh processes, one cache
- shared-warm: compile = true, compile_cache = "sweep", warm workers (the defaults)

Prints, per mode: the sweep's wall time, the runs' `warmup_s` (first run's and median: compilation), their
median steady throughput (tokens over training time less warmup_s) and its ratio to `off`; then the costs
`compile = "auto"` reads (hyperp.sweeps.compile.measured_costs over the off and shared ledgers), written with
--out-json as a [resources] compile_costs file.

Usage: python benchmarks/bench_compile_sweep.py [--runs 12] [--seconds 120] [--depth 4] [--width 128]
                                                [--modes off,on,shared,shared-warm] [--out-json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

MODES = {
    "off": 'compile = false\n[resources]\ncpus = 1\n',
    "on": 'compile = true\n[resources]\ncpus = 1\ncompile_cache = "run"\nreuse_workers = false\n',
    "shared": 'compile = true\n[resources]\ncpus = 1\ncompile_cache = "sweep"\nreuse_workers = false\n',
    "shared-warm": 'compile = true\n[resources]\ncpus = 1\ncompile_cache = "sweep"\n',
}


def shape_toml(depth: int, width: int, tokens: int) -> str:
    return (f"[base]\ndepth = {depth}\nwidth = {width}\nhead_dim = 32\nseq_len = 256\nbatch_tokens = 8192\n"
            f"tokens = {tokens}\nval_tokens = 16384\neval_every = 1000000\nthreads = 1\n")


def probe_tokens(depth: int, width: int, seconds: float) -> int:
    """Tokens of an eager run of about `seconds` on one thread, from 12 timed steps after 3 untimed."""
    import torch  # noqa: PLC0415

    from hyperp.config import RunConfig  # noqa: PLC0415
    from hyperp.trainer.loop import train  # noqa: PLC0415

    torch.set_num_threads(1)
    cfg = RunConfig(depth=depth, width=width, head_dim=32, seq_len=256, batch_tokens=8192, tokens=15 * 8192,
                    val_tokens=16384, eval_every=1000000, threads=1)
    result = train(cfg)
    rate = result.row["tokens_per_s"]
    return max(1, round(seconds * rate / 8192)) * 8192


def run_mode(tmp: Path, mode: str, runs: int, shape: str):
    from hyperp.sweeps import ledger  # noqa: PLC0415
    from hyperp.sweeps.runner import run_sweep  # noqa: PLC0415

    lrs = ", ".join(f"{0.005 * 1.1 ** i:.5f}" for i in range(runs))
    compile_line, *resources = MODES[mode].splitlines()  # compile belongs in [base], the rest is [resources]
    spec = tmp / f"{mode}.toml"
    spec.write_text(f'name = "{mode}"\n' + shape + compile_line + f"\n[axes]\nlr = [{lrs}]\n" + "\n".join(resources) + "\n")
    t0 = time.perf_counter()
    run_sweep(spec, tmp / "sweeps")
    wall = time.perf_counter() - t0
    return wall, ledger.read_ledger(tmp / "sweeps" / mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=120.0, help="eager training seconds per run")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out-json", type=Path, default=None, help="write the measured costs (compile_costs file)")
    args = ap.parse_args()
    import torch  # noqa: PLC0415

    from hyperp.sweeps import compile as auto  # noqa: PLC0415

    tokens = probe_tokens(args.depth, args.width, args.seconds)
    shape = shape_toml(args.depth, args.width, tokens)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"shape: depth {args.depth}, width {args.width}, seq 256, batch 8192 tokens, {tokens} tokens per run "
          f"(~{args.seconds:.0f} s eager on 1 thread); {args.runs} runs per mode, 1 CPU each")
    ledgers = {}
    print(f"{'mode':12} {'wall s':>8} {'warmup first':>13} {'warmup median':>14} {'steady tok/s':>13} {'vs off':>7}")
    with tempfile.TemporaryDirectory() as d:
        for mode in args.modes.split(","):
            wall, df = run_mode(Path(d), mode, args.runs, shape)
            ledgers[mode] = df
            df = df.sort_values("started_at")
            steady = statistics.median(df.tokens_trained / (df.wall_time_s - df.warmup_s))
            base = ledgers.get("off")
            ratio = steady / statistics.median(base.tokens_trained / (base.wall_time_s - base.warmup_s)) \
                if base is not None else float("nan")
            print(f"{mode:12} {wall:8.1f} {df.warmup_s.iloc[0]:13.1f} {df.warmup_s.median():14.1f} "
                  f"{steady:13.0f} {ratio:7.3f}", flush=True)
    if "off" in ledgers and "shared" in ledgers:
        import pandas as pd  # noqa: PLC0415

        _, costs = auto.measured_costs(pd.concat([ledgers["off"], ledgers["shared"]]), "cpu", cache="sweep")
        print(f"compile = \"auto\" costs (off and shared): speed-up {costs.speedup:.3f}, cold {costs.cold_s:.1f} s, "
              f"warm {costs.warm_s:.1f} s")
        if args.out_json:
            hardware = ledgers["off"].hardware.iloc[0]
            args.out_json.write_text(json.dumps({"device_type": "cpu", "hardware": hardware, "speedup": costs.speedup,
                                                 "cold_s": costs.cold_s, "warm_s": costs.warm_s,
                                                 "torch": torch.__version__, "shape": shape}, indent=2) + "\n")


if __name__ == "__main__":
    main()
