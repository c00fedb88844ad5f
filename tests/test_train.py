"""End-to-end training: learning, resume, divergence, outputs, and bad input."""

import math

import pandas as pd
import pytest

from hyperp.config import ConfigError, RunConfig
from hyperp.trainer.data import DataError
from hyperp.schema import STABILITY_INDICATORS
from hyperp.trainer.loop import lr_mult, train


def test_one_million_tokens_learn_the_stdlib_corpus():
    cfg = RunConfig(param="hyperp", depth=2, aspect_ratio=32, head_dim=16, seq_len=128, batch_tokens=4096,
                    tokens=2**20, val_tokens=16384, base_depth=2)
    result = train(cfg)
    assert result.status == "completed"
    assert result.row["val_loss"] < 0.6 * math.log(256)  # uniform bytes give ln 256 = 5.55
    val = result.curves["val_loss"].dropna()
    assert val.iloc[-1] < val.iloc[0]


class Interrupt(Exception):
    pass


# adamw: every group on torch's fused AdamW; kernels "on": the fused CPU kernels (compiled) at this tiny shape
@pytest.mark.parametrize("param, kernels", [("hyperp", "auto"), ("adamw", "auto"), ("hyperp", "on")])
def test_resume_after_interruption_is_bit_exact(tmp_path, tiny, param, kernels):
    cfg = RunConfig(**tiny | dict(tokens=16 * 1024, checkpoint_every=3, param=param, fused_kernels=kernels))
    straight = train(cfg, tmp_path / "straight")

    def crash_at_step_7(info):
        if info.step == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", on_step=crash_at_step_7)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "runs.parquet").exists()
    resumed = train(cfg, tmp_path / "resumed")
    assert resumed.row["val_loss"] == straight.row["val_loss"]
    assert resumed.row["train_loss"] == straight.row["train_loss"]
    assert list(resumed.curves["train_loss"]) == list(straight.curves["train_loss"])
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()  # removed once the run is complete
    assert resumed.row["resumed_step"] == 6 and straight.row["resumed_step"] == -1


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, tiny):
    cfg = RunConfig(**tiny | dict(checkpoint_every=2))
    with pytest.raises(Interrupt):
        train(cfg, tmp_path, on_step=lambda i: (_ for _ in ()).throw(Interrupt) if i.step == 5 else None)
    other = train(cfg.replace(seed=1), tmp_path)
    assert other.row["steps"] == cfg.total_steps and len(other.curves) == cfg.total_steps


def test_absurd_lr_diverges_with_step(tiny):
    result = train(RunConfig(**tiny | dict(param="adamw", lr=10.0, grad_clip=0.0)))
    assert result.status == "diverged"
    assert 1 <= result.row["diverged_step"] < RunConfig(**tiny).total_steps
    assert math.isnan(result.row["val_loss"])


def test_outputs_and_schema(tmp_path, tiny):
    cfg = RunConfig(**tiny | dict(param="muon"))
    result = train(cfg, tmp_path)
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    curves = pd.read_parquet(tmp_path / "curves.parquet")
    assert len(runs) == 1 and runs.loc[0, "status"] == "completed"
    for col in ["param", "depth", "width", "n_params", "n_params_active", "tokens", "batch_tokens", "lr", "seed",
                "flops", "val_loss", "status", "config_json", "tokens_per_s", "mfu", "ns_flops"]:
        assert col in runs.columns, col
    assert runs.loc[0, "width"] == 32 and runs.loc[0, "lr"] == pytest.approx(0.02)
    assert RunConfig.from_dict(__import__("json").loads(runs.loc[0, "config_json"])) == cfg
    assert {"step", "tokens", "train_loss", "val_loss", "grad_norm", "attn_z", "rms_attn", "rms_mlp"} <= set(curves)
    assert f"{STABILITY_INDICATORS[0]}_final" in runs.columns
    # 6 N T with N the active matrix weights, plus the attention term of method.md section 7
    n = result.row["n_params_active_matrix"]
    expected = (6 * n + 12 * cfg.depth * cfg.d_model * cfg.seq_len) * cfg.tokens
    assert result.row["flops"] == pytest.approx(expected)
    assert result.row["ns_flops"] > 0


def test_muonh_run_keeps_radius(tiny):
    result = train(RunConfig(**tiny | dict(param="muonh", tokens=16 * 1024)))
    assert result.row["radius_drift_max"] < 1e-5


def test_schedule_warmup_and_decay():
    cfg = RunConfig(tokens=100 * 1024, batch_tokens=1024, seq_len=64, warmup_tokens=10 * 1024, min_lr_mult=0.1)
    assert lr_mult(cfg, 0) == pytest.approx(0.1)
    assert lr_mult(cfg, 9) == pytest.approx(1.0)
    assert lr_mult(cfg, 99) == pytest.approx(0.1)
    values = [lr_mult(cfg, s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("changes,field", [
    (dict(param="sgd"), "param"),
    (dict(width=100, head_dim=32), "width"),
    (dict(tokens=512), "tokens"),
    (dict(batch_tokens=1000), "batch_tokens"),
    (dict(lr=-1.0), "lr"),
    (dict(depth="four"), "depth"),
])
def test_bad_config_names_the_field(tmp_path, tiny, changes, field):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(tiny | changes)
    assert err.value.field == field and field in str(err.value)


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="detph"):
        RunConfig.from_dict({"detph": 3})


def test_missing_and_empty_data_fail_before_writing(tmp_path, tiny):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="does not exist"):
        train(RunConfig(**tiny | dict(data=str(tmp_path / "nope"))), out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        train(RunConfig(**tiny | dict(data=str(empty))), out)
    assert not out.exists()


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes_bit_exact(tmp_path, tiny):
    cfg = RunConfig(**tiny | dict(tokens=12 * 1024))  # no periodic checkpoints
    straight = train(cfg)

    def ctrl_c_at_step_5(info):
        if info.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, on_step=ctrl_c_at_step_5)
    resumed = train(cfg, tmp_path)
    assert resumed.row["resumed_step"] == 5
    assert resumed.row["val_loss"] == straight.row["val_loss"]
    assert list(resumed.curves["train_loss"]) == list(straight.curves["train_loss"])


def test_a_compiled_run_compiles_only_the_plain_steps(monkeypatch):
    """Stats steps read values out (.item()): compiled, they would break the graph and specialise it on those
    values, recompiling at every stats step; they run the eager model instead, the same function."""
    from hyperp.trainer import loop

    calls = []

    def fake_compile(model, cfg):
        def run(x, y, stats=None):
            calls.append(stats)
            return model(x, y, stats)
        return run if cfg.compile else model

    monkeypatch.setattr(loop, "compile_model", fake_compile)
    cfg = RunConfig(depth=1, aspect_ratio=32, head_dim=16, seq_len=32, batch_tokens=512, tokens=512 * 6,
                    val_tokens=512, eval_every=2, compile=True)
    result = loop.train(cfg)
    assert result.status == "completed" and len(calls) > 0 and all(s is None for s in calls)
    assert len(calls) < cfg.total_steps  # the stats steps (every eval_every, and the last) ran eagerly
