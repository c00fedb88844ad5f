"""`sweep status --watch` and `--wait` return once a sweep is finished (exit 0, or 1 with failed runs), keep
waiting while a driver is starting or runs are left, and never write. Sweep directories are faked as a driver
leaves them: plan.json, per-run records, search.json, the lock."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyperp import io
from hyperp.cli import app
from hyperp.errors import EXIT_OK, EXIT_RUNS_FAILED
from hyperp.sweeps import ledger

ROOT = Path(__file__).parents[1]
FAST = ["--interval", "0.1"]


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into output unless told not to
    except TypeError:
        return CliRunner()


def strict_json_lines(text: str) -> list:
    """The JSON objects printed one after another (one a line from a watch, one indented from a wait), refusing
    NaN and Infinity as parsers in other languages do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    decoder, out, i = json.JSONDecoder(parse_constant=refuse), [], 0
    while text[i:].strip():
        i += len(text[i:]) - len(text[i:].lstrip())
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


def write_plan(sweep: Path, run_ids: list[str], search: str | None = None) -> None:
    """plan.json of one cell (a grid, or an LR search) with these runs, and the spec it was run from."""
    cell = {"cell_id": "c0", "fields": {"depth": 2}, "search": {"search": search} if search else None}
    runs = [{"run_id": rid, "cell_id": "c0", "search": search, "fields": {"depth": 2, "lr": 0.01 * 2 ** i},
             "flops": 1e9, "n_params": 1000} for i, rid in enumerate(run_ids)]
    io.write_json(sweep / ledger.PLAN_FILE, {"sweep": sweep.name, "varying": ["depth", "lr"], "runs": runs,
                                                    "cells": [cell]})
    (sweep / ledger.SPEC_FILE).write_text(f'name = "{sweep.name}"\n')


def record(sweep: Path, run_id: str, status: str) -> None:
    loss = 2.0 if status == ledger.COMPLETED else math.nan
    ledger.write_record(sweep, {"run_id": run_id, "cell_id": "c0", "status": status, "lr": 0.01, "depth": 2,
                                "val_loss": loss})


def fake_sweep(tmp_path: Path, statuses: dict[str, str | None], search: str | None = None) -> Path:
    """A sweep whose run i has statuses[i] (None: no record yet, pending); no driver holds its lock."""
    sweep = tmp_path / "s"
    sweep.mkdir(parents=True)
    write_plan(sweep, list(statuses), search)
    for rid, status in statuses.items():
        if status is not None:
            record(sweep, rid, status)
    return sweep


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def status(sweep: Path, *flags: str):
    return runner().invoke(app, ["sweep", "status", str(sweep), *flags, *FAST])


# ---------------------------------------------------------------- a finished sweep: both return at once


def test_watch_and_wait_return_on_a_finished_sweep(tmp_path):
    sweep = fake_sweep(tmp_path, {"r0": "completed", "r1": "completed", "r2": "diverged"})
    before = snapshot(tmp_path)
    watch = status(sweep, "--watch", "--count", "20")  # --count: a bound, should it not end by itself
    assert watch.exit_code == EXIT_OK and watch.stdout.count("(finished)") == 1 and "1 diverged" in watch.stdout
    code, (st, *more) = wait_result(start_wait(sweep))
    assert code == EXIT_OK and not more  # one object, printed once
    assert st["finished"] is True and st["active"] is False
    assert (st["totals"]["completed"], st["totals"]["diverged"], st["totals"]["pending"]) == (2, 1, 0)
    lines = strict_json_lines(status(sweep, "--watch", "--json", "--count", "20").stdout)
    assert len(lines) == 1 and lines[0]["finished"] is True
    assert snapshot(tmp_path) == before  # read-only


@pytest.mark.parametrize("failed", ["failed", "infra_failed"])
def test_a_sweep_finished_with_failures_exits_1(tmp_path, failed):
    sweep = fake_sweep(tmp_path, {"r0": "completed", "r1": failed})
    assert status(sweep, "--watch", "--count", "20").exit_code == EXIT_RUNS_FAILED
    code, (st,) = wait_result(start_wait(sweep))
    assert code == EXIT_RUNS_FAILED and st["finished"] and st["totals"][failed] == 1
    assert status(sweep).exit_code == EXIT_OK  # a plain status reports, whatever the state


# ---------------------------------------------------------------- not finished: runs left, a search, a start


