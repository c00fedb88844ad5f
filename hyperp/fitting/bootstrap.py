"""The bootstrap shared by every fit: seeded resamples and percentile intervals.

Two resampling schemes, both returned as arrays so that a fit can refit all replicates in one batch:
- `case_weights`: resample data points with replacement (the "pairs" bootstrap), as multiplicities
  (n_boot, n). Used where there are many points and the noise may not be homogeneous (Chinchilla).
- `residual_draws`: keep the design fixed, put resampled residuals back on the fitted values (the
  residual bootstrap). Used for regressions on few points (an LR sweep of 7 values, a law over 5 model
  sizes), where resampling cases would often leave too few distinct x values to fit at all. Residuals are
  inflated by sqrt(n / (n - p)), the usual correction for the shrinkage of least-squares residuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A two-sided interval at confidence `level`; NaN bounds when it could not be estimated."""

    low: float
    high: float
    level: float = DEFAULT_LEVEL

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "level": self.level}


def rng_for(seed: int | np.random.Generator) -> np.random.Generator:
    """A numpy Generator from a seed (or the generator itself)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def case_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities (n_boot, n) of n points drawn n times with replacement, per replicate."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def residual_draws(fitted: np.ndarray, residuals: np.ndarray, n_boot: int, rng: np.random.Generator,
                   n_params: int) -> np.ndarray:
    """Synthetic responses (n_boot, n): fitted + residuals resampled with replacement (inflated, centred)."""
    n = residuals.size
    dof = n - n_params
    if dof <= 0:
        return np.tile(fitted, (n_boot, 1))  # exact fit: no residual variation to resample
    r = (residuals - residuals.mean()) * np.sqrt(n / dof)
    return fitted[None, :] + rng.choice(r, size=(n_boot, n))


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """Percentile interval of bootstrap samples, ignoring non-finite replicates; NaN when none is finite."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Interval(float("nan"), float("nan"), level)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(s, [tail, 100.0 - tail])
    return Interval(float(low), float(high), level)
