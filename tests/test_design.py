"""hyperp design (issue 24): the questions, the response model, the greedy choice, DESIGN.toml, the backtest.

Known truths: synthetic sweeps whose loss is a parabola in ln(lr) with a known optimum and noise SD, and the
stub trainer (hyperp.sweeps.stubs: val_loss = 1 + (ln lr - ln lr_opt)^2 + seed noise)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperp.design.backtest import _hidden, designer, pilot_split, uniform_order
from hyperp.design.candidates import Candidate
from hyperp.design.choose import choose, predicted_width
from hyperp.design.model import CellCurve, fit_model
from hyperp.design.questions import make_question
from hyperp.fitting.table import FitInputError
from hyperp.sweeps.stubs import TINY_BASE_TOML

GRID = [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08]


def synthetic(cells: dict[int, tuple[list[float], int]], sd: float = 0.02, seed: int = 0, opt: float = 0.01,
              drift: float = 0.0) -> pd.DataFrame:
    """Runs at width -> (LRs, seeds per LR): loss = 3 + 0.5 (ln lr - ln eta*(w))^2 + N(0, sd), with
    eta*(w) = opt (w/32)^drift; flops proportional to width^2."""
    rng = np.random.default_rng(seed)
    rows = []
    for w, (lrs, n_seeds) in cells.items():
        eta = opt * (w / 32) ** drift
        for lr in lrs:
            for s in range(n_seeds):
                loss = 3 + 0.5 * (math.log(lr) - math.log(eta)) ** 2 + sd * rng.standard_normal()
                rows.append({"param": "hyperp", "width": w, "lr": lr, "seed": s, "val_loss": loss,
                             "status": "completed", "flops": 1e9 * (w / 32) ** 2, "run_id": f"w{w}-{lr}-{s}"})
    return pd.DataFrame(rows)


def cell_candidates(df: pd.DataFrame, q, lrs: dict[int, list[float]]) -> list[Candidate]:
    """One candidate per (width, lr): a run of seed 9 there, its loss unknown."""
    out = []
    for w, ws in lrs.items():
        cost = float(df.loc[df["width"] == w, "flops"].iloc[0])
        for lr in ws:
            row = {"param": "hyperp", "width": w, "lr": lr, "seed": 9, "val_loss": math.nan, "status": "completed",
                   "flops": cost, "run_id": f"c{w}-{lr}"}
            out.append(Candidate("lr", f"width={w}: lr {lr:g}", pd.DataFrame([row]), cost, [{"width": w, "lr": lr}]))
    return out


# ---------------------------------------------------------------- the response model


def test_model_recovers_the_noise_and_the_optimum():
    df = synthetic({32: (GRID, 4), 64: (GRID, 4), 128: (GRID, 4)}, sd=0.02, drift=-0.5)
    q = make_question("transfer", df, axis="width")
    model = fit_model(df, q)
    assert 0.014 < model.sd < 0.028  # 0.02 from 72 runs
    assert model.drift == pytest.approx(-0.5, abs=0.1)
    for w in (32, 64, 128):
        assert model.optimum_lr((w,)) == pytest.approx(0.01 * (w / 32) ** -0.5, rel=0.1)
    # a new scale borrows the nearest curve moved along the drift
    assert model.optimum_lr((256,)) == pytest.approx(0.01 * 8 ** -0.5, rel=0.15)


def test_identical_seed_repeats_are_no_noise_estimate():
    """Repeats with exactly the same loss (a deterministic run twice) give a seed spread of 0: the model takes
    the parabolas' residual SD instead, and with no other estimate refuses rather than simulate noise-free."""
    from hyperp.design.model import _noise

    one = synthetic({32: (GRID, 1), 64: (GRID, 1), 128: (GRID, 1)}, sd=0.02)
    twice = pd.concat([one, one.assign(seed=1)], ignore_index=True)
    model = fit_model(twice, make_question("transfer", twice, axis="width"))
    assert 0.005 < model.sd < 0.04 and model.noise.startswith("LR-parabola residual SD")
    assert "seed repeats identical" in model.noise
    with pytest.raises(FitInputError, match="identical repeats give no noise SD"):
        _noise(0.0, 18, 0.0, 6)
    assert _noise(0.0, 18, 6 * 0.03 ** 2, 6)[0] == pytest.approx(0.03)


