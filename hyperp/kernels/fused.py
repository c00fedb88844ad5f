"""Fused CPU kernels for the elementwise work of a block: QK-norm with RoPE and the SwiGLU activation, forward
and backward, and the backward of the RMSNorms without their gains. Eager torch runs each of them as three to
seven passes over the activations (layers.py); here each is one function that Inductor (torch.compile) turns
into one C++ loop nest, compiled once per shape and kept in Inductor's on-disk cache. Measured in the model
(width 256, depth 4, 8,192-token batches, fp32, 2 threads): QK-norm + RoPE and SwiGLU 2.3% faster
forward+backward in the paired model A/B; with the norms' backward and `scratch`, `hyperp bench train
--reference` nanoGPT reads 1.00-1.01x where it read 0.98x with the kernels off (results/bench/nanogpt.txt,
sessions 14 and 15).

The math is written once, in plain torch ops, and is also the fallback: where the compiler is missing or fails,
the same functions run eagerly (a warning says so once). Nothing here imports hyperp.trainer.

`scratch` keeps one reused buffer per thread for kernel outputs that die inside the caller (the SwiGLU backward's
two gradients, spent on the projections' matmuls): fresh tensors of that size are new zeroed pages from the OS at
every step, which doubled that kernel's time in the model.

RoPE here pairs x[i] with x[i + D/2] (method.md section 1 as written): the halves are contiguous runs that the
compiled loops vectorise, where the eager path's pair order (layers.pair_order) serves complex multiplication.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

# "auto" fuses when one call's tensor has at least this many elements (4 MB in fp32): below it a step is too
# short for the saving to repay the compilation (about 15 s for the four kernels the first time on the 2-core
# CPU, a few seconds from Inductor's cache in each new process), and the tests' and quickstart's tiny models
# stay eager.
AUTO_MIN_ELEMENTS = 1 << 20


def enabled(mode: str, x: torch.Tensor, elements: int | None = None) -> bool:
    """Whether a layer takes the fused kernels for activations like x (`elements` of them, default x's) under
    the config's `fused_kernels` mode: CPU fp32 only (CUDA and bf16 run torch's own kernels, or torch.compile
    when the config compiles), never while the whole model is being compiled (Inductor fuses the eager ops
    itself), and in "auto" only for large activations."""
    if mode == "off" or x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    return mode == "on" or (x.numel() if elements is None else elements) >= AUTO_MIN_ELEMENTS


# ---------------------------------------------------------------------------------------------------------
# the math (eager, and what Inductor compiles)


def _norm_rope_forward(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float):
    """(y, rstd): y = rotate(x * rstd * weight) on x (B, T, heads, D), halves paired; cos and sin (T, 1, D/2) of
    each position's angles, each contiguous (read from one interleaved table, the backward's loops ran 5x
    slower)."""
    half = x.shape[-1] // 2
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    y = x * rstd * weight
    a, b = y[..., :half], y[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1), rstd


def _norm_rope_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                        cos: torch.Tensor, sin: torch.Tensor):
    """(dx, d_weight) of `_norm_rope_forward`: r = the gradient rotated back, x_hat = x * rstd,
    d_weight = sum over rows of r * x_hat, dx = rstd * (r * g - x_hat * mean(r * g * x_hat))."""
    half = x.shape[-1] // 2
    ga, gb = grad[..., :half], grad[..., half:]
    r = torch.cat([ga * cos + gb * sin, gb * cos - ga * sin], -1)
    x_hat = x * rstd
    d_weight = (r * x_hat).flatten(0, -2).sum(0)
    return _normalize_backward(r * weight, x_hat, rstd), d_weight


def _normalize_backward(grad: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """x's gradient of y = x * rstd: rstd * (grad - y * mean(grad * y))."""
    return rstd * (grad - y * (grad * y).mean(-1, keepdim=True))


def _swiglu_forward(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.silu(g) * u


def _swiglu_backward(grad: torch.Tensor, g: torch.Tensor, u: torch.Tensor):
    """(d_g, d_u) of silu(g) * u: silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g)."""
    s = torch.sigmoid(g)
    return grad * u * s * (1 + g * (1 - s)), grad * g * s


def _swiglu_backward_into(d_g: torch.Tensor, d_u: torch.Tensor, grad: torch.Tensor, g: torch.Tensor,
                          u: torch.Tensor) -> None:
    """`_swiglu_backward` written into d_g and d_u (Inductor stores the results there directly)."""
    a, b = _swiglu_backward(grad, g, u)
    d_g.copy_(a)
    d_u.copy_(b)


# ---------------------------------------------------------------------------------------------------------
# scratch memory

_scratch = threading.local()


def scratch(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU buffer of `shape` that every call on this thread gets again (one slot: a new shape replaces it), for
    results that die inside the caller, such as a backward's gradients of activations spent on its own matmuls.
    A fresh tensor this large comes from the OS as zeroed pages at every step (glibc hands freed blocks of this
    size back), which cost the SwiGLU backward half its time in the model (results/bench/nanogpt.txt, session 15).
    The caller must be done with the buffer before it asks again: no nesting, no keeping."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = _scratch.buf = torch.empty(shape, dtype=dtype, device="cpu")
    return buf


# ---------------------------------------------------------------------------------------------------------
# compiled once, eager where the compiler fails


class Compiled:
    """`fn` compiled by Inductor on first call (static shapes: one specialised loop nest per shape); if the
    compilation raises (no C++ compiler, an Inductor limit), every later call runs `fn` eagerly, the same math,
    and one warning says why."""

    def __init__(self, fn: Callable):
        self.fn, self.compiled, self.failed = fn, None, False

    def __call__(self, *args):
        if not self.failed:
            try:
                if self.compiled is None:
                    _quiet_cuda_home_notice()
                    self.compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager math computes the same
                self.failed = True
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                warnings.warn(f"fused CPU kernels unavailable, running eager ops ({self.fn.__name__}): {reason}",
                              RuntimeWarning, stacklevel=2)
        return self.fn(*args)


def _quiet_cuda_home_notice() -> None:
    """Inductor's C++ build imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on a CPU-only
    machine: true and irrelevant to CPU kernels, and alarming in a CPU run's output. Only that line is dropped."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in logger.filters):
        logger.addFilter(_NoCudaRuntimeNotice())


class _NoCudaRuntimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


norm_rope_forward = Compiled(_norm_rope_forward)
norm_rope_backward = Compiled(_norm_rope_backward)
normalize_backward = Compiled(_normalize_backward)
swiglu_forward = Compiled(_swiglu_forward)
swiglu_backward_into = Compiled(_swiglu_backward_into)
