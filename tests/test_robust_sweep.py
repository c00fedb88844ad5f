"""Failure modes of a running sweep on a local Ray of 2 CPUs: SIGTERM and SIGINT of the driver, a full disk in a
run, a bad checkpoint in a run directory, failed runs reported with their settings, and read-only commands that
write nothing. Ray is started once for this module (a few seconds); the SIGTERM test's driver starts its own."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hyperp.cli import app
from hyperp.sweeps import ledger
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.trainer import checkpoint
from test_sweep_runner import write  # spec files

pytestmark = pytest.mark.usefixtures("local_ray")  # one local Ray for the module (conftest.py)

STUB = "hyperp.sweeps.stubs:stub_run"
SIGNAL_WAIT_S = 90  # generous bound for a Ray start plus a run on a busy 2-core machine


def records(sweep: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in pq.read_table(sweep / "runs.parquet").to_pylist()} \
        if (sweep / "runs.parquet").exists() else {}


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- disk full, failed runs reported


def test_disk_full_is_infra_failed_with_one_line_and_retried(tmp_path, local_ray):
    body = TINY_BASE_TOML + '[axes]\nseed = [0, 1]\ntags = [{disk_full = "1"}, {raise = "boom"}, {}]\n'
    spec = write(tmp_path, "full", body)
    root = tmp_path / "sweeps"
    out = run_sweep(spec, root, run_fn=STUB)
    rows = records(root / "full")
    assert sorted(r["status"] for r in rows.values()) == ["completed"] * 2 + ["failed"] * 2 + ["infra_failed"] * 2
    for r in rows.values():
        if r["status"] == "infra_failed":
            path = root.resolve() / "full" / "runs" / r["run_id"] / "checkpoint.pt"
            assert r["error"] == f"OSError: [Errno 28] No space left on device: '{path}'"
    assert out.counts["infra_failed"] == 2 and out.counts["failed"] == 2
    reported = {f["run_id"]: f for f in out.failed_runs}
    assert set(reported) == {rid for rid, r in rows.items() if r["status"] in ("failed", "infra_failed")}
    for rid, f in reported.items():
        assert f["status"] == rows[rid]["status"] and f["error"] == rows[rid]["error"]
        assert f["seed"] == rows[rid]["seed"] and f["tags"] == rows[rid]["tags"]  # the varying settings
        assert set(f) == {"run_id", "status", "error", *out.plan.varying}
    again = run_sweep(spec, root, run_fn=STUB)
    assert again.submitted == 2  # only the infra-failed runs (failed ones wait for --retry-failed)


def test_full_disk_in_the_driver_stops_cleanly_and_the_rerun_finishes(tmp_path, local_ray, monkeypatch):
    from hyperp import io
    from hyperp.errors import UnavailableError
    from hyperp.sweeps import runner

    def full(sweep_dir, row):
        raise io.disk_full_error(ledger.run_dir(sweep_dir, row["run_id"]) / ledger.RECORD_FILE,
                                 OSError(errno.ENOSPC, "No space left on device"))

    spec = write(tmp_path, "dfull", TINY_BASE_TOML + "[axes]\nseed = [0, 1]\n")
    monkeypatch.setattr(runner, "write_record", full)
    with pytest.raises(UnavailableError) as e:
        run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    sweep = tmp_path / "sweeps" / "dfull"
    assert "runs.parquet: disk full" in str(e.value) and "\n" not in str(e.value)
    state = json.loads((sweep / ledger.STATE_FILE).read_text())
    assert state["active"] is False and not ledger.is_running(sweep)
    monkeypatch.undo()
    again = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    assert again.counts["completed"] == 2


def test_ansi_traceback_of_a_lost_worker_is_one_line(tmp_path, local_ray):
    spec = write(tmp_path, "crash", "max_retries = 0\n" + TINY_BASE_TOML + '[axes]\ntags = [{crash_once = "1"}]\n')
    out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    [row] = records(tmp_path / "sweeps" / "crash").values()
    assert row["status"] == "infra_failed" and row["error"].startswith("WorkerCrashedError: ")
    assert "\n" not in row["error"] and "\x1b" not in row["error"]
    assert out.failed_runs[0]["error"] == row["error"]


# ---------------------------------------------------------------- a bad checkpoint in a run directory


def test_bad_checkpoint_in_a_sweep_run_is_set_aside_and_the_run_completes(tmp_path, local_ray):
    spec = write(tmp_path, "ckpt", TINY_BASE_TOML)
    root = tmp_path / "sweeps"
    from hyperp.sweeps.plan import prepare

    _, plan, sweep = prepare(spec, root)
    run = ledger.run_dir(sweep, plan.runs[0].run_id)
    run.mkdir(parents=True)
    (run / checkpoint.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated zip")
    out = run_sweep(spec, root)
    assert out.counts["completed"] == 1
    [row] = records(sweep).values()
    assert row["resumed_step"] == -1 and row["attempts"] == 1
    assert (run / "checkpoint.pt.bad").read_bytes() == b"PK\x03\x04 truncated zip"


# ---------------------------------------------------------------- read-only commands write nothing


def test_read_commands_write_nothing(tmp_path, local_ray):
    body = (TINY_BASE_TOML + '[axes]\ntags = [{lr_opt = "0.01"}]\nseed = [0, 1]\n'
            "lr = [0.001, 0.003, 0.01, 0.03, 0.1]\n")
    spec = write(tmp_path, "ro", body)
    root = tmp_path / "sweeps"
    run_sweep(spec, root, run_fn=STUB)
    sweep = root / "ro"
    before = tree(root)
    spec_before = spec.read_bytes()
    figure = tmp_path / "elsewhere" / "lr.png"
    cli = CliRunner()
    for args in (["sweep", "status", str(sweep)], ["sweep", "status", str(sweep), "--json"],
                 ["sweep", "ls", str(root)], ["sweep", "ls", str(root), "--json"],
                 ["sweep", "plan", str(spec), "--out", str(root)], ["fit", "lr", str(sweep), "--by", "seed"],
                 ["plot", "lr", str(sweep), "--by", "seed", "-o", str(figure)]):
        res = cli.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
        assert tree(root) == before, args  # paths, sizes, mtimes and contents unchanged
    assert spec.read_bytes() == spec_before and figure.is_file()


# ---------------------------------------------------------------- SIGTERM / SIGINT of the driver

DRIVER_SCRIPT = """
import sys
from hyperp.errors import Terminated
from hyperp.sweeps.runner import run_sweep

