"""Sweep specs: parsing, validation errors that name the field, expansion, run identity, LR bracketing logic.

No Ray here: everything is checked before any run starts.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hyperp.cli.sweep import app
from hyperp.identity import RESULT_NEUTRAL_FIELDS, RESULTS_VERSION
from hyperp.sweeps.lr_search import bracket_state
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.search import BracketSearch
from hyperp.sweeps.spec import SpecError, loads_spec
from hyperp.config import RunConfig
from hyperp.trainer.metrics import training_flops
from hyperp.trainer.model import Transformer

BASE = 'name = "t"\n' + TINY_BASE_TOML


def spec(extra: str, base: str = BASE):
    return loads_spec(base + extra)


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        make_plan(loads_spec(text))
    return e.value


# ---------------------------------------------------------------- validation names the field


def test_typo_in_axis_names_field_and_suggests():
    e = error(BASE + "[axes]\ndpeth = [1, 2]\n")
    assert e.field == "axes.dpeth"
    assert "did you mean 'depth'" in str(e) and "known fields" in str(e) and "aspect_ratio" in str(e)


def test_typo_in_base_and_top_level():
    e = error(BASE.replace("head_dim", "head_dimm"))
    assert e.field == "base.head_dimm" and "head_dim" in str(e)
    e = error("max_retry = 2\n" + BASE)
    assert e.field == "max_retry" and "max_retries" in str(e)
    e = error(BASE + "[resources]\ncpus = 1\nmax_retries = 2\n")
    assert e.field == "resources.max_retries" and "top-level key" in str(e)


def test_wrong_type_names_field():
    e = error(BASE + '[axes]\ndepth = [1, "two"]\n')
    assert e.field == "axes.depth" and "expected an integer" in str(e) and "'two'" in str(e)
    e = error(BASE + "[axes]\nlr = 0.01\n")
    assert e.field == "axes.lr" and "list of values" in str(e)
    e = error(BASE + "[resources]\ncpus = \"one\"\n")
    assert e.field == "resources.cpus"


def test_empty_axis_names_field():
    e = error(BASE + "[axes]\nlr = []\n")
    assert e.field == "axes.lr" and "empty axis" in str(e)
    e = error(BASE + "[[zip]]\ndepth = []\ntokens = []\n")
    assert e.field == "zip[0].depth" and "empty axis" in str(e)


def test_unknown_scheme_lists_allowed_values():
    e = error(BASE + '[axes]\nparam = ["hyperp", "mup"]\n')
    assert e.field == "axes.param"
    assert "'mup'" in str(e) and "hyperp, muonh, muon, adamw" in str(e)
    e = error(BASE + '[axes]\nlr = { search = "grid", low = 0.001, high = 0.1 }\n')
    assert e.field == "axes.lr.search" and "bracket, optuna" in str(e)
    e = error(BASE + '[axes]\nlr = { search = "bracket", grid = [0.01, 0.02], max_extnd = 2 }\n')
    assert e.field == "axes.lr.max_extnd" and "max_extend" in str(e)
    e = error(BASE + '[axes]\nlr = { search = "bracket", grid = [0.01, 0.02], seeds = 0 }\n')
    assert e.field == "axes.lr.seeds" and "must be > 0" in str(e)


def test_invalid_resolved_run_names_field():
    e = error(BASE + "[axes]\naspect_ratio = [32, 24]\n")  # 24 is not a multiple of head_dim 16
    assert e.field == "width" and "aspect_ratio=24" in str(e)


def test_zip_and_override_validation():
    e = error(BASE + "[[zip]]\ndepth = [1, 2]\ntokens = [4096]\n")
    assert e.field == "zip[0]" and "equal lengths" in str(e)
    e = error(BASE + "[axes]\ndepth = [1, 2]\n[[zip]]\ndepth = [1, 2]\ntokens = [4096, 8192]\n")
    assert e.field == "zip[0].depth"
    e = error(BASE + '[axes]\nparam = ["hyperp"]\n[[override]]\nwhere = { param = "adamw" }\nset = { lr = 0.001 }\n')
    assert e.field == "override[0].where" and "matches no run" in str(e)
    e = error(BASE + '[[override]]\nwhere = { param = "adamW" }\nset = { lr = 0.001 }\n')
    assert e.field == "override[0].where.param"


def test_bad_spec_fails_before_any_run(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "[axes]\ndpeth = [1, 2]\n")
    res = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "sweeps"), "--quiet"])
    assert res.exit_code == 2
    assert "axes.dpeth" in res.output
    assert not (tmp_path / "sweeps").exists()  # nothing was created, nothing started


# ---------------------------------------------------------------- expansion


def test_cross_product_zip_and_override():
    s = spec("""
