"""Run identity: what the id hashes, what it leaves out, and the pin that guards RESULTS_VERSION."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperp import identity
from hyperp.identity import RESULT_NEUTRAL_FIELDS, RESULTS_VERSION, ROUNDING_NEUTRAL_FIELDS, cell_id, run_id
from hyperp.config import RunConfig
from hyperp.trainer.loop import train

# A tiny CPU run (8 steps, about half a second); peak_tflops given so no matmul probe runs.
PIN_BASE = dict(depth=1, aspect_ratio=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=8192, val_tokens=2048,
                device="cpu", peak_tflops=1.0, threads=1)

# A value other than the default for every field left out of the hash (workers: test_distributed.py).
NEUTRAL_VALUES = {"name": "renamed", "log_every": 3, "eval_every": 1, "stats_every": 1, "checkpoint_every": 2,
                  "peak_tflops": 2.0, "threads": 2, "device": "auto", "ns_backend": "torch", "compile": True,
                  "fused_kernels": "on"}
ROUNDED_BY_FIELD = set(ROUNDING_NEUTRAL_FIELDS) - {"workers"}

# Float32 rounding over a run: a rounding-neutral field changes only the order or fusion of float operations
# (another thread count's partial sums, a compiled kernel), which moves each step's loss by a few units in the
# last place of float32 (2^-23 relative). Over a run this short the steps' errors add up rather than grow
# (one ulp of the LR moves this run's final loss by about 2e-7), so we allow ULPS_PER_STEP ulps per step:
# 4 steps at a loss of 5 give 1.9e-5. Measured: threads 1 vs 2 moved the final train loss by 4.8e-7 on torch
# 2.14.1+cu130 (x86_64, 2 cores) and by 0 on torch 2.13.0+cpu. A real change (the LR x 1.01, far finer than
# any LR grid) moves it by more than the tolerance: test_the_rounding_tolerance_tells_a_real_change.
F32_ULP = 2.0 ** -23
ULPS_PER_STEP = 8
NEUTRAL_STEPS = 4


def rounding_tol(loss: float, steps: int = NEUTRAL_STEPS) -> float:
    return steps * ULPS_PER_STEP * F32_ULP * abs(loss)


def losses(tmp_path, **changes) -> tuple[float, float]:
    """Final losses of a 4-step run written to an out dir (so checkpoint_every does write checkpoints)."""
    out = tmp_path / "-".join(f"{k}={v}" for k, v in changes.items())
    try:
        row = train(RunConfig(**PIN_BASE | {"tokens": NEUTRAL_STEPS * PIN_BASE["batch_tokens"]} | changes), out).row
    finally:
        torch.set_num_threads(1)  # the suite's setting (conftest); a run with threads=2 changes it
    return row["train_loss"], row["val_loss"]


def test_every_excluded_field_is_tested():
    assert set(NEUTRAL_VALUES) == set(RESULT_NEUTRAL_FIELDS) - {"workers"}
    assert ROUNDED_BY_FIELD <= set(NEUTRAL_VALUES)
    for name, value in NEUTRAL_VALUES.items():
        assert value != getattr(RunConfig(**PIN_BASE), name), name


def test_excluded_fields_leave_the_final_loss_unchanged(tmp_path):
    """Bit-identical where the field never touches the arithmetic; within float32 rounding where it only
    reorders or fuses it (ROUNDING_NEUTRAL_FIELDS)."""
    base = losses(tmp_path)
    cfg = RunConfig(**PIN_BASE)
    for name, value in NEUTRAL_VALUES.items():
        got = losses(tmp_path, **{name: value})
        if name in ROUNDED_BY_FIELD:
            for g, b in zip(got, base):
                assert abs(g - b) <= rounding_tol(b), f"{name}={value!r} changed the final loss: {got} != {base}"
        else:
            assert got == base, f"{name}={value!r} changed the final loss"
        assert run_id(cfg.replace(**{name: value})) == run_id(cfg), name


def test_the_rounding_tolerance_tells_a_real_change(tmp_path):
    base = losses(tmp_path)
    changed = losses(tmp_path, lr=RunConfig(**PIN_BASE).base_lr * 1.01)
    assert all(abs(c - b) > rounding_tol(b) for c, b in zip(changed, base)), (changed, base)


def test_result_fields_and_tags_change_the_id():
    cfg = RunConfig(**PIN_BASE)
    for change in ({"lr": 0.03}, {"seed": 1}, {"depth": 2}, {"momentum": 0.9}, {"tags": {"variant": "b"}}):
        assert run_id(cfg.replace(**change)) != run_id(cfg), change
    assert cell_id(cfg.replace(lr=0.03)) == cell_id(cfg) != cell_id(cfg.replace(seed=1))
    assert run_id(cfg, "data-v2") != run_id(cfg) and cell_id(cfg) != run_id(cfg)


@dataclasses.dataclass
class ConfigWithNewField(RunConfig):
    """RunConfig as it would be after adding a field with a default."""

    new_knob: int = 7


def test_a_new_field_at_its_default_keeps_every_id():
    cfg = RunConfig(**PIN_BASE | {"lr": 0.01, "seed": 3})
    newer = ConfigWithNewField(**PIN_BASE | {"lr": 0.01, "seed": 3})
    assert run_id(newer) == run_id(cfg) and cell_id(newer) == cell_id(cfg)
    assert run_id(dataclasses.replace(newer, new_knob=8)) != run_id(cfg)
    # an old record's config_json (without the field) keeps its id when read by newer code
    assert identity.run_id_of_json(cfg.to_json()) == run_id(cfg)


def test_package_version_is_a_column_not_part_of_the_id(monkeypatch):
    cfg = RunConfig(**PIN_BASE)
    before = run_id(cfg)
    monkeypatch.setattr("hyperp.__version__", "99.0")
    assert run_id(cfg) == before and identity.code_columns()["code_version"] == "99.0"
    monkeypatch.setattr(identity, "RESULTS_VERSION", RESULTS_VERSION + 1)
    assert run_id(cfg) != before  # a bump re-keys every run


def test_git_commit_is_a_hex_sha_or_empty():
    commit = identity.git_commit()
    assert commit == "" or (len(commit) == 40 and int(commit, 16) >= 0)


# ---------------------------------------------------------------- the pin


# Recorded at RESULTS_VERSION = 2 with torch 2.13.0+cpu (x86_64); muon re-recorded at 3 (its LM head no longer
# decays) with torch 2.14.1+cu130 on the same CPU, where the other pins hold within 2.4e-7. They hold across
# the admitted torch range within PIN_ATOL below (float32 rounding over 8 steps, far under a real change). If
# a test below fails, you changed what a config trains to (architecture, optimizer math, data order, schedule,
# init) or the default of a field: bump RESULTS_VERSION in hyperp/identity.py (every run id changes, so no
# sweep reuses runs of the old code) and re-record these values.
PINNED_AT = 3
PINNED_LOSSES = {  # (final train loss, final val loss)
    "hyperp": (4.6098809242248535, 4.558936834335327),
    "muonh": (5.320684432983398, 5.316155433654785),
    "muon": (2.9457926750183105, 2.927740454673767),  # version 3: no decay on the LM head
    "adamw": (4.994585990905762, 4.966163158416748),
    "moe": (4.707272052764893, 4.656165599822998),
    "mlp160": (4.609784126281738, 4.5544140338897705),  # mlp_ratio 5: hidden 160 rounds up to 192 (version 2)
}
PIN_RUNS = {"hyperp": {"param": "hyperp"}, "muonh": {"param": "muonh"}, "muon": {"param": "muon"},
            "adamw": {"param": "adamw"}, "moe": {"param": "hyperp", "moe_every": 1, "sparsity": 2, "top_k": 2},
            "mlp160": {"param": "hyperp", "mlp_ratio": 5.0}}  # a hidden size off the multiple of 64
# Tolerance on the loss: float32 rounding over the pinned runs' 8 steps (rounding_tol above gives 3.8e-5 at a
# loss of 5). Measured on a 2-core CPU: a rounding-level change (lr * (1 + 2^-23)) moves the final val loss by
# at most 2.4e-7, torch 2.13.0+cpu against 2.14.1+cu130 by at most 2.4e-7; the smallest default change measured
# (momentum 0.95 -> 0.9 under muonh) moves it by 1.9e-4, a smaller MLP (mlp_ratio 3) by 3.4e-4 to 8.8e-2,
# muon's head decay by 6.5e-3.
PIN_ATOL = 5e-5
PINNED_DEFAULTS = {  # RunConfig defaults of the result-changing fields
    "depth": 4, "width": 0, "aspect_ratio": 32, "head_dim": 32, "n_kv_heads": 0, "seq_len": 256, "vocab_size": 256,
    "mlp_ratio": 4.0, "attn_gate": False, "fused_gate_up": False, "rope_theta": 10000.0, "moe_every": 0, "sparsity": 1, "top_k": 1,
    "shared_expert": False, "sqrt_gate": True, "aux_gamma": 0.1, "param": "hyperp", "lr": None, "base_depth": 4,
    "base_width": 128, "base_tokens": 1048576, "token_exponent": 0.32, "token_scaling": "all", "token_rule": "scheme", "depth_lr_groups": "all", "weight_decay": 0.1,
    "adam_lr_mult": 1.0, "head_init_std": 0.02, "embed_init_std": 0.02, "momentum": 0.95, "nesterov": True,
    "ns_coeffs": "per_iter", "ns_steps": 5, "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-08,
    "grad_clip": 1.0, "tokens": 1048576, "batch_tokens": 8192, "warmup_tokens": 0, "min_lr_mult": 0.1,
    "data": "stdlib", "val_percent": 2.0, "val_tokens": 65536, "seed": 0, "diverge_ratio": 1.5, "tags": {},
}
BUMP = ("bump RESULTS_VERSION in hyperp/identity.py and re-record the pinned values in tests/test_identity.py "
        "(what a config trains to has changed; without a bump old sweeps would silently reuse runs of the old code)")


def test_version_3_retrains_only_decayed_muon_configs():
    """The bump to 3 (muon's LM head no longer decays) changes muon runs with weight decay, and no other."""
    for param in ("hyperp", "muonh", "adamw"):
        assert identity.carries_over(RunConfig(param=param), 2), param
    assert not identity.carries_over(RunConfig(param="muon"), 2)
    assert identity.carries_over(RunConfig(param="muon", weight_decay=0.0), 2)


def test_pins_were_recorded_at_this_results_version():
    assert PINNED_AT == RESULTS_VERSION, f"RESULTS_VERSION is {RESULTS_VERSION}: re-record the pins at it"


def test_defaults_are_pinned():
    defaults = {k: v for k, v in RunConfig().to_dict().items() if k not in RESULT_NEUTRAL_FIELDS}
    changed = {k: (PINNED_DEFAULTS[k], defaults[k]) for k in PINNED_DEFAULTS if defaults.get(k) != PINNED_DEFAULTS[k]}
    assert not changed, f"defaults changed (pinned, now): {changed}; {BUMP}"
    new = sorted(set(defaults) - set(PINNED_DEFAULTS))
    assert not new, (f"new fields {new}: add them to PINNED_DEFAULTS; bump RESULTS_VERSION only if their default "
                     "changes what an existing config trains to")


@pytest.mark.parametrize("name", list(PIN_RUNS))
def test_final_loss_is_pinned(name):
    row = train(RunConfig(**PIN_BASE | PIN_RUNS[name])).row
    got = (row["train_loss"], row["val_loss"])
    assert got == pytest.approx(PINNED_LOSSES[name], abs=PIN_ATOL), (
        f"{name}: final (train, val) loss {got} != pinned {PINNED_LOSSES[name]}; {BUMP}")
