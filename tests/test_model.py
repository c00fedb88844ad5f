"""Model structure and the width coordinate check of HyperP."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from hyperp.trainer import model as model_module
from hyperp.config import RunConfig
from hyperp.trainer.metrics import count_params, training_flops
from hyperp.trainer.layers import RMSNorm, mlp_hidden, norm_rope, pair_order, rope_table, rotate_pairs
from hyperp.trainer.model import Transformer

# The width coordinate check (hyperp passes, fixed-LR AdamW fails) is tests/test_check_coord.py, on
# hyperp.checks.coord, the same function `hyperp check coord` runs.


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
    table = rope_table(16, 8, 10000.0)
    q, k = torch.randn(1, 16, 1, 8), torch.randn(1, 16, 1, 8)  # (B, T, H, D)
    rq = rotate_pairs(q, table.unsqueeze(1))
    torch.testing.assert_close(rotate_pairs(rq, table.unsqueeze(1), inverse=True), q)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # the same q, k placed at positions (i, j) and (i+3, j+3) give the same score
    q1 = rotate_pairs(q[:, :1].expand(1, 16, 1, 8), table.unsqueeze(1))
    k1 = rotate_pairs(k[:, :1].expand(1, 16, 1, 8), table.unsqueeze(1))
    s = q1[0, :, 0] @ k1[0, :, 0].T
    assert s[5, 2].item() == pytest.approx(s[8, 5].item(), rel=1e-5)


def test_residual_alpha_scales_branches():
    cfg = RunConfig(depth=2, aspect_ratio=32, head_dim=16, seq_len=16)
    torch.manual_seed(0)
    model = Transformer(cfg, residual_alpha=1 / math.sqrt(4))
    x = torch.randn(1, 16, 64)
    block = model.blocks[0]
    rope = model.rope
    a = block.attn(block.attn_norm(x), rope)
    h = x + 0.5 * a
    expected = h + 0.5 * block.mlp(block.mlp_norm(h))
    torch.testing.assert_close(block(x, rope), expected)


# ---- the fast paths against the obvious implementations ----

def rope_by_concatenation(x, theta=10000.0):
    """RoPE written the obvious way on (B, H, T, D): the pairs (x[i], x[i + D/2]) rotated by t theta^(-2i/D),
    halves split, rotated and concatenated."""
    T, D = x.shape[-2], x.shape[-1]
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, D, 2) / D)[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def test_norm_rope_matches_rms_norm_and_the_concatenating_rope():
    """norm_rope on pair-ordered input gives, in pair order, F.rms_norm then the textbook RoPE; its gradient
    passes gradcheck, also for a strided gradient (SDPA's transposed output)."""
    D, order = 8, pair_order(8)
    x = torch.randn(2, 16, 3, D, dtype=torch.float64)  # (B, T, H, D), half-split order
    weight = torch.randn(D, dtype=torch.float64)
    expected = rope_by_concatenation(F.rms_norm(x, (D,), weight, 1e-6).transpose(1, 2)).transpose(1, 2)
    table = rope_table(16, D, 10000.0)
    ours = norm_rope(x[..., order], weight[order], table, 1e-6)
    torch.testing.assert_close(ours, expected[..., order])
    xs = x[..., order].transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # strided input
    w = weight[order].requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: norm_rope(a, b, table, 1e-6).transpose(1, 2), (xs, w))


def test_rmsnorm_matches_torch_in_value_and_gradient():
    norm = RMSNorm(8).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8, dtype=torch.float64))
    x = torch.randn(3, 5, 8, dtype=torch.float64).transpose(0, 1).requires_grad_()  # strided input, as q and k are
    grad = torch.randn(5, 3, 8, dtype=torch.float64)
    ours = torch.autograd.grad(norm(x), (x, norm.weight), grad)
    ref = torch.autograd.grad(F.rms_norm(x, (8,), norm.weight, norm.eps), (x, norm.weight), grad)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (8,), norm.weight, norm.eps))
    torch.testing.assert_close(ours, ref)