[axes]
param = ["hyperp", "adamw"]
lr = [0.01, 0.02]
[[zip]]
depth = [1, 2]
tokens = [4096, 8192]
[[override]]
where = { param = "adamw" }
set = { lr = [0.001, 0.003, 0.01], weight_decay = 0.0 }
""")
    plan = make_plan(s)
    got = sorted((r.config.param, r.config.depth, r.config.tokens, r.config.lr, r.config.weight_decay)
                 for r in plan.runs)
    want = sorted([("hyperp", d, t, lr, 0.1) for d, t in [(1, 4096), (2, 8192)] for lr in (0.01, 0.02)]
                  + [("adamw", d, t, lr, 0.0) for d, t in [(1, 4096), (2, 8192)] for lr in (0.001, 0.003, 0.01)])
    assert got == want
    assert len({r.run_id for r in plan.runs}) == len(want) == 10
    assert {"param", "depth", "tokens", "lr", "weight_decay"} <= set(plan.varying)
    # each (param, depth) is one cell: its runs differ only in lr
    assert len({r.cell_id for r in plan.runs}) == 4


def test_tokens_per_param_follows_n():
    plan = make_plan(spec("[axes]\ndepth = [1, 2]\ntokens_per_param = [5, 10]\n"))
    assert len(plan.runs) == 4
    for r in plan.runs:
        model = Transformer(r.config)  # a real model: count independently of the planner's meta-device count
        n = sum(p.numel() for p in model.parameters())
        want = round(r.info["tokens_per_param"] * n / 512) * 512
        assert r.config.tokens == want
        assert r.info["n_params"] == n
        assert r.info["flops_planned"] == pytest.approx(
            training_flops(type("C", (), {"active_matrix": n - model.embed.weight.numel()
                                          - sum(p.numel() for p in model.parameters() if p.ndim < 2)})(),
                           r.config, want))


def test_auto_checkpoint_every_and_explicit():
    plan = make_plan(spec("[axes]\ntokens = [4096, 51200]\n"))
    assert sorted(r.config.checkpoint_every for r in plan.runs) == [1, 10]  # ceil(8/10), ceil(100/10)
    plan = make_plan(loads_spec(BASE.replace("tokens = 4096", "tokens = 4096\ncheckpoint_every = 3")))
    assert plan.runs[0].config.checkpoint_every == 3


def test_run_id_is_hash_of_resolved_config_and_results_version():
    s = spec("[axes]\nlr = [0.01, 0.02]\n")
    a, b = make_plan(s).runs, make_plan(spec("[axes]\nlr = [0.02, 0.01]\n")).runs
    assert {r.run_id for r in a} == {r.run_id for r in b}  # order does not matter, only the config
    r = a[0]
    # the documented formula (hyperp/identity.py): result-changing fields that differ from their default
    defaults = RunConfig().to_dict()
    fields = {k: v for k, v in r.config.to_dict().items() if k not in RESULT_NEUTRAL_FIELDS and v != defaults[k]}
    payload = {"id_of": "run", "results_version": RESULTS_VERSION, "version_tag": "", "config": fields}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    assert r.run_id == expected and "depth" in fields and "lr" in fields
    cfg = RunConfig.from_dict(json.loads(r.config.to_json()))
    assert cfg == r.config
    tagged = make_plan(loads_spec('version_tag = "data-v2"\n' + BASE + "[axes]\nlr = [0.01, 0.02]\n")).runs
    assert not {t.run_id for t in tagged} & {x.run_id for x in a}


def test_search_specs_parse():
    plan = make_plan(spec('[axes]\nseed = [0, 1]\nlr = { search = "bracket", low = 0.001, high = 0.1, points = 3 }\n'))
    assert len(plan.searches) == 2
    assert plan.searches[0].search.grid == (0.001, 0.01, 0.1)
    assert sorted(r.config.lr for r in plan.runs) == [0.001, 0.001, 0.01, 0.01, 0.1, 0.1]
    plan = make_plan(spec('[axes]\nlr = { search = "optuna", trials = 5, low = 0.001, high = 0.1 }\n'))
    assert plan.runs == [] and plan.searches[0].search.trials == 5
    e = error(BASE + '[axes]\nlr = { search = "optuna", trials = 5, low = 0.1, high = 0.01 }\n')
    assert e.field == "axes.lr.high"


def test_tokens_co_scaled_from_the_proxy_follow_the_authors_rule():
    """tokens_per_param = "proxy": T = T0 N / N0 (ArchScale's pretrain.py), N0 the run at base_depth; the run at
    the proxy's depth trains on T0 itself."""
    from hyperp.trainer.metrics import param_counts

    proxy = 'peak_tflops = 1.0\nbase_depth = 1\nbase_tokens = 65536\ntokens_per_param = "proxy"\n'
    base = 'tokens_per_param_basis = "non_embedding"\n' + BASE.replace("peak_tflops = 1.0\n", proxy)
    plan = make_plan(spec("[axes]\ndepth = [1, 2, 3]\n", base))
    runs = sorted(plan.runs, key=lambda r: r.config.depth)
    n = [param_counts(r.config).non_embedding for r in runs]
    assert runs[0].config.tokens == 65536
    for r, ni in zip(runs, n):
        assert abs(r.config.tokens - 65536 * ni / n[0]) <= r.config.batch_tokens / 2  # rounded to whole batches
    assert runs[2].config.tokens > runs[1].config.tokens > runs[0].config.tokens
    assert error(base.replace('"proxy"', '"proxi"')).field == "base.tokens_per_param"


# ---------------------------------------------------------------- bracketing rule (pure)


def _curve(lr_opt: float, diverge_above: float = math.inf):
    def lookup(lr: float):
        if lr > diverge_above:
            return {"status": "diverged", "val_loss": math.nan}
        return {"status": "completed", "val_loss": 1 + (math.log(lr) - math.log(lr_opt)) ** 2}
    return lookup


def test_bracket_extends_up_until_bracketed():
    s = bracket_state(BracketSearch(grid=(1e-4, 3e-4, 1e-3), max_extend=5), _curve(1e-2))
    assert s.done and s.bracketed and s.extensions == 3
    assert s.grid == pytest.approx([1e-4, 3e-4, 1e-3, 1e-3 * (10 / 3), 1e-3 * (10 / 3) ** 2, 1e-3 * (10 / 3) ** 3],
                                   rel=1e-5)
    assert s.best_lr == pytest.approx(1e-3 * (10 / 3) ** 2, rel=1e-5)


def test_bracket_extends_down_and_treats_divergence_as_too_high():
    s = bracket_state(BracketSearch(grid=(0.1, 0.2, 0.4), max_extend=4), _curve(0.02, diverge_above=0.3))
    assert s.bracketed and s.grid[0] == pytest.approx(0.0125) and s.best_lr == pytest.approx(0.025)
    everything_diverges = bracket_state(BracketSearch(grid=(0.1, 0.2), max_extend=2), _curve(1.0, diverge_above=0))
    assert everything_diverges.done and not everything_diverges.bracketed
    assert everything_diverges.grid == pytest.approx([0.025, 0.05, 0.1, 0.2])  # went down twice, then stopped


def test_bracket_search_and_fit_agree_when_the_best_run_is_interior_but_the_fit_is_not():
    """An interior best run on a curve the parabola cannot locate (a kink: flat on one side): the old rule
    called it bracketed while `fit lr` said not; the search now stops unbracketed with the fit's reason."""
    def kink(lr: float):
        u = math.log(lr / 0.01)
        return {"status": "completed", "val_loss": 1.0 + (0.3 * u if u > 0 else 1e-4 * u * u) + 1e-5 * math.sin(40 * u)}
    lrs = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032)
    s = bracket_state(BracketSearch(grid=lrs, max_extend=3), kink)
    from hyperp.fitting.lr import fit_lr_curve
    opt = fit_lr_curve(list(lrs), [kink(lr)["val_loss"] for lr in lrs], n_boot=0)
    assert s.done and s.bracketed == opt.bracketed and s.reason == opt.reason


