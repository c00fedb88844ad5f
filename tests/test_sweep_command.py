"""Sweeps of any training command ([command] in a spec) on a local Ray of 2 CPUs.

The toy trainer (examples/command/toy_train.py) has a known optimum, lr_opt(width) = 0.05 * 128 / width; a
second tiny script here fails in each documented way. Ray is started once for the module.
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
from hyperp.cli.sweep import app
from hyperp.fitting import fit_optimal_lr, load_table
from hyperp.sweeps.command import command_run
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.stubs import stub_run
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.spec import SpecError, load_spec, loads_spec
from hyperp.sweeps.status import sweep_status
from hyperp.sweeps.worker import resolve_run_fn, train_run

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "command" / "toy.toml"


def lr_opt(width: int) -> float:
    return 0.05 * 128 / width


pytestmark = pytest.mark.usefixtures("local_ray")  # one local Ray for the module (conftest.py)


def runs_of(root: Path, name: str):
    return pq.read_table(root / name / "runs.parquet").to_pandas()  # plain pyarrow, no hyperp code


# ---------------------------------------------------------------- the example: a bracket search per width


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "sweeps"
    first = run_sweep(EXAMPLE, root)
    return root, first, run_sweep(EXAMPLE, root)


def test_toy_sweep_brackets_each_known_optimum(toy):
    root, first, _ = toy
    assert first.counts == {"completed": first.submitted, "diverged": 0, "failed": 0, "infra_failed": 0}
    grid = (0.01, 0.03, 0.1, 0.3)
    for s in first.searches:
        width = first.plan.cells[s["cell_id"]].config.values["width"]
        nearest = min(grid, key=lambda lr: abs(math.log(lr / lr_opt(width))))
        assert s["done"] and s["bracketed"] and s["best_lr"] == nearest, s
        assert s["seed_runs_done"] == 1  # seeds = 2: the best lr once more, with seed 1
    df = runs_of(root, "command_toy")
    assert sorted(set(df.width)) == [64, 256] and df.lr.notna().all() and df.val_loss.notna().all()
    assert set(df.seed) == {0, 1} and df.cell_id.nunique() == 2
    row = df.iloc[0]
    assert json.loads(row.config_json)["kind"] == "command" and json.loads(row.extra_json)["lr_opt"] > 0
    assert math.isnan(row.flops) and pd.isna(row.n_params)  # no RunConfig facts
    run = root / "command_toy" / "runs" / row.run_id
    assert (run / "stdout.txt").is_file()  # written by this checkout's command_run in the Ray worker
    curves = pq.read_table(run / "curves.parquet").to_pandas()
    assert list(curves.columns[:2]) == ["run_id", "step"] and set(curves.run_id) == {row.run_id}
    assert len(curves) == 20


def test_toy_sweep_rerun_submits_nothing(toy):
    _, first, second = toy
    assert second.submitted == 0 and not second.started_ray and second.counts == first.counts


def test_plan_and_status_show_the_swept_values(toy):
    root, _, _ = toy
    st = sweep_status(root / "command_toy")
    assert st["varying"] == ["width"] and st["totals"]["completed"] == 10
    assert sorted((c["width"], c["best_lr"], c["note"]) for c in st["cells"]) == [(64, 0.1, "bracketed"),
                                                                                 (256, 0.03, "bracketed")]
    res = CliRunner().invoke(app, ["plan", str(EXAMPLE), "--json", "--out", str(root)])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert plan["varying"] == ["width", "lr"] and plan["n_runs"] == 8
    grid = {(w, lr) for w in (64, 256) for lr in (0.01, 0.03, 0.1, 0.3)}
    assert {(r["width"], r["lr"]) for r in plan["runs"]} == grid
    assert plan["startup_source"].endswith("measured on 10 finished runs")


def test_fit_lr_by_width_on_the_command_ledger(toy):
    root, _, _ = toy
    df = load_table(root / "command_toy")  # lr_opt, a result key beyond the schema, comes out of extra_json
    assert (df.lr_opt == [lr_opt(w) for w in df.width]).all()
    fit = fit_optimal_lr(df, by=["width"], n_boot=50)
    assert [o.group["width"] for o in fit.optima] == [64, 256]
    for o in fit.optima:
        assert o.bracketed and abs(math.log(o.lr_opt / lr_opt(o.group["width"]))) < 0.1, o


def test_extra_json_keys_become_columns_without_replacing_one():
    df = pd.DataFrame({"width": [1, 2], "extra_json": ['{"width": 9, "mode": "a"}', None]})
    out = schema.expand_extra(df)
    assert out.width.tolist() == [1, 2] and out["mode"].tolist()[0] == "a" and pd.isna(out["mode"].tolist()[1])
    assert schema.expand_extra(df.assign(extra_json=None)).columns.tolist() == ["width", "extra_json"]


# ---------------------------------------------------------------- failures, recorded as documented

SCRIPT = r'''
import json, os, signal, sys, time
mode, out = sys.argv[1], sys.argv[2]
def result(**r):
    json.dump(r, open(os.path.join(out, "result.json"), "w"))
if mode == "exit3":
    for i in range(60):
        print(f"stderr line {i}", file=sys.stderr)
    sys.exit(3)
if mode == "killonce" and not os.path.exists(os.path.join(out, "killed")):
    open(os.path.join(out, "killed"), "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "sleep":
    time.sleep(60)
if mode == "diverged":
    result(status="diverged", val_loss=None)
elif mode == "nometric":
    result(train_loss=1.5)
else:
    result(val_loss=1.25, env=os.environ["MODE_SEEN"], cwd=os.getcwd(), omp=os.environ["OMP_NUM_THREADS"],
           gpus=os.environ["CUDA_VISIBLE_DEVICES"])
'''


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    (tmp / "tool.py").write_text(SCRIPT)
    (tmp / "work").mkdir()
    spec = tmp / "faults.toml"
    spec.write_text('name = "faults"\nmax_retries = 0\n[command]\n'
                    'run = "python {here}/tool.py {mode} {out_dir}"\ncwd = "work"\n'
                    'env = { MODE_SEEN = "mode={mode}" }\n'
                    'timeout_s = 2\n[axes]\nmode = ["ok", "exit3", "diverged", "nometric", "killonce", "sleep"]\n')
    root = tmp / "sweeps"
    first = run_sweep(spec, root)
    second = run_sweep(spec, root)
    return tmp, root, first, second


def by_mode(root: Path):
    df = load_table(root / "faults")
    return df.set_index("mode")


def test_failed_diverged_killed_and_timed_out_commands(faults):
    tmp, root, first, _ = faults
    assert first.counts == {"completed": 1, "diverged": 1, "failed": 3, "infra_failed": 1}
    df = by_mode(root)
    ok = df.loc["ok"]
    assert ok.status == "completed" and ok.val_loss == 1.25 and ok.env == "mode=ok"
    assert Path(ok.cwd) == (tmp / "work").resolve()  # a relative cwd is the spec file's directory's
    assert ok.omp == "1" and ok.gpus == ""  # the resources' threads; gpus = 0 hides every GPU
    assert df.loc["diverged", "status"] == "diverged" and math.isnan(df.loc["diverged", "val_loss"])
    assert df.loc["nometric", "status"] == "failed"
    assert "result.json" in df.loc["nometric", "error"] and "'val_loss'" in df.loc["nometric", "error"]
    error_txt = root / "faults" / "runs" / df.loc["nometric", "run_id"] / "error.txt"
    assert error_txt.read_text() == "(the command wrote nothing to stderr)\n"
    assert df.loc["sleep", "status"] == "failed" and "timed out after 2 s" in df.loc["sleep", "error"]


def test_nonzero_exit_keeps_the_stderr_tail(faults):
    _, root, _, _ = faults
    row = by_mode(root).loc["exit3"]
    assert row.status == "failed" and row.error == "CommandError: command exited with status 3: stderr line 59"
    text = (root / "faults" / "runs" / row.run_id / "error.txt").read_text()
    assert text.splitlines() == [f"stderr line {i}" for i in range(10, 60)]  # the last 50 lines


def test_killed_command_is_an_infra_failure_retried_by_the_next_run(faults):
    _, root, first, second = faults
    failed = {f["run_id"]: f for f in first.failed_runs}
    killed = [f for f in failed.values() if f["status"] == "infra_failed"]
    assert len(killed) == 1 and "SIGKILL" in killed[0]["error"] and killed[0]["mode"] == "killonce"
    assert second.submitted == 1  # only the infra failure; failed runs wait for --retry-failed
    assert sorted(f["mode"] for f in second.failed_runs) == ["exit3", "nometric", "sleep"]  # read back from disk
    row = by_mode(root).loc["killonce"]
    assert row.status == "completed" and row.attempts == 2


def test_a_stopped_sweep_kills_its_running_command(tmp_path):
    spec = tmp_path / "stop.toml"
    spec.write_text('name = "stop"\n[command]\nrun = "sh -c \'echo $$ > {out_dir}/pid; sleep {s}; echo {{}} > '
                    '{out_dir}/result.json\'"\n[axes]\ns = [60]\n')
    root, stop = tmp_path / "sweeps", threading.Event()
    threading.Thread(target=lambda: (wait_for(lambda: list(root.glob("stop/runs/*/pid"))), stop.set())).start()
    out = run_sweep(spec, root, stop=stop)
    assert out.interrupted and out.pending == 1
    (pid_file,) = root.glob("stop/runs/*/pid")
    pid = int(pid_file.read_text())
    assert wait_for(lambda: not alive(pid)), "the command outlived its cancelled run"


PARENT = """
import sys
from pathlib import Path
from hyperp.sweeps.command import CommandConfig, run_process
out = Path(sys.argv[1])
run_process(CommandConfig(template="sh -c 'sleep 60 & echo $! > {out_dir}/child; echo $$ > {out_dir}/pid; wait'",
                          values={}), out)
