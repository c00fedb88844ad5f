"""Every `--help` of the CLI loads no heavy library (read off sys.modules, never timed), the defaults it shows
are the libraries' own, and every count option reads 1e6, 1_000_000 and 1000000 the same way a spec does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hyperp.cli import app

ROOT = Path(__file__).parents[1]
HEAVY = ("numpy", "scipy", "pandas", "pyarrow", "torch", "matplotlib", "ray", "optuna", "tokenizers", "tensorboard",
         "mlflow", "wandb")


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into output unless told not to
    except TypeError:
        return CliRunner()


def walk(cmd, ctx, path=()):
    """(path, command, context) of every command under `cmd`, the root included."""
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from walk(sub, sub.context_class(sub, info_name=name, parent=ctx), (*path, name))


def every_command():
    root = typer.main.get_command(app)
    return list(walk(root, root.context_class(root, info_name="hyperp")))


# ---------------------------------------------------------------- help loads nothing heavy

HELP_PROBE = textwrap.dedent("""
    import json, sys
    import typer
    from typer.testing import CliRunner
    from hyperp.cli import app

    def heavy():
        return sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))

    def walk(cmd, ctx, path=()):
        yield path
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                yield from walk(sub, sub.context_class(sub, info_name=name, parent=ctx), (*path, name))

    root = typer.main.get_command(app)
    paths = list(walk(root, root.context_class(root, info_name="hyperp")))  # imports every noun's module
    out = {"paths": [" ".join(p) for p in paths], "after_import": heavy(), "first_heavy_help": None, "bad_exit": []}
    for p in paths:
        res = CliRunner().invoke(app, [*p, "--help"])
        if res.exit_code != 0:
            out["bad_exit"].append([" ".join(p), res.exit_code])
        if heavy() and out["first_heavy_help"] is None:
            out["first_heavy_help"] = [" ".join(p), heavy()]
    print(json.dumps(out))
""")


def test_every_help_loads_no_heavy_library():
    """`hyperp X --help` for every noun and subcommand: the command modules and their help import none of
    numpy, scipy, pandas, pyarrow, torch, matplotlib, Ray, optuna, tokenizers or a tracker's library (a fresh
    interpreter)."""
    code = f"HEAVY = {HEAVY!r}\n" + HELP_PROBE
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    out = json.loads(done.stdout.splitlines()[-1])
    assert {"", "fit compute", "plot lr", "check transfer", "predict", "data prepare", "bench train",
            "sweep status", "sweep stop", "export", "report", "train"} <= set(out["paths"])
    assert out["bad_exit"] == []
    assert out["after_import"] == [], "importing the command modules loaded " + ", ".join(out["after_import"])
    assert out["first_heavy_help"] is None, f"help of `hyperp {out['first_heavy_help']}`"


def test_help_defaults_are_the_libraries_own():
    """The light modules the help reads its defaults from are the ones the fits and the trainer use."""
    from hyperp.fitting import bootstrap, chinchilla, defaults, lr
    from hyperp.trainer import bench, data, prepare
    from hyperp.trainer import defaults as trainer_defaults

    assert (bootstrap.DEFAULT_N_BOOT, bootstrap.DEFAULT_LEVEL, lr.R2_MIN) == (
        defaults.DEFAULT_N_BOOT, defaults.DEFAULT_LEVEL, defaults.R2_MIN)
    assert (chinchilla.HUBER_DELTA, chinchilla.BOOT_STARTS, chinchilla.DEFAULT_N_BOOT) == (
        defaults.HUBER_DELTA, defaults.BOOT_STARTS, defaults.CHINCHILLA_N_BOOT)
    assert (prepare.MIN_VOCAB, prepare.MAX_VOCAB, prepare.DEFAULT_SHARD_TOKENS, data.BYTE_VOCAB,
            bench.MATCHED_MLP_RATIO) == (trainer_defaults.MIN_VOCAB, trainer_defaults.MAX_VOCAB,
                                         trainer_defaults.DEFAULT_SHARD_TOKENS, trainer_defaults.BYTE_VOCAB,
                                         trainer_defaults.MATCHED_MLP_RATIO)


# ---------------------------------------------------------------- counts read as a spec reads them


def count_options():
    """Every option of the CLI that takes a token count or a size counted in tokens."""
    return [(" ".join(path), p, ctx) for path, cmd, ctx in every_command() for p in cmd.get_params(ctx)
            if p.name.endswith("tokens") or p.name in ("vocab_size", "seq_len")]


def test_every_token_count_option_reads_1e6_as_a_spec_does():
    found = {(path, p.name) for path, p, _ in count_options()}
    assert {("train", "tokens"), ("train", "batch_tokens"), ("train", "warmup_tokens"), ("predict", "tokens"),
            ("bench train", "batch_tokens"), ("data prepare", "shard_tokens"),
            ("data prepare", "vocab_size")} <= found
    for path, p, ctx in count_options():
        for text in ("1e6", "1_000_000", "1000000", "1.0e6"):
            assert p.process_value(ctx, text) == 1_000_000, (path, p.name, text)
        for text in ("1.5", "-1e6", "-3", "ten", "nan"):
            with pytest.raises(Exception, match="whole number|count >= 0"):
                p.process_value(ctx, text)


def test_spec_and_command_line_read_the_same_counts():
    """The spec's rule (an integer-valued float is a count: TOML's 1e6) and the command line's are one."""
    from hyperp.config import RunConfig, parse_count

    assert RunConfig.from_dict({"tokens": 1e6, "batch_tokens": 8192.0}).tokens == 1_000_000 == parse_count("1e6")
    with pytest.raises(ValueError, match="tokens"):
        RunConfig.from_dict({"tokens": 1.5e3 + 0.5})


@pytest.mark.parametrize("args, flag", [
    (["train", "--tokens", "1.5"], "--tokens"),
    (["train", "--batch-tokens", "-8192"], "--batch-tokens"),
    (["predict", "examples/ledgers/predict_tiny.parquet", "--param", "hyperp", "--tokens", "2.5"], "--tokens"),
    (["data", "prepare", "stdlib", "--out", "never-written", "--shard-tokens", "1e6.5"], "--shard-tokens"),
    (["bench", "train", "--batch-tokens", "4096.5"], "--batch-tokens"),
])
def test_a_bad_count_is_one_error_line_naming_the_flag(args, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    res = runner().invoke(app, args)
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: Invalid value for '{flag}'") and ("whole number" in line or ">= 0" in line), line
    assert not (ROOT / "never-written").exists()


def test_train_tokens_1e6_reaches_the_run_config(monkeypatch):
    import hyperp.cli.train as train_cli
    from hyperp.errors import InputError

    seen = {}

    def capture(config_file, values):
        seen.update(values)
        raise InputError("stop here: the flags were read")  # nothing trains

    monkeypatch.setattr(train_cli, "config_from_cli", capture)
    res = runner().invoke(app, ["train", "--tokens", "1e6", "--batch-tokens", "8_192", "--warmup-tokens", "0"])
    assert res.exit_code == 2 and "stop here" in res.stderr
    assert (seen["tokens"], seen["batch_tokens"], seen["warmup_tokens"]) == (1_000_000, 8192, 0)
    assert all(type(seen[k]) is int for k in ("tokens", "batch_tokens", "warmup_tokens"))
