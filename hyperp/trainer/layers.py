"""The layers the dense model (model.py) and the mixture of experts (moe.py) share: RMSNorm, QK-norm with RoPE,
the SwiGLU MLP, their autograd functions (forward and backward written out: fewer passes than torch's
composites on CPU), and the Z-value of a row of logits (method.md section 6).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperp.config import RunConfig


# ---------------------------------------------------------------------------------------------------------
# RMSNorm and RoPE


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


# ---------------------------------------------------------------------------------------------------------
# SwiGLU


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


# ---------------------------------------------------------------------------------------------------------
# statistics


def z_value(logits: torch.Tensor) -> float:
    """Mean over rows of (logsumexp of the row)^2."""
    return logits.float().logsumexp(-1).pow(2).mean().item()
