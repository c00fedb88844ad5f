"""The layers the dense model (model.py) and the mixture of experts (moe.py) share: RMSNorm, QK-norm with RoPE,
the SwiGLU MLP, their autograd functions (forward and backward written out: fewer passes over the activations and
fewer temporaries than torch's composites on CPU), and the Z-value of a row of logits (method.md section 6).

Where an RMSNorm feeds matmuls (the block's two norms, the final one), the model folds its gain g into their
weights: W (g * x_hat) = (W diag(g)) x_hat, the same products summed in the same order up to the rounding of
W g, and the gain's gradient comes from the weight's (sum over rows of dW' * W, a w-sized reduction). The norm
then computes only x_hat = x * rstd (`RMSNorm.normalize`): the gain's pass over the activations and two of its
gradient's are gone, and x_hat is the one tensor both the norm and the matmul keep for the backward.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperp.config import RunConfig
from hyperp.kernels import fused


# ---------------------------------------------------------------------------------------------------------
# RMSNorm and RoPE


def _rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                       weight_grad: bool, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of y = x * rstd * g: with p = dy * x * rstd, dg = sum of p over rows and
    dx = rstd * dy * g - x * rstd^2 * (p . g) / D, in one temporary (p) and a matrix-vector product; `inplace`
    writes dx into grad's memory (a gradient the caller computed itself, never autograd's)."""
    g_rstd = grad.mul_(rstd) if inplace else grad * rstd
    p = g_rstd * x
    d_weight = p.flatten(0, -2).sum(0) if weight_grad else None
    coef = torch.matmul(p, weight).unsqueeze_(-1).mul_(rstd.square()).div_(x.shape[-1])
    return g_rstd.mul_(weight).addcmul_(x, coef, value=-1), d_weight


