"""The quickstart pipeline (sweep -> transfer check -> plots -> summary) on a shrunken copy of its embedded spec."""

import json
import re

import pandas as pd

from hyperp import quickstart
from hyperp.cli.quickstart import quickstart_command
from hyperp.quickstart import SPEC
from hyperp.sweeps.spec import loads_spec


def small_spec() -> str:
    spec = SPEC.replace("seq_len = 128", "seq_len = 32").replace("batch_tokens = 1024", "batch_tokens = 512")
    spec = spec.replace("val_tokens = 32768", "val_tokens = 1024").replace("eval_every = 128", "eval_every = 8").replace("depth = 2", "depth = 1")
    spec = spec.replace("width = [32, 64, 128]", "width = [16, 32]").replace("base_width = 32", "base_width = 16")
    return spec.replace("tokens = 131072", "tokens = 4096")


def test_embedded_spec_is_valid():
    spec = loads_spec(SPEC)
    assert spec.name == "quickstart" and spec.base["head_init_std"] >= 0.1  # a head whose sphere does not bind


def test_help_says_what_the_quickstart_sweeps():
    """The help of `hyperp` and of `hyperp quickstart` names the axis the embedded spec sweeps."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from hyperp.cli import app  # noqa: PLC0415

    spec = loads_spec(SPEC)
    assert quickstart.AXIS in spec.axes and len(spec.axes[quickstart.AXIS]) > 1
    for args in (["--help"], ["quickstart", "--help"]):
        out = " ".join(CliRunner().invoke(app, args, env={"COLUMNS": "200"}).output.split())
        assert f"{quickstart.AXIS} 32 transfer" in out and "tokens sweep" not in out, out


def test_quickstart_pipeline(tmp_path, monkeypatch, capsys):
    """The command as a log sees it (no terminal): the summary as JSON on stdout, plain progress lines and the
    tables on stderr, no progress bar's frame."""
    monkeypatch.setattr(quickstart, "SPEC", small_spec())
    quickstart_command(out=tmp_path, progress_every=0.5, as_json=True)
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert re.search(r"^quickstart: \d+ completed, ", err, flags=re.M) and "ETA" not in err, err
    runs = pd.read_parquet(tmp_path / "sweeps" / "quickstart" / "runs.parquet")
    assert set(runs["param"]) == {"adamw", "hyperp"} and set(runs["width"]) == {16, 32}
    assert summary["counts"]["completed"] == len(runs)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    # one transfer check per scheme, each with one optimum per width inside the LRs its cell ran, and the
    # regret at the proxy (the smallest width) zero by definition
    assert sorted(c["param"] for c in on_disk["transfer"]) == ["adamw", "hyperp"]
    for check in on_disk["transfer"]:
        assert check["verdict"] in ("pass", "fail", "inconclusive") and check["proxy"] == 16
        for point in check["scales"]:
            cell = runs[(runs["param"] == check["param"]) & (runs["width"] == point["scale"])]
            assert cell["lr"].min() <= point["lr_opt"] <= cell["lr"].max()
        assert check["scales"][0]["regret"] == 0.0
    assert (tmp_path / "transfer.png").stat().st_size > 10_000 and (tmp_path / "lr.png").stat().st_size > 10_000
