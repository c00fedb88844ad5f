"""A sweep that has run, seen and stopped from another terminal: `sweep plan` shows what is done and what is left
(runs, FLOPs, the time left at the sweep's measured throughput); `sweep stop` asks the running driver to
checkpoint its runs and exit (a request file it polls, from any host; SIGINT on its own host), and an old request
never stops a later run."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hyperp.cli import app
from hyperp.schema import STOP_FILE
from hyperp.sweeps import ledger
from hyperp.sweeps import stop as stop_module
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.stubs import TINY_BASE_TOML
from test_sweep_runner import write  # spec files

STUB = "hyperp.sweeps.stubs:stub_run"
WAIT_S = 90  # generous bound for a Ray start plus a run on a busy 2-core machine


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def plan_json(spec: Path, root: Path) -> dict:
    res = runner().invoke(app, ["sweep", "plan", str(spec), "--out", str(root), "--json"])
    assert res.exit_code == 0, res.output + res.stderr
    return json.loads(res.stdout)


# ---------------------------------------------------------------- sweep plan: done and left


def test_plan_of_a_sweep_that_has_run_shows_what_is_done_and_left(tmp_path, local_ray):
    """Two runs completed and two failed; the spec then gains an lr: plan shows 2 done (their trained FLOPs),
    2 failed and 2 left (their planned FLOPs, and seconds at the throughput and start-up the completed runs
    measured), in the JSON and the table; before any run it shows no progress."""
    body = TINY_BASE_TOML + '[axes]\nlr = [0.01, 0.02]\ntags = [{ok = "1"}, {raise = "boom"}]\n'
    spec, root = write(tmp_path, "prog", body), tmp_path / "sweeps"
    before = plan_json(spec, root)
    assert "progress" not in before and all("status" not in r for r in before["runs"])
    run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:train_or_raise")
    spec.write_text(spec.read_text().replace("lr = [0.01, 0.02]", "lr = [0.01, 0.02, 0.04]"))
    out = plan_json(spec, root)
    done = [r for r in pq.read_table(root / "prog" / "runs.parquet").to_pylist() if r["status"] == "completed"]
    assert len(done) == 2
    status = {r["run_id"]: r["status"] for r in out["runs"]}
    assert sorted(status.values()) == ["completed", "completed", "failed", "failed", "pending", "pending"]
    left = [r for r in out["runs"] if r["status"] == "pending"]
    assert {r["lr"] for r in left} == {0.04}
    speed = statistics.median(r["flops"] / r["wall_time_s"] for r in done)
    startup = statistics.median(r["elapsed_s"] - r["wall_time_s"] for r in done)
    pr = out["progress"]
    assert (pr["runs_done"], pr["runs_failed"], pr["runs_left"], pr["search_runs_done"]) == (2, 2, 2, 0)
    assert pr["flops_done"] == pytest.approx(sum(r["flops"] for r in done))
    assert pr["flops_left"] == pytest.approx(sum(r["flops"] for r in left)) and pr["flops_left"] > 0
    assert out["throughput_flops_per_s"] == pytest.approx(speed)
    assert pr["est_left_run_seconds"] == pytest.approx(sum(r["flops"] / speed + startup for r in left))
    assert pr["est_left_local_wall_seconds"] == pytest.approx(pr["est_left_run_seconds"] / out["local_parallel_runs"])
    table = runner().invoke(app, ["sweep", "plan", str(spec), "--out", str(root)])
    assert table.exit_code == 0
    line = " ".join(table.stdout.split())
    assert f"done: 2 runs, {pr['flops_done']:.3g} FLOPs; 2 failed (run again with --retry-failed); left: 2 runs" in line
    assert "pending" in table.stdout and "status" in table.stdout


# ---------------------------------------------------------------- sweep stop

# 6,000 steps (minutes: never reached); a periodic checkpoint every 20 steps, so that each run has one whether Ray's
# cancel lands between updates (the trainer checkpoints that step) or inside one (the state is not consistent
# then: the last periodic checkpoint stays)
CHECKPOINT_EVERY = 20
LONG_BASE_TOML = TINY_BASE_TOML.replace("tokens = 4096", f"tokens = 3072000\ncheckpoint_every = {CHECKPOINT_EVERY}")


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + WAIT_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}: {proc.communicate()[1][-2000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def training(sweep: Path, n: int, past: int = 0) -> bool:
    """n runs of the sweep are training past step `past` (their progress.json)."""
    steps = [(json.loads(p.read_text()) or {}).get("step", 0) for p in sweep.glob("runs/*/progress.json")]
    return sum(s > past for s in steps) >= n


def test_sweep_stop_from_another_host_checkpoints_the_runs_and_the_driver_exits(tmp_path, monkeypatch):
    """A real sweep in another process; `sweep stop` from a "host" that is not the driver's (no signal: only the
    request file the driver polls). The driver checkpoints both runs, records nothing half-done, says so in
    state.json, removes the request and exits 130 (interrupted: `sweep run` resumes)."""
    spec = write(tmp_path, "long", "max_concurrent = 2\n" + LONG_BASE_TOML + "[axes]\nseed = [0, 1]\n")
    root, sweep = tmp_path / "sweeps", tmp_path / "sweeps" / "long"
    proc = subprocess.Popen([sys.executable, "-m", "hyperp", "sweep", "run", str(spec), "--out", str(root),
                             "--num-cpus", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: training(sweep, 2, CHECKPOINT_EVERY), "both runs train", proc)
        monkeypatch.setattr(stop_module.socket, "gethostname", lambda: "another-host")
        res = runner().invoke(app, ["sweep", "stop", "long", "--out", str(root), "--json"])
        monkeypatch.undo()
        assert res.exit_code == 0, res.output + res.stderr
        asked = json.loads(res.stdout)
        assert asked["asked"] and not asked["signalled"] and asked["pid"] == proc.pid
        assert asked["host"] == socket.gethostname() and asked["file"] == str(sweep / STOP_FILE)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (sweep / STOP_FILE).exists() and not ledger.is_running(sweep)
    state = json.loads((sweep / "state.json").read_text())
    assert state["active"] is False and state["interrupted"] is True and state["running"] == []
    runs = sorted(p for p in (sweep / "runs").iterdir())
    assert len(runs) == 2 and all((r / "checkpoint.pt").is_file() for r in runs)  # each resumes from its checkpoint
    assert not list(sweep.glob("runs/*/runs.parquet"))  # nothing half-done was recorded


FAKE_DRIVER = textwrap.dedent("""
    import sys, time
    from hyperp.sweeps.ledger import SweepLock
    lock = SweepLock(sys.argv[1])
    assert lock.acquire()
    print("locked", flush=True)
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def test_sweep_stop_signals_a_driver_on_this_host_and_waits_for_it(tmp_path):
    """On the driver's host the request is also SIGINT to the pid holding the lock: it stops at once, and --wait
    returns once it has exited. The request names that driver (pid, host, the time it took the lock)."""
    sweep = tmp_path / "sweeps" / "held"
    sweep.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER, str(sweep)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        res = runner().invoke(app, ["sweep", "stop", str(sweep), "--wait"])
        assert res.exit_code == 0, res.output + res.stderr
        assert proc.poll() == 130  # --wait returned after the driver exited
    finally:
        proc.kill()
    text = " ".join(res.stdout.split())
    assert f"asked the driver of {sweep} (pid {proc.pid} on {socket.gethostname()}) to stop: sent it SIGINT" in text
    request = json.loads((sweep / STOP_FILE).read_text())  # the fake driver does not clean up as a real one does
    owner = ledger.lock_owner(sweep)
    assert {k: request[k] for k in ("pid", "host", "since")} == owner and owner["pid"] == proc.pid