try:
    out = run_sweep(sys.argv[1], sys.argv[2], run_fn="hyperp.sweeps.stubs:stub_run", num_cpus=2)
except Terminated:
    sys.exit(143)
sys.exit(130 if out.interrupted else 0)
"""


def test_sigterm_stops_the_driver_cleanly_and_the_rerun_resumes(tmp_path, local_ray):
    """SIGTERM to a sweep driven by a script: runs in flight are cancelled, state.json says inactive, the
    ledger is rewritten, Terminated reaches the script (exit 143), and a rerun finishes the same runs."""
    sig, code = signal.SIGTERM, 143
    spec = write(tmp_path, "sig", "max_concurrent = 2\n" + TINY_BASE_TOML
                 + '[axes]\nseed = [0, 1]\ntags = [{sleep = "4"}]\n')
    root = tmp_path / "sweeps"
    sweep = root / "sig"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER_SCRIPT, str(spec), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + SIGNAL_WAIT_S
        while time.time() < deadline and proc.poll() is None:
            state = ledger.read_json(sweep / ledger.STATE_FILE, {}) or {}
            if state.get("active") and state.get("running") and list(sweep.glob("runs/*/attempt.json")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        assert ledger.is_running(sweep)
        signalled = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=SIGNAL_WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    state = json.loads((sweep / ledger.STATE_FILE).read_text())
    assert state["active"] is False and state["interrupted"] is True and state["running"] == []
    assert (sweep / "runs.parquet").stat().st_mtime > signalled  # the ledger was rewritten on the way out
    assert not records(sweep) and not ledger.is_running(sweep)  # nothing half-done was recorded
    resumed = run_sweep(spec, root, run_fn=STUB)
    assert resumed.submitted == 2 and resumed.counts["completed"] == 2
    assert set(records(sweep)) == {r.run_id for r in resumed.plan.runs}


def test_sigint_stops_a_sweep_started_with_sigint_ignored(tmp_path, local_ray):
    """A non-interactive shell starts background jobs with SIGINT ignored; run_sweep still stops on it."""
    spec = write(tmp_path, "int", "max_concurrent = 2\n" + TINY_BASE_TOML
                 + '[axes]\nseed = [0, 1]\ntags = [{sleep = "30"}]\n')
    sweep = tmp_path / "sweeps" / "int"

    def interrupt_when_running():
        deadline = time.time() + SIGNAL_WAIT_S
        while time.time() < deadline and len(list(sweep.glob("runs/*/attempt.json"))) < 2:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        threading.Thread(target=interrupt_when_running, daemon=True).start()
        t0 = time.time()
        out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert out.interrupted and out.pending == 2 and time.time() - t0 < SIGNAL_WAIT_S
    assert signal.getsignal(signal.SIGINT) is previous  # restored
    state = json.loads((sweep / ledger.STATE_FILE).read_text())
    assert state["active"] is False and state["interrupted"] is True and not records(sweep)