"""


def command_under_worker(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A worker process (PARENT) running the command; the pids of the command and of its own child."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)])
    assert wait_for(lambda: (tmp_path / "pid").is_file() and (tmp_path / "child").is_file()
                    and (tmp_path / "child").read_text().strip()), "the command did not start"
    pids = [int((tmp_path / name).read_text()) for name in ("pid", "child")]
    assert all(alive(pid) for pid in pids)
    return parent, pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_command_dies_with_a_force_killed_worker(tmp_path):
    """SIGKILL to the process running the command (a Ray worker lost to the OOM killer, say) leaves no cleanup
    code to run; the command and its own children still go."""
    parent, pids = command_under_worker(tmp_path)
    try:
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in pids)), "the command outlived its worker"
    finally:
        parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_command_and_its_children_die_with_a_force_killed_guard(tmp_path):
    """Ray SIGKILLs a dying worker's children, the guard among them: the command's own children go too."""
    parent, pids = command_under_worker(tmp_path)
    try:
        guard = parent_of(pids[0])
        assert guard != parent.pid and parent_of(guard) == parent.pid  # worker -> guard -> command -> child
        os.kill(guard, signal.SIGKILL)
        assert wait_for(lambda: not any(alive(pid) for pid in pids)), "the command or its child outlived the guard"
    finally:
        parent.kill()


def test_nothing_a_command_started_outlives_its_run(tmp_path):
    """A background child the command left behind is killed when the command's run ends."""
    script = tmp_path / "bg.sh"
    script.write_text('sleep 60 &\necho $! > "$1/child"\necho \'{"val_loss": 1}\' > "$1/result.json"\n')
    spec = tmp_path / "bg.toml"
    spec.write_text(f'name = "bg"\n[command]\nrun = "sh {script} {{out_dir}} {{seed}}"\n[axes]\nseed = [0]\n')
    out = run_sweep(spec, tmp_path / "sweeps")
    assert out.counts["completed"] == 1
    (child,) = (tmp_path / "sweeps").glob("bg/runs/*/child")
    assert wait_for(lambda: not alive(int(child.read_text()))), "the command's background child outlived the run"


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def wait_for(condition, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    return None


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by a container's init, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "State:\tZ" in status.read_text())


# ---------------------------------------------------------------- refused up front


def test_placeholder_without_value_is_refused_before_anything_is_written(tmp_path):
    spec = tmp_path / "gap.toml"
    spec.write_text('name = "gap"\n[command]\nrun = "python train.py --lr {lr} --width {width}"\n'
                    '[axes]\nlr = [0.1, 0.2]\n')
    with pytest.raises(SpecError, match=r"^command\.run: placeholder \{width\} has no value"):
        run_sweep(spec, tmp_path / "sweeps")
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("body, message", [
    ('[base]\nmodel = { depth = 2 }\n', r"^base\.model: expected an integer, number, string or boolean, got a table"),
    ('[[zip]]\nwidth = ["wide"]\n', r"^zip\[0\]\.width: column width: expected an integer"),
    ('[base]\nstatus = "x"\n', r"^base\.status: 'status' is reserved"),
    ('[base]\nunused = 1\n', r"^command\.run: value 'unused' is used by no placeholder"),
])
def test_bad_command_values_name_the_key(body, message):
    text = 'name = "bad"\n[command]\nrun = "run {lr} {out_dir}"\n' + body + "[axes]\nlr = [0.1]\n"
    with pytest.raises(SpecError, match=message):
        make_plan(loads_spec(text))


@pytest.mark.parametrize("extra, axes, message", [
    ('env = { X = "{nope}" }\n', "lr = [0.1]", r"^command\.env\.X: placeholder \{nope\} has no value"),
    ("", 'lr = { search = "bracket", grid = [0.1, 0.2], seeds = 2 }', r"^lr\.seeds: .* does not use \{seed\}"),
])
def test_env_placeholders_and_seed_repeats_are_checked(extra, axes, message):
    text = f'name = "e"\n[command]\nrun = "run {{lr}} {{out_dir}}"\n{extra}[axes]\n{axes}\n'
    with pytest.raises(SpecError, match=message):
        make_plan(loads_spec(text))


@pytest.mark.parametrize("run, message", [
    ("train {} {out_dir}", r"^command\.run: placeholder \{\}: expected \{name\}"),
    ("train {lr {out_dir}", r"^command\.run: not a valid template"),
    ("train {cfg.lr} {out_dir}", r"^command\.run: placeholder \{cfg\.lr\}"),
])
def test_bad_templates_are_refused(run, message):
    with pytest.raises(SpecError, match=message):
        loads_spec(f'name = "t"\n[command]\nrun = "{run}"\n[axes]\nlr = [0.1]\n')


def test_placeholders_are_quoted_formatted_and_split():
    plan = make_plan(loads_spec('name = "q"\n[command]\nrun = "echo {lr:.1e} {{x}} {note} --out={out_dir}"\n'
                                '[base]\nnote = "two words; rm -rf /"\n[axes]\nlr = [0.25]\n'))
    assert plan.runs[0].config.argv("/s/runs/abc") == ["echo", "2.5e-01", "{x}", "two words; rm -rf /",
                                                       "--out=/s/runs/abc"]


def test_the_plan_runs_the_command_unless_a_run_fn_is_given():
    spec = load_spec(EXAMPLE)
    assert resolve_run_fn(None, spec) is command_run
    assert resolve_run_fn("hyperp.sweeps.stubs:stub_run", spec) is stub_run
    assert resolve_run_fn(None, loads_spec('name = "t"\n[base]\ndepth = 1\n')) is train_run


def test_run_id_hashes_template_and_values_not_the_machine(tmp_path):
    plan = make_plan(load_spec(EXAMPLE))
    moved = tmp_path / "toy.toml"
    moved.write_text(EXAMPLE.read_text())
    assert [r.run_id for r in make_plan(load_spec(moved)).runs] == [r.run_id for r in plan.runs]  # {here} moved
    edited = loads_spec(EXAMPLE.read_text().replace("--steps {steps}", "--steps={steps}"))
    assert not {r.run_id for r in make_plan(edited).runs} & {r.run_id for r in plan.runs}
    assert len({r.cell_id for r in plan.runs}) == 2 and schema.COLUMN_TYPES["width"] == "int"


def test_optuna_search_on_a_command_sweep_finishes_and_resumes_as_a_no_op(tmp_path):
    toy = EXAMPLE.parent / "toy_train.py"
    spec = tmp_path / "opt.toml"
    spec.write_text(f'name = "opt"\n[command]\nrun = "python {toy} --lr {{lr}} --width {{width}} --out {{out_dir}}"\n'
                    '[base]\nwidth = 128\n[axes]\nlr = { search = "optuna", trials = 4, low = 0.005, high = 0.5, '
                    'parallel = 2 }\n')
    root = tmp_path / "sweeps"
    first = run_sweep(spec, root)
    (s,) = first.searches
    assert s["done"] and s["finished"] == 4 and first.counts["completed"] == 4
    assert s["best"] == min(runs_of(root, "opt").val_loss)
    assert run_sweep(spec, root).submitted == 0