def test_a_two_point_grid_extends_toward_its_better_edge_only():
    """The issue's case: a 2-point grid whose best run is its top (optimum 0.08 above 0.001-0.002) used to
    extend below the grid first. Every added point now lies beyond the better edge, until bracketed."""
    up = bracket_state(BracketSearch(grid=(0.001, 0.002), max_extend=10), _curve(0.08))
    assert up.bracketed and up.grid[0] == 0.001 and up.grid == sorted(up.grid)
    assert up.grid == pytest.approx([0.001 * 2 ** k for k in range(len(up.grid))])  # doubling upward only
    assert up.best_lr == pytest.approx(0.064)  # the grid point nearest 0.08
    down = bracket_state(BracketSearch(grid=(0.001, 0.002), max_extend=10), _curve(1e-4))
    assert down.bracketed and down.grid[-1] == 0.002 and min(down.grid) < 1e-4


def test_an_unbracketed_end_names_its_edge_and_a_grid_that_reaches_past_it():
    high = bracket_state(BracketSearch(grid=(0.001, 0.002), max_extend=3), _curve(0.08))
    assert high.done and not high.bracketed and high.edge == "high" and high.best_lr == 0.016
    assert high.next_grid[0] < high.best_lr < high.next_grid[-1] and max(high.next_grid) > 0.08
    low = bracket_state(BracketSearch(grid=(0.001, 0.002), max_extend=3), _curve(1e-5))
    assert low.edge == "low" and min(low.next_grid) < 1e-5 * 10 and low.best_lr in low.next_grid
    from hyperp.cli.sweep import unbracketed_hint
    line = unbracketed_hint({"reason": high.reason, "best_lr": high.best_lr, "edge": high.edge,
                             "next_grid": high.next_grid})
    assert "high edge" in line and "try grid = [0.008, 0.016, 0.032, 0.064, 0.128]" in line