def test_moved_curve_keeps_curvature_and_shifts_the_optimum():
    u = np.log(np.array(GRID))
    c = CellCurve(u, 3 + 0.5 * (u - math.log(0.01)) ** 2, (3 + 0.5 * math.log(0.01) ** 2, -math.log(0.01), 0.5),
                  (u[1], u[4]), True)
    m = c.moved(math.log(2), 2.5)
    assert math.exp(m.u_opt) == pytest.approx(0.02)
    assert m.loss_opt == pytest.approx(2.5)
    assert m.coef[2] == pytest.approx(0.5)


def test_a_cell_with_one_run_borrows_a_curve_through_its_run():
    df = synthetic({32: (GRID, 2), 64: ([0.02], 1)}, sd=0.0)
    q = make_question("transfer", df, axis="width")
    model = fit_model(df, q)
    run = df[df["width"] == 64]
    assert model.mean(run)[0] == pytest.approx(run["val_loss"].iloc[0])


# ---------------------------------------------------------------- the choice


def test_a_sparse_scale_gets_the_first_runs():
    """Widths 32 and 64 have 6 LRs x 3 seeds, width 128 only 3 LRs: the slope's interval is set by 128's
    optimum, so the first run the designer adds is at 128 even though it costs most."""
    df = synthetic({32: (GRID, 3), 64: (GRID, 3), 128: ([0.005, 0.01, 0.02], 1)}, sd=0.03, seed=1)
    q = make_question("transfer", df, axis="width")
    cands = cell_candidates(df, q, {w: [0.0071, 0.014] for w in (32, 64, 128)})
    d = choose(df, q, cands, budget_flops=2e10, seed=0)
    assert d.chosen and d.chosen[0].rows["width"].iloc[0] == 128
    assert d.predicted.width < d.current.width
    assert d.cost_flops <= 2e10


def test_choices_are_reproducible_from_the_seed():
    df = synthetic({32: (GRID, 2), 64: (GRID, 1), 128: (GRID[1:5], 1)}, sd=0.03, seed=2)
    q = make_question("transfer", df, axis="width")
    lrs = {w: [0.0071, 0.014, 0.028] for w in (32, 64, 128)}
    a = choose(df, q, cell_candidates(df, q, lrs), budget_flops=3e10, seed=5)
    b = choose(df, q, cell_candidates(df, q, lrs), budget_flops=3e10, seed=5)
    assert [c.label for c in a.chosen] == [c.label for c in b.chosen]
    assert a.predicted == b.predicted


def test_the_predicted_interval_is_one_simulation_of_median_width_and_unanswered_when_most_are():
    from hyperp.design.choose import _median
    from hyperp.design.questions import UNANSWERED, Estimate

    nan = UNANSWERED
    # one answered simulation out of 8 is no prediction, however narrow its interval
    assert not _median([Estimate(1.0, 0.99, 1.01)] + [nan] * 7).answered
    assert not _median([Estimate(1.0, 0.9, 1.1)] * 4 + [nan] * 4).answered  # median width inf, as choose stops
    # widths 0.2, 0.4, 0.6 (odd count): the 0.4 one whole, not bounds mixed across simulations
    sims = [Estimate(1.0, 0.95, 1.15), Estimate(2.0, 1.6, 2.0), Estimate(1.5, 1.2, 1.8)]
    assert _median(sims) == sims[1]
    # 5 of 8 answered: an unanswered simulation counts as the widest, so the median is the 5th narrowest
    five = [Estimate(1.0, 1.0 - w, 1.0 + w) for w in (0.5, 0.1, 0.3, 0.2, 0.4)]
    assert _median(five + [nan] * 3) == five[0]


def test_the_designer_never_sees_a_hidden_loss():
    """The backtest's pool with two different sets of true losses: the designer's first choices are the
    same, since it sees only the candidates' settings."""
    df = synthetic({32: (GRID, 2), 64: (GRID, 1), 128: (GRID, 1)}, sd=0.03, seed=3)
    q = make_question("transfer", df, axis="width")
    pilot, rest = pilot_split(df, q)
    other = rest.assign(val_loss=rest["val_loss"] + np.random.default_rng(9).normal(0, 0.5, len(rest)))
    picks = [[c.label for c in choose(pilot, q, _hidden(r, q), max_candidates=3, seed=0, n_sims=4).chosen]
             for r in (rest, other)]
    assert picks[0] == picks[1] and len(picks[0]) == 3
    assert all(np.isnan(c.rows["val_loss"]).all() for c in _hidden(rest, q))


