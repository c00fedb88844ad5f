"""Benchmark of the sweep engine (issue 4). Prints the figures; results/sweeps/bench.md keeps a copy.

1. Scheduling overhead per run on a local Ray (2 CPUs, 1 CPU per run) with a stub run function that returns at
   once: the whole engine path (Ray task, worker wrapper, per-run record write, ledger rewrites) per run.
   Then the same stub as Ray Tune trials without actor reuse (function trainable), for comparison.
2. Ledger: write 10,000 per-run records, rebuild runs.parquet from them (cold) and incrementally (warm), and
   read runs.parquet into pandas.
3. Real trainer: 8 equal tiny runs at 2 in parallel versus one after another (1 thread each).

Usage: python benchmarks/bench_sweep.py [--runs 200] [--ledger-runs 10000] [--real-steps 200] [--real-reps 2] [--tune-trials 10]
                                         [--skip-real]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from hyperp.sweeps.stubs import TINY_BASE_TOML

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TINY = TINY_BASE_TOML
STUB = "hyperp.sweeps.stubs:stub_run"


def spec_file(tmp: Path, name: str, body: str) -> Path:
    f = tmp / f"{name}.toml"
    f.write_text(f'name = "{name}"\n' + body)
    return f


def bench_overhead(tmp: Path, n: int) -> dict[str, float]:
    from hyperp.sweeps.runner import run_sweep

    seeds = ", ".join(str(i) for i in range(n))
    warm = spec_file(tmp, "warm", TINY + "[axes]\nseed = [0, 1, 2, 3]\n")
    run_sweep(warm, tmp / "sweeps", run_fn=STUB)  # start the 2 workers
    out = {}
    for slots in (2, 1):
        name = f"overhead{slots}"
        spec = spec_file(tmp, name, f"max_concurrent = {slots}\n" + TINY + f"[axes]\nseed = [{seeds}]\n")
        t0 = time.perf_counter()
        res = run_sweep(spec, tmp / "sweeps", run_fn=STUB)
        wall = time.perf_counter() - t0
        assert res.counts["completed"] == n, res.counts
        out[f"wall_{slots}"] = wall
        t0 = time.perf_counter()
        noop = run_sweep(spec, tmp / "sweeps", run_fn=STUB)
        out[f"noop_{slots}"] = time.perf_counter() - t0
        assert noop.submitted == 0
    return out


def bench_tune(tmp: Path, n: int) -> float:
    from ray import tune

    def trainable(config):
        return {"loss": 1.0}

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"seed": tune.grid_search(list(range(n)))},
                       tune_config=tune.TuneConfig(reuse_actors=False, max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(tmp / "tune"), verbose=0))
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(results) == n
    return wall


def sample_row() -> dict:
    """A realistic ledger row: a real (tiny) trainer row plus the sweep columns."""
    from hyperp.sweeps.runner import config_row
    from hyperp.sweeps.plan import make_plan
    from hyperp.sweeps.spec import loads_spec
    from hyperp.trainer.loop import train

    plan = make_plan(loads_spec('name = "x"\n' + TINY))
    run = plan.runs[0]
    row = config_row(run) | train(run.config).row
    row |= {"run_id": run.run_id, "sweep": "x", "cell_id": run.cell_id, "lr_search": "grid", "attempts": 1,
            "elapsed_s": 1.0, "host": "h", "started_at": time.time(), "finished_at": time.time()}
    return row


def bench_ledger(tmp: Path, n: int) -> dict[str, float]:
    from hyperp.sweeps import ledger

    base = sample_row()
    sweep = tmp / "ledger"
    rows = []
    for i in range(n):
        r = dict(base)
        r["run_id"] = f"{i:012x}"
        r["lr"] = 1e-3 * (1 + i % 17)
        r["val_loss"] = 3.0 + (i % 101) / 100
        rows.append(r)
    out = {"columns": len(base)}
    t0 = time.perf_counter()
    for r in rows:
        ledger.write_record(sweep, r)
    out["write_records"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ledger.write_ledger(sweep, rows)
    out["write_ledger"] = time.perf_counter() - t0
    out["ledger_mb"] = (sweep / ledger.LEDGER_FILE).stat().st_size / 2**20
    reads = []
    for _ in range(3):
        t0 = time.perf_counter()
        df = pd.read_parquet(sweep / ledger.LEDGER_FILE)
        reads.append(time.perf_counter() - t0)
        assert len(df) == n
    out["read_pandas"] = statistics.median(reads)
    t0 = time.perf_counter()
    df = ledger.rebuild_ledger(sweep)
    out["rebuild_cold"] = time.perf_counter() - t0
    assert len(df) == n
    t0 = time.perf_counter()
    recs = ledger.load_records(sweep)
    out["load_incremental"] = time.perf_counter() - t0
    assert len(recs) == n
    return out


def bench_real(tmp: Path, steps: int, reps: int, n_runs: int = 8) -> list[dict[str, float]]:
    """`reps` rounds of (one after another, 2 in parallel), alternating which goes first (the 2 cores are shared)."""
    from hyperp.sweeps.runner import run_sweep

    seeds = ", ".join(str(i) for i in range(n_runs))
    body = ("[base]\ndepth = 2\naspect_ratio = 32\nhead_dim = 16\nseq_len = 64\nbatch_tokens = 1024\n"
            f"tokens = {1024 * steps}\nval_tokens = 2048\npeak_tflops = 1.0\n"
            f"[axes]\nseed = [{seeds}]\n[resources]\ncpus = 1\n")
    warm = spec_file(tmp, "realwarm", "max_concurrent = 2\n" + body.replace(f"tokens = {1024 * steps}", "tokens = 4096")
                     .replace(f"seed = [{seeds}]", "seed = [100, 101]"))
    run_sweep(warm, tmp / "sweeps")  # both workers import torch and load the corpus
    rounds = []
    for rep in range(reps):
        out = {"load": os.getloadavg()[0]}
        for slots in ((1, 2) if rep % 2 == 0 else (2, 1)):
            # a version_tag per round gives fresh run ids, so nothing is skipped as already done
            spec = spec_file(tmp, f"real{slots}_{rep}", f'max_concurrent = {slots}\nversion_tag = "r{rep}s{slots}"\n' + body)
            t0 = time.perf_counter()
            res = run_sweep(spec, tmp / "sweeps")
            out[f"wall_{slots}"] = time.perf_counter() - t0
            assert res.counts["completed"] == n_runs and res.submitted == n_runs, res.counts
            df = pd.read_parquet(res.sweep_dir / "runs.parquet")
            out[f"train_s_{slots}"] = float(df.wall_time_s.mean())
        rounds.append(out)
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200, help="stub runs for the overhead measurement")
    ap.add_argument("--ledger-runs", type=int, default=10_000)
    ap.add_argument("--real-steps", type=int, default=200, help="steps of each real-trainer run")
    ap.add_argument("--real-reps", type=int, default=2, help="rounds of the sequential/parallel comparison")
    ap.add_argument("--tune-trials", type=int, default=10, help="Ray Tune trials without actor reuse; 0: skip")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()

    import ray

    import hyperp

    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    print(f"hyperp {hyperp.__version__}, ray {ray.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cores ({platform.machine()})")
    try:
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        print(f"ray.init (local, 2 CPUs): {time.perf_counter() - t0:.2f} s (paid once per `sweep run`, "
              "skipped when nothing is to run)")

        o = bench_overhead(tmp, args.runs)
        n = args.runs
        print(f"\n[1] scheduling overhead, stub run function that returns at once, {n} runs, 1 CPU per run")
        print(f"  2 runs in parallel: sweep wall {o['wall_2']:.2f} s -> {o['wall_2'] / n * 1000:.1f} ms per run "
              f"(throughput), {o['wall_2'] * 2 / n * 1000:.1f} ms of slot time per run")
        print(f"  1 run at a time:    sweep wall {o['wall_1']:.2f} s -> {o['wall_1'] / n * 1000:.1f} ms per run "
              f"(submit -> record latency)")
        print(f"  target <= 200 ms per run: {'PASS' if o['wall_1'] / n <= 0.2 else 'FAIL'}")
        print(f"  re-running the finished sweep (no-op, Ray not touched): {o['noop_2']:.2f} s")
        if args.tune_trials:
            m = args.tune_trials
            wall = bench_tune(tmp, m)
            print(f"  Ray Tune, function trainable, reuse_actors=False, 2 concurrent, {m} trials: wall {wall:.2f} s "
                  f"-> {wall / m * 1000:.0f} ms per trial (throughput), {wall * 2 / m * 1000:.0f} ms of slot time")
        else:
            print("  Ray Tune without actor reuse: not re-measured here (issue's reference: about 1.6 s per trial)")

        lg = bench_ledger(tmp, args.ledger_runs)
        m = args.ledger_runs
        print(f"\n[2] ledger, {m:,} runs x {lg['columns']} columns")
        print(f"  per-run records (atomic parquet + fsync each): {lg['write_records']:.2f} s total, "
              f"{lg['write_records'] / m * 1000:.2f} ms per run")
        print(f"  runs.parquet from {m:,} in-memory rows: {lg['write_ledger']:.2f} s ({lg['ledger_mb']:.1f} MiB)")
        print(f"  read runs.parquet into pandas: {lg['read_pandas']:.3f} s "
              f"(target < 1 s: {'PASS' if lg['read_pandas'] < 1 else 'FAIL'})")
        print(f"  rebuild runs.parquet from the {m:,} per-run records (cold): {lg['rebuild_cold']:.2f} s")
        print(f"  incremental load (records older than runs.parquet come from it): {lg['load_incremental']:.2f} s")

        if not args.skip_real:
            rounds = bench_real(tmp, args.real_steps, args.real_reps)
            print(f"\n[3] real trainer, 8 equal runs (depth 2, width 64, seq 64, batch 1024 tokens, "
                  f"{args.real_steps} steps), 1 thread each, {len(rounds)} rounds (order alternates)")
            for i, r in enumerate(rounds):
                print(f"  round {i + 1} (load avg {r['load']:.2f}): one after another {r['wall_1']:.1f} s "
                      f"(training {r['train_s_1']:.2f} s/run), 2 in parallel {r['wall_2']:.1f} s "
                      f"(training {r['train_s_2']:.2f} s/run) -> {r['wall_1'] / r['wall_2']:.2f}x")
            seq, par = sum(r["wall_1"] for r in rounds), sum(r["wall_2"] for r in rounds)
            speedup = seq / par
            print(f"  total: one after another {seq:.1f} s, 2 in parallel {par:.1f} s -> speedup {speedup:.2f}x "
                  f"(target >= 1.8x: {'PASS' if speedup >= 1.8 else 'FAIL'})")
            slow = sum(r["train_s_2"] for r in rounds) / sum(r["train_s_1"] for r in rounds)
            print(f"  the machine: a run's own training time is {slow:.2f}x longer when 2 run at once (1.00 = two "
                  f"free cores), so 2 slots can give at most {2 / slow:.2f}x; the engine reached "
                  f"{speedup / (2 / slow):.0%} of that")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
