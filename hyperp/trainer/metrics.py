"""Parameter counts, FLOPs and the machine's matmul peak (method.md section 7).

FLOP convention: training FLOPs = 6 * N_active_matrix * T + attention terms, where N_active_matrix counts the
weights that multiply activations for each token: attention, MLP (only the experts a token is routed to, and
the router), and the LM head. The input embedding is a lookup and is not counted; norms are negligible and
not counted. Attention scores and values add 12 * depth * w_attn * ctx per token (forward + backward), with
w_attn = n_heads * head_dim (the full causal square, as in Kaplan et al.). Newton-Schulz FLOPs are a real cost
of Muon-type optimizers but not model FLOPs; they are reported separately per step.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch

from hyperp.config import RunConfig
from hyperp.trainer.model import Transformer


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every parameter
    non_embedding: int  # total minus the input embedding and the LM head
    active: int  # parameters a token touches (MoE: routed experts counted k of k*S), embeddings included
    active_matrix: int  # active weights that multiply activations (FLOP count basis, head included)


def count_params(model: torch.nn.Module, cfg: RunConfig) -> ParamCounts:
    total = sum(p.numel() for p in model.parameters())
    embed, head = model.embed.weight.numel(), model.head.weight.numel()
    inactive = 0
    for m in model.modules():
        inactive += getattr(m, "inactive_params", lambda: 0)()  # MoE layers report their idle experts
    vectors = sum(p.numel() for p in model.parameters() if p.ndim < 2)
    active = total - inactive
    return ParamCounts(total=total, non_embedding=total - embed - head, active=active,
                       active_matrix=active - embed - vectors)


# RunConfig fields that determine the model's shape (and so its parameter count).
SHAPE_FIELDS = ("depth", "width", "aspect_ratio", "head_dim", "n_kv_heads", "seq_len", "vocab_size", "mlp_ratio",
                "attn_gate", "rope_theta", "moe_every", "sparsity", "top_k", "shared_expert", "sqrt_gate")


@dataclass(frozen=True)
class ModelFacts:
    """What accounting needs of a model, read off one meta-device build (no memory, no init)."""

    counts: ParamCounts
    hidden_shapes: tuple[tuple[int, ...], ...]  # the hidden matrices' shapes (embedding and head excluded)


@functools.lru_cache(maxsize=4096)
def _facts(shape: tuple[tuple[str, Any], ...]) -> ModelFacts:

    cfg = RunConfig(**dict(shape))
    with torch.device("meta"):
        model = Transformer(cfg)
    hidden = tuple(tuple(p.shape) for name, p in model.named_parameters()
                   if p.ndim >= 2 and not name.startswith(("embed.", "head.")))
    return ModelFacts(count_params(model, cfg), hidden)


def model_facts(cfg: RunConfig) -> ModelFacts:
    """The run's ModelFacts, cached per shape."""
    return _facts(tuple((k, getattr(cfg, k)) for k in SHAPE_FIELDS))


def param_counts(cfg: RunConfig) -> ParamCounts:
    return model_facts(cfg).counts


def hidden_shapes(cfg: RunConfig) -> list[tuple[int, ...]]:
    return list(model_facts(cfg).hidden_shapes)


def static_columns(cfg: RunConfig) -> dict[str, Any]:
    """Columns known before training: shape, parameter counts and planned FLOPs."""
    c = param_counts(cfg)
    tokens = cfg.total_steps * cfg.batch_tokens  # what the trainer will actually consume
    return {"width": cfg.d_model, "n_heads": cfg.n_heads, "n_params": c.total,
            "n_params_non_embedding": c.non_embedding, "n_params_active": c.active,
            "n_params_active_matrix": c.active_matrix, "flops_planned": training_flops(c, cfg, tokens)}


def attention_flops_per_token(cfg: RunConfig) -> float:
    return 12.0 * cfg.depth * cfg.n_heads * cfg.head_dim * cfg.seq_len


def training_flops(counts: ParamCounts, cfg: RunConfig, tokens: int | None = None) -> float:
    tokens = cfg.tokens if tokens is None else tokens
    return (6.0 * counts.active_matrix + attention_flops_per_token(cfg)) * tokens


PROBE_SIZES = (512, 1024, 2048)  # the best of several square sizes: small ones miss peak on some BLAS builds
CUDA_PROBE_SIZES = (4096, 8192)  # a large GPU reaches its peak only on large products (2048^3 is launch-bound)


def probe_sizes(device: str) -> tuple[int, ...]:
    return CUDA_PROBE_SIZES if device.startswith("cuda") else PROBE_SIZES


def compute_dtype(device: str) -> torch.dtype:
    """The dtype the trainer's matmuls run in: bf16 under autocast on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


@functools.lru_cache(maxsize=4)
def matmul_peak_flops(device: str = "cpu", dtype: torch.dtype | None = None, seconds: float = 0.5) -> float:
    """Measured FLOP/s of square matmuls in `dtype` (default: the trainer's, `compute_dtype`), the best over the
    device's probe sizes: the reference peak for MFU."""
    sizes = probe_sizes(device)
    return max(matmul_flops(n, device, dtype or compute_dtype(device), seconds / len(sizes)) for n in sizes)


def matmul_flops(n: int, device: str, dtype: torch.dtype, seconds: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or reps < 2:
        a @ b
        reps += 1
    sync()
    return 2.0 * n**3 * reps / (time.perf_counter() - start)
