"""Newton-Schulz in Triton: one fused "matmul, scale, add" kernel drives every iteration.

Each iteration X <- a X + (b A + c A^2) X with A = X X^T is three launches of the same kernel,
C = alpha * (P @ Q) + beta * R:
    A = X @ X^T                      (alpha 1, no R)
    B = c * (A @ A) + b * A          (alpha c, beta b, R = A)
    X = B @ X + a * X                (alpha 1, beta a, R = X)
so the scalings and additions ride in the matmul epilogue instead of separate elementwise passes over
memory, and A @ A skips the lower-triangle tiles' twins: A is symmetric, so the kernel computes the tiles on
or above the diagonal and mirrors them (SYMMETRIC=True), about half of that matmul's work. The kernel works
on a batch of matrices (grid axis 2), so an MoE expert bank of shape (E, rows, cols) is one call per launch.
Accumulation is fp32; inputs are bf16 on CUDA (as in Muon) or fp32.

On CUDA it runs compiled, its tile sizes autotuned per shape on the first call (square tiles: the symmetric
mode mirrors a tile across the diagonal); on CPU the tests run it under TRITON_INTERPRET=1, one small tile,
against the torch reference `hyperp.kernels.ns.newton_schulz_torch`.
"""

from __future__ import annotations

import inspect
import os

import torch

from hyperp.kernels.ns_coeffs import NS_EPS, ns_schedule

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional at run time; the torch path is used without it
    triton = None

# (tile rows = cols, K step, pipeline stages, warps): candidates the autotuner times on the GPU at each new shape;
# a candidate that does not fit the GPU's shared memory is skipped by the autotuner
TILES = ((128, 64, 3, 8), (128, 32, 4, 4), (64, 64, 4, 4), (64, 32, 5, 2), (32, 32, 4, 2))
INTERPRETED_TILE = (32, 32)  # TRITON_INTERPRET=1: one small tile, nothing to time


def tile_configs() -> list:
    if os.environ.get("TRITON_INTERPRET") == "1":
        m, k = INTERPRETED_TILE
        return [triton.Config({"BM": m, "BN": m, "BK": k})]
    return [triton.Config({"BM": m, "BN": m, "BK": k}, num_stages=s, num_warps=w) for m, k, s, w in TILES]


def autotune_options() -> dict:
    """Keep each shape's choice on disk where this Triton can (`cache_results`, newer Triton): every run of a
    sweep is a fresh process and would otherwise time the tiles again at its first optimizer step."""
    return {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


if triton is not None:

    @triton.autotune(configs=tile_configs(), key=["M", "N", "K", "HAS_R", "SYMMETRIC"], **autotune_options())
    @triton.jit
    def _mm_axpby(P, Q, R, C, M, N, K,
                  s_pb, s_pm, s_pk, s_qb, s_qk, s_qn, s_rb, s_rm, s_rn, s_cb, s_cm, s_cn,
                  alpha, beta,
                  HAS_R: tl.constexpr, SYMMETRIC: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m, pid_n, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        if SYMMETRIC and pid_n < pid_m:  # the mirror tile (pid_n, pid_m) writes this one
            return
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            p = tl.load(P + b * s_pb + rm[:, None] * s_pm + kk[None, :] * s_pk,
                        mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            q = tl.load(Q + b * s_qb + kk[:, None] * s_qk + rn[None, :] * s_qn,
                        mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
            acc += tl.dot(p, q, out_dtype=tl.float32)
        acc = acc * alpha
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if HAS_R:
            r = tl.load(R + b * s_rb + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=mask, other=0.0)
            acc += beta * r.to(tl.float32)
        out = acc.to(C.dtype.element_ty)
        tl.store(C + b * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn, out, mask=mask)
        if SYMMETRIC and pid_n > pid_m:  # C is symmetric: write the transposed tile too
            tl.store(C + b * s_cb + rn[:, None] * s_cm + rm[None, :] * s_cn, tl.trans(out),
                     mask=(rn[:, None] < N) & (rm[None, :] < M))


def mm_axpby(P: torch.Tensor, Q: torch.Tensor, alpha: float = 1.0, R: torch.Tensor | None = None,
             beta: float = 0.0, symmetric: bool = False) -> torch.Tensor:
    """alpha * P @ Q + beta * R for batched (B, M, K) @ (B, K, N); `symmetric` when the result is."""
    Bsz, M, K = P.shape
    N = Q.shape[-1]
    C = torch.empty((Bsz, M, N), device=P.device, dtype=P.dtype)
    Rt = R if R is not None else C  # any tensor: not read when HAS_R is False
    grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]), Bsz)  # noqa: E731
    _mm_axpby[grid](P, Q, Rt, C, M, N, K, *P.stride(), *Q.stride(), *Rt.stride(), *C.stride(),
                    alpha, beta, HAS_R=R is not None, SYMMETRIC=symmetric and M == N)
    return C


def newton_schulz_triton(G: torch.Tensor, coeffs: str = "per_iter", steps: int = 5,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same contract as `newton_schulz_torch`: batched over leading dims, returns G's dtype."""
    shape = G.shape
    X = G.reshape(-1, *shape[-2:]).to(dtype or G.dtype)
    X = X / (X.float().norm(dim=(-2, -1), keepdim=True) + NS_EPS).to(X.dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    for a, b, c in ns_schedule(coeffs, steps):
        A = mm_axpby(X, X.mT, symmetric=True)
        Bm = mm_axpby(A, A, alpha=c, R=A, beta=b, symmetric=True)
        X = mm_axpby(Bm, X, R=X, beta=a)
    X = X.mT if tall else X
    return X.reshape(shape).to(G.dtype)


def available() -> bool:
    return triton is not None
