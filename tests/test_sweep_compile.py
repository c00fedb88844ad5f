"""compile = "auto" (hyperp.sweeps.compile): costs measured from a ledger, the decision rule, the spec's keys, and
the trainer's `warmup_s`. The sweep end to end is in tests/test_sweep_runner.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hyperp.sweeps import compile as auto
from hyperp.sweeps.spec import SpecError, loads_spec
from hyperp.trainer.loop import warmup_seconds

SHAPE = {"param": "hyperp", "depth": 2, "width": 32, "head_dim": 16, "n_kv_heads": 0, "seq_len": 64,
         "batch_tokens": 512, "vocab_size": 256, "mlp_ratio": 4.0, "attn_gate": False, "fused_gate_up": False,
         "moe_every": 0, "sparsity": 1, "top_k": 1, "shared_expert": False}


def row(compile: bool, started: float, wall: float, warmup: float, flops: float = 1e12, **shape) -> dict:
    return SHAPE | shape | {"compile": compile, "started_at": started, "wall_time_s": wall, "warmup_s": warmup,
                            "flops": flops, "status": "completed", "device_type": "cpu"}


def test_costs_are_measured_from_steady_throughput_and_first_step_excess():
    """Eager runs: 100 s with 1 s of warm-up (steady 99 s); compiled: the first 90 s with 31 s of warm-up (steady
    59 s, compile 30 s cold), the next two 70 and 72 s with 11 and 13 s (compile 10 and 12 s warm)."""
    ledger = pd.DataFrame([row(False, 0, 100, 1), row(False, 1, 100, 1), row(True, 2, 90, 31), row(True, 3, 70, 11),
                           row(True, 4, 72, 13)])
    per_shape, pooled = auto.measured_costs(ledger, "cpu", cache="sweep")
    [costs] = per_shape.values()
    assert costs.speedup == pytest.approx(99 / 59) and costs.cold_s == pytest.approx(30)
    assert costs.warm_s == pytest.approx(11)  # the median of 10 and 12
    assert pooled.speedup == pytest.approx(costs.speedup)
    _, run_cache = auto.measured_costs(ledger, "cpu", cache="run")
    assert run_cache.warm_s == pytest.approx(30)  # every run compiles cold in its own cache
    assert auto.measured_costs(ledger, "cuda", cache="sweep") == ({}, None)  # nothing measured on that device
    eager_only = ledger[~ledger.compile]
    assert auto.measured_costs(eager_only, "cpu", cache="sweep") == ({}, None)


def test_decision_compiles_when_the_saving_pays_for_the_compilations():
    costs = auto.CompileCosts(speedup=1.25, cold_s=60.0, warm_s=10.0, source="test")
    key = auto.shape_key(SHAPE)
    # each run saves t (1 - 1/1.25) = 0.2 t; 4 runs pay 60 + 3 * 10 = 90 s
    assert auto.decide_shape(key, 4, eager_s=200.0, costs=costs).compile is True  # 4 * 40 = 160 > 90
    assert auto.decide_shape(key, 4, eager_s=100.0, costs=costs).compile is False  # 4 * 20 = 80 < 90
    assert auto.decide_shape(key, 100, eager_s=45.0, costs=costs).compile is False  # 9 s saved < 10 s warm
    unmeasured = auto.decide_shape(key, 4, eager_s=1e6, costs=None)
    assert unmeasured.compile is False and "no measured compile cost" in unmeasured.describe()
    assert math.isnan(unmeasured.saving_s)


def test_warmup_is_the_time_beyond_each_kinds_median_step():
    """Plain steps of median 1.0 s and stats steps of median 2.2 s: what a compilation (5 s first step) and a
    recompilation (a 4 s step later on) add beyond them."""
    times = {False: [5.0, 1.0, 1.2, 0.8, 1.0, 4.0, 1.0], True: [3.0, 2.2, 2.0]}
    assert warmup_seconds(times) == pytest.approx((14.0 - 7 * 1.0) + (7.2 - 3 * 2.2))
    assert warmup_seconds({False: [1.0, 1.0, 1.0], True: []}) == 0.0


@pytest.mark.parametrize("resources,field", [('compile_cache = "disk"', "resources.compile_cache"),
                                             ('compile_costs = "missing.json"', "resources.compile_costs"),
                                             ("compile_costs = 3", "resources.compile_costs")])
def test_bad_compile_resources_name_the_key(tmp_path, resources, field):
    with pytest.raises(SpecError, match=f"^{field}: "):
        loads_spec(f'name = "s"\n[base]\ncompile = "auto"\n[resources]\n{resources}\n', base_dir=tmp_path)


def test_compile_auto_is_the_only_text_compile_takes():
    assert loads_spec('name = "s"\n[base]\ncompile = "auto"\n').base["compile"] == "auto"
    with pytest.raises(SpecError, match="compile"):
        loads_spec('name = "s"\n[base]\ncompile = "sometimes"\n')


def test_costs_from_ledgers_concatenated_with_repeated_index_labels():
    eager = pd.DataFrame([row(False, 0, 100, 1), row(False, 1, 100, 1)])
    compiled = pd.DataFrame([row(True, 2, 90, 31), row(True, 3, 70, 11)])
    _, pooled = auto.measured_costs(pd.concat([eager, compiled]), "cpu", cache="sweep")
    assert pooled.speedup == pytest.approx(99 / 59)
