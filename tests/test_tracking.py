"""Trackers (hyperp.tracking): a sweep's `[tracking]`, `hyperp train --log-to` and `hyperp export --to` log each
run's config, step curves and final record to TensorBoard, MLflow and W&B, offline, grouped by sweep and cell
under the run id. Every check reads the files back with the tracker's own reader (TensorBoard's EventAccumulator,
MLflow's client on the SQLite store, the records of W&B's offline .wandb file) and compares them with the
ledger's numbers. A tracker whose library is absent is skipped with the reason; a tracker that cannot write
warns once and the run goes on; one not installed is a one-line error naming the extra (exit 2)."""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hyperp import tracking
from hyperp.cli import app
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.stubs import TINY_BASE_TOML
from test_sweep_runner import write  # spec files

INSTALLED = [n for n in tracking.TRACKERS if tracking.installed(n)]
TINY_FLAGS = ["--depth", "1", "--aspect-ratio", "32", "--head-dim", "16", "--seq-len", "32", "--batch-tokens", "512",
              "--tokens", "4096", "--val-tokens", "512", "--threads", "1", "--peak-tflops", "1"]
FLOAT32 = 1e-6  # TensorBoard stores scalars as float32


def needs(name: str) -> None:
    if not tracking.installed(name):
        pytest.skip(f'{name} is not installed (pip install "hyperp[{name}]")')


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def ledger_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def curves_of(path: Path) -> dict[str, float]:
    """step -> value per column of a run's curves.parquet."""
    return pq.read_table(path).to_pandas().set_index("step")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- each tracker's own reader


def tensorboard_run(directory: Path) -> dict:
    """A run directory read with TensorBoard's EventAccumulator: scalars by tag (step -> value), texts by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags["scalars"]}
    texts = {t: tensor_util.make_ndarray(acc.Tensors(t)[-1].tensor_proto).item().decode()
             for t in tags["tensors"] if t in ("config", "final")}
    return {"scalars": scalars, "texts": texts, "hparams": "_hparams_/session_start_info" in tags["tensors"]}


def wandb_records(path: Path):
    """The protobuf records of a W&B offline run file (LevelDB-log framing: a 7-byte header, 32 KiB blocks of
    records with a 7-byte header each: CRC, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # block padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            return
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def items(update) -> dict:
    """W&B's key/value_json items (a key with "/" may come as a nested key)."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in update}


def finished_records(path: Path, wait_s: float = 30.0) -> list:
    """The records of a W&B run file once it holds the run's exit record: W&B writes from a service process that
    `finish` does not wait for (`train` and `export` shut it down before returning; a sweep's warm Ray workers
    keep theirs, which writes a moment later)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = list(wandb_records(path)) if path.stat().st_size > 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def wandb_run(directory: Path) -> dict:
    """An offline run's project, group, id, config, history (step -> values) and summary."""
    (path,) = directory.glob("run-*.wandb")
    out = {"config": {}, "history": {}, "summary": {}}
    for r in finished_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out |= {"project": r.run.project, "group": r.run.run_group, "id": r.run.run_id}
            out["config"] |= items(r.run.config.update)
        elif kind == "config":
            out["config"] |= items(r.config.update)
        elif kind == "history":
            step = items(r.history.item)
            out["history"][step["_step"]] = step
        elif kind == "summary":
            out["summary"] |= items(r.summary.update)
    return out


def mlflow_runs(directory: Path, sweep: str) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(sweep)
    runs = client.search_runs([experiment.experiment_id])
    assert len({r.info.run_name for r in runs}) == len(runs)  # one MLflow run per hyperp run
    return client, {r.info.run_name: r for r in runs}


# ---------------------------------------------------------------- checks against the ledger


def check(name: str, directory: Path, sweep: str, rows: list[dict], curves: dict[str, Path]) -> None:
    """What `name` holds under `directory` is each row's config, curves and final record, grouped by sweep and cell."""
    assert rows
    if name == "mlflow":
        client, runs = mlflow_runs(directory, sweep)
        assert set(runs) == {r["run_id"] for r in rows}
    for row in rows:
        config, curve = json.loads(row["config_json"]), curves_of(curves[row["run_id"]])
        if name == "tensorboard":
            check_tensorboard(directory / "tensorboard" / sweep / row["cell_id"] / row["run_id"], row, config, curve)
        elif name == "mlflow":
            check_mlflow(client, runs[row["run_id"]], row, config, curve)
        else:
            check_wandb(directory, sweep, row, config, curve)


def check_tensorboard(directory: Path, row: dict, config: dict, curve) -> None:
    tb = tensorboard_run(directory)
    for column in ("train_loss", "val_loss", "grad_norm", "lr_mult", "rms_attn"):
        logged = curve[column].dropna()
        got = tb["scalars"][column]
        assert sorted(got) == list(logged.index), column
        np.testing.assert_allclose([got[s] for s in logged.index], logged.to_numpy(), rtol=FLOAT32)
    assert tb["scalars"]["final/val_loss"][row["steps"]] == pytest.approx(row["val_loss"], rel=FLOAT32)
    assert tb["scalars"]["final/flops"][row["steps"]] == pytest.approx(row["flops"], rel=FLOAT32)
    assert json.loads(textwrap.dedent(tb["texts"]["config"])) == config
    final = json.loads(textwrap.dedent(tb["texts"]["final"]))
    assert final["status"] == row["status"] and final["val_loss"] == row["val_loss"]
    assert tb["hparams"]


def check_mlflow(client, run, row: dict, config: dict, curve) -> None:
    assert run.data.tags["cell"] == row["cell_id"] and run.data.tags["run_id"] == row["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params == {k: str(v) for k, v in tracking.flat(config).items()}
    assert run.data.metrics["final/val_loss"] == row["val_loss"]  # float64 end to end
    assert run.data.tags["final/status"] == row["status"]
    for column in ("train_loss", "val_loss"):
        logged = curve[column].dropna()
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, column)}
        assert history == logged.to_dict(), column


