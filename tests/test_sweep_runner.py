"""The sweep engine end to end on a local Ray of 2 CPUs: tiny real-trainer runs and stub run functions.

Ray is started once for this module (about 5 s) and reused by every sweep (run_sweep joins an initialised Ray).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hyperp import schema
from hyperp.sweeps import ledger
from hyperp.cli.sweep import app
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.spec import loads_spec
from hyperp.sweeps.status import sweep_status
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.config import RunConfig
from hyperp.trainer.loop import train
from hyperp.trainer.model import Transformer

TINY = TINY_BASE_TOML
STUB = "hyperp.sweeps.stubs:stub_run"
DOCUMENTED = ["run_id", "sweep", "param", "depth", "width", "n_params", "n_params_active", "tokens", "batch_tokens",
              "lr", "sparsity", "top_k", "seed", "flops", "val_loss", "status", "error", "attempts", "wall_time_s",
              "hardware", "cell_id", "best_val_loss", "config_json"]


pytestmark = pytest.mark.usefixtures("local_ray")  # one local Ray for the module (conftest.py)


def write(tmp: Path, name: str, body: str) -> Path:
    f = tmp / f"{name}.toml"
    f.write_text(f'name = "{name}"\n' + body)
    return f


def ledger_df(root: Path, name: str) -> pd.DataFrame:
    return pq.read_table(root / name / "runs.parquet").to_pandas()  # plain pyarrow, no hyperp code


# ---------------------------------------------------------------- 2x2x2, then a no-op re-run


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = write(tmp, "grid", "max_concurrent = 2\n" + TINY + "[axes]\ndepth = [1, 2]\nlr = [0.01, 0.02]\nseed = [0, 1]\n")
    out = run_sweep(spec, tmp / "sweeps")
    return spec, tmp / "sweeps", out


def test_2x2x2_sweep_completes_with_documented_columns(grid_sweep):
    spec, root, out = grid_sweep
    assert out.submitted == 8 and not out.interrupted
    df = ledger_df(root, "grid")
    assert len(df) == 8 and set(df.status) == {"completed"}
    assert set(DOCUMENTED) <= set(df.columns)
    assert df.run_id.is_unique and df.sweep.eq("grid").all()
    assert sorted(zip(df.depth, df.lr, df.seed)) == sorted((d, lr, s) for d in (1, 2) for lr in (0.01, 0.02)
                                                          for s in (0, 1))
    assert df.val_loss.notna().all() and (df.val_loss < math.log(256)).all()  # trained below the uniform loss
    assert (df.attempts == 1).all() and df.error.eq("").all()
    for row in df.itertuples():
        cfg = RunConfig.from_dict(json.loads(row.config_json))
        assert row.n_params == sum(p.numel() for p in Transformer(cfg).parameters())
        assert row.width == 32 * row.depth and row.tokens == 4096 and row.flops > 0
        run = root / "grid" / "runs" / row.run_id
        curves = pd.read_parquet(run / "curves.parquet")
        assert curves.step.max() == 8 and curves.val_loss.dropna().iloc[-1] == pytest.approx(row.val_loss)
        assert json.loads((run / "config.json").read_text())["depth"] == row.depth
        assert not (run / "checkpoint.pt").exists()
    assert (root / "grid" / "spec.toml").read_text() == spec.read_text()
    assert set(ledger.load_curves(root / "grid").run_id) == set(df.run_id)
    # runs.parquet is a cache of the per-run records: a full rebuild gives the same rows
    rebuilt = ledger.rebuild_ledger(root / "grid").sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt[DOCUMENTED], df.sort_values("run_id").reset_index(drop=True)[DOCUMENTED])


def documented_snippet(title: str) -> str:
    """The first ```python block after a heading of hyperp/sweeps/README.md."""
    text = (Path(__file__).parents[1] / "hyperp" / "sweeps" / "README.md").read_text()
    after = text[text.index(title):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_curves_snippet_runs_and_keeps_the_ledger_types(grid_sweep):
    _, root, _ = grid_sweep
    code = documented_snippet("### Curves").replace('"sweeps/lr_tokens"', repr(str(root / "grid")))
    scope: dict = {}
    exec(code, scope)
    runs, curves = scope["runs"], scope["curves"]
    assert len(runs) == 8 and set(curves.run_id) == set(runs.run_id)
    assert (curves.budget_tokens == 4096).all() and (curves.tokens <= curves.budget_tokens).all()
    assert "tokens_x" not in curves.columns and "tokens_y" not in curves.columns
    for name, kind in schema.COLUMNS:  # one type per ledger column, as the contract says
        dtype = runs[name].dtype
        if kind == schema.INT:
            assert pd.api.types.is_integer_dtype(dtype), (name, dtype)
        elif kind == schema.BOOL:
            assert pd.api.types.is_bool_dtype(dtype), (name, dtype)


# A fresh process, as a user would run it; it says at exit whether it imported Ray and whether Ray was started.
RERUN = """import atexit, sys
atexit.register(lambda: print("ray imported:", "ray" in sys.modules,
                              "started:", "ray" in sys.modules and sys.modules["ray"].is_initialized()))
from hyperp.cli.sweep import app
app()
"""


def test_rerun_starts_nothing(grid_sweep):
    spec, root, _ = grid_sweep
    records = sorted((root / "grid" / "runs").glob("*/runs.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in records]
    res = CliRunner().invoke(app, ["run", str(spec), "--out", str(root), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "nothing to run" in res.output and "0 runs submitted" in res.output
    assert [p.stat().st_mtime_ns for p in records] == mtimes  # no record was rewritten
    again = run_sweep(spec, root)
    assert again.submitted == 0 and not again.started_ray and again.counts["completed"] == 8
    # imports, spec expansion, ledger check: no Ray, not even imported
    proc = subprocess.run([sys.executable, "-c", RERUN, "run", str(spec), "--out", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stdout and "ray imported: False started: False" in proc.stdout
    assert [p.stat().st_mtime_ns for p in records] == mtimes


def test_status_and_ls_commands(grid_sweep):
    _, root, _ = grid_sweep
    res = CliRunner().invoke(app, ["status", str(root / "grid"), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["totals"]["completed"] == 8 and st["totals"]["pending"] == 0 and len(st["cells"]) == 4
    assert all(c["completed"] == 2 and c["planned"] == 2 for c in st["cells"])  # 2 lrs per cell
    df = ledger_df(root, "grid")
    for c in st["cells"]:
        rows = df[df.cell_id == c["cell_id"]]
        assert c["best_val_loss"] == pytest.approx(rows.val_loss.min())
    table = CliRunner().invoke(app, ["status", str(root / "grid")])
    assert table.exit_code == 0 and "8 completed" in table.output
    ls = CliRunner().invoke(app, ["ls", str(root), "--json"])
    assert ls.exit_code == 0
    [listed] = json.loads(ls.output)
    assert (listed["sweep"], listed["completed"], listed["planned"]) == ("grid", 8, 8)
    # the cost: each run's last attempt at 1 CPU (the spec's), and the FLOPs trained, read here with pyarrow alone
    assert listed["cpu_hours"] == pytest.approx(df.elapsed_s.sum() / 3600) and listed["cpu_hours"] > 0
    assert listed["flops"] == pytest.approx(df.flops.sum()) and listed["flops"] > 0


def test_cost_sums_say_unknown_rather_than_zero():
    """One rule for `sweep ls` and `sweep plan`: no runs cost 0; runs whose FLOPs are all unknown (a command
    sweep's) cost NaN (JSON null, shown as -), not 0; unknown values beside known ones are left out."""
    from hyperp.sweeps.status import finite_sum

    assert finite_sum([]) == 0.0
    assert math.isnan(finite_sum([math.nan, None])) and math.isnan(finite_sum([None, None]))  # nulls: unknown
    assert finite_sum([1.5, math.nan, None, 2.0]) == 3.5


def test_status_finds_the_sweep_of_a_spec_and_names_the_sweeps_there_are(grid_sweep, monkeypatch):
    spec, root, _ = grid_sweep
    monkeypatch.chdir(root.parent)  # a spec maps to ./sweeps/<name>, where `sweep run SPEC` puts it
    by_spec = CliRunner().invoke(app, ["status", str(spec), "--json"])
    assert by_spec.exit_code == 0, by_spec.output
    assert json.loads(by_spec.output)["totals"]["completed"] == 8
    for given, expected in ((root / "gird", "did you mean grid?"), (root, str(root / "grid")),
                            (root / "grid" / "runs", "no sweeps under")):
        res = CliRunner().invoke(app, ["status", str(given)])
        assert res.exit_code == 2 and expected in res.output and str(given) in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    other = spec.parent / "other.toml"
    other.write_text(spec.read_text().replace('name = "grid"', 'name = "other"'))
    res = CliRunner().invoke(app, ["status", str(other)])
    assert res.exit_code == 2 and f"hyperp sweep run {other}" in res.output, res.output


# ---------------------------------------------------------------- infra failure: a worker killed by pid


def test_killed_worker_is_retried_resumes_and_is_recorded_once(tmp_path: Path):
    body = ("max_retries = 2\n" + TINY.replace("tokens = 4096", "tokens = 102400")  # 200 steps, ckpt every 20
            + "[axes]\nseed = [0, 1]\n")
    spec = write(tmp_path, "kill", body)
    root = tmp_path / "sweeps"
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("out", run_sweep(spec, root)))
    thread.start()
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline and thread.is_alive():
        for run in (root / "kill" / "runs").glob("*") if (root / "kill" / "runs").exists() else []:
            if (run / "checkpoint.pt").exists() and (run / "attempt.json").exists():
                victim = run
                break
        time.sleep(0.05)
    assert victim is not None, "no run reached its first checkpoint"
    pid = json.loads((victim / "attempt.json").read_text())["pid"]
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive()
    out = result["out"]
    df = ledger_df(root, "kill")
    assert len(df) == 2 and df.run_id.is_unique and set(df.status) == {"completed"}
    killed = df[df.run_id == victim.name].iloc[0]
    assert killed.attempts == 2  # retried once by Ray
    attempt = json.loads((victim / "attempt.json").read_text())
    assert attempt["attempt"] == 2 and attempt["pid"] != pid and attempt["checkpoint_found"]  # resumed
    assert out.submitted == 2 and out.counts["completed"] == 2
    # the resumed run ends where an uninterrupted run of the same config ends
    straight = train(RunConfig.from_dict(json.loads(killed.config_json)))
    assert killed.val_loss == pytest.approx(straight.row["val_loss"], rel=1e-6)


def test_infra_failed_after_retries_is_recorded_and_rescheduled(tmp_path: Path):
    spec = write(tmp_path, "infra", "max_retries = 0\n" + TINY + '[axes]\ntags = [{crash_once = "1"}, {}]\n')
    root = tmp_path / "sweeps"
    first = run_sweep(spec, root, run_fn=STUB)
    df = ledger_df(root, "infra").set_index("tags")
    assert df.loc["crash_once=1", "status"] == "infra_failed"
    assert "WorkerCrashedError" in df.loc["crash_once=1", "error"]
    assert df.loc["", "status"] == "completed" and first.counts["infra_failed"] == 1
    second = run_sweep(spec, root, run_fn=STUB)
    assert second.submitted == 1  # only the infra-failed run
    df = ledger_df(root, "infra").set_index("tags")
    assert len(df) == 2 and df.loc["crash_once=1", "status"] == "completed"
    assert df.loc["crash_once=1", "attempts"] == 2


# ---------------------------------------------------------------- failed and diverged runs


def test_failed_and_diverged_runs_are_recorded_and_not_retried(tmp_path: Path):
    body = ("max_retries = 3\n" + TINY + "[axes]\nseed = [0, 1]\n"
            '[[override]]\nwhere = { seed = 1 }\nset = { tags = { raise = "forced failure in seed 1" } }\n'
            "[[override]]\nwhere = { seed = 0 }\nset = { lr = [0.01, 10000.0], param = \"adamw\" }\n")
    spec = write(tmp_path, "mixed", body)
    root = tmp_path / "sweeps"
    out = run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:train_or_raise")
    df = ledger_df(root, "mixed")
    assert len(df) == 3
    failed = df[df.seed == 1].iloc[0]
    assert failed.status == "failed" and failed.error == "RuntimeError: forced failure in seed 1"
    assert failed.attempts == 1 and failed.depth == 1 and failed.n_params > 0  # config columns present
    assert "forced failure in seed 1" in (root / "mixed" / "runs" / failed.run_id / "error.txt").read_text()
    diverged = df[(df.seed == 0) & (df.lr == 10000.0)].iloc[0]
    assert diverged.status == "diverged" and diverged.attempts == 1 and diverged.diverged_step >= 1
    ok = df[(df.seed == 0) & (df.lr == 0.01)].iloc[0]
    assert ok.status == "completed" and math.isfinite(ok.val_loss)
    assert out.counts == {"completed": 1, "diverged": 1, "failed": 1, "infra_failed": 0}
    top = pq.read_schema(root / "mixed" / "runs.parquet")  # a failed run keeps the integer columns integer
    assert top.equals(schema.arrow_schema()) and str(top.field("steps").type) == str(top.field("diverged_step").type) == "int64"
    rerun = CliRunner().invoke(app, ["run", str(spec), "--out", str(root), "--quiet",
                                     "--run-fn", "hyperp.sweeps.stubs:train_or_raise"])
    assert rerun.exit_code == 1 and "nothing to run" in rerun.output  # the failed run is kept as failed ...
    assert "1 failed runs are kept as they are; --retry-failed runs them again" in rerun.output  # ... and said so
    retry = run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:train_or_raise", retry_failed=True)
    assert retry.submitted == 1 and retry.counts["failed"] == 1  # only the failed one, and it fails again


# ---------------------------------------------------------------- LR searches


def test_bracket_extends_edge_minimum_and_stops_when_bracketed(tmp_path: Path):
    body = (TINY + "[axes]\n"
            'tags = [{lr_opt = "0.01"}, {lr_opt = "1000"}]\n'
            'lr = { search = "bracket", grid = [0.0001, 0.0003, 0.001], max_extend = 3 }\n')
    spec = write(tmp_path, "bracket", body)
    root = tmp_path / "sweeps"
    out = run_sweep(spec, root, run_fn=STUB)
    df = ledger_df(root, "bracket")
    near = sorted(df[df.tags == "lr_opt=0.01"].lr)
    # grid edge spacing 10/3: three points added above 1e-3, then 1.11e-2 (next to the optimum 1e-2) is interior
    assert near == pytest.approx([1e-4, 3e-4, 1e-3, 1e-3 * (10 / 3), 1e-3 * (10 / 3) ** 2, 1e-3 * (10 / 3) ** 3],
                                 rel=1e-5)
    far = sorted(df[df.tags == "lr_opt=1000"].lr)
    assert len(far) == 6 and far[-1] == pytest.approx(1e-3 * (10 / 3) ** 3, rel=1e-5)  # stopped by max_extend
    assert sorted(s["bracketed"] for s in out.searches) == [False, True]
    best = df[df.tags == "lr_opt=0.01"].sort_values("val_loss").iloc[0]
    assert best.lr == pytest.approx(0.0111111, rel=1e-5)
    assert (df.lr_search == "bracket").all() and df.run_id.is_unique
    again = run_sweep(spec, root, run_fn=STUB)
    assert again.submitted == 0  # the extended grids are re-derived from the ledger


def test_a_sweep_ends_with_a_line_per_unbracketed_cell_naming_its_edge_and_a_grid(tmp_path: Path):
    body = (TINY + "[axes]\n"
            'tags = [{lr_opt = "1000"}]\n'
            'lr = { search = "bracket", grid = [0.001, 0.002], max_extend = 1 }\n')
    spec = write(tmp_path, "edge", body)
    res = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "sweeps"), "--quiet", "--run-fn", STUB])
    assert res.exit_code == 0, res.output
    (line,) = [ln for ln in res.output.splitlines() if "not bracketed" in ln]
    assert "the best lr 0.004 is at the high edge: try grid = [0.002, 0.004, 0.008, 0.016, 0.032]" in line
    assert sorted(ledger_df(tmp_path / "sweeps", "edge").lr) == [0.001, 0.002, 0.004]  # extended upward only


def test_optuna_search_per_cell_resumes_from_its_study(tmp_path: Path):
    body = TINY + '[axes]\ntags = [{lr_opt = "0.01"}]\nlr = { search = "optuna", trials = 4, low = 0.001, high = 0.1, parallel = 2 }\n'
    spec = write(tmp_path, "opt", body)
    root = tmp_path / "sweeps"
    out = run_sweep(spec, root, run_fn=STUB)
    assert out.submitted == 4 and (root / "opt" / "optuna.db").exists()
    df = ledger_df(root, "opt")
    assert len(df) == 4 and (df.lr_search == "optuna").all() and df.lr.between(0.001, 0.1).all()
    assert out.searches[0]["finished"] == 4 and out.searches[0]["best"] == pytest.approx(df.val_loss.min())
    assert run_sweep(spec, root, run_fn=STUB).submitted == 0
    more = write(tmp_path, "opt", body.replace("trials = 4", "trials = 6"))
    extended = run_sweep(more, root, run_fn=STUB)
    assert extended.submitted == 2 and len(ledger_df(root, "opt")) == 6


def test_seeds_repeat_each_cells_best_lr_without_moving_it(tmp_path: Path):
    """seeds = 3: once a cell's bracket is done, its best lr runs again with seeds 1 and 2. The repeats are
    rows of the same cell, never change the search (a re-run submits nothing), and give `check transfer` its
    noise floor; `fit lr` keeps one group per cell (seed is not a grouping column)."""
    from hyperp.checks.transfer import check_transfer
    from hyperp.fitting import fit_optimal_lr

    body = (TINY + "[axes]\n"
            'tags = [{lr_opt = "0.01", seed_noise = "0.05"}]\n'
            "top_k = [1, 2]\n"  # a dense model ignores top_k: two cells with the same optimum
            'lr = { search = "bracket", grid = [0.003, 0.01, 0.03], max_extend = 2, seeds = 3 }\n')
    spec = write(tmp_path, "seeds", body)
    root = tmp_path / "sweeps"
    out = run_sweep(spec, root, run_fn=STUB)
    df = ledger_df(root, "seeds")
    for k, cell in df.groupby("top_k"):
        search = next(s for s in out.searches if s["cell_id"] == cell.cell_id.iloc[0])
        seeded = cell[cell.seed > 0]
        assert sorted(seeded.seed) == [1, 2] and (seeded.lr == search["best_lr"]).all()
        assert search["seed_runs_done"] == 2 and cell.cell_id.nunique() == 1
        own = cell[cell.seed == 0]
        assert search["best_lr"] == own.loc[own.val_loss.idxmin(), "lr"]  # decided by the search's own runs
    assert run_sweep(spec, root, run_fn=STUB).submitted == 0
    optima = fit_optimal_lr(df, by=["top_k"], n_boot=0)
    assert len(optima.optima) == 2
    checks = check_transfer(df, "top_k", n_boot=0)
    assert all(math.isfinite(p.noise_sd) and p.noise_sd > 0 for p in checks[0].points)


@pytest.mark.parametrize("reuse", [True, False])
def test_workers_stay_warm_across_runs_unless_told_not_to(tmp_path: Path, reuse: bool):
    """One run at a time: with reuse_workers (the default) Ray runs them all in one warm worker process (its
    imports and corpus paid once); with reuse_workers = false each run gets a fresh process."""
    body = (f"max_concurrent = 1\n" + TINY + "[axes]\nseed = [0, 1, 2, 3]\n"
            f"[resources]\ncpus = 1\nreuse_workers = {str(reuse).lower()}\n")
    spec = write(tmp_path, f"warm{int(reuse)}", body)
    out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    assert out.counts["completed"] == 4
    pids = [json.loads(p.read_text())["pid"] for p in (out.sweep_dir / "runs").glob("*/attempt.json")]
    assert len(pids) == 4 and len(set(pids)) == (1 if reuse else 4)


# ---------------------------------------------------------------- Ctrl-C


def test_stop_cancels_cleanly_and_resume_finishes(tmp_path: Path):
    spec = write(tmp_path, "stop", "max_concurrent = 2\n" + TINY + '[axes]\nseed = [0, 1, 2, 3]\ntags = [{sleep = "3"}]\n')
    root = tmp_path / "sweeps"
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "out", run_sweep(spec, root, run_fn=STUB, stop=stop)))
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(list((root / "stop" / "runs").glob("*/attempt.json"))
                                            if (root / "stop" / "runs").exists() else []) < 2:
        time.sleep(0.05)
    while time.time() < deadline:  # the driver's heartbeat (state.json) follows within a second
        st = json.loads(CliRunner().invoke(app, ["status", str(root / "stop"), "--json"]).output)
        if st["totals"]["running"] == 2:
            break
        time.sleep(0.1)
    assert st["active"] and st["totals"]["running"] == 2 and st["totals"]["pending"] == 2
    stop.set()  # what Ctrl-C does in the CLI
    thread.join(timeout=60)
    out = result["out"]
    assert out.interrupted and out.submitted == 2 and out.pending == 4
    assert not list((root / "stop" / "runs").glob("*/runs.parquet"))  # nothing half-done was recorded
    assert json.loads((root / "stop" / "state.json").read_text())["interrupted"]
    assert not sweep_status(root / "stop")["active"]
    resumed = run_sweep(spec, root, run_fn=STUB)
    assert resumed.submitted == 4 and resumed.counts["completed"] == 4
    assert ledger_df(root, "stop").run_id.is_unique


def test_plan_matches_what_runs(grid_sweep):
    spec, root, _ = grid_sweep
    plan = make_plan(loads_spec(spec.read_text()))
    df = ledger_df(root, "grid").set_index("run_id")
    assert set(df.index) == {r.run_id for r in plan.runs}
    for r in plan.runs:
        assert df.loc[r.run_id, "flops"] == pytest.approx(r.info["flops_planned"])
        assert df.loc[r.run_id, "n_params_active"] == r.info["n_params_active"]


# ---------------------------------------------------------------- MoE granularity through the engine


def test_moe_sweep_over_granularity(tmp_path: Path):
    """An MoE sweep over k (top_k) at fixed sparsity: each cell trains, active parameters stay the dense
    model's (plus the router), and total parameters grow with the expert count k * S."""
    body = TINY + "moe_every = 1\nsparsity = 2\n[axes]\ntop_k = [1, 2, 4]\n"
    out = run_sweep(write(tmp_path, "moe_k", body), tmp_path / "sweeps")
    df = ledger_df(tmp_path / "sweeps", "moe_k").sort_values("top_k")
    assert out.counts.get("completed") == 3 and list(df["top_k"]) == [1, 2, 4]
    assert (df["val_loss"] < math.log(256)).all()
    dense = Transformer(RunConfig(depth=1, aspect_ratio=32, head_dim=16, seq_len=32))
    dense_params = sum(p.numel() for p in dense.parameters())
    width = 32
    for _, row in df.iterrows():
        router = width * row["top_k"] * row["sparsity"]
        assert row["n_params_active"] == dense_params + router
        assert row["n_params"] > row["n_params_active"]
    assert df["n_params"].is_monotonic_increasing
    assert df["maxvio_final"].notna().all()


# ---------------------------------------------------------------- compile = "auto" and the compile cache


@pytest.mark.parametrize("speedup,cache,compiled", [(2.0, "sweep", True), (2.0, "run", True), (1.0, "sweep", False)])
def test_auto_compile_runs_as_the_plan_decides_with_the_caches_directory(tmp_path: Path, speedup, cache, compiled):
    """compile = "auto" with measured costs of 0 s: any speed-up above 1 pays, none does not; a compiled run's
    worker gets Inductor's cache directory ([resources] compile_cache: the sweep's, or the run's own)."""
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"device_type": "cpu", "speedup": speedup, "cold_s": 0.0, "warm_s": 0.0}))
    name = f"auto{int(speedup)}{cache}"
    body = (TINY + 'compile = "auto"\ntags = { report_env = "TORCHINDUCTOR_CACHE_DIR" }\n[axes]\nlr = [0.01, 0.02]\n'
            f'[resources]\ncpus = 1\ncompile_cache = "{cache}"\ncompile_costs = "costs.json"\n')
    spec = write(tmp_path, name, body)
    res = CliRunner().invoke(app, ["plan", str(spec), "--out", str(tmp_path / "sweeps"), "--json"])
    assert res.exit_code == 0, res.output
    [decision] = json.loads(res.output)["compile_auto"]
    assert decision["compile"] is compiled
    out = run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    df = ledger.read_ledger(out.sweep_dir)
    assert out.counts["completed"] == 2 and list(df.compile) == [compiled] * 2
    if not compiled:
        return
    expected = [str((out.sweep_dir / "compile-cache").resolve())] * 2 if cache == "sweep" else \
        [str((out.sweep_dir / "runs" / rid / "compile-cache").resolve()) for rid in df.run_id]
    assert list(df["env_TORCHINDUCTOR_CACHE_DIR"]) == expected