def test_predicted_width_is_calibrated_on_a_known_truth():
    """Runs drawn from the model's own family: the predicted width for the runs that exist is within 25% of
    the median width the command gives over fresh draws of the same design."""
    cells = {32: (GRID, 2), 64: (GRID, 2), 128: (GRID, 2)}
    actual = [make_question("transfer", d, axis="width").estimate(d).width
              for d in (synthetic(cells, sd=0.03, seed=s) for s in range(12))]
    df = synthetic(cells, sd=0.03, seed=99)
    q = make_question("transfer", df, axis="width")
    pred, _ = predicted_width(df, q, fit_model(df, q), n_sims=12, seed=0)
    assert pred == pytest.approx(float(np.median(actual)), rel=0.25)


# ---------------------------------------------------------------- the backtest


def test_backtest_splits_and_orders_cover_every_run_once():
    df = synthetic({32: (GRID, 2), 64: (GRID, 1), 128: (GRID, 1)}, sd=0.03, seed=4)
    q = make_question("transfer", df, axis="width")
    pilot, rest = pilot_split(df, q)
    assert set(pilot["width"][pilot["width"] == 32].index) == set(df.index[df["width"] == 32])  # the proxy cell
    assert (pilot["width"] != 32).sum() == 2  # one run per other cell
    assert set(pilot.loc[pilot["width"] == 64, "lr"]) == {0.01}  # nearest the proxy's best LR
    order = uniform_order(pilot, rest, q)
    assert sorted(order) == sorted(rest.index)
    target = q.estimate(df).width
    res = designer(pilot, rest, q, target)
    assert float(pilot["flops"].sum()) < res["flops"] <= float(df["flops"].sum()) + 1e-6
    assert res["rounds"] and all(set(r) == {"predicted_width", "realised_width"} for r in res["rounds"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "slope", "axis": "width"}, "question: expected one of"),
    ({"name": "transfer", "axis": "depth"}, "column 'depth'"),
    ({"name": "transfer", "axis": None}, "--axis"),
    ({"name": "exponent", "axis": "width"}, "along tokens"),
    ({"name": "cel", "axis": "width", "baseline": "muon", "at": 1e12}, "--baseline"),
])
def test_a_question_the_table_cannot_pose_is_one_line(kwargs, match):
    df = synthetic({32: (GRID, 1), 64: (GRID, 1)})
    with pytest.raises(FitInputError, match=match) as e:
        make_question(kwargs.pop("name"), df, **kwargs)
    assert "\n" not in str(e.value)


def test_several_groups_and_a_budget_below_one_run_are_refused():
    df = synthetic({32: (GRID, 1), 64: (GRID, 1)})
    two = pd.concat([df, df.assign(param="adamw")])
    with pytest.raises(FitInputError, match="--where param=adamw"):
        make_question("transfer", two, axis="width")
    q = make_question("transfer", df, axis="width")
    with pytest.raises(FitInputError, match="below the cheapest candidate"):
        choose(df, q, cell_candidates(df, q, {64: [0.014]}), budget_flops=1.0)


# ---------------------------------------------------------------- a sweep, its DESIGN.toml, sweep run


SPEC = 'name = "dsg"\n' + TINY_BASE_TOML + """
[[zip]]
width = [32, 64, 128]
tags = [{ lr_opt = "0.01", seed_noise = "0.05" }, { lr_opt = "0.008", seed_noise = "0.05" },
        { lr_opt = "0.0065", seed_noise = "0.05" }]
[axes]
lr = { search = "bracket", grid = [0.0025, 0.005, 0.01, 0.02, 0.04], seeds = 2 }
"""


@pytest.fixture(scope="module")
def stub_sweep(tmp_path_factory, local_ray):
    from hyperp.sweeps.runner import run_sweep

    tmp = tmp_path_factory.mktemp("design")
    (tmp / "s.toml").write_text(SPEC)
    run_sweep(tmp / "s.toml", tmp / "sw", run_fn="hyperp.sweeps.stubs:stub_run")
    return tmp


