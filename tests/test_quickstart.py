"""The quickstart pipeline (sweep -> fit -> plots -> summary) on a shrunken copy of its embedded spec."""

import json

import pandas as pd
from rich.console import Console

from hyperp.quickstart import SPEC, run_quickstart
from hyperp.sweeps.spec import loads_spec


def small_spec() -> str:
    spec = SPEC.replace("seq_len = 64", "seq_len = 32").replace("batch_tokens = 1024", "batch_tokens = 512")
    spec = spec.replace("val_tokens = 8192", "val_tokens = 1024").replace("depth = 2", "depth = 1")
    return spec.replace("tokens = [65536, 131072, 262144]", "tokens = [4096, 8192, 16384]")


def test_embedded_spec_is_valid():
    spec = loads_spec(SPEC)
    assert spec.name == "quickstart"


def test_quickstart_pipeline(tmp_path):
    summary = run_quickstart(tmp_path, Console(quiet=True), spec_text=small_spec())
    runs = pd.read_parquet(tmp_path / "sweeps" / "quickstart" / "runs.parquet")
    assert set(runs["param"]) == {"muonh", "hyperp"} and set(runs["tokens"]) == {4096, 8192, 16384}
    assert summary["counts"]["completed"] == len(runs)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    # one optimum per (scheme, budget), each at or inside the LRs the sweep actually ran
    assert len(on_disk["optima"]["groups"]) == 6
    for g in on_disk["optima"]["groups"]:
        cell = runs[(runs["param"] == g["param"]) & (runs["tokens"] == g["tokens"])]
        assert cell["lr"].min() <= g["lr_opt"] <= cell["lr"].max()
    assert (tmp_path / "lr.png").stat().st_size > 10_000