def test_fused_attention_equals_separate_projections():
    """One matmul on the concatenated q/k/v/gate weights gives the attention written with four projections."""
    cfg = RunConfig(depth=1, width=64, head_dim=16, n_kv_heads=2, attn_gate=True, seq_len=16)
    torch.manual_seed(0)
    model = Transformer(cfg).double()
    attn, x = model.blocks[0].attn, torch.randn(2, 16, 64, dtype=torch.float64)

    def heads(t, n):
        return t.view(2, 16, n, 16).transpose(1, 2)

    with torch.no_grad():  # QK-norm gains away from 1, so a wrong order of their elements shows
        attn.q_norm.weight.copy_(torch.rand(16) + 0.5)
        attn.k_norm.weight.copy_(torch.rand(16) + 0.5)
    q = rope_by_concatenation(F.rms_norm(heads(attn.q(x), 4), (16,), attn.q_norm.weight, 1e-6))
    k = rope_by_concatenation(F.rms_norm(heads(attn.k(x), 2), (16,), attn.k_norm.weight, 1e-6))
    v = heads(attn.v(x), 2)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k.mT / 4.0).masked_fill(~torch.ones(16, 16, dtype=torch.bool).tril(), float("-inf"))
    y = scores.softmax(-1) @ v * torch.sigmoid(attn.gate(x)).transpose(1, 2).unsqueeze(-1)
    torch.testing.assert_close(attn(x, model.rope), attn.o(y.transpose(1, 2).reshape(2, 16, 64)))


@pytest.mark.parametrize("ratio, width, moe, hidden", [
    (4.0, 64, {}, 256),  # already a multiple of 64
    (8 / 3, 256, {}, 704),  # 682.67 -> 682 -> 704
    (8 / 3, 64, {}, 192),  # 170 -> 192
    (8 / 3, 96, dict(moe_every=1, top_k=2, sparsity=2), 256),  # 256: a multiple of 64 and of top_k
])
def test_mlp_hidden_is_rounded_up_to_64(ratio, width, moe, hidden):
    cfg = RunConfig(depth=1, width=width, head_dim=16, mlp_ratio=ratio, **moe)
    assert mlp_hidden(cfg) == hidden
    mlp = Transformer(cfg).blocks[0].mlp
    per_expert = [mlp.gate.weight.shape[0]] if not moe else [mlp.gate_bank.shape[1] * mlp.k]
    assert per_expert == [hidden]


def test_flops_count_the_rounded_mlp():
    """6 N T with N = depth (4 w^2 + 3 w h) + V w (head), h the rounded hidden size, plus the attention term."""
    cfg = RunConfig(depth=2, width=64, head_dim=16, mlp_ratio=8 / 3, seq_len=32, batch_tokens=512, tokens=512)
    w, h = 64, 192
    counts = count_params(Transformer(cfg), cfg)
    assert counts.active_matrix == 2 * (4 * w * w + 3 * w * h) + cfg.vocab_size * w
    assert training_flops(counts, cfg, 512) == (6 * counts.active_matrix + 12 * 2 * w * 32) * 512


