"""Batched minimization of one-dimensional profiles: a grid, then golden-section search per row.

The power-law and loss-versus-compute fits are linear in all parameters but one (the exponent, or the
offset in log space). For a fixed value of that parameter the others have a closed-form least-squares
solution, so the fit reduces to minimizing a 1-D profile of the residual sum of squares (variable
projection, Golub and Pereyra 1973). Doing that for many rows at once (bootstrap replicates, leave-one-out
refits) is a grid scan per row followed by golden-section refinement inside the best grid cell.
The grid makes the search global over its range; the refinement makes it precise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hyperp.fitting.result import CONVERGED, ITERATION_LIMIT, NOT_FINITE

GOLDEN_STEP = (3.0 - np.sqrt(5.0)) / 2.0  # 0.382: golden-section fraction of the larger segment
PROFILE_XTOL = 1e-7  # absolute tolerance on the profiled parameter (an exponent: 7 digits is plenty)
PROFILE_MAX_ITER = 100

# grid_values(grid (G,)) -> (B, G) objective of every row at every grid value (shared design: cheap).
# row_values(theta (B,)) -> (B,) objective of each row at its own value.
GridObjective = Callable[[np.ndarray], np.ndarray]
RowObjective = Callable[[np.ndarray], np.ndarray]


def minimize_profile(grid_values: GridObjective, row_values: RowObjective, grid: np.ndarray, *,
                     xtol: float = PROFILE_XTOL, max_iter: int = PROFILE_MAX_ITER
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimize each row's objective over theta in [grid[0], grid[-1]]: returns (theta, value, status) per row.

    After the grid scan each row refines inside its best cell with Brent's method, vectorized: a parabola
    through the three best points so far (x, w, v) proposes the next probe, accepted only inside the
    bracket [a, b] and when it moves less than half the step before last; otherwise a golden-section step
    into the larger segment is taken. A row stops when the parabola's move or the bracket is below xtol.
    status (`hyperp.fitting.result`): CONVERGED, ITERATION_LIMIT (still refining after max_iter probes) or
    NOT_FINITE (no finite objective anywhere on the row).
    """
    grid = np.asarray(grid, dtype=float)
    table = _clean(grid_values(grid))
    n_rows = table.shape[0]
    rows = np.arange(n_rows)
    k = np.argmin(table, axis=1)
    lo_k, hi_k = np.maximum(k - 1, 0), np.minimum(k + 1, grid.size - 1)
    a, b, x = grid[lo_k], grid[hi_k], grid[k]
    fx = table[rows, k]
    w, fw = a.copy(), table[rows, lo_k]  # second and third best points: start from the cell ends
    v, fv = b.copy(), table[rows, hi_k]
    step_prev = np.full(n_rows, np.inf)
    step_prev2 = np.full(n_rows, np.inf)
    active = (b - a) > xtol
    for _ in range(max_iter):
        if not active.any():
            break
        u_par = _parabola_vertex(w, v, x, fw, fv, fx)
        use_par = (u_par > a) & (u_par < b) & (np.abs(u_par - x) < 0.5 * step_prev2)
        active &= ~(use_par & (np.abs(u_par - x) <= xtol))  # the parabola says x is the minimum
        golden = np.where(b - x > x - a, x + GOLDEN_STEP * (b - x), x - GOLDEN_STEP * (x - a))
        u = np.where(use_par, u_par, golden)
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        fu = np.full(n_rows, np.inf)
        fu[idx] = _clean(row_values(u[idx], idx))
        step_prev2, step_prev = step_prev, np.where(active, np.abs(u - x), step_prev)
        better = active & (fu < fx)
        worse = active & ~better
        left = u < x
        # Shrink the bracket: a better u splits it at x, a worse u becomes the end on its side.
        a = np.where(better & ~left, x, np.where(worse & left, u, a))
        b = np.where(better & left, x, np.where(worse & ~left, u, b))
        # Keep the three best points: x best, then w, then v.
        to_w = worse & (fu <= fw)
        to_v = worse & ~to_w & (fu <= fv)
        v, fv = np.where(better | to_w, w, np.where(to_v, u, v)), np.where(better | to_w, fw, np.where(to_v, fu, fv))
        w, fw = np.where(better, x, np.where(to_w, u, w)), np.where(better, fx, np.where(to_w, fu, fw))
        x, fx = np.where(better, u, x), np.where(better, fu, fx)
        active &= (b - a) > xtol
    status = np.where(active, ITERATION_LIMIT, CONVERGED)
    return x, fx, np.where(np.isfinite(fx), status, NOT_FINITE)


