"""`hyperp bench train`'s reference block and its report (figures themselves are benchmarks, not tests)."""

import importlib.util
import json
import math

import torch
from typer.testing import CliRunner

import hyperp.trainer.bench as bench
from hyperp.cli import app
from hyperp.trainer.bench import REFERENCE, GPTReference, bench_train, format_report
from hyperp.config import RunConfig

TINY = dict(depth=1, width=32, head_dim=16, seq_len=16, batch_tokens=64, tokens=64)


def test_gpt_reference_counts_and_causality():
    cfg = RunConfig(**TINY | dict(depth=2))
    torch.manual_seed(0)
    gpt = GPTReference(cfg).eval()
    w, V = 32, cfg.vocab_size
    counts = gpt.counts()
    # per block: q, k, v, o (4 w^2) + MLP (2 * 4 w^2) + two LayerNorms (weight and bias); plus the final LayerNorm
    assert counts.non_embedding == 2 * (12 * w * w + 4 * w) + 2 * w
    assert counts.active_matrix == 2 * 12 * w * w + V * w  # the head multiplies activations; embeddings do not
    idx = torch.randint(0, V, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (idx[:, 10:] + 1) % V
    logits, _ = gpt(idx, idx)
    logits2, _ = gpt(changed, changed)
    torch.testing.assert_close(logits[:, :10], logits2[:, :10])
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])


def test_bench_rows_compare_every_scheme_with_the_reference():
    cfg = RunConfig(**TINY)
    peak, rows = bench_train(cfg, ["adamw", "hyperp"], steps=2, warmup=1)
    assert [r.param for r in rows] == ["adamw", "hyperp", REFERENCE] and peak > 0
    ref = rows[-1]
    assert ref.tokens_vs_reference == 1.0 and ref.work_vs_reference == 1.0 and ref.cpu_vs_reference == 1.0
    for r in rows:
        # one step time (the median of the full steps) behind both figures; the parts are positive times
        assert r.tokens_per_s > 0 and r.fwd_bwd_s > 0 and r.opt_s > 0 and 0 < r.opt_share
        assert math.isclose(r.opt_share, r.opt_s * r.tokens_per_s / 64, rel_tol=1e-12)
        assert math.isclose(r.work_vs_reference, r.tokens_vs_reference * r.non_embedding_params
                            / ref.non_embedding_params)
    # per-round ratios: the reference's own are all 1; the others' quartiles are ordered
    assert ref.work_vs_reference_quartiles == (1.0, 1.0)
    assert all(r.work_vs_reference_quartiles[0] <= r.work_vs_reference_quartiles[1] for r in rows)
    # the Muon-type scheme carries Newton-Schulz FLOPs and an overhead ratio; AdamW does not
    assert rows[1].ns_flop_share > 0 and math.isfinite(rows[1].overhead_per_ns_share)
    assert rows[0].ns_flop_share == 0 and math.isnan(rows[0].overhead_per_ns_share)
    # hyperp runs at mlp_ratio 8/3 (85 -> 128 hidden at width 32, rounded up to 64s) against the GPT MLP of 4w
    norms = 2 * 32 + 2 * 16 + 32  # block norms, q/k norms (head dim 16), final norm
    assert rows[0].non_embedding_params == 4 * 32 * 32 + 3 * 32 * 128 + norms
    report = format_report(cfg, peak, rows)
    assert REFERENCE in report and "tok/s vs GPT" in report


# A GPT-style model.py written for the tests (hyperp never vendors nanoGPT's): nanoGPT's interface, GPT(GPTConfig(
# n_layer, n_head, n_embd, block_size, vocab_size, dropout, bias)), a head tied to the token embedding, learned
# positions, a print in the constructor (nanoGPT prints its parameter count) and its own configure_optimizers.
TINY_MODEL_PY = """
from dataclasses import dataclass
import torch
import torch.nn as nn
import torch.nn.functional as F

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x):
        return x + self.proj(F.gelu(self.fc(self.ln(x))))

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        print("number of parameters:", sum(p.numel() for p in self.parameters()))

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)
"""