def check_wandb(directory: Path, sweep: str, row: dict, config: dict, curve) -> None:
    (run_dir,) = (directory / "wandb").glob(f"offline-run-*-{row['run_id']}")
    wb = wandb_run(run_dir)
    assert (wb["project"], wb["group"], wb["id"]) == (sweep, row["cell_id"], row["run_id"])
    assert {k: v for k, v in wb["config"].items() if k != "_wandb"} == config
    assert sorted(wb["history"]) == list(curve.index)
    for column in ("train_loss", "val_loss"):
        logged = curve[column].dropna()
        assert {s: h[column] for s, h in wb["history"].items() if column in h} == logged.to_dict(), column
    assert wb["summary"]["final/val_loss"] == row["val_loss"] and wb["summary"]["final/status"] == row["status"]


# ---------------------------------------------------------------- a sweep with [tracking]


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory, local_ray):
    """Two tiny real runs logged to every installed tracker from the Ray workers, under <sweep>/tracking."""
    if not INSTALLED:
        pytest.skip('no tracker is installed (pip install "hyperp[tensorboard]", "[wandb]" or "[mlflow]")')
    tmp = tmp_path_factory.mktemp("tracked")
    body = TINY_BASE_TOML + "[axes]\nlr = [0.01, 0.04]\n[tracking]\nlog_to = " + json.dumps(INSTALLED) + "\n"
    out = run_sweep(write(tmp, "trk", body), tmp / "sweeps")
    assert out.counts["completed"] == 2 and not out.failed_runs
    return tmp / "sweeps" / "trk"


@pytest.mark.parametrize("name", tracking.TRACKERS)
def test_a_sweep_logs_every_run_to_its_trackers(tracked_sweep, name):
    needs(name)
    rows = ledger_rows(tracked_sweep / "runs.parquet")
    check(name, tracked_sweep / "tracking", "trk", rows,
          {r["run_id"]: tracked_sweep / "runs" / r["run_id"] / "curves.parquet" for r in rows})


@pytest.mark.parametrize("name", tracking.TRACKERS)
def test_export_writes_the_ledger_to_a_tracker_and_nothing_in_the_sweep(tracked_sweep, tmp_path, name):
    """`hyperp export` of the sweep's ledger reads back as the ledger; the sweep directory is left as it was;
    exporting again replaces the export (TensorBoard: one event file per run; MLflow: one run per id)."""
    needs(name)
    before = tree(tracked_sweep)
    out = tmp_path / "exported"
    for _ in range(2 if name != "wandb" else 1):
        res = runner().invoke(app, ["export", str(tracked_sweep), "--to", name, "-o", str(out), "--json"])
        assert res.exit_code == 0, res.output + res.stderr
    report = json.loads(res.stdout)
    rows = ledger_rows(tracked_sweep / "runs.parquet")
    curves = {r["run_id"]: tracked_sweep / "runs" / r["run_id"] / "curves.parquet" for r in rows}
    assert report["runs"] == 2 and report["steps"] == sum(len(curves_of(p)) for p in curves.values())
    check(name, out, "trk", rows, curves)
    if name == "tensorboard":
        assert all(len(list(p.glob("events.out.tfevents.*"))) == 1 for p in (out / "tensorboard").glob("trk/*/*"))
    assert tree(tracked_sweep) == before