def test_stability_statistics_only_on_stats_steps(monkeypatch):
    """Without a stats dict the forward does no statistics work; with one, the attention Z-value equals the
    explicit causal logits' mean (logsumexp)^2 of the first sequence."""
    cfg = RunConfig(depth=1, width=32, head_dim=16, seq_len=16)
    torch.manual_seed(0)
    model = Transformer(cfg)
    idx = torch.randint(0, 256, (2, 16))
    calls = []
    for name in ("branch_stats", "z_value"):
        original = getattr(model_module, name)
        monkeypatch.setattr(model_module, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    model(idx)
    assert calls == []
    seen = {}

    def capture(module, args, output):
        seen["x"] = args[0]

    model.blocks[0].attn.register_forward_hook(capture)
    stats: dict = {}
    model(idx, stats=stats)
    assert set(calls) == {"branch_stats", "z_value"}
    attn = model.blocks[0].attn
    B, T = 2, 16
    q, k = attn.q(seen["x"]), attn.k(seen["x"])
    q = rope_by_concatenation(attn.q_norm(q.view(B, T, 2, 16).transpose(1, 2)))
    k = rope_by_concatenation(attn.k_norm(k.view(B, T, 2, 16).transpose(1, 2)))
    logits = (q[0] @ k[0].mT / 4.0).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    assert stats["attn_z"][0] == pytest.approx(logits.logsumexp(-1).pow(2).mean().item(), rel=1e-5)


def test_fused_swiglu_matches_torch_and_its_gradient():
    from hyperp.trainer.layers import swiglu

    g, u = (torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(swiglu, (g, u))
    assert torch.allclose(swiglu(g, u), torch.nn.functional.silu(g) * u)


def test_in_pairs_puts_each_heads_rows_in_pair_order():
    from hyperp.trainer.layers import in_pairs

    t = torch.randn(3 * 8, 5)
    expected = t.index_select(0, torch.cat([pair_order(8) + h * 8 for h in range(3)]))
    assert torch.equal(in_pairs(t, 8), expected)
    assert torch.equal(in_pairs(t[:8, 0], 8), t[:8, 0][pair_order(8)])


def test_normalize_and_folded_gain_match_rms_norm_in_value_and_gradient():
    """RMSNorm.normalize (no gain) with the gain multiplied into the next matmul's weight gives the norm with its
    gain then the matmul, in value and in every gradient (float64, gradcheck for normalize itself)."""
    norm = RMSNorm(8).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8, dtype=torch.float64) + 0.5)
    W = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm.normalize, (x,))
    grad = torch.randn(3, 4, 5, dtype=torch.float64)
    folded = F.linear(norm.normalize(x), W * norm.weight)
    plain = F.linear(F.rms_norm(x, (8,), norm.weight, norm.eps), W)
    torch.testing.assert_close(folded, plain)
    torch.testing.assert_close(torch.autograd.grad(folded, (x, W, norm.weight), grad),
                               torch.autograd.grad(plain, (x, W, norm.weight), grad))


