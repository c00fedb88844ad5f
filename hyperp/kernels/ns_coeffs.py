"""Newton-Schulz coefficients and its norm epsilon (method.md section 3), read by the torch reference
(`hyperp.kernels.ns`) and the Triton kernel (`hyperp.kernels.newton_schulz`) alike."""

from __future__ import annotations

# Newton-Schulz coefficient sets (a, b, c) per iteration. "quintic": the fixed set of the original Muon.
# "per_iter": a per-iteration schedule that pushes singular values towards 1 faster; the default.
NS_COEFFS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "quintic": ((3.4445, -4.7750, 2.0315),),
    "per_iter": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
NS_EPS = 1e-7


def ns_schedule(coeffs: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each of `steps` iterations; a set shorter than `steps` repeats its last entry."""
    table = NS_COEFFS[coeffs]
    return [table[min(i, len(table) - 1)] for i in range(steps)]
