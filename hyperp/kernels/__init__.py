"""Numerical kernels under the trainer: Newton-Schulz (`ns`: coefficients, torch reference, dispatch) and its
Triton kernel (`newton_schulz`). Nothing here imports hyperp.trainer."""
