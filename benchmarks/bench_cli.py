"""Benchmark of the CLI's start-up (issue 9): each command as a fresh subprocess, median of several runs.

Measured beside references taken in the same run: `python -c pass` (the interpreter alone), `ray --help` and
`optuna --help` (CLIs of the same stack). Targets on 2 cores: `hyperp --help` <= 1 s, `hyperp sweep ls` and
`hyperp sweep status` <= 1.5 s. `sweep ls/status` read a copy of the shipped sweep directories
(results/sweeps-data/, copied to a temporary directory so the repository is never touched).

Usage: python benchmarks/bench_cli.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "results" / "sweeps-data"


def hyperp_cmd() -> list[str]:
    """The installed `hyperp` script next to this interpreter, else the same entry point through -c."""
    script = Path(sys.executable).with_name("hyperp")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from hyperp.cli import app; app()"]


def tool(name: str) -> list[str] | None:
    script = Path(sys.executable).with_name(name)
    found = str(script) if script.is_file() else shutil.which(name)
    return [found] if found else None


def median_seconds(cmd: list[str], reps: int) -> tuple[float, float, int]:
    """Median and min wall time of `cmd` over `reps` runs (after one untimed warm-up), and its exit code."""
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache
    times, code = [], 0
    for _ in range(reps):
        t = time.perf_counter()
        code = subprocess.run(cmd, capture_output=True, check=False).returncode
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timed runs per command")
    args = ap.parse_args()
    hp = hyperp_cmd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweeps"
        shutil.copytree(SWEEPS, root)
        sweep = sorted(p for p in root.iterdir() if p.is_dir())[-1]
        rows = [("python -c pass", [sys.executable, "-c", "pass"], None),
                ("ray --help", tool("ray") and [*tool("ray"), "--help"], None),
                ("optuna --help", tool("optuna") and [*tool("optuna"), "--help"], None),
                # what hyperp.sweeps.ledger imports at its top: the floor of `sweep ls/status` today
                ("python -c 'import pandas, pyarrow.parquet'",
                 [sys.executable, "-c", "import pandas, pyarrow.parquet"], None),
                ("hyperp --help", [*hp, "--help"], 1.0),
                ("hyperp train --help", [*hp, "train", "--help"], None),
                ("hyperp sweep ls", [*hp, "sweep", "ls", str(root)], 1.5),
                (f"hyperp sweep status ({sweep.name})", [*hp, "sweep", "status", str(sweep)], 1.5),
                ("hyperp fit --help", [*hp, "fit", "--help"], None)]
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; median of {args.reps} runs as fresh subprocesses")
        print(f"{'command':<44} {'median s':>9} {'min s':>7} {'target':>7}  exit")
        for name, cmd, target in rows:
            if not cmd:
                print(f"{name:<44} {'(not installed)':>17}")
                continue
            med, low, code = median_seconds(cmd, args.reps)
            verdict = "" if target is None else f"<= {target:g}" + (" ok" if med <= target else " MISSED")
            print(f"{name:<44} {med:>9.2f} {low:>7.2f} {verdict:>7}  {code}")


if __name__ == "__main__":
    main()
