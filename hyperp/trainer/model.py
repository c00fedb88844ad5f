"""The decoder-only transformer of method.md section 1, in one readable file.

Pre-norm blocks with depth-muP residual branches (x <- x + alpha * f(norm(x))), QK-norm before RoPE, optional
grouped-query attention and a head-wise output gate, SwiGLU MLP (or a mixture of experts), untied embeddings.

Stability indicators (method.md section 6) are collected when `forward` gets a `stats` dict: branch output
RMS, outlier share, and the attention Z-value. The attention Z-value is computed on a sample: the first
sequence of the batch, every head, every query row, with explicit causal logits (SDPA does not expose them).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperp.config import RunConfig

OUTLIER_SIGMAS = 5.0  # method.md section 6: elements farther than 5 std from the per-token mean


def _rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                       weight_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of y = x * rstd * g: with p = dy * x * rstd, dg = sum of p over rows and
    dx = rstd * dy * g - x * rstd^2 * (p . g) / D, in one temporary (p) and a matrix-vector product."""
    g_rstd = grad * rstd
    p = g_rstd * x
    d_weight = p.flatten(0, -2).sum(0) if weight_grad else None
    coef = torch.matmul(p, weight).unsqueeze_(-1).mul_(rstd.square()).div_(x.shape[-1])
    return g_rstd.mul_(weight).addcmul_(x, coef, value=-1), d_weight


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x * rstd * g, rstd) with rstd = 1 / sqrt(mean(x^2) + eps) over the last dim."""
    rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).pow_(2).div_(x.shape[-1]).add_(eps).rsqrt_()
    return torch.mul(x, rstd).mul_(weight), rstd


class _RMSNormFn(torch.autograd.Function):
    """y = x * rstd * g with rstd = 1 / sqrt(mean(x^2) + eps) over the last dim, forward and backward written
    out in a few passes over x (F.rms_norm is a composite of about twice as many elementwise ops on CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        return *_rms_norm_backward(grad, x, weight, rstd, ctx.needs_input_grad[1]), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:  # autocast's bf16 activations: torch's own op handles the mixed dtypes
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return _RMSNormFn.apply(x, self.weight, self.eps)


# RoPE (method.md section 1) rotates the pairs (x[i], x[i + D/2]) of a head's D dims by the angle t * theta^(-2i/D)
# at position t. The model computes it on the pairs laid side by side, (x[2i], x[2i + 1]), as one complex
# multiplication: the q and k rows of the projection are permuted into that order (`pair_order`) before the
# matmul. q and k share the permutation, so every score q . k, and so the attention, is unchanged up to
# rounding, while the rotation becomes one contiguous pass instead of four on strided halves.


def rope_table(seq_len: int, head_dim: int, theta: float) -> torch.Tensor:
    """(cos, sin) of the angles t theta^(-2j/D) as a real (seq_len, head_dim / 2, 2) table: a complex number per
    entry, viewed as one by `rotate_pairs` (a real buffer: it follows the model's dtype, and torch.compile
    takes it)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()


def pair_order(head_dim: int) -> torch.Tensor:
    """The index that lays the halves' pairs side by side: [0, D/2, 1, D/2 + 1, ...]."""
    half = torch.arange(head_dim // 2)
    return torch.stack([half, half + head_dim // 2], dim=-1).flatten()


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """x (..., D) real -> (..., D/2) complex view of adjacent pairs (a copy only when x's strides forbid a view)."""
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def rotate_pairs(x: torch.Tensor, table: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate the adjacent pairs of x (..., D) by the angles of `table` ((cos, sin) pairs broadcast against
    (..., D/2, 2)); `inverse` rotates by the opposite angles."""
    if torch.compiler.is_compiling():  # inductor takes no complex views; it fuses the real form into one kernel
        a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = table.unbind(-1)
        sin = -sin if inverse else sin
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    rot = torch.view_as_complex(table)
    return torch.view_as_real(_as_complex(x) * (rot.conj() if inverse else rot)).flatten(-2)


class _NormRope(torch.autograd.Function):
    """QK-norm then RoPE in one function: y = rotate(x * rstd * g). The rotation's gradient is the rotation by
    the opposite angle; only x, g, rstd and the table are kept for the backward (not the normalised x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd, table)
        return rotate_pairs(y, table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd, table = ctx.saved_tensors
        rotated = rotate_pairs(grad, table, inverse=True)
        d_x, d_weight = _rms_norm_backward(rotated, x, weight, rstd, ctx.needs_input_grad[1])
        return d_x, d_weight, None, None


def norm_rope(x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with gain `weight` then RoPE, on x (B, T, heads, D) in pair order (`pair_order`; weight too),
    table (>= T, D/2, 2) from `rope_table`. Computed in at least fp32 (bf16 activations on CUDA)."""
    compute = torch.promote_types(x.dtype, torch.float32)
    table = table[: x.shape[1]].unsqueeze(1).to(compute)  # (T, 1, D/2, 2): broadcast over the heads
    return _NormRope.apply(x.to(compute), weight.to(compute), table, eps).type_as(x)


def branch_stats(y: torch.Tensor) -> tuple[float, float]:
    """RMS of a branch output and the share (%) of elements > 5 std from their token's mean."""
    y = y.detach().float()
    mean, std = y.mean(-1, keepdim=True), y.std(-1, keepdim=True)
    outliers = ((y - mean).abs() > OUTLIER_SIGMAS * std).float().mean()
    return y.pow(2).mean().sqrt().item(), 100.0 * outliers.item()


def z_value(logits: torch.Tensor) -> float:
    """Mean over rows of (logsumexp of the row)^2."""
    return logits.float().logsumexp(-1).pow(2).mean().item()


class Attention(nn.Module):
    """q, k, v (and the gate) stay separate nn.Linear parameters, so the optimizers see separate matrices
    (Newton-Schulz and the sphere per matrix); the forward concatenates their weights into one (out, w)
    matrix, q's and k's rows in pair order for RoPE, and runs one matmul (cheaper than three on CPU:
    results/bench/train.txt)."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        w, hd = cfg.d_model, cfg.head_dim
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, hd
        self.q = nn.Linear(w, self.n_heads * hd, bias=False)
        self.k = nn.Linear(w, self.kv_heads * hd, bias=False)
        self.v = nn.Linear(w, self.kv_heads * hd, bias=False)
        self.o = nn.Linear(self.n_heads * hd, w, bias=False)
        self.gate = nn.Linear(w, self.n_heads, bias=False) if cfg.attn_gate else None
        self.q_norm, self.k_norm = RMSNorm(hd), RMSNorm(hd)
        self.in_proj = [m for m in (self.q, self.k, self.v, self.gate) if m is not None]
        self.split = [m.out_features for m in self.in_proj]
        order = pair_order(hd)
        heads = self.n_heads + self.kv_heads  # q's and k's rows, head by head, then v's and the gate's as they are
        rows = torch.cat([(order + h * hd) for h in range(heads)] + [torch.arange(heads * hd, sum(self.split))])
        self.register_buffer("pair_order", order, persistent=False)
        self.register_buffer("rows", rows, persistent=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, stats: dict | None = None):
        """x (B, T, w); rope: the model's `rope_table`."""
        B, T, _ = x.shape
        weight = torch.cat([m.weight for m in self.in_proj]).index_select(0, self.rows)
        q, k, v, *gate = F.linear(x, weight).split(self.split, dim=-1)
        # QK-norm and RoPE on the (B, T, heads, head_dim) layout of the projection's output (rows of head_dim
        # contiguous); SDPA takes (B, heads, T, head_dim) views.
        q = self.norm_rope(q.view(B, T, self.n_heads, self.head_dim), self.q_norm, rope)
        k = self.norm_rope(k.view(B, T, self.kv_heads, self.head_dim), self.k_norm, rope)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if stats is not None:
            stats.setdefault("attn_z", []).append(self.sampled_z(q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.n_heads)
        if gate:
            y = y * torch.sigmoid(gate[0]).transpose(1, 2).unsqueeze(-1)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))

    def norm_rope(self, x: torch.Tensor, norm: RMSNorm, rope: torch.Tensor) -> torch.Tensor:
        """(B, T, heads, D) in pair order -> normalised, rotated (B, heads, T, D) view."""
        return norm_rope(x, norm.weight.index_select(0, self.pair_order), rope, norm.eps).transpose(1, 2)

    @torch.no_grad()
    def sampled_z(self, q: torch.Tensor, k: torch.Tensor) -> float:
        q0, k0 = q[0], k[0].repeat_interleave(self.n_heads // self.kv_heads, dim=0)
        T = q0.shape[-2]
        logits = q0 @ k0.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        return z_value(logits.masked_fill(~causal, float("-inf")))


class _SwiGLUFn(torch.autograd.Function):
    """silu(g) * u of gu = [g | u] (halves of the last dim), its gradient written into one buffer shaped like gu:
    chunk's own backward would concatenate the halves' gradients, a copy of the whole (tokens, 2h) tensor."""

    @staticmethod
    def forward(ctx, gu: torch.Tensor) -> torch.Tensor:
        g, u = gu.chunk(2, dim=-1)
        a = F.silu(g)
        ctx.save_for_backward(gu, a)
        return a * u

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gu, a = ctx.saved_tensors
        g, u = gu.chunk(2, dim=-1)
        d_gu = torch.empty_like(gu)
        d_g, d_u = d_gu.chunk(2, dim=-1)
        torch.mul(grad, a, out=d_u)
        torch.ops.aten.silu_backward.grad_input(grad * u, g, grad_input=d_g)
        return d_gu


def swiglu(gu: torch.Tensor) -> torch.Tensor:
    """silu(g) * u of gu = [g | u] (the last dim's halves)."""
    return _SwiGLUFn.apply(gu)


class SwiGLU(nn.Module):
    """down(silu(gate x) * up x); gate and up stay separate parameters, run as one matmul on their
    concatenated weights."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(swiglu(F.linear(x, torch.cat([self.gate.weight, self.up.weight]))))


def mlp_hidden(cfg: RunConfig) -> int:
    """Hidden size of the dense SwiGLU (the total over a token's routed experts in an MoE layer): mlp_ratio * w
    rounded up to a multiple of MLP_MULTIPLE (config.py), and of top_k when the model has MoE layers, so k
    experts of mlp_hidden / k units keep a token's active MLP parameters equal to a dense block's."""
    return cfg.mlp_hidden


def make_mlp(cfg: RunConfig, layer: int) -> nn.Module:
    """Dense SwiGLU, or the MoE layer in every `moe_every`-th block."""
    if cfg.moe_every and (layer + 1) % cfg.moe_every == 0:
        from hyperp.trainer.moe import MoE  # noqa: PLC0415 (MoE lives in its own file)

        return MoE(cfg)
    return SwiGLU(cfg.d_model, mlp_hidden(cfg))


class Block(nn.Module):
    def __init__(self, cfg: RunConfig, layer: int, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.attn_norm, self.attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.mlp_norm, self.mlp = RMSNorm(cfg.d_model), make_mlp(cfg, layer)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        a = self.attn(self.attn_norm(x), rope, stats)
        x = torch.add(x, a, alpha=self.alpha)  # one pass for x + alpha * a
        m = self.mlp(self.mlp_norm(x))
        x = torch.add(x, m, alpha=self.alpha)
        if stats is not None:
            for name, y in (("attn", a), ("mlp", m)):
                rms, outliers = branch_stats(y)
                stats.setdefault(f"rms_{name}", []).append(rms)
                stats.setdefault(f"outlier_{name}", []).append(outliers)
            if hasattr(self.mlp, "collect_stats"):  # MoE: router Z, MaxVio, expert counts
                self.mlp.collect_stats(stats)
        return x


class Transformer(nn.Module):
    def __init__(self, cfg: RunConfig, residual_alpha: float = 1.0, logit_mult: float = 1.0):
        super().__init__()
        self.cfg, self.logit_mult = cfg, logit_mult
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, residual_alpha) for i in range(cfg.depth))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer("rope", rope_table(cfg.seq_len, cfg.head_dim, cfg.rope_theta), persistent=False)

    def init_weights(self, embed_std: float, head_std: float, generator: torch.Generator | None = None) -> None:
        """Hidden matrices keep PyTorch's default init (uniform, std ~ 1/sqrt(fan_in)); norms start at 1."""
        nn.init.normal_(self.embed.weight, std=embed_std, generator=generator)
        nn.init.normal_(self.head.weight, std=head_std, generator=generator)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, stats: dict | None = None):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.rope, stats)
        logits = self.head(self.norm(x))
        if stats is not None:  # the head's sphere can bind at small width: the final gain grows (method.md 10)
            stats["final_norm_gain"] = [self.norm.weight.detach().float().pow(2).mean().sqrt().item()]
        if self.logit_mult != 1.0:  # only `muon` scales the logits; skip a pass over (B, T, V) otherwise
            logits = logits * self.logit_mult
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the MoE load-balancing losses of the last forward (0 for a dense model)."""
        losses = [m.balance_loss for m in self.modules() if getattr(m, "balance_loss", None) is not None]
        return sum(losses, torch.zeros(())) if losses else 0.0