def test_design_toml_runs_only_the_chosen_runs(stub_sweep):
    from hyperp.design.candidates import SweepContext
    from hyperp.design.sweep import design_sweep, design_toml
    from hyperp.fitting.table import load_table
    from hyperp.sweeps.runner import run_sweep

    sweep = stub_sweep / "sw" / "dsg"
    before = load_table(sweep)
    d = design_sweep(sweep, "transfer", axis="width", budget_fraction=0.5, seed=0, n_sims=4)
    assert d.chosen and d.cost_flops <= 0.5 * before["flops_planned"].sum() + 1
    path = stub_sweep / "D.toml"
    path.write_text(design_toml(d, SweepContext.load(sweep)))
    res = run_sweep(path, stub_sweep / "sw", run_fn="hyperp.sweeps.stubs:stub_run")
    after = load_table(sweep)
    n = sum(len(c.settings) for c in d.chosen)
    assert res.submitted == n and len(after) == len(before) + n  # every finished run reused
    added = after[~after["run_id"].isin(before["run_id"])]
    want = sorted((s.get("width", 32), s["lr"], s["seed"]) for c in d.chosen for s in c.settings)
    assert sorted(zip(added["width"], added["lr"], added["seed"])) == want
    realised = d.question.estimate(after).width
    assert 0.5 < realised / d.predicted.width < 2  # the prediction, checked against what the runs gave


def test_design_cli_bad_input_writes_nothing(stub_sweep, tmp_path):
    from typer.testing import CliRunner

    from hyperp.cli import app

    out = tmp_path / "D.toml"
    sweep = str(stub_sweep / "sw" / "dsg")
    for args in (["--question", "transfer", "--axis", "depth", "--budget-fraction", "0.5"],
                 ["--question", "transfer", "--axis", "width"],
                 ["--question", "transfer", "--axis", "width", "--budget-flops", "10"]):
        r = CliRunner().invoke(app, ["design", sweep, *args, "-o", str(out)])
        assert r.exit_code == 2, r.output
        assert not out.exists()
    r = CliRunner().invoke(app, ["design", str(tmp_path), "--question", "transfer", "--axis", "width",
                                 "--budget-fraction", "0.5"])
    assert r.exit_code == 2 and "spec.toml" in r.output


def test_the_loss_question_is_predicts_loss():
    """The loss question's number and interval are those `hyperp predict` reports at the same target."""
    from hyperp.fitting.predict import predict
    from hyperp.fitting.table import load_table

    df = load_table(Path(__file__).parents[1] / "examples" / "ledgers" / "predict_tiny.parquet")
    q = make_question("loss", df, axis="depth", target={"depth": 4, "tokens": 2_500_000})
    p = predict(df, {"param": "hyperp", "depth": 4, "tokens": 2_500_000})
    e = q.estimate(df)
    assert q.at == pytest.approx(p.target["flops_planned"])
    assert (e.value, e.low, e.high) == pytest.approx((p.loss, p.loss_interval.low, p.loss_interval.high))


def test_sweep_run_design_rounds_report_predicted_and_realised(stub_sweep):
    """`sweep run SPEC --design ...`: the spec's runs (all reused here), then rounds of designed batches, each
    with its predicted and realised interval; bad design flags fail before anything runs."""
    import json

    from typer.testing import CliRunner

    from hyperp.cli import app

    base = ["sweep", "run", str(stub_sweep / "s.toml"), "--out", str(stub_sweep / "sw"), "--run-fn",
            "hyperp.sweeps.stubs:stub_run", "-q"]
    bad = CliRunner().invoke(app, [*base, "--design", "slope", "--budget-flops", "1e10"])
    assert bad.exit_code == 2 and "--design" in bad.output
    r = CliRunner().invoke(app, [*base, "--json", "--design", "transfer", "--axis", "width", "--budget-flops",
                                 "3e10", "--rounds", "2"])
    assert r.exit_code == 0, r.output
    history = json.loads(r.stdout[r.stdout.index("{"):])["design_rounds"]
    rounds = [rd for rd in history if "note" not in rd]  # a last note says why the rounds ended early
    assert 1 <= len(rounds) <= 2 and history[:len(rounds)] == rounds and len(history) <= len(rounds) + 1
    first = int(Path(rounds[0]["design"]).stem.split("-")[1])  # after any earlier test's rounds
    for k, rd in enumerate(rounds, first):
        assert Path(rd["design"]).name == f"round-{k}.toml" and Path(rd["design"]).is_file()
        assert rd["runs"] > 0 and rd["cost_flops"] > 0
        assert rd["realised"]["width"] > 0 and rd["predicted"]["width"] > 0
    assert sum(rd["cost_flops"] for rd in rounds) <= 3e10 * (1 + 1e-9)


