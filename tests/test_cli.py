"""The `hyperp` CLI layer: lazy imports, one exit-code table, strict JSON, help on every option, read-only reads,
`sweep status --watch` on a sweep in flight, loud failures of `sweep run`."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import hyperp.errors as errors
from hyperp.cli import app
from hyperp.cli.core import new_app
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.config import RunConfig

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "matplotlib", "scipy", "ray", "optuna")
TINY_FLAGS = ["--depth", "1", "--aspect-ratio", "32", "--head-dim", "16", "--seq-len", "32", "--batch-tokens", "512",
              "--tokens", "4096", "--val-tokens", "512"]


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into output unless told not to
    except TypeError:
        return CliRunner()


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as parsers in other languages do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def loaded_modules(code: str, cwd: Path = ROOT) -> set[str]:
    """Top-level module names loaded by `code` in a fresh interpreter."""
    probe = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=cwd)
    return set(out.stdout.split()[-1000:])


# ---------------------------------------------------------------- lazy loading


def test_import_and_help_load_no_heavy_library():
    code = textwrap.dedent("""
        from typer.testing import CliRunner
        from hyperp.cli import app
        for args in (["--help"], ["train", "--help"], ["sweep", "--help"], ["sweep", "status", "--help"]):
            assert CliRunner().invoke(app, args).exit_code == 0, args
    """)
    loaded = loaded_modules(code)
    assert not loaded & {*HEAVY, "pandas", "pyarrow"}, loaded & {*HEAVY, "pandas", "pyarrow"}


def test_sweep_ls_and_status_load_no_torch_ray_scipy_matplotlib(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "plan.json").write_text(json.dumps({"sweep": "s", "varying": [], "runs": [], "cells": []}))
    (tmp_path / "s" / "spec.toml").write_text('name = "s"\n')
    code = textwrap.dedent(f"""
        from typer.testing import CliRunner
        from hyperp.cli import app
        for args in (["sweep", "ls", {str(tmp_path)!r}], ["sweep", "status", {str(tmp_path / "s")!r}]):
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 0, res.output
    """)
    loaded = loaded_modules(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


# ---------------------------------------------------------------- help


def walk(cmd, ctx, path: str = "hyperp"):
    """Every command under `cmd` (typer may vendor its own click, so no isinstance checks on click classes)."""
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from walk(sub, sub.context_class(sub, info_name=name, parent=ctx), f"{path} {name}")


def test_every_option_and_argument_of_every_command_has_help():
    root = typer.main.get_command(app)
    seen = 0
    for path, cmd, ctx in walk(root, root.context_class(root, info_name="hyperp")):
        assert (cmd.help or "").strip(), path
        for p in cmd.get_params(ctx):
            seen += 1
            assert (getattr(p, "help", None) or "").strip(), f"{path}: {p.name} has no help"
    assert seen > 150  # the walk reached the generated train flags and every noun


def test_train_help_shows_each_field_doc_default_and_choices():
    out = runner().invoke(app, ["train", "--help"], terminal_width=200, env={"COLUMNS": "200"}).stdout
    assert "<bool>" not in out
    choices = {"--param ": "hyperp|muonh|muon|adamw", "--ns-coeffs": "per_iter|quintic",
               "--ns-backend": "auto|torch|triton", "--token-scaling": "all|hidden"}
    for flag, shown in choices.items():
        (line,) = [ln for ln in out.splitlines() if f"│ {flag}" in ln]
        assert shown in line and "<str>" not in line, line
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    for f in dataclasses.fields(RunConfig):
        if f.name == "tags":
            continue
        first_words = " ".join(f.metadata["help"].split()[:4])
        assert first_words in flat, f.name
    assert "transformer blocks d (default: 4)" in flat


# ---------------------------------------------------------------- exit codes


def test_readme_exit_code_table_matches_hyperp_errors():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.M))
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert {int(c) for c in rows} == constants
    documented = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", errors.__doc__, flags=re.M))
    assert rows == documented  # the README copies the one table of hyperp/errors.py


def test_each_exception_class_maps_to_its_exit_code_with_one_error_line():
    cases = {"input": (errors.InputError("spec.toml: depth: must be positive"), 2),
             "unavailable": (errors.UnavailableError("sweep is locked by process 42"), 3),
             "interrupt": (KeyboardInterrupt(), 130), "term": (errors.Terminated(), 143)}
    demo = new_app("demo")
    for name, (exc, _) in cases.items():
        demo.command(name)(lambda exc=exc: (_ for _ in ()).throw(exc))
    for name, (exc, code) in cases.items():
        res = runner().invoke(demo, [name])
        assert res.exit_code == code, (name, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "[" not in lines[0], res.stderr
        assert str(exc) in lines[0]


def test_train_bad_flag_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = runner().invoke(app, ["train", *TINY_FLAGS, "--depth", "0", "--out", str(out)])
    assert res.exit_code == 2 and res.stderr.startswith("error: depth: must be a positive integer")
    assert not out.exists()
    bad_flags = {("train", "--param", "mounh"): "mounh", ("sweep", "status", "--bogus"): "--bogus",
                 ("--bogus",): "--bogus", ("fit", "lr"): "table"}  # click's own checks, in the same one-line style
    for bad, named in bad_flags.items():
        res = runner().invoke(app, list(bad))
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (bad, res.stderr)
        assert named in lines[0]


def test_train_config_file_with_a_typo_suggests_the_field(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[run]\ndepth = 1\nwidht = 64\n")
    out = tmp_path / "run"
    res = runner().invoke(app, ["train", "--config", str(config), "--out", str(out)])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: widht: unknown field in ") and "did you mean 'width'?" in lines[0]
    assert str(config) in lines[0] and not out.exists()


def test_train_ctrl_c_exits_130_and_keeps_a_checkpoint(tmp_path, monkeypatch):
    import hyperp.trainer.loop as loop

    real = loop.train

    def interrupted(cfg, out, on_step=None):
        def stop(info):
            if info.step == 3:
                raise KeyboardInterrupt
        return real(cfg, out, on_step=stop)

    monkeypatch.setattr(loop, "train", interrupted)
    res = runner().invoke(app, ["train", *TINY_FLAGS, "--checkpoint-every", "1", "--out", str(tmp_path)])
    assert res.exit_code == 130 and res.stderr.startswith("error: interrupted")
    assert (tmp_path / "checkpoint.pt").is_file()


# ---------------------------------------------------------------- strict JSON


@pytest.mark.parametrize("extra", [[], ["--param", "adamw", "--lr", "10", "--grad-clip", "0"]],
                         ids=["dense", "diverged"])
def test_train_json_is_strict(tmp_path, extra):
    res = runner().invoke(app, ["train", *TINY_FLAGS, *extra, "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.stderr
    row = strict_json(res.stdout)
    assert row["n_params"] > 0
    nulls = {k for k, v in row.items() if v is None}
    assert {"router_z_final", "maxvio_max"} <= nulls  # a dense run has no router: NaN in Python, null here
    if extra:
        assert row["status"] == "diverged" and row["val_loss"] is None and 1 <= row["steps"] < 8
    else:
        assert row["status"] == "completed" and math.isfinite(row["val_loss"]) and row["steps"] == 8
        assert "step 8/8" in res.stderr  # no terminal: plain progress lines, the last one always


def test_progress_file_written_by_the_trainer(tmp_path):
    from hyperp.trainer.loop import train
    from hyperp.trainer.progress import ProgressWriter, read_progress

    cfg = RunConfig(depth=1, aspect_ratio=32, head_dim=16, seq_len=32, batch_tokens=512, tokens=4096, val_tokens=512)
    result = train(cfg, tmp_path, on_step=ProgressWriter(tmp_path))
    p = read_progress(tmp_path)
    assert p["step"] == p["total_steps"] == cfg.total_steps and p["eta_s"] == 0
    assert p["train_loss"] == pytest.approx(result.curves.train_loss.iloc[-1])


# ---------------------------------------------------------------- a sweep: watch, loud failures, read-only reads


RUN_FN = """
from types import SimpleNamespace

