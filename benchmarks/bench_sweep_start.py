"""The fixed cost of a sweep (issue 23): a 12-run sweep of stub runs that return at once, beyond a bare Ray start.

The bare start is what any Ray program pays: `ray.init` (local, 2 CPUs) plus one task importing torch on each
worker, then `ray.shutdown`. The sweep pays that and its own: CLI imports, preflight, the plan, spec files,
the runs' records, the ledger, shutdown. Its stub runs (hyperp.sweeps.stubs:stub_run) train nothing, so the
difference is the sweep's fixed cost.

Two measures, each a fresh interpreter, alternating which goes first, medians over --reps rounds:

- cli: `python -m hyperp sweep run SPEC --run-fn hyperp.sweeps.stubs:stub_run --num-cpus 2 --quiet` against a
  bare `python -c` (import ray, init, the tasks, shutdown), each timed from outside (Python start included);
- lib: in one interpreter, the bare start timed, then `run_sweep(...)` timed (its own Ray start and shutdown),
  so both are measured beside each other in the same process.

`--code NAME=DIR` (repeatable) runs the sweep with the package found in DIR (PYTHONPATH), e.g. a copy of the
code before a change, so that before and after are measured in the same session on the same machine.

Usage: python benchmarks/bench_sweep_start.py [--reps 3] [--runs 12] [--code before=/tmp/old --code after=.]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hyperp.sweeps.stubs import TINY_BASE_TOML

CORES = 2
STUB = "hyperp.sweeps.stubs:stub_run"
TINY = TINY_BASE_TOML  # the tests' tiny model: runs of a few ms

BARE = f"""
import os, time
t0 = time.perf_counter()
import ray

ray.init(address="local", num_cpus={CORES}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=1)
def warm():
    import torch  # noqa: F401
    time.sleep(0.2)  # hold the CPU so the next task starts on the other worker
    return os.getpid()

pids = ray.get([warm.remote() for _ in range({CORES})])
ray.shutdown()
print(time.perf_counter() - t0)
"""

LIB = BARE.replace("print(time.perf_counter() - t0)", """bare = time.perf_counter() - t0
import sys
t1 = time.perf_counter()
from hyperp.sweeps.runner import run_sweep
import inspect
quiet = {"progress": False} if "progress" in inspect.signature(run_sweep).parameters else {}  # older code: no bar
res = run_sweep(sys.argv[1], sys.argv[2], run_fn=STUB, num_cpus=CORES, **quiet)
assert res.counts["completed"] == RUNS and res.submitted == RUNS, res.counts
print(bare, time.perf_counter() - t1)
""")


def spec_text(name: str, runs: int, tag: str) -> str:
    seeds = ", ".join(str(i) for i in range(runs))
    return f'name = "{name}"\nversion_tag = "{tag}"\n' + TINY + f"[axes]\nseed = [{seeds}]\n[resources]\ncpus = 1\n"


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


def env_for(code: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(code.resolve()), "RAY_DEDUP_LOGS": "0"}


def one_round(tmp: Path, codes: dict[str, Path], runs: int, rep: int) -> dict[str, float]:
    out: dict[str, float] = {}
    names = list(codes) if rep % 2 == 0 else list(reversed(codes))
    first = next(iter(codes.values()))
    out["bare"], _ = timed([sys.executable, "-c", BARE], env_for(first), tmp)
    for name in names:
        code = codes[name]
        spec = tmp / f"cli_{name}_{rep}.toml"
        spec.write_text(spec_text(spec.stem, runs, f"{name}{rep}"))
        out[f"cli_{name}"], _ = timed([sys.executable, "-m", "hyperp", "sweep", "run", str(spec), "--out",
                                       str(tmp / "sweeps"), "--run-fn", STUB, "--num-cpus", str(CORES), "--quiet"],
                                      env_for(code), tmp)
        spec = tmp / f"lib_{name}_{rep}.toml"
        spec.write_text(spec_text(spec.stem, runs, f"{name}{rep}"))
        code_text = f"STUB = {STUB!r}\nRUNS = {runs}\nCORES = {CORES}\n" + LIB
        _, stdout = timed([sys.executable, "-c", code_text, str(spec), str(tmp / "sweeps")], env_for(code), tmp)
        bare, sweep = map(float, stdout.split()[-2:])
        out[f"lib_bare_{name}"], out[f"lib_{name}"] = bare, sweep
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--code", action="append", default=[], help="NAME=DIR: the package in DIR (repeatable)")
    args = ap.parse_args()
    codes = {k: Path(v) for k, v in (c.split("=", 1) for c in args.code)} or {"here": Path(".")}
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_start_"))
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.runs} stub runs, local Ray of {CORES} "
          f"CPUs; {args.reps} rounds")
    rounds = []
    for rep in range(args.reps):
        r = one_round(tmp, codes, args.runs, rep)
        rounds.append(r)
        print(json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"\nbare start (python, import ray, ray.init, one torch-importing task per worker, shutdown): "
          f"{med['bare']:.2f} s (subprocess, median)")
    for name in codes:
        print(f"[{name}] cli: `hyperp sweep run` {med[f'cli_{name}']:.2f} s -> fixed cost "
              f"{med[f'cli_{name}'] - med['bare']:.2f} s beyond the bare start")
        print(f"[{name}] lib (same process): bare {med[f'lib_bare_{name}']:.2f} s, run_sweep "
              f"{med[f'lib_{name}']:.2f} s -> fixed cost {med[f'lib_{name}'] - med[f'lib_bare_{name}']:.2f} s")
    print(f"(rounds: {tmp})")


if __name__ == "__main__":
    main()
