"""Newton-Schulz orthogonalization (method.md section 3): coefficients, the torch reference, the dispatch.

NS(U): X = U / (||U||_F + eps), transposed to the wide orientation, then `steps` iterations
X <- a X + (b A + c A^2) X with A = X X^T. Batched over leading dims, so an MoE expert bank (E, rows, cols)
is E independent matrices. The Triton kernel (`hyperp.kernels.newton_schulz`) computes the same thing on CUDA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# the coefficients live apart, so the Triton kernel reads them without importing this dispatcher (no circle)
from hyperp.kernels.ns_coeffs import NS_COEFFS, NS_EPS, ns_schedule

__all__ = ["NS_COEFFS", "NS_EPS", "newton_schulz", "newton_schulz_torch", "ns_flops", "ns_schedule"]


def newton_schulz_torch(G: Tensor, coeffs: str = "per_iter", steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """Approximate the polar factor U V^T of G (batched over leading dims) by Newton-Schulz iterations."""
    X = G.to(dtype or G.dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + NS_EPS)
    tall = X.shape[-2] > X.shape[-1]
    if tall:  # iterate on the wide orientation so A = X X^T is the smaller Gram matrix
        X = X.mT
    for a, b, c in ns_schedule(coeffs, steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


def newton_schulz(G: Tensor, coeffs: str = "per_iter", steps: int = 5, backend: str = "auto") -> Tensor:
    """Newton-Schulz as the optimizers call it: fp32 torch on CPU; bf16 on CUDA, through the Triton kernel
    (`hyperp.kernels.newton_schulz`) unless `backend` is "torch" or Triton is missing."""
    if not G.is_cuda:
        if backend == "triton":
            raise ValueError("ns_backend: the Triton kernel runs on CUDA tensors (TRITON_INTERPRET=1 for tests)")
        return newton_schulz_torch(G, coeffs, steps)
    from hyperp.kernels import newton_schulz as kernel  # noqa: PLC0415 (triton import is slow and optional)

    if backend == "torch" or not kernel.available():
        return newton_schulz_torch(G, coeffs, steps, dtype=torch.bfloat16)
    return kernel.newton_schulz_triton(G, coeffs, steps, dtype=torch.bfloat16)


def ns_flops(shape: torch.Size | tuple[int, ...], steps: int) -> float:
    """FLOPs of one Newton-Schulz call: per iteration X X^T, A A and (bA + cA^2) X on the wide orientation."""
    *batch, r, c = shape
    m, n = min(r, c), max(r, c)
    per_iter = 2 * m * m * n + 2 * m * m * m + 2 * m * m * n
    return float(math.prod(batch)) * steps * per_iter