from hyperp.sweeps.stubs import stub_run
from hyperp.trainer.progress import ProgressWriter


def run(cfg, out_dir):
    # what the trainer reports after step 3 of 8 (hyperp.sweeps.worker.train_run does this from train's on_step)
    ProgressWriter(out_dir)(SimpleNamespace(step=3, total_steps=8, tokens=3 * 512, loss=2.5, tokens_per_s=1000.0))
    return stub_run(cfg, out_dir)
"""


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sweep_watch_failures_strict_json_and_read_only(tmp_path):
    (tmp_path / "myruns.py").write_text(RUN_FN)  # importable only from the working directory
    spec = tmp_path / "w.toml"
    spec.write_text('name = "w"\nmax_concurrent = 2\nmax_retries = 0\n' + TINY_BASE_TOML + "[axes]\nseed = [0, 1]\n"
                    '[[override]]\nwhere = { seed = 0 }\nset = { tags = { sleep = "8" } }\n'
                    '[[override]]\nwhere = { seed = 1 }\nset = { tags = { raise = "forced failure" } }\n')
    root = tmp_path / "sweeps"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    # -P: the working directory is not put on sys.path by Python itself (as with the `hyperp` script)
    proc = subprocess.Popen([sys.executable, "-P", "-c", "from hyperp.cli import app; app()", "sweep", "run",
                             str(spec), "--out", str(root), "--run-fn", "myruns:run", "--progress-every", "1",
                             "--json"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sweep = root / "w"
        deadline = time.time() + 120
        st = None
        while time.time() < deadline and proc.poll() is None:
            res = runner().invoke(app, ["sweep", "status", str(sweep), "--watch", "--count", "1", "--json"])
            if res.exit_code == 0:
                st = strict_json(res.stdout)
                if any(r["step"] is not None and r["settings"]["seed"] == 0 for r in st["in_flight"]):
                    break
            time.sleep(0.5)
        assert st is not None and st["active"], "the sweep never showed a run in flight"
        (run,) = [r for r in st["in_flight"] if r["settings"]["seed"] == 0]  # the one that sleeps
        assert (run["step"], run["total_steps"], run["train_loss"]) == (3, 8, 2.5)
        assert run["eta_s"] == pytest.approx(5 * 512 / 1000.0)
        assert st["totals"]["running"] >= 1
        table = runner().invoke(app, ["sweep", "status", str(sweep), "--watch", "--count", "1", "--interval", "0.1"],
                                terminal_width=200)
        assert table.exit_code == 0 and "runs in flight" in table.stdout and "3/8" in table.stdout
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == errors.EXIT_RUNS_FAILED, stderr
    out = strict_json(stdout)
    assert out["counts"]["completed"] == 1 and out["counts"]["failed"] == 1
    (failed,) = out["failed_runs"]
    assert failed["settings"]["seed"] == 1 and failed["error"] == "RuntimeError: forced failure"
    assert re.search(r"^failed: seed=1 .*RuntimeError: forced failure$", stderr, flags=re.M), stderr
    assert re.search(r"^w: \d+ completed, .* running", stderr, flags=re.M), stderr  # plain lines without a tty
    assert "Token authentication" not in stderr  # Ray's notice at a local start (the sweep's own Ray)

    before = snapshot(tmp_path)
    st = strict_json(runner().invoke(app, ["sweep", "status", str(sweep), "--json"]).stdout)
    failed_cell = [c for c in st["cells"] if c["failed"]]
    assert len(failed_cell) == 1 and failed_cell[0]["best_val_loss"] is None and failed_cell[0]["best_lr"] is None
    assert runner().invoke(app, ["sweep", "ls", str(root), "--json"]).exit_code == 0
    assert runner().invoke(app, ["sweep", "status", str(sweep)]).exit_code == 0
    plan = runner().invoke(app, ["sweep", "plan", str(spec), "--out", str(root), "--json"])
    assert plan.exit_code == 0 and strict_json(plan.stdout)["startup_source"].startswith("measured on 1")
    after = snapshot(tmp_path)
    assert after == before


# ---------------------------------------------------------------- did you mean


def test_fit_and_plot_suggest_columns_and_values(tmp_path):
    import pandas as pd

    rows = [{"param": p, "tokens": t, "lr": lr, "val_loss": 3 + (math.log(lr) + 4) ** 2 / 10, "status": "completed"}
            for p in ("muonh", "hyperp") for t in (1000, 2000) for lr in (0.005, 0.01, 0.02, 0.04)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    res = runner().invoke(app, ["fit", "lr", str(tmp_path / "t.csv"), "--by", "parm"])
    assert res.exit_code == 2 and "did you mean param?" in res.stderr and "tokens" not in res.stderr
    res = runner().invoke(app, ["plot", "lr", str(tmp_path / "t.csv"), "-o", str(tmp_path / "x.png"),
                                "--where", "param=mounh"])
    assert res.exit_code == 2 and "did you mean muonh?" in res.stderr, res.stderr
    assert not (tmp_path / "x.png").exists()
    res = runner().invoke(app, ["fit", "lr", str(tmp_path / "t.csv"), "--where", "param=zzz"])
    assert res.exit_code == 2 and "expected one of: hyperp, muonh" in res.stderr


def test_ray_client_address_without_the_extra_fails_before_writing(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    spec = tmp_path / "c.toml"
    spec.write_text('name = "c"\n' + TINY_BASE_TOML + "[axes]\nseed = [0]\n")
    res = runner().invoke(app, ["sweep", "run", str(spec), "--out", str(tmp_path / "sweeps"),
                                "--address", "ray://127.0.0.1:1"])
    assert res.exit_code == 2 and "hyperp[cluster]" in res.stderr
    assert not (tmp_path / "sweeps").exists()


def test_python_dash_m_hyperp_is_the_cli():
    """`python -m hyperp` runs the same app as the `hyperp` script (for a checkout on PYTHONPATH, not installed)."""
    proc = subprocess.run([sys.executable, "-m", "hyperp", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage: hyperp" in proc.stdout and "quickstart" in proc.stdout
