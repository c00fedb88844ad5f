"""`hyperp bench train`'s reference block and its report (figures themselves are benchmarks, not tests)."""

import math

import torch

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