def test_a_later_design_numbers_its_rounds_after_the_earlier_ones(tmp_path):
    """A second `sweep run --design` on a sweep writes round files after the first's, never over them."""
    from hyperp.design.rounds import next_round_path

    assert next_round_path(tmp_path) == tmp_path / "designs" / "round-1.toml"
    (tmp_path / "designs").mkdir()
    for name in ("round-1.toml", "round-3.toml", "round-x.toml", "round-7.json"):
        (tmp_path / "designs" / name).write_text("")
    assert next_round_path(tmp_path) == tmp_path / "designs" / "round-4.toml"


def test_a_second_design_writes_new_round_files_and_keeps_the_first(stub_sweep):
    """Two `--design` invocations on one sweep: the second's rounds are numbered after the first's, whose files
    stay as they were; the echo names each round's file."""
    from hyperp.design.rounds import design_rounds

    sweep = stub_sweep / "sw" / "dsg"
    paths, texts, said = [], [], []
    for _ in range(2):
        history = design_rounds(sweep, "transfer", lambda p: None, rounds=1, budget_flops=3e10, echo=said.append,
                                axis="width", by=("param",))
        paths.append(Path(history[0]["design"]))
        texts.append(paths[-1].read_text())
    first, second = (int(p.stem.split("-")[1]) for p in paths)
    assert second == first + 1
    assert paths[0].read_text() == texts[0]  # the first invocation's round, untouched by the second
    assert said[0].startswith(f"round 1 ({paths[0].name}):") and said[1].startswith(f"round 1 ({paths[1].name}):")


def test_rounds_whose_share_of_the_budget_buys_no_run_end_on_a_note(stub_sweep):
    """A round whose budget is below the cheapest candidate ends the rounds with a note naming the real flag,
    rather than an error after the spec (and any earlier round) ran; nothing of that round runs."""
    from hyperp.design.rounds import design_rounds

    designs = stub_sweep / "sw" / "dsg" / "designs"  # earlier tests' rounds may have written some

    def written():
        return sorted((p.name, p.stat().st_mtime_ns) for p in designs.glob("*"))

    ran, said, before = [], [], written()
    history = design_rounds(stub_sweep / "sw" / "dsg", "transfer", ran.append, rounds=2, budget_flops=10.0,
                            echo=said.append, axis="width", by=("param",))
    assert not ran and written() == before
    assert len(history) == 1 and history[0]["round"] == 1 and set(history[0]) == {"round", "note"}
    assert "--budget-flops (5 of 10 FLOPs left)" in history[0]["note"] and "--budget " not in history[0]["note"]
    assert said == [f"round 1: {history[0]['note']}"]


def test_cel_without_the_method_in_the_comparison_is_one_line_and_unanswered():
    df = synthetic({32: (GRID, 1), 64: (GRID, 1), 128: (GRID, 1)})
    two = pd.concat([df, df.assign(param="muon")])
    q = make_question("cel", two, axis="width", method="hyperp", baseline="muon", at=1e12)
    only_baseline = two[two["param"] == "muon"]  # compare_methods has no row for hyperp
    with pytest.raises(FitInputError, match="param=hyperp: .* expected 1") as e:
        q._cel(only_baseline, 20, 0)
    assert "\n" not in str(e.value)
    assert not q.estimate(only_baseline).answered