def _well(lr_opt: float, width: float):
    """A loss well that is a parabola in ln(lr) only near its minimum: a coarse grid cannot fit it."""
    def lookup(lr: float):
        u = math.log(lr / lr_opt) / width
        return {"status": "completed", "val_loss": 2 - math.exp(-u * u / 2)}
    return lookup


def test_an_interior_best_with_a_poor_fit_is_refined_around_it():
    from hyperp.fitting.lr import bracket_verdict, fit_lr_curve

    grid = tuple(0.01 * 4.0 ** k for k in range(-3, 4))
    well = _well(0.013, 0.5)
    coarse = bracket_verdict(list(grid), [well(lr)["val_loss"] for lr in grid])
    assert not coarse.bracketed and coarse.reason == "poor fit" and coarse.direction == 0
    s = bracket_state(BracketSearch(grid=grid, max_extend=3), well)
    added = sorted(set(s.grid) - set(grid))
    assert s.bracketed and added and all(0.01 / 4 < lr < 0.01 * 4 for lr in added)  # between the best's neighbours
    final = fit_lr_curve(s.grid, [well(lr)["val_loss"] for lr in s.grid], n_boot=0)
    assert final.bracketed and abs(math.log(final.lr_opt / 0.013)) < 0.1


def test_the_search_judges_on_the_rows_fit_lr_pools():
    """The cell's repeats (its best LR with other seeds) enter the search's verdict as they enter `fit lr`'s:
    on noisy cells the two always agree, and the repeats do change some verdicts."""
    import numpy as np

    from hyperp.fitting.lr import fit_lr_curve

    rng = np.random.default_rng(7)
    changed = 0
    for _ in range(30):
        noise = {lr: rng.normal(0, 0.03) for lr in (0.0025, 0.005, 0.01, 0.02, 0.04)}
        lookup = lambda lr, n=noise: {"status": "completed", "val_loss": 1 + 0.05 * math.log(lr / 0.01) ** 2 + n[lr]}
        alone = bracket_state(BracketSearch(grid=tuple(noise), max_extend=0), lookup)
        repeats = [{"lr": alone.best_lr, "status": "completed", "val_loss": alone.best + d}
                   for d in rng.normal(0.05, 0.03, 2)]
        pooled = bracket_state(BracketSearch(grid=tuple(noise), max_extend=0), lookup, repeats)
        rows = [(lr, lookup(lr)["val_loss"]) for lr in pooled.grid] + [(r["lr"], r["val_loss"]) for r in repeats]
        fit = fit_lr_curve([lr for lr, _ in rows], [v for _, v in rows], n_boot=0)
        assert pooled.bracketed == fit.bracketed
        changed += pooled.bracketed != alone.bracketed
    assert changed > 0