def naive_forward(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    """The model's logits written out from method.md section 1 with torch's plain ops: F.rms_norm with the gain on
    the activations, q, k, v, gate and SwiGLU's gate and up as separate matmuls, QK-norm then the textbook RoPE
    on the halves (no pair order), explicit causal softmax attention, the logit multiplier on the logits."""
    cfg, B, T = model.cfg, *idx.shape
    hd = cfg.head_dim
    x = model.embed(idx)
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        h = F.rms_norm(x, (cfg.d_model,), block.attn_norm.weight, block.attn_norm.eps)

        def heads(t, n):
            return t.view(B, T, n, hd).transpose(1, 2)

        def rope(t):  # the textbook rotation of the halves, by the angles of the model's table (float32 values)
            cos, sin = model.rope[:T, :, 0], model.rope[:T, :, 1]
            t1, t2 = t.chunk(2, dim=-1)
            return torch.cat([t1 * cos - t2 * sin, t1 * sin + t2 * cos], dim=-1)

        q = rope(F.rms_norm(heads(attn.q(h), attn.n_heads), (hd,), attn.q_norm.weight, 1e-6))
        k = rope(F.rms_norm(heads(attn.k(h), attn.kv_heads), (hd,), attn.k_norm.weight, 1e-6))
        v = heads(attn.v(h), attn.kv_heads)
        rep = attn.n_heads // attn.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        y = (q @ k.mT / math.sqrt(hd)).masked_fill(~causal, float("-inf")).softmax(-1) @ v
        if attn.gate is not None:
            y = y * torch.sigmoid(attn.gate(h)).transpose(1, 2).unsqueeze(-1)
        x = x + block.alpha * attn.o(y.transpose(1, 2).reshape(B, T, -1))
        h = F.rms_norm(x, (cfg.d_model,), block.mlp_norm.weight, block.mlp_norm.eps)
        x = x + block.alpha * mlp.down(F.silu(mlp.gate(h)) * mlp.up(h))
    return model.head(F.rms_norm(x, (cfg.d_model,), model.norm.weight, model.norm.eps)) * model.logit_mult


@pytest.mark.parametrize("dtype, tol, kernels", [(torch.float64, 1e-12, "off"), (torch.float32, 2e-5, "off"),
                                                 (torch.float32, 2e-5, "on")])
@pytest.mark.parametrize("shape", [dict(), dict(n_kv_heads=2, attn_gate=True)])
def test_model_loss_and_gradients_equal_the_naive_computation(dtype, tol, kernels, shape):
    """The fast paths (gains folded into the matmuls, separate projections, pair-order RoPE fused with QK-norm,
    the gate and up projections fused with SwiGLU, the logit multiplier in the head's weight; with `kernels`
    "on", QK-norm with RoPE and SwiGLU's activation by the fused CPU kernels) compute the naive model's loss and
    gradients: equal within float rounding, stated as a relative tolerance on the loss and on every parameter's
    gradient (its largest deviation over its largest magnitude): 1e-12 in float64, 2e-5 in float32 (measured:
    5e-15 and 2e-6). Gains, residual alpha and logit multiplier away from 1, so a misplaced one shows."""
    cfg = RunConfig(depth=2, width=64, head_dim=16, seq_len=16, mlp_ratio=8 / 3, fused_kernels=kernels, **shape)
    torch.manual_seed(0)
    model = Transformer(cfg, residual_alpha=0.5, logit_mult=0.75).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    idx, targets = torch.randint(0, 256, (2, 2, 16))
    losses, grads = [], []
    for forward in (model, lambda i: naive_forward(model, i)):
        model.zero_grad()
        # the loss in the logits' dtype (the model's own loss casts its logits to float32)
        loss = F.cross_entropy(forward(idx).flatten(0, 1), targets.flatten())
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], rel=tol)
    assert model(idx, targets)[1].item() == pytest.approx(losses[1], rel=max(tol, 1e-6))
    for name, g in grads[1].items():
        assert (grads[0][name] - g).abs().max() <= tol * g.abs().max(), name


def test_rotation_takes_the_same_angles_under_compile(monkeypatch):
    """The real form torch.compile traces gives the complex form's rotation, forward and inverse."""
    table = rope_table(16, 8, 10000.0).unsqueeze(1)
    x = torch.randn(2, 16, 3, 8)
    eager = [rotate_pairs(x, table, inverse=inv) for inv in (False, True)]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for inv, expected in zip((False, True), eager):
        torch.testing.assert_close(rotate_pairs(x, table, inverse=inv), expected)


def _fused_copy(cfg: RunConfig) -> tuple[Transformer, Transformer]:
    """(model, the same model with fused_gate_up): the fused gate_up weights are the concatenated gate and up."""
    a = Transformer(cfg)
    b = Transformer(dataclasses.replace(cfg, fused_gate_up=True))
    src, state = a.state_dict(), b.state_dict()
    for k in state:
        stem = k.removesuffix("gate_up.weight").removesuffix("gate_up_bank")
        if k in src:
            state[k] = src[k]
        elif k.endswith("gate_up.weight"):
            state[k] = torch.cat([src[stem + "gate.weight"], src[stem + "up.weight"]])
        else:
            state[k] = torch.cat([src[stem + "gate_bank"], src[stem + "up_bank"]], dim=1)
    b.load_state_dict(state)
    return a, b