def test_backtest_main_records_a_case_once_whichever_step_fails(tmp_path, monkeypatch, capsys):
    """Case a passes both steps, b's backtest fails after its calibration, c's calibration fails: one
    calibration record each (b's and c's the error), one backtest record (a's), and no line printed twice."""
    import json

    from hyperp.design import backtest as bt

    cases = [bt.Case(s, "transfer", "width", {}) for s in ("a", "b", "c")]
    monkeypatch.setattr(bt, "shipped_cases", lambda root: cases)
    monkeypatch.setattr(bt, "case_table", lambda root, case: (case.study, None))

    def calibrate(runs, q):
        if runs == "c":
            raise FitInputError("c: no calibration")
        return {"ratio": 1.0}

    def backtest_case(root, case, n_random):
        if case.study == "b":
            raise FitInputError("b: no backtest")
        return {"study": case.study, "rounds_designer": []}

    monkeypatch.setattr(bt, "calibrate", calibrate)
    monkeypatch.setattr(bt, "backtest_case", backtest_case)
    bt.main([str(tmp_path), "-o", str(tmp_path / "out")])
    calib = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert [(c["study"], c.get("error")) for c in calib] == [("a", None), ("b", "b: no backtest"),
                                                             ("c", "c: no calibration")]
    assert json.loads((tmp_path / "out" / "backtest.json").read_text()) == [{"study": "a", "rounds_designer": []}]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and len(set(lines)) == 4 and lines[1] == '{"study": "a"}'


@pytest.mark.parametrize("flags, names", [
    (["--axis", "width", "--budget-flops", "1e10", "--where", "param"], "filter 'param'"),
    (["--budget-flops", "1e10"], "--axis"),
    (["--axis", "width", "--budget-flops", "0"], "--budget-flops"),
    (["--axis", "width", "--target-width", "-0.1"], "--target-width"),
    (["--axis", "width", "--budget-flops", "nan"], "--budget-flops"),
    (["--axis", "width", "--design", "exponent", "--budget-flops", "1e10"], "--axis"),
    (["--axis", "width", "--design", "ab", "--at", "64", "--budget-flops", "1e10"], "--baseline"),
    (["--axis", "width", "--design", "cel", "--baseline", "muon", "--budget-flops", "1e10"], "--at"),
])
def test_sweep_run_design_flags_are_checked_before_the_spec_runs(tmp_path, flags, names):
    from typer.testing import CliRunner

    from hyperp.cli import app

    (tmp_path / "s.toml").write_text(SPEC)
    design = [] if "--design" in flags else ["--design", "transfer"]
    r = CliRunner().invoke(app, ["sweep", "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "sw"),
                                 "--run-fn", "hyperp.sweeps.stubs:stub_run", "-q", *design, *flags])
    assert r.exit_code == 2 and r.output.startswith("error: ") and names in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "sw").exists()  # the spec did not run: no sweep directory


# ---------------------------------------------------------------- the ab question


def two_arms(base: dict, variant: dict, gap: float = 0.03, sd: float = 0.02) -> pd.DataFrame:
    """Two arms of a column `fused` (text values, as check ab compares them): the variant's loss is the
    baseline's curve plus `gap` nats."""
    a = synthetic(base, sd=sd, seed=0).assign(fused="False")
    b = synthetic(variant, sd=sd, seed=1).assign(fused="True")
    b["val_loss"] += gap
    b["run_id"] = "v" + b["run_id"]
    return pd.concat([a, b], ignore_index=True)


def test_the_ab_question_is_check_abs_interval_at_its_scale():
    from hyperp.checks.ab import check_ab

    df = two_arms({32: (GRID, 2), 64: (GRID, 2)}, {32: (GRID, 2), 64: (GRID, 1)})
    q = make_question("ab", df, axis="width", at=64, method_col="fused", baseline="False")
    assert (q.method, q.cell_cols) == ("True", ("fused", "width"))
    assert q.command == "hyperp check ab --col fused --baseline False --variant True --where width=64"
    (g,) = check_ab(df[df["width"] == 64], "fused", "False", "True").groups
    e = q.estimate(df)
    assert (e.value, e.low, e.high) == pytest.approx((g.delta, g.interval.low, g.interval.high))
    assert e.value == pytest.approx(0.03, abs=0.03)  # the planted gap, within a few standard errors
    # the other scale's runs do not enter it
    assert q.estimate(df[df["width"] == 64]) == e
    assert q.readiness(df) == 2 * 3  # two cells at width 64, each counted up to 3 LRs