def test_bracket_stops_at_max_extend_and_waits_for_pending():
    s = bracket_state(BracketSearch(grid=(1e-4, 1e-3), max_extend=2), _curve(10.0))
    assert s.done and not s.bracketed and s.extensions == 2 and "max_extend=2" in s.reason
    pending = bracket_state(BracketSearch(grid=(1e-4, 1e-3), max_extend=2), lambda lr: None)
    assert not pending.done and pending.pending == [1e-4, 1e-3]


def test_plan_cli_json_lists_runs_flops_and_cost(tmp_path: Path):
    f = tmp_path / "s.toml"
    f.write_text(BASE + "[axes]\ndepth = [1, 2]\nlr = [0.01, 0.02]\n")
    res = CliRunner().invoke(app, ["plan", str(f), "--json", "--throughput", "1e9", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["n_runs"] == 4 and out["throughput_flops_per_s"] == 1e9
    # no finished runs to measure the start-up on: it is timed by a probe (a fresh Python importing torch)
    startup = out["startup_seconds_per_run"]
    assert startup > 0 and out["startup_source"].startswith("probe")
    for r in out["runs"]:
        cfg = RunConfig.from_dict({"depth": r["depth"], "aspect_ratio": 32, "head_dim": 16, "seq_len": 32,
                                   "batch_tokens": 512, "tokens": 4096, "val_tokens": 512})
        with torch.device("meta"):
            model = Transformer(cfg)
        matrix = sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith("embed."))
        flops = 6 * matrix * 4096 + 12 * cfg.depth * cfg.d_model * cfg.seq_len * 4096
        assert r["flops"] == pytest.approx(flops)
        assert r["est_seconds"] == pytest.approx(flops / 1e9 + startup)
    assert out["total_flops"] == pytest.approx(sum(r["flops"] for r in out["runs"]))
    assert out["est_run_seconds"] == pytest.approx(sum(r["est_seconds"] for r in out["runs"]))
    table = CliRunner().invoke(app, ["plan", str(f), "--throughput", "1e9", "--out", str(tmp_path)])
    assert table.exit_code == 0 and all(r["run_id"] in table.output for r in out["runs"])
    assert not (tmp_path / "t").exists()  # planning runs nothing and writes nothing


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].joinpath("examples").rglob("*.toml")),
                         ids=lambda p: p.name)
def test_example_specs_are_valid(path: Path):
    plan = make_plan(loads_spec(path.read_text(), source=str(path)))
    assert plan.runs or plan.searches


def test_explicit_runs_join_the_grid_over_base_untouched_by_overrides(tmp_path):
    """[[runs]] (what `hyperp design` writes): each a point of [base] plus its fields, after the overrides,
    which do not apply to it; a run equal to a grid run is that run (one id)."""
    from hyperp.sweeps.plan import make_plan
    from hyperp.sweeps.spec import loads_spec
    from hyperp.sweeps.stubs import TINY_BASE_TOML

    spec = loads_spec('name = "x"\n' + TINY_BASE_TOML + "[axes]\nlr = [0.01, 0.02]\n"
                      "[[override]]\nwhere = { lr = 0.02 }\nset = { seed = 7 }\n"
                      "[[runs]]\nlr = 0.02\nseed = 3\n[[runs]]\nlr = 0.01\n")
    runs = {(r.config.lr, r.config.seed) for r in make_plan(spec).runs}
    assert runs == {(0.01, 0), (0.02, 7), (0.02, 3)}  # the second [[runs]] is the grid's lr=0.01 run


@pytest.mark.parametrize("body, where", [("[[runs]]\nlr = [0.01, 0.02]\n", "runs[0].lr"),
                                         ("[[runs]]\ndpeth = 2\n", "runs[0].dpeth"),
                                         ("runs = 3\n", "runs")])
def test_bad_explicit_runs_name_the_field(body, where):
    from hyperp.sweeps.spec import SpecError, loads_spec
    from hyperp.sweeps.stubs import TINY_BASE_TOML

    with pytest.raises(SpecError) as e:
        loads_spec('name = "x"\n' + body + TINY_BASE_TOML)
    assert e.value.field == where
