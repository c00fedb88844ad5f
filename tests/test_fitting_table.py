"""Input tables: formats, column mapping, status handling, and clear errors for bad tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyperp.fitting import FitInputError, fit_optimal_lr, load_table, parse_mapping
from hyperp.cli.fit import app
from hyperp.fitting.table import status_masks

runner = CliRunner()


def sweep(n_groups: int = 2, lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1)) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for lr in lrs:
            rows.append({"run_id": f"g{g}-{lr}", "depth": 2 + g, "lr": lr, "status": "completed",
                         "val_loss": 3.0 + g + 0.1 * (np.log(lr) - np.log(1e-2)) ** 2})
    return pd.DataFrame(rows)


def test_reads_parquet_csv_and_sweep_directory(tmp_path):
    df = sweep()
    df.to_parquet(tmp_path / "t.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "sweep").mkdir()
    df.to_parquet(tmp_path / "sweep" / "runs.parquet")
    for path in (tmp_path / "t.parquet", tmp_path / "t.csv", tmp_path / "sweep"):
        got = load_table(path)
        assert list(got["lr"]) == list(df["lr"])


def test_mapping_renames_and_where_filters(tmp_path):
    df = sweep().rename(columns={"val_loss": "loss", "lr": "Learning Rate"})
    df.to_csv(tmp_path / "t.csv", index=False)
    got = load_table(tmp_path / "t.csv", parse_mapping(["loss=val_loss", "Learning Rate=lr"]), {"depth": "3"})
    assert {"val_loss", "lr"} <= set(got.columns)
    assert set(got["depth"]) == {3}


def test_diverged_rows_never_fit_even_with_all_status():
    df = pd.DataFrame({"status": ["completed", "diverged", "failed"]})
    fit, div = status_masks(df)
    assert fit.tolist() == [True, False, False] and div.tolist() == [False, True, False]
    fit, _ = status_masks(df, all_status=True)
    assert fit.tolist() == [True, False, True]


@pytest.mark.parametrize("bad, words", [
    (lambda df: df.drop(columns=["val_loss"]), ["missing column", "val_loss"]),
    (lambda df: df.assign(val_loss=["x"] * len(df)), ["val_loss", "numeric"]),
    (lambda df: df.assign(val_loss=np.nan), ["val_loss", "no finite values"]),
    (lambda df: df.assign(lr=-df["lr"]), ["lr", "> 0"]),
    (lambda df: df.groupby("depth").head(1), ["1 point", "distinct learning rates"]),
])
def test_bad_tables_fail_with_a_clear_message(bad, words):
    with pytest.raises(FitInputError) as err:
        fit_optimal_lr(bad(sweep()), by=["depth"], n_boot=0)
    for w in words:
        assert w in str(err.value)


def test_cli_reports_bad_table_with_exit_code_2_and_no_traceback(tmp_path):
    sweep().drop(columns=["val_loss"]).to_csv(tmp_path / "t.csv", index=False)
    res = runner.invoke(app, ["lr", str(tmp_path / "t.csv"), "--by", "depth"])
    assert res.exit_code == 2
    assert "missing column" in res.output and "val_loss" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["lr", str(tmp_path / "nope.parquet")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["lr", str(tmp_path / "t.csv"), "--map", "no-equals-sign"])
    assert res.exit_code == 2 and "SOURCE=TARGET" in res.output


def test_where_on_one_column_twice_keeps_either_value_and_a_mapping_twice_is_refused():
    from hyperp.fitting.table import filter_rows, parse_where

    df = pd.DataFrame({"param": ["hyperp", "muonh", "adamw"], "depth": [2, 4, 2]})
    kept = filter_rows(df, parse_where(["param=hyperp", "param=muonh", "depth=2"]))
    assert kept["param"].tolist() == ["hyperp"]
    assert filter_rows(df, parse_where(["param=hyperp", "param=muonh"]))["param"].tolist() == ["hyperp", "muonh"]
    with pytest.raises(FitInputError, match="renamed twice"):
        parse_mapping(["loss=val_loss", "loss=train_loss"])
