"""What every law fit returns: one protocol, modelled on scipy's `OptimizeResult`, and the code its results share.

`FitResult` is what a caller may rely on for any law (`PowerLawFit`, `ComputeLawFit`, `ChinchillaFit`, and
`LrOptimum`, whose parabola is a law in ln(lr)):

- `success`, `message`: did the main fit converge, and if not, why (as scipy's `success` and `message`);
- `n_failed`: bootstrap refits that did not converge. They are left out of the intervals and of the band
  (their rows of `boot_params` are NaN) and a warning says how many, so no refit drops out silently;
- `predict(x)`: the fitted curve at x (for Chinchilla x is a pair (N, D), or an array whose last axis is (N, D));
- `band(x, level=None)`: the pointwise bootstrap percentile band of the curve at x (default: the level of the
  fit's intervals), NaN where there are no replicates;
- `warnings`, `to_dict()`.

Why a row of a batched solver stopped is one of the codes below, shared by `profile.py` (exponent searches),
the power law's Levenberg-Marquardt and `lbfgs.py` (mapped by `LBFGS_STOP`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from hyperp.fitting.defaults import DEFAULT_LEVEL

CONVERGED = 0
ITERATION_LIMIT = 1
DAMPING_LIMIT = 2  # Levenberg-Marquardt: the damping grew past its limit without a step that lowers the SSE
NOT_FINITE = 3  # the objective or the parameters are not finite
NO_STEP = 4  # L-BFGS: the line search found no acceptable step
STOP_TEXT = {
    CONVERGED: "converged",
    ITERATION_LIMIT: "hit the iteration limit",
    DAMPING_LIMIT: "hit the damping limit",
    NOT_FINITE: "non-finite objective or parameters",
    NO_STEP: "the line search found no acceptable step",
}
LBFGS_STOP = {0: CONVERGED, 1: CONVERGED, 2: ITERATION_LIMIT, 3: NO_STEP}  # lbfgs.py's status codes


@runtime_checkable
class FitResult(Protocol):
    """The result of any law fit (see the module docstring)."""

    success: bool
    message: str
    n_failed: int
    warnings: tuple[str, ...]

    def predict(self, x: Any) -> np.ndarray: ...

    def band(self, x: Any, level: float | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def to_dict(self) -> dict[str, Any]: ...


def band_of(curves: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band over the rows of curves (k, m), NaN rows ignored; NaN where no row is finite."""
    tail = 50.0 * (1.0 - level)
    some = ~np.isnan(curves).all(axis=0)  # with no rows at all: nowhere
    if some.all():
        return np.nanpercentile(curves, tail, axis=0), np.nanpercentile(curves, 100.0 - tail, axis=0)
    lo, hi = np.full((2, curves.shape[1]), np.nan)
    if some.any():
        lo[some], hi[some] = band_of(curves[:, some], level)
    return lo, hi


class LawResult:
    """Shared by the law fits' frozen dataclasses: `band` from `boot_params`, the default level, the status keys.

    A subclass defines `_curves(params (k, p), x) -> (k, m)`, its law for every parameter row at the points x.
    """

    boot_params: np.ndarray
    intervals: dict
    success: bool
    message: str
    n_failed: int
    weighted: bool

    def _curves(self, params: np.ndarray, x: Any) -> np.ndarray:
        raise NotImplementedError

    @property
    def level(self) -> float:
        """The level of the fit's intervals (the band's default)."""
        return next(iter(self.intervals.values())).level if self.intervals else DEFAULT_LEVEL

    def band(self, x: Any, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap percentile band of the fitted curve at x (replicates that failed left out)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            curves = self._curves(self.boot_params, x)
        return band_of(curves, self.level if level is None else level)

    def status_dict(self) -> dict[str, Any]:
        return {"success": self.success, "message": self.message, "n_failed": self.n_failed,
                "weighted": self.weighted}


def stop_codes(status: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Solver stop codes with rows whose parameters are not all finite marked NOT_FINITE."""
    status = np.asarray(status).copy()
    status[~np.isfinite(params).all(axis=1)] = NOT_FINITE
    return status


def leave_out(params: np.ndarray, status: np.ndarray) -> np.ndarray:
    """params with the rows that did not converge set to NaN (percentiles and bands skip them)."""
    out = np.array(params, dtype=float)
    out[np.asarray(status) != CONVERGED] = np.nan
    return out


def failed_note(status: np.ndarray, what: str, left_out_of: str) -> list[str]:
    """'k of n <what> did not converge (<why>) and were left out of <left_out_of>', or nothing."""
    status = np.asarray(status)
    bad = status[status != CONVERGED]
    if bad.size == 0:
        return []
    codes, counts = np.unique(bad, return_counts=True)
    why = ", ".join(f"{k} {STOP_TEXT[int(c)]}" for c, k in zip(codes, counts))
    return [f"{bad.size} of {status.size} {what} did not converge ({why}) and were left out of {left_out_of}"]


def main_status(code: int, method: str) -> tuple[bool, str]:
    """(success, message) of the main fit from its stop code."""
    if code == CONVERGED:
        return True, f"converged ({method})"
    return False, f"did not converge ({method}): {STOP_TEXT[int(code)]}"


def not_converged_note(success: bool, message: str) -> list[str]:
    return [] if success else [f"the fit {message}: its parameters are not an optimum"]
