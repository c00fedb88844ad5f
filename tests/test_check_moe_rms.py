"""The MoE output-RMS check (SqrtGate's mechanism, method.md section 5) against independent facts: identical
experts under each gating, the hook against the block's own branch output and a direct computation, the
verdict earned by intervals on synthetic seeds, and bad input as one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hyperp.checks.coord import BAND
from hyperp.checks.moe_rms import (FAIL, INCONCLUSIVE, INFORMATIONAL, PASS, band_verdict, check_moe_rms, judge_gate,
                                   measure, moe_layers, ratio_estimate)
from hyperp.cli import app
from hyperp.config import RunConfig
from hyperp.errors import InputError
from hyperp.trainer.moe import MoE

TINY = {"width": 32, "head_dim": 16, "seq_len": 32, "batch_tokens": 256, "val_tokens": 512}


def moe_cfg(top_k: int, sqrt_gate: bool, sparsity: int = 2) -> RunConfig:
    return RunConfig(width=32, head_dim=16, moe_every=1, top_k=top_k, sparsity=sparsity, sqrt_gate=sqrt_gate,
                     aux_gamma=0.0)


def identical_experts(top_k: int, sqrt_gate: bool) -> MoE:
    torch.manual_seed(0)
    layer = MoE(moe_cfg(top_k, sqrt_gate))  # float32: the grouped matmuls the trainer runs
    with torch.no_grad():
        for bank in layer.banks:
            bank.copy_(bank[:1].expand_as(bank))  # every expert = expert 0
    return layer


def one_expert(layer: MoE, x: torch.Tensor) -> torch.Tensor:
    """Expert 0's SwiGLU written out: down (silu(gate x) * up x)."""
    g, u, d = (b[0] for b in layer.banks)
    return (F.silu(x @ g.T) * (x @ u.T)) @ d.T


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_identical_experts_classic_gives_the_expert_and_sqrt_gate_the_sum_of_root_gates(top_k):
    x = torch.randn(64, 32)
    close = {"rtol": 1e-5, "atol": 1e-6}
    expert = one_expert(identical_experts(top_k, False), x)
    # classic: the gates sum to 1, so k copies of one expert mix back to it exactly
    torch.testing.assert_close(identical_experts(top_k, False)(x), expert, **close)
    # SqrtGate: sum_i sqrt(g_i) times the expert, g = softmax over the top-k router logits
    layer = identical_experts(top_k, True)
    gates = (x @ layer.router.weight.T).topk(top_k, dim=-1).values.softmax(dim=-1)
    factor = gates.sqrt().sum(-1, keepdim=True)
    torch.testing.assert_close(layer(x), factor * expert, **close)
    assert (factor <= math.sqrt(top_k) * (1 + 1e-6)).all()  # Cauchy-Schwarz: sum sqrt(g) <= sqrt(k sum g) = sqrt(k)
    # uniform gates (a zero router: every logit 0) reach the bound: exactly sqrt(k) times the expert
    with torch.no_grad():
        layer.router.weight.zero_()
    torch.testing.assert_close(layer(x), math.sqrt(top_k) * expert, **close)


def test_hook_reads_the_moe_branch_output():
    cfg = RunConfig(depth=2, moe_every=1, top_k=2, sparsity=2, **TINY)
    torch.manual_seed(1)
    from hyperp.trainer.model import Transformer  # noqa: PLC0415

    model = Transformer(cfg)
    model.init_weights(0.02, 0.02)
    x = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len))
    got = measure(model, [(x, x)])
    assert len(moe_layers(model)) == 2 and len(got["rms"]) == 2
    # the block's own stats path: rms_mlp per block (branch_stats of the MLP output)
    stats: dict = {}
    with torch.no_grad():
        model(x, x, stats)
    assert got["rms"] == pytest.approx(stats["rms_mlp"], rel=1e-5)
    # a direct computation: the residual stream by hand, the MoE layer on the normalised stream
    with torch.no_grad():
        h, direct, direct_in, gsq = model.embed(x), [], [], []
        for block in model.blocks:
            h = h + block.alpha * block.attn(block.attn_norm(h), model.rope)
            inp = block.mlp_norm(h)
            m = block.mlp(inp)
            direct.append(m.pow(2).mean().sqrt().item())
            direct_in.append(inp.pow(2).mean().sqrt().item())
            logits = inp.reshape(-1, 32) @ block.mlp.router.weight.T
            gsq.append(logits.topk(2, dim=-1).values.softmax(-1).pow(2).sum(-1).mean().item())
            h = h + block.alpha * m
    assert got["rms"] == pytest.approx(direct, rel=1e-5)
    assert got["input_rms"] == pytest.approx(direct_in, rel=1e-5)
    assert got["gate_sq"] == pytest.approx(gsq, rel=1e-5) and all(0.5 <= g <= 1 for g in gsq)