def test_an_old_stop_request_does_not_stop_a_later_run_and_no_driver_means_nothing_to_stop(tmp_path, local_ray):
    spec = write(tmp_path, "later", TINY_BASE_TOML + "[axes]\nseed = [0]\n")
    sweep = tmp_path / "sweeps" / "later"
    sweep.mkdir(parents=True)
    old = {"pid": os.getpid(), "host": socket.gethostname(), "since": 1.0, "requested_at": 1.0}
    (sweep / STOP_FILE).write_text(json.dumps(old))  # addressed to a driver long gone
    out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    assert not out.interrupted and out.counts["completed"] == 1
    assert not (sweep / STOP_FILE).exists()
    res = runner().invoke(app, ["sweep", "stop", str(sweep), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["asked"] is False
    res = runner().invoke(app, ["sweep", "stop", "later", "--out", str(tmp_path / "sweeps")])
    assert res.exit_code == 0 and res.stdout.strip() == f"{sweep}: no driver is running; nothing to stop"
    assert not (sweep / STOP_FILE).exists()  # nothing was written



def test_a_request_for_the_new_driver_written_while_an_old_one_is_read_survives(tmp_path, local_ray, monkeypatch):
    """An old request is on disk; `sweep stop` replaces it with one for the driver just after the driver first
    reads the file (the moment a read-then-unlink clear at start-up would delete it). The driver stops (before
    its third run: one run at a time) and removes the request at exit."""
    spec = write(tmp_path, "race", "max_concurrent = 1\n" + TINY_BASE_TOML + "[axes]\nseed = [0, 1, 2]\n")
    sweep = tmp_path / "sweeps" / "race"
    sweep.mkdir(parents=True)
    (sweep / STOP_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": 1.0}))
    read_json, raced = stop_module.io.read_json, []

    def read_then_request(path, default=None):
        value = read_json(path, default)
        if Path(path).name == STOP_FILE and not raced:  # the new request lands right after this read
            raced.append(ledger.lock_owner(sweep))
            (sweep / STOP_FILE).write_text(json.dumps(raced[0] | {"requested_at": time.time()}))
        return value

    monkeypatch.setattr(stop_module.io, "read_json", read_then_request)
    out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    assert raced and raced[0]["pid"] == os.getpid() and raced[0]["since"] > 1.0
    assert out.interrupted and out.counts["completed"] < 3
    assert not (sweep / STOP_FILE).exists()


def test_stop_signals_only_a_driver_that_still_holds_the_lock(tmp_path, monkeypatch):
    """The pid in .lock is signalled only while that driver holds the lock: not after it released it (the
    file is emptied), not when it crashed (the file still names it, the flock is gone), not when it exited
    between reading the owner and signalling (its pid may be another process's by then)."""
    sweep = tmp_path / "held"
    sweep.mkdir()
    kills = []
    monkeypatch.setattr(stop_module.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    lock = ledger.SweepLock(sweep)
    assert lock.acquire()
    owner = dict(lock.owner)
    assert stop_module.request_stop(sweep)["signalled"] and kills == [(os.getpid(), stop_module.STOP_SIGNAL)]
    lock.release()
    assert ledger.lock_owner(sweep) is None and stop_module.running_owner(sweep, wait_s=0) is None
    (sweep / ".lock").write_text(f"{owner['pid']} {owner['since']!r} {owner['host']}\n")  # a crashed driver's file
    (sweep / STOP_FILE).unlink()
    assert stop_module.request_stop(sweep)["asked"] is False and not (sweep / STOP_FILE).exists()
    monkeypatch.setattr(stop_module, "running_owner", lambda d: owner)  # read while it still held the lock
    assert stop_module.request_stop(sweep)["signalled"] is False and len(kills) == 1
