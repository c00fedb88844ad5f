"""The decoder-only transformer of method.md section 1: attention, block, model, read top to bottom.

Pre-norm blocks with depth-muP residual branches (x <- x + alpha * f(norm(x))), QK-norm before RoPE, optional
grouped-query attention and a head-wise output gate, SwiGLU MLP (or a mixture of experts), untied embeddings.
The layers it shares with the mixture of experts (RMSNorm, QK-norm with RoPE, SwiGLU) are in layers.py, the
MoE layer in moe.py. The RMSNorms' gains are folded into the weights of the matmuls they feed (layers.py: the
same function up to float rounding, fewer passes over the activations).

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
from hyperp.kernels import fused
from hyperp.trainer.layers import (RMSNorm, SwiGLU, fused_norm_rope, in_pairs, linears, mlp_hidden, norm_rope,
                                   rope_table, z_value)
from hyperp.trainer.moe import MoE

OUTLIER_SIGMAS = 5.0  # method.md section 6: elements farther than 5 std from the per-token mean


def branch_stats(y: torch.Tensor) -> tuple[float, float]:
    """RMS of a branch output and the share (%) of elements > 5 std from their token's mean."""
    y = y.detach().float()
    mean, std = y.mean(-1, keepdim=True), y.std(-1, keepdim=True)
    outliers = ((y - mean).abs() > OUTLIER_SIGMAS * std).float().mean()
    return y.pow(2).mean().sqrt().item(), 100.0 * outliers.item()


class Attention(nn.Module):
    """q, k, v (and the gate) are separate nn.Linear parameters, so the optimizers see separate matrices
    (Newton-Schulz and the sphere per matrix), and separate matmuls (`linears`: each output contiguous, which
    makes QK-norm and RoPE on q and k several times cheaper than on column blocks of one wide matmul's output;
    x's gradient summed in one buffer). q's and k's rows are laid in pair order for RoPE by a view (`in_pairs`),
    except where the fused CPU kernels run QK-norm and RoPE (`fused_kernels`: they pair the halves themselves).
    `gain`, the block's attention RMSNorm gain when the block folds it (layers.py), multiplies the weights'
    columns."""

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
        self.kernels = cfg.fused_kernels

    def forward(self, x: torch.Tensor, rope: torch.Tensor, stats: dict | None = None,
                gain: torch.Tensor | None = None):
        """x (B, T, w); rope: the model's `rope_table`; gain: (w,) or None."""
        B, T, _ = x.shape
        hd = self.head_dim
        halves = fused.enabled(self.kernels, x)  # the fused kernels pair the halves: no pair order
        weights = [w if halves else in_pairs(w, hd) for w in (self.q.weight, self.k.weight)] + [self.v.weight]
        weights += [self.gate.weight] if self.gate is not None else []
        q, k, v, *gate = linears(x, weights, gain)
        # QK-norm and RoPE on the (B, T, heads, head_dim) layout of the projections' outputs; SDPA takes
        # (B, heads, T, head_dim) views.
        q = self.norm_rope(q.view(B, T, self.n_heads, hd), self.q_norm, rope, halves)
        k = self.norm_rope(k.view(B, T, self.kv_heads, hd), self.k_norm, rope, halves)
        v = v.view(B, T, self.kv_heads, hd).transpose(1, 2)
        if stats is not None:
            stats.setdefault("attn_z", []).append(self.sampled_z(q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.n_heads)
        if gate:
            y = y * torch.sigmoid(gate[0]).transpose(1, 2).unsqueeze(-1)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))

    def norm_rope(self, x: torch.Tensor, norm: RMSNorm, rope: torch.Tensor, halves: bool) -> torch.Tensor:
        """(B, T, heads, D) in pair order (`halves`: in the projection's own order, for the fused CPU kernels)
        -> normalised, rotated (B, heads, T, D) view."""
        if halves:
            return fused_norm_rope(x, norm.weight, rope, norm.eps).transpose(1, 2)
        return norm_rope(x, in_pairs(norm.weight, self.head_dim), rope, norm.eps).transpose(1, 2)

    @torch.no_grad()
    def sampled_z(self, q: torch.Tensor, k: torch.Tensor) -> float:
        q0, k0 = q[0], k[0].repeat_interleave(self.n_heads // self.kv_heads, dim=0)
        T = q0.shape[-2]
        logits = q0 @ k0.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        return z_value(logits.masked_fill(~causal, float("-inf")))


def make_mlp(cfg: RunConfig, layer: int) -> nn.Module:
    """Dense SwiGLU, or the MoE layer in every `moe_every`-th block."""
    if cfg.moe_every and (layer + 1) % cfg.moe_every == 0:
        return MoE(cfg)
    return SwiGLU(cfg.d_model, mlp_hidden(cfg), fused=cfg.fused_gate_up, kernels=cfg.fused_kernels)


class Block(nn.Module):
    def __init__(self, cfg: RunConfig, layer: int, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.attn_norm, self.attn = RMSNorm(cfg.d_model, kernels=cfg.fused_kernels), Attention(cfg)
        self.mlp_norm, self.mlp = RMSNorm(cfg.d_model, kernels=cfg.fused_kernels), make_mlp(cfg, layer)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        # the norms' gains folded into the next matmuls' weights (layers.py): attn(norm(x)), mlp(norm(x))
        a = self.attn(self.attn_norm.normalize(x), rope, stats, gain=self.attn_norm.weight)
        x = torch.add(x, a, alpha=self.alpha)  # one pass for x + alpha * a
        if isinstance(self.mlp, SwiGLU):
            m = self.mlp(self.mlp_norm.normalize(x), gain=self.mlp_norm.weight)
        else:  # the MoE layer routes the normalised input: its gain stays on the activations
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
        self.norm = RMSNorm(cfg.d_model, kernels=cfg.fused_kernels)
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
        # head(norm(x)) * logit_mult with the final norm's gain and the multiplier (only `muon` has one) folded
        # into the head's weight (layers.py): no pass over (B, T, w) for the gain nor over (B, T, V) for the scale
        gain = self.norm.weight * self.logit_mult if self.logit_mult != 1.0 else self.norm.weight
        logits = F.linear(self.norm.normalize(x), self.head.weight * gain)
        if stats is not None:  # the head's sphere can bind at small width: the final gain grows (method.md 10)
            stats["final_norm_gain"] = [self.norm.weight.detach().float().pow(2).mean().sqrt().item()]
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the MoE load-balancing losses of the last forward (0 for a dense model)."""
        losses = [m.balance_loss for m in self.modules() if getattr(m, "balance_loss", None) is not None]
        return sum(losses, torch.zeros(())) if losses else 0.0