def _rstd(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim (keepdim), from one reduction pass over x."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).pow_(2).div_(x.shape[-1]).add_(eps).rsqrt_()


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x * rstd * g, rstd) with rstd = 1 / sqrt(mean(x^2) + eps) over the last dim."""
    rstd = _rstd(x, eps)
    return torch.mul(x, rstd).mul_(weight), rstd


class _NormalizeFn(torch.autograd.Function):
    """x_hat = x * rstd, the RMSNorm without its gain (the caller folds the gain into its next matmul). Keeps
    x_hat (which that matmul keeps anyway) and rstd; dx = rstd * (dy - x_hat * (dy . x_hat) / D). The row dot
    products by `vecdot` (a product and a sum): the batched matrix product of (1, D) by (D, 1) rows, which needs
    no temporary, ran 2.4x slower on CPU (1.44 against 0.60 ms for 8,192 rows of 256 at 1 thread). `fuse`: the
    backward by one fused CPU kernel (hyperp.kernels.fused); the forward's two passes stay eager, as fast as a
    fused forward was in the model (6.3 against 7.7 ms per step for the 9 norms, 2 threads)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float, fuse: bool = False) -> torch.Tensor:
        rstd = _rstd(x, eps)
        y = torch.mul(x, rstd)
        ctx.save_for_backward(y, rstd)
        ctx.fuse = fuse
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, rstd = ctx.saved_tensors
        if ctx.fuse:
            return fused.normalize_backward(grad, y, rstd), None, None
        dots = torch.linalg.vecdot(grad, y, dim=-1).unsqueeze_(-1).div_(y.shape[-1])
        return torch.addcmul(grad, y, dots, value=-1).mul_(rstd), None, None


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
    """`kernels`: the config's `fused_kernels` mode, whether `normalize` takes the fused CPU kernels."""

    def __init__(self, dim: int, eps: float = 1e-6, kernels: str = "off"):
        super().__init__()
        self.eps, self.kernels = eps, kernels
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:  # autocast's bf16 activations: torch's own op handles the mixed dtypes
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return _RMSNormFn.apply(x, self.weight, self.eps)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x * rstd without the gain, for a caller that multiplies `weight` into its next matmul's weight
        (the module docstring)."""
        if x.dtype != self.weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), None, self.eps)
        return _NormalizeFn.apply(x, self.eps, fused.enabled(self.kernels, x))


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


def in_pairs(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The rows (dim 0) of t, head_dim per head, put in pair order (`pair_order` within each head): a
    transposed view, copied. Its gradient is a copy back, where index_select's would scatter (slow on several
    threads)."""
    heads = t.shape[0] // head_dim
    return t.view(heads, 2, head_dim // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """x (..., D) real -> (..., D/2) complex view of adjacent pairs (a copy only when x's strides forbid a view)."""
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def rotate_pairs(x: torch.Tensor, table: torch.Tensor, inverse: bool = False, inplace: bool = False) -> torch.Tensor:
    """Rotate the adjacent pairs of x (..., D) by the angles of `table` ((cos, sin) pairs broadcast against
    (..., D/2, 2)); `inverse` rotates by the opposite angles. `inplace` rotates a contiguous x (one the caller
    owns) in its own memory, eagerly; otherwise, and under torch.compile, the result is a new tensor."""
    if torch.compiler.is_compiling():  # inductor takes no complex views; it fuses the real form into one kernel
        a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = table.unbind(-1)
        sin = -sin if inverse else sin
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    rot = torch.view_as_complex(table)
    rot = rot.conj() if inverse else rot
    if inplace and x.is_contiguous():
        _as_complex(x).mul_(rot)
        return x
    return torch.view_as_real(_as_complex(x) * rot).flatten(-2)


class _NormRope(torch.autograd.Function):
    """QK-norm then RoPE in one function: y = rotate(x * rstd * g). The rotation's gradient is the rotation by
    the opposite angle; only x, g, rstd and the table are kept for the backward (not the normalised x). One
    temporary of x's size each way besides the result: the rotation runs in the normalised x's memory, and the
    backward's gradient in the inverse rotation's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd, table)
        return rotate_pairs(y, table, inplace=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd, table = ctx.saved_tensors
        rotated = rotate_pairs(grad, table, inverse=True)  # a new tensor: the norm's gradient may overwrite it
        d_x, d_weight = _rms_norm_backward(rotated, x, weight, rstd, ctx.needs_input_grad[1], inplace=True)
        return d_x, d_weight, None, None


def norm_rope(x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with gain `weight` then RoPE, on x (B, T, heads, D) in pair order (`pair_order`; weight too),
    table (>= T, D/2, 2) from `rope_table`. Computed in at least fp32 (bf16 activations on CUDA)."""
    compute = torch.promote_types(x.dtype, torch.float32)
    table = table[: x.shape[1]].unsqueeze(1).to(compute)  # (T, 1, D/2, 2): broadcast over the heads
    return _NormRope.apply(x.to(compute), weight.to(compute), table, eps).type_as(x)


class _FusedNormRope(torch.autograd.Function):
    """QK-norm then RoPE with the halves paired, forward and backward each one fused CPU kernel
    (hyperp.kernels.fused); keeps x, the gain, rstd and the angles' cos and sin, as `_NormRope` keeps x, the
    gain, rstd and the table."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                eps: float) -> torch.Tensor:
        y, rstd = fused.norm_rope_forward(x, weight, cos, sin, eps)
        ctx.save_for_backward(x, weight, rstd, cos, sin)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd, cos, sin = ctx.saved_tensors
        d_x, d_weight = fused.norm_rope_backward(grad.contiguous(), x, weight, rstd, cos, sin)
        return d_x, d_weight, None, None, None


def fused_norm_rope(x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, eps: float) -> torch.Tensor:
    """`norm_rope` on x (B, T, heads, D) in the halves' order (the projection's own rows, no `pair_order`), by
    the fused CPU kernels: for fp32 CPU tensors (`fused.enabled`)."""
    cos, sin = (table[: x.shape[1], None, :, i].contiguous() for i in (0, 1))  # (T, 1, D/2) each
    return _FusedNormRope.apply(x.contiguous(), weight, cos, sin, eps)


# ---------------------------------------------------------------------------------------------------------
# several projections of one input


class _Linears(torch.autograd.Function):
    """x W_i^T for each weight W_i, each output its own contiguous tensor (the elementwise passes after a
    projection run several times faster on it than on a column block of one wide matmul's output); the backward
    accumulates x's gradient in one buffer (addmm_) where autograd would allocate each product and add them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, *weights)
        return tuple(F.linear(x, w) for w in weights)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        x, *weights = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])
        d_x, d_weights = None, []
        for grad, w, need in zip(grads, weights, ctx.needs_input_grad[1:]):
            if grad is None:
                d_weights.append(None)
                continue
            grad = grad.reshape(-1, grad.shape[-1])
            d_weights.append(grad.t().mm(x2) if need else None)
            if ctx.needs_input_grad[0]:
                d_x = grad.mm(w) if d_x is None else d_x.addmm_(grad, w)
        return (None if d_x is None else d_x.view(x.shape)), *d_weights