def ratios(sqrt_gate, init, after, spread=0.05, seeds=4):
    """Synthetic per-seed ratios around `init` and `after` (a fixed symmetric pattern in ln space)."""
    pattern = [-1.0, -0.3, 0.3, 1.0, 0.0, 0.5, -0.5][:seeds]
    return [ratio_estimate(sqrt_gate, m, [c * math.exp(spread * p) for p in pattern], 1, 8)
            for m, c in (("init", init), ("after", after))]


def test_verdict_pass_fail_inconclusive_are_earned_by_the_interval():
    verdict, decided, to_decide = band_verdict(ratios(True, 1.0, 1.1), 4)
    assert verdict == PASS and not to_decide
    # a point inside the band with an interval reaching out of it is open, and says how many seeds would close it
    verdict, decided, to_decide = band_verdict(ratios(True, 1.0, 1.3, spread=0.2), 4)
    assert verdict == INCONCLUSIVE and decided.moment == "after" and decided.high > BAND and "--seeds" in to_decide
    verdict, decided, _ = band_verdict(ratios(True, 1.0, 0.35), 4)
    assert verdict == FAIL and decided.moment == "after" and decided.high < 1 / BAND and decided.direction == "falls"
    verdict, decided, to_decide = band_verdict(ratios(True, 1.0, 1.0, seeds=1), 1)
    assert verdict == INCONCLUSIVE and decided.low is None and "--seeds 3" in to_decide  # one seed never passes
    nan = [ratio_estimate(True, "after", [1.0, math.nan, 1.1], 1, 8)] + ratios(True, 1.0, 1.0)[:1]
    assert band_verdict(nan, 3)[0] == INCONCLUSIVE
    # classic gating is the contrast: informational, with what the same band would say
    g = judge_gate(False, ratios(False, 0.35, 0.5), 4, 10)
    assert g.verdict == INFORMATIONAL and g.band_verdict == FAIL and "falls at init" in g.why
    assert g.to_dict()["directions"] == {"init": "falls", "after": "falls"}


def test_bad_input_is_one_line():
    with pytest.raises(InputError, match="at least two different"):
        check_moe_rms(top_ks=(2, 2))
    with pytest.raises(InputError, match=r"sparsity: at least 1 \(top_k 4 > 0 experts\)"):
        check_moe_rms(top_ks=(1, 4), sparsity=0)
    runner = CliRunner()
    for args in (["--top-k", "2"], ["--top-k", "1", "--top-k", "3"], ["--sparsity", "0"]):
        res = runner.invoke(app, ["check", "moe-rms", *args])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "error" in res.output.lower(), \
            res.output


def band_rule(ratios: list[dict]) -> str:
    """method.md section 11 restated on the JSON's own intervals: pass when every interval lies within
    [1/BAND, BAND], fail when one lies wholly outside, else (or with no interval) inconclusive."""
    if any(r["low"] is None for r in ratios):
        return INCONCLUSIVE
    if any(r["high"] < 1 / BAND or r["low"] > BAND for r in ratios):
        return FAIL
    return PASS if all(1 / BAND <= r["low"] and r["high"] <= BAND for r in ratios) else INCONCLUSIVE


def test_an_interval_across_1_is_reported_as_containing_1_not_as_holding_it():
    g = judge_gate(False, ratios(False, 1.0, 0.35), 4, 10)
    init, after = g.ratios
    assert init.low < 1 < init.high and init.direction == "contains 1" and after.direction == "falls"
    assert "contains 1 at init" in g.why and "holds" not in g.why
    assert g.to_dict()["directions"] == {"init": "contains 1", "after": "falls"}


