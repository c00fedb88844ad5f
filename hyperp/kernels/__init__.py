"""Numerical kernels under the trainer: Newton-Schulz (`ns`: coefficients, torch reference, dispatch) and its
Triton kernel (`newton_schulz`); the fused CPU kernels for QK-norm + RoPE, SwiGLU and the RMSNorm backward
(`fused`). Nothing here imports hyperp.trainer."""