def test_runs_left_or_a_search_not_done_is_not_finished(tmp_path):
    sweep = fake_sweep(tmp_path, {"r0": "completed", "r1": None})
    res = status(sweep, "--watch", "--count", "2", "--json")
    lines = strict_json_lines(res.stdout)
    assert res.exit_code == EXIT_OK and len(lines) == 2  # a watch stopped by --count
    assert all(not st["finished"] and st["totals"]["pending"] == 1 for st in lines)
    assert "stopped, runs left" in status(sweep).stdout

    searching = fake_sweep(tmp_path / "b", {"r0": "completed", "r1": "completed", "r2": "completed"}, "bracket")
    summary = {"cell_id": "c0", "search": "bracket", "done": False, "bracketed": False, "reason": "running"}
    io.write_json(searching / ledger.SEARCH_FILE, [summary])
    (st,) = strict_json_lines(status(searching, "--watch", "--count", "1", "--json").stdout)
    assert not st["finished"] and st["totals"]["pending"] == 0  # the search still wants runs
    io.write_json(searching / ledger.SEARCH_FILE, [summary | {"done": True, "bracketed": True, "seeds": 2,
                                                                     "seed_run_ids": ["r3"], "seed_runs_done": 0}])
    (st,) = strict_json_lines(status(searching, "--watch", "--count", "1", "--json").stdout)
    assert not st["finished"]  # done, but its seed repeat of the best LR is not recorded yet
    record(searching, "r3", "completed")
    io.write_json(searching / ledger.SEARCH_FILE, [summary | {"done": True, "bracketed": True, "seeds": 2,
                                                                     "seed_run_ids": ["r3"], "seed_runs_done": 1}])
    assert status(searching, "--watch", "--count", "20").stdout.count("(finished)") == 1


def start_wait(sweep: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    return subprocess.Popen([sys.executable, "-m", "hyperp", "sweep", "status", str(sweep), "--wait", "--json",
                             *FAST], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_result(proc: subprocess.Popen) -> tuple[int, list]:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, strict_json_lines(out)


def test_wait_blocks_until_the_last_run_is_recorded(tmp_path):
    sweep = fake_sweep(tmp_path, {"r0": "completed", "r1": None})
    proc = start_wait(sweep)
    time.sleep(1.5)  # many polls of a sweep with a run left
    assert proc.poll() is None, proc.communicate()
    record(sweep, "r1", "completed")
    code, lines = wait_result(proc)
    assert code == EXIT_OK and len(lines) == 1 and lines[0]["finished"] and lines[0]["totals"]["completed"] == 2


def test_a_starting_driver_is_waited_for(tmp_path):
    """A driver that holds the lock but has not written plan.json is starting: --watch says so, --wait waits;
    a plain status (nothing to read yet) is bad input, as for any directory without a plan."""
    sweep = tmp_path / "s"
    lock = ledger.SweepLock(sweep)
    assert lock.acquire()
    try:
        assert status(sweep).exit_code == 2
        (st,) = strict_json_lines(status(sweep, "--watch", "--count", "1", "--json").stdout)
        assert (st["dir"], st["active"], st["starting"], st["finished"]) == (str(sweep), True, True, False)
        assert st["in_flight"] == [] and not any(st["totals"].values())  # a status's keys, nothing counted yet
        assert "a driver is starting" in status(sweep, "--watch", "--count", "1").stdout
        proc = start_wait(sweep)
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()
        write_plan(sweep, ["r0"])
        record(sweep, "r0", "failed")
        time.sleep(0.5)
        assert proc.poll() is None  # the driver still holds the lock: not finished
    finally:
        lock.release()
    code, lines = wait_result(proc)
    assert code == EXIT_RUNS_FAILED and lines[0]["finished"] and lines[0]["totals"]["failed"] == 1


def test_status_lists_failed_runs_with_their_first_error_line(tmp_path):
    """`sweep status --json` has `failed_runs` (run id, status, the plan's varying settings, the error's first
    line); the table view prints one line per failed run below it, as `sweep run` does."""
    sweep = fake_sweep(tmp_path, {"r0": "completed", "r1": None, "r2": None})
    ledger.write_record(sweep, {"run_id": "r1", "cell_id": "c0", "status": ledger.FAILED, "lr": 0.02, "depth": 2,
                                "val_loss": math.nan, "error": "RuntimeError: CUDA out of memory\nmore lines"})
    ledger.write_record(sweep, {"run_id": "r2", "cell_id": "c0", "status": ledger.INFRA_FAILED, "lr": 0.04,
                                "depth": 2, "val_loss": math.nan, "error": "node lost"})
    res = status(sweep, "--json")
    assert res.exit_code == 0, res.output
    (st,) = strict_json_lines(res.stdout)
    assert st["failed_runs"] == [
        {"run_id": "r1", "status": "failed", "settings": {"depth": 2, "lr": 0.02},
         "error": "RuntimeError: CUDA out of memory"},
        {"run_id": "r2", "status": "infra_failed", "settings": {"depth": 2, "lr": 0.04}, "error": "node lost"}]
    text = status(sweep)
    assert "failed: depth=2 lr=0.02 (r1): RuntimeError: CUDA out of memory" in text.stderr
    assert "infra_failed: depth=2 lr=0.04 (r2): node lost" in text.stderr
    assert status(fake_sweep(tmp_path / "ok", {"a": "completed"}), "--json").stdout.count('"failed_runs": []') == 1