@pytest.mark.parametrize("inside", ["tracking", "."])
def test_export_into_the_sweep_directory_is_refused_before_anything_is_written(tracked_sweep, inside):
    """-o <sweep>/tracking would replace the sweep's live tracking files: one error line, exit 2, nothing written."""
    needs("tensorboard")
    before = tree(tracked_sweep)
    res = runner().invoke(app, ["export", str(tracked_sweep), "--to", "tensorboard", "-o",
                                str(tracked_sweep / inside)])
    assert res.exit_code == 2 and "never writes into a sweep" in res.stderr, res.output + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and tree(tracked_sweep) == before


def test_an_mlflow_experiment_that_cannot_be_created_names_the_cause(tmp_path, monkeypatch):
    needs("mlflow")
    import mlflow.tracking

    class Refusing:  # a store where the look-up finds nothing and every creation fails
        def __init__(self, tracking_uri):
            pass

        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name, artifact_location):
            raise PermissionError("read-only store")

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Refusing)
    with pytest.raises(RuntimeError, match="cannot create the MLflow experiment 'trk' .*: read-only store") as e:
        tracking.MlflowTracker.experiment(tmp_path, "trk")
    assert isinstance(e.value.__cause__, PermissionError)


def test_a_wandb_teardown_that_fails_warns_and_settle_returns(monkeypatch, caplog):
    class Wandb:
        @staticmethod
        def teardown():
            raise OSError("service gone")

    monkeypatch.setitem(sys.modules, "wandb", Wandb)
    with caplog.at_level(logging.WARNING, logger="hyperp.tracking"):
        tracking.settle(tracking.Tracking(("wandb",)))
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "hyperp.tracking"]
    assert "wandb teardown failed (service gone)" in warning


# ---------------------------------------------------------------- `hyperp train --log-to`


@pytest.mark.parametrize("name", tracking.TRACKERS)
def test_train_log_to_logs_the_run_under_train_and_its_cell(tmp_path, name):
    needs(name)
    out = tmp_path / "run"
    res = runner().invoke(app, ["train", *TINY_FLAGS, "-o", str(out), "--log-to", name])
    assert res.exit_code == 0, res.output + res.stderr
    check(name, out / "tracking", tracking.TRAIN_SWEEP, ledger_rows(out / "runs.parquet"),
          {r["run_id"]: out / "curves.parquet" for r in ledger_rows(out / "runs.parquet")})


@pytest.mark.parametrize("fault", ["unwritable", "raises"])
def test_a_tracker_that_cannot_write_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, caplog, fault):
    """A tracking directory that cannot be made (under a file) or a library that raises on every step: one
    warning naming the tracker, and the run completes with its record and curves as without tracking."""
    needs("tensorboard")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    tracking_dir = blocker / "tracking" if fault == "unwritable" else tmp_path / "tracking"
    if fault == "raises":
        def broken(self, step, values, wall_time=None):
            raise RuntimeError("the library raised")

        monkeypatch.setattr(tracking.TensorBoardTracker, "log_step", broken)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="hyperp.tracking"):
        res = runner().invoke(app, ["train", *TINY_FLAGS, "-o", str(out), "--log-to", "tensorboard",
                                    "--tracking-dir", str(tracking_dir)])
    assert res.exit_code == 0, res.output + res.stderr
    (row,) = ledger_rows(out / "runs.parquet")
    assert row["status"] == "completed" and len(curves_of(out / "curves.parquet")) == 8
    warnings = [r.getMessage() for r in caplog.records if r.name == "hyperp.tracking"]
    assert len(warnings) == 1 and "tensorboard cannot log run" in warnings[0] and row["run_id"] in warnings[0]
    assert ("NotADirectoryError" if fault == "unwritable" else "the library raised") in warnings[0]
    if fault == "raises":  # what was logged before the error stays readable
        (run_dir,) = (tracking_dir / "tensorboard").glob("train/*/*")
        assert json.loads(textwrap.dedent(tensorboard_run(run_dir)["texts"]["config"]))["depth"] == 1