def _parabola_vertex(a, b, x, fa, fb, fx):
    """Vertex of the parabola through (a, fa), (x, fx), (b, fb); NaN when degenerate."""
    d1, d2 = x - a, x - b
    with np.errstate(divide="ignore", invalid="ignore"):  # rows without a finite objective give NaN
        num = d1 * d1 * (fx - fb) - d2 * d2 * (fx - fa)
        den = 2.0 * (d1 * (fx - fb) - d2 * (fx - fa))
        u = x - num / den
    return np.where(np.isfinite(u), u, np.nan)


def _clean(v: np.ndarray) -> np.ndarray:
    """NaN becomes +inf so that argmin and comparisons skip it."""
    v = np.asarray(v, dtype=float)
    return np.where(np.isnan(v), np.inf, v)


def exp_outer(b: np.ndarray, lx: np.ndarray) -> np.ndarray:
    """exp(b_i * lx_j) as a (len(b), len(lx)) array, computed in place (one allocation)."""
    out = np.multiply.outer(np.asarray(b, dtype=float), lx)
    return np.exp(out, out=out)


class RowData:
    """Responses Y (B, n) with optional weights W (B, n), and the weighted sums a 1-D profile needs.

    For a regressor X, either shared (n,) or per row (B, n), `sums(X)` gives S1, Sx, Sy, Sxx, Sxy (each
    (B,)) of sum w, sum w x, sum w y, sum w x^2, sum w x y. Y is centred per row on its weighted mean when
    an intercept is in the model, which keeps the residual sum of squares free of cancellation.
    """

    def __init__(self, y: np.ndarray, weights: np.ndarray | None = None, center: bool = False):
        self.y = np.atleast_2d(np.asarray(y, dtype=float))
        self.w = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=float), self.y.shape)
        self.n_rows, self.n = self.y.shape
        self.s1 = np.full(self.n_rows, float(self.n)) if self.w is None else self.w.sum(axis=1)
        self.mean = (self._rowsum(self.y) / self.s1) if center else np.zeros(self.n_rows)
        self.yc = self.y - self.mean[:, None]
        self.wy = self.yc if self.w is None else self.w * self.yc
        self.syy = np.einsum("ij,ij->i", self.wy, self.yc)
        self.sy = self.wy.sum(axis=1)

    def _rowsum(self, a: np.ndarray) -> np.ndarray:
        return a.sum(axis=1) if self.w is None else np.einsum("ij,ij->i", self.w, a)

    def sums(self, x: np.ndarray, rows: np.ndarray | None = None, intercept: bool = True):
        """(S1, Sx, Sy, Sxx, Sxy) for the regressor x (n,) shared or (k, n), one per row of `rows`.

        rows selects a subset of the rows (default all); the sums have one entry per selected row.
        Without intercept, Sx is not needed and returned as zeros (saves a pass over x).
        """
        all_rows = rows is None or len(rows) == self.n_rows  # rows come sorted: all of them is a plain view
        sel = slice(None) if all_rows else rows
        w, wy = (None if self.w is None else self.w[sel]), self.wy[sel]
        k = wy.shape[0]
        if x.ndim == 1:
            sx = np.full(k, x.sum()) if w is None else w @ x
            sxx = np.full(k, x @ x) if w is None else w @ (x * x)
            return self.s1[sel], sx, self.sy[sel], sxx, wy @ x
        if w is None:
            sx = x.sum(axis=1) if intercept else np.zeros(k)
            sxx = np.einsum("ij,ij->i", x, x)
        else:
            sx = np.einsum("ij,ij->i", w, x) if intercept else np.zeros(k)
            sxx = np.einsum("ij,ij,ij->i", w, x, x)
        return self.s1[sel], sx, self.sy[sel], sxx, np.einsum("ij,ij->i", wy, x)

    def grid_sums(self, xg: np.ndarray):
        """(S1, Sx, Sy, Sxx, Sxy), each (B, G), for G shared regressors xg (G, n): matrix products."""
        if self.w is None:
            sx = np.broadcast_to(xg.sum(axis=1), (self.n_rows, xg.shape[0]))
            sxx = np.broadcast_to((xg * xg).sum(axis=1), sx.shape)
        else:
            sx, sxx = self.w @ xg.T, self.w @ (xg * xg).T
        return self.s1[:, None], sx, self.sy[:, None], sxx, self.wy @ xg.T


def ls_slope_only(sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray):
    """y ~ a x: returns (a, sse)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sxy / sxx
    return a, syy - a * sxy


def ls_line(s1, sx, sy, sxx, sxy, syy):
    """y ~ a x + c by weighted least squares from sums: returns (a, c, sse); NaN when x is constant."""
    det = s1 * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(det > 0, (s1 * sxy - sx * sy) / det, np.nan)
        c = np.where(det > 0, (sxx * sy - sx * sxy) / det, np.nan)
    return a, c, syy - a * sxy - c * sy