def test_ab_runs_go_to_the_sparse_arm_at_the_read_scale():
    """The baseline has 6 LRs x 3 seeds at width 64, the variant 3 LRs x 1 seed: the variant's vertex sets
    the interval, so the first run added is the variant's; runs at another width never narrow it."""
    df = two_arms({32: (GRID, 3), 64: (GRID, 3)}, {32: (GRID, 3), 64: ([0.005, 0.01, 0.02], 1)}, sd=0.03)
    q = make_question("ab", df, axis="width", at=64, method_col="fused", baseline="False")
    cands = []
    for arm in ("False", "True"):
        for w in (32, 64):
            for lr in (0.0071, 0.014):
                row = {"param": "hyperp", "fused": arm, "width": w, "lr": lr, "seed": 9, "val_loss": math.nan,
                       "status": "completed", "flops": 1e9, "run_id": f"c{arm}{w}-{lr}"}
                cands.append(Candidate("lr", f"{arm} width={w}: lr {lr:g}", pd.DataFrame([row]), 1e9, [{}]))
    d = choose(df, q, cands, budget_flops=3e9, seed=0)
    assert d.chosen and d.chosen[0].rows["fused"].iloc[0] == "True"
    assert all(c.rows["width"].iloc[0] == 64 for c in d.chosen)
    assert d.predicted.width < d.current.width


def test_ab_candidates_stay_at_the_read_scale():
    """The sweep's own candidates for an ab question: seeds and LR points in both arms at the scale it reads,
    none in a third value of the column, no new scale (neither can narrow the difference it reads)."""
    from hyperp.design.candidates import auto_candidates

    class Ctx:  # the sweep context's one use here: a template run's settings
        def settings(self, row):
            return {"fused": row["fused"], "width": int(row["width"])}

    df = two_arms({32: (GRID, 2), 64: (GRID, 2)}, {32: (GRID, 2), 64: (GRID, 1)})
    third = df[df["fused"] == "True"].assign(fused="other", run_id=lambda d: "o" + d["run_id"])  # a third value
    df = pd.concat([df, third], ignore_index=True)
    q = make_question("ab", df, axis="width", at=64, method_col="fused", baseline="False", method="True")
    cands = auto_candidates(df, q, fit_model(df, q), Ctx())
    assert {c.kind for c in cands} == {"seeds", "lr", "replicate"}
    assert {(s["fused"], s["width"]) for c in cands for s in c.settings} == {("False", 64), ("True", 64)}
    # a replicate is one new seed at each LR of the cell's fitted window, its seeds apart from the seed batches'
    for c in (c for c in cands if c.kind == "replicate"):
        assert len({s["seed"] for s in c.settings}) == 1 and len(c.settings) >= 3
        assert len({s["lr"] for s in c.settings}) == len(c.settings)
    for arm in ("False", "True"):  # within a cell no run of a replicate repeats a seed batch's (lr, seed)
        runs = {k: [(s["lr"], s["seed"]) for c in cands if c.kind == k for s in c.settings if s["fused"] == arm]
                for k in ("seeds", "replicate")}
        assert runs["replicate"] and not set(runs["seeds"]) & set(runs["replicate"])


@pytest.mark.parametrize("kwargs, match", [
    ({"axis": "width", "at": 48, "baseline": "False"}, "--at: .* expected one of \\[32.0, 64.0\\]"),
    ({"axis": "width", "baseline": "False"}, "--at: the ab question reads"),
    ({"axis": "width", "at": 64, "baseline": "off"}, "--baseline: expected one of \\['False', 'True'\\]"),
    ({"axis": "width", "at": 64, "baseline": "False", "method": "maybe"},
     "--method: expected one of \\['True'\\] \\(the variant\\)"),
])
def test_an_ab_question_the_table_cannot_pose_is_one_line(kwargs, match):
    df = two_arms({32: (GRID, 1), 64: (GRID, 1)}, {32: (GRID, 1), 64: (GRID, 1)})
    with pytest.raises(FitInputError, match=match) as e:
        make_question("ab", df, method_col="fused", **kwargs)
    assert "\n" not in str(e.value)
    one_scale = df[df["width"] == 64]  # one scale: --at may be left out
    assert make_question("ab", one_scale, axis="width", method_col="fused", baseline="False").at == 64


def test_unanswered_simulations_count_as_a_doubled_width_not_a_mode_switch():
    """Per simulation: answered before and after, the narrowing; left unanswered, its width lost; newly
    answered, its new width gained; unanswered either way, nothing."""
    from hyperp.design.choose import _narrowing

    inf = math.inf
    got = _narrowing(np.array([0.5, 0.5, inf, inf]), np.array([0.3, inf, 0.4, inf]))
    assert got.tolist() == pytest.approx([0.2, -0.5, 0.4, 0.0])