# ---------------------------------------------------------------- refused before anything runs


def missing_cases(tmp_path: Path) -> dict[str, tuple[list[str], str, Path]]:
    """(command line, the flag or field named, what must not exist) per command, for a blocked `wandb`."""
    spec = write(tmp_path, "nolib", TINY_BASE_TOML + '[tracking]\nlog_to = ["wandb"]\n')
    return {"train": (["train", *TINY_FLAGS, "-o", str(tmp_path / "run"), "--log-to", "wandb"], "--log-to",
                      tmp_path / "run"),
            "sweep run": (["sweep", "run", str(spec), "--out", str(tmp_path / "sweeps")], "tracking.log_to",
                          tmp_path / "sweeps"),
            "export": (["export", str(Path(__file__).parents[1] / "results" / "sweeps-data" / "depth_transfer"),
                        "--to", "wandb", "-o", str(tmp_path / "exported")], "--to", tmp_path / "exported")}


@pytest.mark.parametrize("command", ["train", "sweep run", "export"])
def test_a_tracker_not_installed_is_one_error_line_naming_the_extra(tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python blocks an import: as if it were not installed
    args, where, unwritten = missing_cases(tmp_path)[command]
    res = runner().invoke(app, args)
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line == f'error: {where}: wandb is not installed; pip install "hyperp[wandb]"'
    assert not unwritten.exists()


@pytest.mark.parametrize("table, message", [
    ('log_to = ["tensorbord"]', "error: tracking.log_to: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)"),
    ('dri = "x"', "error: tracking.dri: unknown key (did you mean 'dir'?)"),
    ("log_to = [1]", "error: tracking.log_to: expected a list of tracker names"),
    ("dir = 3", "error: tracking.dir: expected a directory (a string), got 3"),
])
def test_a_bad_tracking_table_names_the_field(tmp_path, table, message):
    spec = write(tmp_path, "bad", TINY_BASE_TOML + f"[tracking]\n{table}\n")
    res = runner().invoke(app, ["sweep", "plan", str(spec), "--out", str(tmp_path / "sweeps"), "--throughput", "1e9"])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert not (tmp_path / "sweeps").exists()


def test_event_checksums_are_tensorboards():
    """The batched CRC-32C of the event writer equals TensorBoard's own, for lengths met once and many times."""
    needs("tensorboard")
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    rng = np.random.default_rng(0)
    payloads = [os.urandom(n) for n in [8] * 40 + [97] * 30 + list(rng.integers(0, 3000, 20))]
    assert tracking.masked_crc32c(payloads) == [masked_crc32c(p) for p in payloads]


@pytest.mark.parametrize("name", tracking.TRACKERS)
def test_a_failed_record_without_steps_is_logged_as_failed(tmp_path, name):
    """A failed run's record (as `export` reads it from a ledger: no steps, NaN losses, an error) is logged
    with its error and status, and the tracker marks the run failed."""
    needs(name)
    label = tracking.RunLabel("r-failed", "s", "c")
    row = {"run_id": "r-failed", "status": "failed", "steps": float("nan"), "val_loss": float("nan"),
           "flops_planned": 1e9, "error": "RuntimeError: boom"}
    trackers = tracking.open_trackers(tracking.Tracking((name,), str(tmp_path)), label, fresh=True, guarded=False)
    trackers.log_config({"lr": 0.01})
    trackers.log_final(row)
    trackers.close()
    if name == "tensorboard":
        tb = tensorboard_run(tmp_path / "tensorboard" / "s" / "c" / "r-failed")
        assert tb["scalars"]["final/flops_planned"] == {0: 1e9} and "final/val_loss" not in tb["scalars"]
        assert json.loads(textwrap.dedent(tb["texts"]["final"]))["error"] == "RuntimeError: boom"
    elif name == "mlflow":
        _, runs = mlflow_runs(tmp_path, "s")
        run = runs["r-failed"]
        assert run.info.status == "FAILED" and run.data.tags["final/error"] == "RuntimeError: boom"
        assert run.data.metrics == {"final/flops_planned": 1e9}
    else:
        (run_dir,) = (tmp_path / "wandb").glob("offline-run-*-r-failed")
        wb = wandb_run(run_dir)
        assert wb["summary"]["final/error"] == "RuntimeError: boom" and wb["summary"]["final/status"] == "failed"
