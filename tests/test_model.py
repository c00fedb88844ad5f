"""Model structure and the width coordinate check of HyperP."""

import math

import pytest
import torch

from hyperp.trainer.config import RunConfig
from hyperp.trainer.data import load_corpus, train_batch
from hyperp.trainer.loop import build
from hyperp.trainer.model import Transformer, apply_rope, rope_tables

WIDTHS = (64, 128, 256)  # 4x growth, as the issue asks
BAND = 1.5  # max/min of a branch RMS across widths that still counts as "flat"


def branch_rms(param: str, width: int, steps: int = 5, lr: float | None = None) -> list[dict[str, float]]:
    """RMS of each block's attention and MLP output at init and after `steps` steps on a fixed batch."""
    cfg = RunConfig(param=param, depth=2, width=width, head_dim=16, seq_len=64, batch_tokens=1024,
                    tokens=1024 * steps, lr=lr)
    model, opt, _ = build(cfg, "cpu")
    x, y = train_batch(load_corpus("stdlib", 2.0), 0, cfg.batch_size, cfg.seq_len, seed=0)
    history = []
    for s in range(steps + 1):
        stats: dict = {}
        _, loss = model(x, y, stats)
        history.append({k: sum(v) / len(v) for k, v in stats.items() if k.startswith("rms_")})
        if s < steps:
            loss.backward()
            opt.step()
            opt.zero_grad()
    return history


def spread_across_widths(param: str, lr: float | None = None) -> float:
    """Largest max/min ratio across widths of any branch RMS, at init or after the steps."""
    runs = [branch_rms(param, w, lr=lr) for w in WIDTHS]
    worst = 1.0
    for moment in (0, -1):
        for key in runs[0][moment]:
            values = [r[moment][key] for r in runs]
            worst = max(worst, max(values) / min(values))
    return worst


def test_coordinate_check_hyperp_is_flat_in_width():
    assert spread_across_widths("hyperp") < BAND


def test_coordinate_check_catches_a_wrong_rule():
    """Standard AdamW at a fixed LR (no width rule) blows the activations up as width grows: the check fails."""
    assert spread_across_widths("adamw", lr=1e-2) > 2 * BAND


def test_causality_future_tokens_do_not_change_past_logits():
    cfg = RunConfig(depth=2, aspect_ratio=32, head_dim=16, seq_len=32, n_kv_heads=2, attn_gate=True)
    torch.manual_seed(0)
    model = Transformer(cfg, residual_alpha=0.5).eval()
    idx = torch.randint(0, 256, (2, 32))
    changed = idx.clone()
    changed[:, 20:] = torch.randint(0, 256, (2, 12))
    torch.testing.assert_close(model(idx)[:, :20], model(changed)[:, :20])
    assert not torch.allclose(model(idx)[:, 20:], model(changed)[:, 20:])


def test_gqa_and_gate_shapes():
    cfg = RunConfig(depth=1, width=64, head_dim=16, n_kv_heads=2, attn_gate=True)
    attn = Transformer(cfg).blocks[0].attn
    assert attn.q.weight.shape == (64, 64) and attn.k.weight.shape == (32, 64) and attn.gate.weight.shape == (4, 64)


def test_width_from_aspect_ratio():
    cfg = RunConfig(depth=3, aspect_ratio=32, head_dim=32)
    assert cfg.d_model == 96 and cfg.n_heads == 3
    assert RunConfig(depth=3, width=64, head_dim=32).d_model == 64


def test_rope_is_a_rotation_and_relative():
    cos, sin = rope_tables(16, 8, 10000.0)
    q, k = torch.randn(1, 1, 16, 8), torch.randn(1, 1, 16, 8)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # the same q, k placed at positions (i, j) and (i+3, j+3) give the same score
    q1 = apply_rope(q[:, :, :1].expand(1, 1, 16, 8).contiguous(), cos, sin)
    k1 = apply_rope(k[:, :, :1].expand(1, 1, 16, 8).contiguous(), cos, sin)
    s = (q1[0, 0] @ k1[0, 0].T)
    assert s[5, 2].item() == pytest.approx(s[8, 5].item(), rel=1e-5)


def test_residual_alpha_scales_branches():
    cfg = RunConfig(depth=2, aspect_ratio=32, head_dim=16, seq_len=16)
    torch.manual_seed(0)
    model = Transformer(cfg, residual_alpha=1 / math.sqrt(4))
    x = torch.randn(1, 16, 64)
    block = model.blocks[0]
    rope = (model.rope_cos, model.rope_sin)
    a = block.attn(block.attn_norm(x), rope)
    h = x + 0.5 * a
    expected = h + 0.5 * block.mlp(block.mlp_norm(h))
    torch.testing.assert_close(block(x, rope), expected)