def linears(x: torch.Tensor, weights: list[torch.Tensor], gain: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """[F.linear(x, w * gain) for w in weights] (`gain` None: 1); one autograd function on fp32 (x's gradient
    summed in place), torch's own linears under autocast (bf16 on CUDA: the products' dtypes are autocast's).
    The gain multiplies the weights concatenated, one op and its gradient's three for all of them."""
    if gain is not None:
        weights = torch.cat(weights).mul(gain).split([w.shape[0] for w in weights]) if len(weights) > 1 \
            else [weights[0] * gain]
    if _autocast_enabled(x.device.type) or x.dtype != weights[0].dtype:
        return tuple(F.linear(x, w) for w in weights)
    return _Linears.apply(x, *weights)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch before 2.4 takes no device type
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


# ---------------------------------------------------------------------------------------------------------
# SwiGLU


class _SwiGLUFn(torch.autograd.Function):
    """silu(g) * u for the gate and up projections' outputs, two matmuls (`linears`) with contiguous outputs: on
    the strided halves of one wide matmul's output the elementwise passes ran several times slower (the profiles
    in results/bench/nanogpt.txt). Keeps g and u only; the backward has no temporaries: d_u = silu(g) * dy (silu
    recomputed, cheaper on CPU than keeping it: one allocation fewer), d_g = silu'(g) * (u * dy) in place."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g, u)
        return F.silu(g).mul_(u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g, u = ctx.saved_tensors
        d_u = F.silu(g).mul_(grad)
        d_g = torch.mul(grad, u)
        if torch.compiler.is_compiling():  # the functional form for the tracer (no output aliasing an input)
            return torch.ops.aten.silu_backward(d_g, g), d_u
        return torch.ops.aten.silu_backward.grad_input(d_g, g, grad_input=d_g), d_u


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u."""
    return _SwiGLUFn.apply(g, u)


class _GatedProjectionFn(torch.autograd.Function):
    """silu(x W_g^T) * (x W_u^T): the gate and up projections and the activation in one function, so that the
    backward needs one temporary of the hidden activations' size where the two functions apart need two (d_g
    and d_u alive together for the projections' backward): d_g is computed in it, spent on its matmuls, then d_u
    is computed in the same memory. `fuse`: the activation and its gradient by the fused CPU kernels
    (hyperp.kernels.fused), which give d_g and d_u in one pass, into the kernels' reused scratch buffer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, fuse: bool = False) -> torch.Tensor:
        g, u = F.linear(x, w_gate), F.linear(x, w_up)
        ctx.save_for_backward(x, w_gate, w_up, g, u)
        ctx.fuse = fuse
        return fused.swiglu_forward(g, u) if fuse else F.silu(g).mul_(u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w_gate, w_up, g, u = ctx.saved_tensors
        x2, grad = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
        g, u = g.view(grad.shape), u.view(grad.shape)
        if ctx.fuse:
            d_g, d_u = fused.scratch((2, *g.shape)).unbind(0)  # spent on the matmuls below
            fused.swiglu_backward_into(d_g, d_u, grad.contiguous(), g, u)
            d_x = d_g.mm(w_gate).addmm_(d_u, w_up)
            return d_x.view(x.shape), d_g.t().mm(x2), d_u.t().mm(x2), None
        d = torch.mul(grad, u)
        torch.ops.aten.silu_backward.grad_input(d, g, grad_input=d)  # d_g
        d_gate = d.t().mm(x2)
        d_x = d.mm(w_gate)
        torch.ops.aten.silu.out(g, out=d).mul_(grad)  # d_u, in d_g's memory
        d_up = d.t().mm(x2)
        d_x.addmm_(d, w_up)
        return d_x.view(x.shape), d_gate, d_up, None


class SwiGLU(nn.Module):
    """down(silu(gate x) * up x); `gain` (a preceding RMSNorm's, folded: the layers' docstring) multiplies the
    columns of the gate and up weights. With a gain, in fp32 and eagerly (the model's blocks on CPU), the gate and
    up projections and the activation run as one function (`_GatedProjectionFn`), else as `linears` and
    `swiglu`. `fused`: the gate and up weights are the two row halves of one (2 hidden, width) parameter
    `gate_up`, so the optimizers see one matrix (one sphere, one Newton-Schulz: the authors' code); the forward
    is the same function of the weights. `kernels`: the config's `fused_kernels` mode, whether that one function
    takes the fused CPU kernels for the activation (hyperp.kernels.fused)."""

    def __init__(self, width: int, hidden: int, fused: bool = False, kernels: str = "auto"):
        super().__init__()
        self.hidden, self.kernels = hidden, kernels
        if fused:
            self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        else:
            self.gate = nn.Linear(width, hidden, bias=False)
            self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def gate_up_weights(self) -> list[torch.Tensor]:
        """[gate weight, up weight], each (hidden, width): views of `gate_up` when fused."""
        if hasattr(self, "gate_up"):
            return list(self.gate_up.weight.split(self.hidden))
        return [self.gate.weight, self.up.weight]

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.gate_up_weights()
        if (gain is not None and not _autocast_enabled(x.device.type) and x.dtype == weights[0].dtype
                and not torch.compiler.is_compiling()):
            both = self.gate_up.weight if hasattr(self, "gate_up") else torch.cat(weights)
            w_gate, w_up = both.mul(gain).split(self.hidden)
            fuse = fused.enabled(self.kernels, x, elements=x.numel() // x.shape[-1] * self.hidden)
            return self.down(_GatedProjectionFn.apply(x, w_gate, w_up, fuse))
        return self.down(swiglu(*linears(x, weights, gain)))


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