@pytest.mark.parametrize("moe", [False, True])
def test_fused_gate_up_is_the_same_function_with_one_matrix(moe):
    """fused_gate_up changes what the optimizer sees, not the model: equal loss, gate_up's gradient = the two."""
    torch.manual_seed(0)
    cfg = RunConfig(depth=2, width=64, head_dim=16, seq_len=16, moe_every=int(moe), top_k=2, sparsity=2,
                    shared_expert=moe)
    a, b = _fused_copy(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    la, lb = a(idx, idx)[1], b(idx, idx)[1]
    la.backward()
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), rel=1e-6)
    mlp_a, mlp_b = a.blocks[0].mlp, b.blocks[0].mlp
    if moe:
        pairs = [(mlp_b.gate_up_bank, torch.cat([mlp_a.gate_bank.grad, mlp_a.up_bank.grad], 1)),
                 (mlp_b.shared.gate_up.weight, torch.cat([mlp_a.shared.gate.weight.grad, mlp_a.shared.up.weight.grad]))]
    else:
        pairs = [(mlp_b.gate_up.weight, torch.cat([mlp_a.gate.weight.grad, mlp_a.up.weight.grad]))]
    for p, grad in pairs:
        assert p.grad.shape == grad.shape and torch.allclose(p.grad, grad, rtol=1e-5, atol=1e-7)
    n_a, n_b = (sum(p.numel() for p in m.parameters()) for m in (a, b))
    assert n_a == n_b


def test_fused_gate_up_is_one_sphere_for_muonh():
    """Under MuonH each matrix keeps its Frobenius norm: fused, the gate and up halves share one radius (their
    own norms move), unfused each keeps its own."""
    from hyperp.trainer.hparams import resolve_hparams
    from hyperp.trainer.optim import build_optimizers

    torch.manual_seed(0)
    cfg = RunConfig(depth=2, width=64, head_dim=16, seq_len=16, param="hyperp", lr=0.2)
    a, b = _fused_copy(cfg)
    idx = torch.randint(0, cfg.vocab_size, (4, 16))
    halves = {}
    for name, model in (("split", a), ("fused", b)):
        opt = build_optimizers(model, resolve_hparams(model.cfg), model.cfg)
        gate, up = model.blocks[0].mlp.gate_up_weights()
        before = (gate.norm().item(), up.norm().item(), torch.cat([gate, up]).norm().item())
        for _ in range(3):
            opt.zero_grad()
            model(idx, idx)[1].backward()
            opt.step()
        gate, up = model.blocks[0].mlp.gate_up_weights()
        halves[name] = [after / b0 - 1 for after, b0 in zip((gate.norm().item(), up.norm().item(),
                                                             torch.cat([gate, up]).norm().item()), before)]
    assert max(abs(d) for d in halves["split"][:2]) < 1e-5  # each matrix on its own sphere
    assert abs(halves["fused"][2]) < 1e-5  # the fused matrix on one sphere
    assert max(abs(d) for d in halves["fused"][:2]) > 1e-3  # its halves exchange norm


# ---- the fused CPU kernels (hyperp.kernels.fused) ----

def test_fused_norm_rope_matches_rms_norm_and_the_concatenating_rope_in_value_and_gradient():
    """On the halves' order (no pair order), against F.rms_norm then the textbook RoPE, the gradients against
    autograd through that reference; float32 rounding: 1e-5 relative to the largest value."""
    from hyperp.trainer.layers import fused_norm_rope

    D = 8
    x = torch.randn(2, 16, 3, D).transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # strided input
    weight = (torch.rand(D) + 0.5).requires_grad_()
    grad = torch.randn(2, 16, 3, D)
    expected = rope_by_concatenation(F.rms_norm(x, (D,), weight, 1e-6).transpose(1, 2)).transpose(1, 2)
    d_x, d_w = torch.autograd.grad(expected, (x, weight), grad)
    ours = fused_norm_rope(x, weight, rope_table(16, D, 10000.0), 1e-6)
    ours_x, ours_w = torch.autograd.grad(ours, (x, weight), grad)
    for got, want in ((ours, expected), (ours_x, d_x), (ours_w, d_w)):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_fused_swiglu_kernels_match_autograd():
    from hyperp.kernels import fused

    g, u = (torch.randn(6, 40, requires_grad=True) for _ in range(2))
    grad = torch.randn(6, 40)
    expected = F.silu(g) * u
    torch.testing.assert_close(fused.swiglu_forward(g.detach(), u.detach()), expected.detach())
    d_g, d_u = torch.full((2, 6, 40), float("nan")).unbind(0)
    fused.swiglu_backward_into(d_g, d_u, grad, g.detach(), u.detach())
    for got, want in zip((d_g, d_u), torch.autograd.grad(expected, (g, u), grad)):
        torch.testing.assert_close(got, want)


