"""`hyperp plot curves`: every run's loss (or indicator) against tokens, steps or FLOPs, coloured by the setting
that varies, diverged runs marked; bad input is a one-line error naming the column or file. Read off the
matplotlib objects, not pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyperp.cli.plot import app
from hyperp.errors import FitInputError
from hyperp.plots.curves import DIVERGED_GID, curves_frame, plot_curves
from hyperp.plots.stability import read_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LRS = {"r-small": 1e-3, "r-mid": 3e-3, "r-div": 1e-2}
FLOPS_PER_TOKEN = 6e4
STEPS = 8


def fake_sweep(root):
    """A sweep directory of 3 runs differing only in lr: runs/<id>/curves.parquet (no run_id column, val_loss
    every other step) and runs.parquet; r-div diverged after 5 of its 8 steps (its flops: what it trained)."""
    rows = []
    for i, (rid, lr) in enumerate(LRS.items()):
        steps = 5 if rid == "r-div" else STEPS
        curve = pd.DataFrame({"step": np.arange(1, steps + 1), "tokens": 1000 * np.arange(1, steps + 1),
                              "train_loss": 4.0 - 0.1 * np.arange(steps) + i,
                              "val_loss": [4.0 - 0.1 * s + i if s % 2 else np.nan for s in range(steps)],
                              "attn_z": 10.0 + i + np.arange(steps)})
        (root / "runs" / rid).mkdir(parents=True)
        curve.to_parquet(root / "runs" / rid / "curves.parquet")
        trained = 1000 * steps
        rows.append({"run_id": rid, "lr": lr, "depth": 2, "n_params": 1000, "tokens": 1000 * STEPS,
                     "tokens_trained": trained, "flops": FLOPS_PER_TOKEN * trained, "train_loss": 1.0,
                     "status": "diverged" if rid == "r-div" else "completed"})
    pd.DataFrame(rows).to_parquet(root / "runs.parquet")
    return root


def figure(root, **kw):
    curves, runs = read_curves(root)
    frame = curves_frame(curves, runs, y=kw.get("y", "train_loss"), source=str(root))
    return plot_curves(frame, source=str(root), **kw)


def run_lines(ax):
    return {ln.get_gid(): ln for ln in ax.lines if ln.get_gid() in LRS}


def test_one_line_per_run_coloured_by_the_lr_with_the_diverged_run_marked(tmp_path):
    fig = figure(fake_sweep(tmp_path))
    ax = fig.axes[0]
    lines = run_lines(ax)
    assert set(lines) == set(LRS)
    assert len({ln.get_color() if isinstance(ln.get_color(), str) else tuple(ln.get_color())
                for ln in lines.values()}) == 3  # lr is the one setting that varies: 3 colours
    assert "lr" in fig.legends[0].get_title().get_text()
    np.testing.assert_allclose(lines["r-small"].get_ydata(), 4.0 - 0.1 * np.arange(STEPS))  # the curve, not the run's 1.0
    (mark,) = [ln for ln in ax.lines if ln.get_gid() == DIVERGED_GID]
    assert mark.get_marker() == "x"
    assert (mark.get_xdata()[0], mark.get_ydata()[0]) == (5000, lines["r-div"].get_ydata()[-1])  # its last point
    assert mark.get_color() == lines["r-div"].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["diverged (1)"]
    assert ax.get_xlabel() == "tokens"


def test_flops_axis_is_tokens_times_the_runs_flops_per_token_and_val_loss_joins_its_points(tmp_path):
    fig = figure(fake_sweep(tmp_path), x="flops", y="val_loss", by="lr")
    ax = fig.axes[0]
    lines = run_lines(ax)
    np.testing.assert_allclose(lines["r-mid"].get_xdata(), FLOPS_PER_TOKEN * 1000 * np.array([2, 4, 6, 8]))
    assert np.isfinite(lines["r-mid"].get_ydata()).all()  # NaN steps (no eval) skipped, the rest joined
    assert "FLOPs" in ax.get_xlabel() and "per token" in ax.get_xlabel()
    assert ax.get_ylabel() == "val_loss"


def test_a_logged_indicator_against_steps(tmp_path):
    ax = figure(fake_sweep(tmp_path), x="step", y="attn_z").axes[0]
    np.testing.assert_allclose(run_lines(ax)["r-small"].get_xdata(), np.arange(1, STEPS + 1))


def test_bad_input_names_the_column_or_file(tmp_path):
    root = fake_sweep(tmp_path / "s")
    with pytest.raises(FitInputError, match="no curve column 'trian_loss'.*train_loss"):
        figure(root, y="trian_loss")
    with pytest.raises(FitInputError, match="--x 'time'"):
        figure(root, x="time")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FitInputError, match="no curves.parquet"):
        read_curves(tmp_path / "empty")


def test_cli_writes_a_png_and_errors_in_one_line(tmp_path):
    root = fake_sweep(tmp_path / "s")
    out = tmp_path / "curves.png"
    res = CliRunner().invoke(app, ["curves", str(root), "-o", str(out), "--x", "flops", "--where", "depth=2",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 10_000
    res = CliRunner().invoke(app, ["curves", str(root), "-o", str(out), "--y", "nope"])
    assert res.exit_code == 2
    assert "'nope'" in res.output and str(root) in res.output and "Traceback" not in res.output