def write_model_py(tmp_path, text=TINY_MODEL_PY):
    path = tmp_path / "ref" / "model.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def direct_non_embedding(path, cfg):
    """The file's GPT at the bench's shape, its parameters counted by hand: the distinct tensors, less the
    token and position tables (the head is the token table, tied)."""
    spec = importlib.util.spec_from_file_location("tiny_reference_direct", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gpt = module.GPT(module.GPTConfig(n_layer=cfg.depth, n_head=cfg.n_heads, n_embd=cfg.d_model,
                                      block_size=cfg.seq_len, vocab_size=cfg.vocab_size, dropout=0.0, bias=False))
    distinct = {id(p): p.numel() for p in gpt.parameters()}
    return sum(distinct.values()) - gpt.wte.weight.numel() - gpt.wpe.weight.numel()


def test_a_reference_model_py_is_loaded_timed_and_counted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "PEAK_PROBE_S", 0.05)
    path = write_model_py(tmp_path)
    cfg = RunConfig(**TINY)
    peak, rows = bench_train(cfg, ["adamw"], steps=3, warmup=1, reference=path)
    assert [r.param for r in rows] == ["adamw", REFERENCE, "ref/model.py"]
    assert "number of parameters" not in capsys.readouterr().out  # its prints go to stderr (--json is stdout)
    adamw, gpt, ref = rows
    # both references' ratios on every row; each reference is 1.0x against itself
    assert ref.tokens_vs_file == ref.work_vs_file == ref.cpu_vs_file == 1.0 and ref.work_vs_file_quartiles == (1, 1)
    assert gpt.tokens_vs_reference == gpt.work_vs_reference == 1.0
    for r in rows:
        assert r.tokens_per_s > 0 and math.isfinite(r.tokens_vs_file) and math.isfinite(r.tokens_vs_reference)
        assert math.isclose(r.work_vs_file, r.tokens_vs_file * r.non_embedding_params / ref.non_embedding_params)
        assert math.isclose(r.tokens_vs_file, r.tokens_per_s / ref.tokens_per_s)
    # the counts reported are the modules' own, counted directly
    assert ref.non_embedding_params == direct_non_embedding(path, cfg.replace(mlp_ratio=bench.MATCHED_MLP_RATIO))
    assert ref.non_embedding_params == 1 * (8 * 32 * 32 + 32) + 32  # fc, proj, one LayerNorm; the final one
    hyperp_model = bench.build(cfg.replace(param="adamw", mlp_ratio=bench.MATCHED_MLP_RATIO), "cpu")[0]
    assert adamw.non_embedding_params == sum(p.numel() for n, p in hyperp_model.named_parameters()
                                             if not n.startswith(("embed.", "head.")))
    assert ref.optimizer == "its configure_optimizers (AdamW)"
    report = format_report(cfg, peak, rows, reference=path)
    assert "tok/s x params vs file" in report and str(path) in report and "ref/model.py" in report


def test_a_reference_without_configure_optimizers_trains_with_adamw(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PEAK_PROBE_S", 0.05)
    text = TINY_MODEL_PY[: TINY_MODEL_PY.index("    def configure_optimizers")]
    _, rows = bench_train(RunConfig(**TINY), ["adamw"], steps=2, warmup=1, reference=write_model_py(tmp_path, text))
    assert rows[-1].optimizer.startswith("torch's AdamW")


def test_cli_reference_json_and_a_file_without_gpt_exits_2_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PEAK_PROBE_S", 0.05)
    runner = CliRunner()
    tiny = ["--width", "32", "--depth", "1", "--head-dim", "16", "--seq-len", "16", "--batch-tokens", "64",
            "--steps", "2", "--warmup", "1", "--params", "adamw"]
    res = runner.invoke(app, ["bench", "train", *tiny, "--reference", str(write_model_py(tmp_path)), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the module's print did not reach stdout
    assert [r["param"] for r in out["rows"]] == ["adamw", REFERENCE, "ref/model.py"]
    assert out["rows"][0]["work_vs_file"] > 0 and "load average" in out["started"]
    bad = tmp_path / "not_a_gpt.py"
    bad.write_text("import torch\n\nclass Model(torch.nn.Module):\n    pass\n")
    res = runner.invoke(app, ["bench", "train", *tiny, "--reference", str(bad)])
    assert res.exit_code == 2 and str(bad) in res.output and "GPTConfig" in res.output
    assert len(res.output.strip().splitlines()) == 1
    missing = tmp_path / "missing.py"
    res = runner.invoke(app, ["bench", "train", *tiny, "--reference", str(missing)])
    assert res.exit_code == 2 and str(missing) in res.output