def test_fused_normalize_backward_matches_autograd():
    """The RMSNorm's gradient without its gain, against autograd through F.rms_norm (float32 rounding)."""
    from hyperp.kernels import fused

    x = torch.randn(3, 5, 48, requires_grad=True)
    grad = torch.randn(3, 5, 48)
    y = F.rms_norm(x, (48,), None, 1e-6)
    rstd = torch.rsqrt(x.detach().pow(2).mean(-1, keepdim=True) + 1e-6)
    got = fused.normalize_backward(grad, y.detach(), rstd)
    want, = torch.autograd.grad(y, x, grad)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_scratch_is_one_reused_buffer_per_thread():
    """The same shape gets the same memory again; another shape replaces it; another thread has its own."""
    import threading

    from hyperp.kernels import fused

    a = fused.scratch((2, 3, 5))
    assert a.shape == (2, 3, 5) and fused.scratch((2, 3, 5)).data_ptr() == a.data_ptr()
    b = fused.scratch((4, 5))
    assert b.shape == (4, 5) and fused.scratch((4, 5)).data_ptr() == b.data_ptr()
    other = []
    thread = threading.Thread(target=lambda: other.append(fused.scratch((4, 5))))
    thread.start()
    thread.join()
    assert other[0].shape == (4, 5) and other[0].data_ptr() != b.data_ptr()


def test_reused_scratch_leaves_the_gradients_unchanged():
    """Two blocks' SwiGLU backward share the scratch buffer: the gradients of two backward passes through one
    graph (retain_graph) are equal, and equal to those with the fused kernels off (float32 rounding)."""
    cfg = RunConfig(depth=2, width=64, head_dim=16, seq_len=16, mlp_ratio=8 / 3, fused_kernels="on")
    torch.manual_seed(0)
    model = Transformer(cfg)
    off = Transformer(dataclasses.replace(cfg, fused_kernels="off"))
    off.load_state_dict(model.state_dict())
    idx, targets = torch.randint(0, cfg.vocab_size, (2, 16)), torch.randint(0, cfg.vocab_size, (2, 16))
    loss = model(idx, targets)[1]
    first = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, list(model.parameters()))
    reference = torch.autograd.grad(off(idx, targets)[1], list(off.parameters()))
    for a, b, ref in zip(first, second, reference):
        assert torch.equal(a, b)
        assert (a - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_fused_kernels_are_taken_for_large_fp32_cpu_activations_only(monkeypatch):
    from hyperp.kernels import fused

    small, large = torch.zeros(4, 4), torch.zeros(fused.AUTO_MIN_ELEMENTS)
    assert not fused.enabled("auto", small) and fused.enabled("auto", large) and fused.enabled("on", small)
    assert fused.enabled("auto", small, elements=fused.AUTO_MIN_ELEMENTS)
    assert not fused.enabled("off", large) and not fused.enabled("on", large.double())
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the whole model under torch.compile
    assert not fused.enabled("on", large)


def test_a_failing_compiler_falls_back_to_the_same_math_with_one_warning(monkeypatch):
    from hyperp.kernels import fused

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", no_compiler)
    kernel = fused.Compiled(fused._swiglu_forward)
    g, u = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.warns(RuntimeWarning, match="fused CPU kernels unavailable.*InvalidCxxCompiler"):
        first = kernel(g, u)
    torch.testing.assert_close(first, F.silu(g) * u)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the later calls run eagerly in silence
        torch.testing.assert_close(kernel(g, u), first)


def test_fused_kernels_is_a_checked_choice():
    from hyperp.config import ConfigError

    with pytest.raises(ConfigError, match="fused_kernels"):
        RunConfig.from_dict({"fused_kernels": "yes"})