def test_a_tiny_check_end_to_end_shows_classic_gating_falling_at_init(tmp_path):
    res = check_moe_rms(top_ks=(1, 4), sparsity=2, seeds=2, steps=2, depth=1, **TINY)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert len(d["cells"]) == 2 * 2 * 2 and {c["top_k"] for c in d["cells"]} == {1, 4}
    init = {r["sqrt_gate"]: r for r in d["ratios"] if r["moment"] == "init"}
    # at top_k = 1 the gatings are one model (gate 1); at top_k 4 classic's RMS is about sqrt(sum g^2) of SqrtGate's
    same = [c for c in d["cells"] if c["top_k"] == 1]
    assert len({c["rms"] for c in same if c["moment"] == "init"}) == 1
    assert init[False]["ratio"] < 0.75 < init[True]["ratio"]
    cells = {(c["sqrt_gate"], c["moment"], c["top_k"]): c for c in d["cells"]}
    assert cells[False, "init", 4]["rms"] / cells[True, "init", 4]["rms"] == pytest.approx(
        math.sqrt(cells[False, "init", 4]["gate_sq"]), rel=0.25)
    assert d["verdict"] == band_rule([r for r in d["ratios"] if r["sqrt_gate"]])
    assert d["gates"][1]["verdict"] == INFORMATIONAL
    assert d["decided_by"].startswith("RMS ratio top_k 4/1 under SqrtGate")
    assert [(r["k_min"], r["k_max"]) for r in d["local_ratios"]] == [(1, 4)] * 4  # two top_ks: one adjacent pair


def test_cli_writes_strict_json(tmp_path):
    out = tmp_path / "moe_rms.json"
    res = CliRunner().invoke(app, ["check", "moe-rms", "--top-k", "1", "--top-k", "2", "--seeds", "2", "--steps", "1",
                                   "--json", "-o", str(out)])
    d = json.loads(out.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert res.exit_code == (1 if d["verdict"] == FAIL else 0), res.output
    assert d["top_ks"] == [1, 2] and d["seeds"] == 2 and d["steps"] == 1 and d["lr"] == 0.02
    assert d["model"]["width"] == 32 and d["sparsity"] == 4 and json.loads(res.stdout) == d


def diverged_result():
    """A check result whose classic top_k 2 'after' cell diverged (finite() made its NaNs None), built directly."""
    from hyperp.checks.moe_rms import MoeRmsCheck  # noqa: PLC0415

    ks, seeds, cells, slopes, rs = (1, 2), 2, [], [], []
    for g in (True, False):
        for m in ("init", "after"):
            bad = not g and m == "after"
            cells += [{"sqrt_gate": g, "moment": m, "top_k": k, "rms": None if bad and k == 2 else 0.5}
                      for k in ks]
            slopes.append({"sqrt_gate": g, "moment": m, "slope": None if bad else 0.0,
                           "low": None if bad else -0.1, "high": None if bad else 0.1})
            rs.append(ratio_estimate(g, m, [math.nan, 1.0] if bad else [1.0, 1.01], *ks))
    gates = (judge_gate(True, rs[:2], seeds, 3), judge_gate(False, rs[2:], seeds, 3))
    return MoeRmsCheck(param="hyperp", top_ks=ks, sparsity=4, steps=3, seeds=seeds, lr=0.02, model={},
                       cells=tuple(cells), ratios=tuple(rs), local_ratios=tuple(rs), slopes=tuple(slopes),
                       gates=gates, verdict=gates[0].verdict, why="synthetic", warnings=("classic diverged",))


def test_cli_text_shows_a_diverged_cell_as_a_dash(monkeypatch):
    import hyperp.checks.moe_rms as moe_rms  # noqa: PLC0415

    monkeypatch.setattr(moe_rms, "check_moe_rms", lambda *a, **k: diverged_result())
    res = CliRunner().invoke(app, ["check", "moe-rms", "--top-k", "1", "--top-k", "2"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    line = next(x for x in res.stdout.splitlines() if x.startswith("classic after 3 steps"))
    assert "RMS by top_k 1: 0.5000, 2: -;" in line and line.endswith("ln-ln slope -")
    assert "SqrtGate after 3 steps: RMS by top_k 1: 0.5000, 2: 0.5000" in res.stdout
