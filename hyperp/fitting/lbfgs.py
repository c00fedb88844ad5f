"""A batched L-BFGS: many independent minimizations advanced together, one numpy call per step.

Each row of the batch is its own L-BFGS run (its own iterate, curvature history, line search and stopping
test); rows only share the array operations. That is what makes a grid of thousands of starting points
cheap: one evaluation of the objective for all still-running starts is a handful of array operations
instead of thousands of Python calls. Rows leave the batch as soon as they stop, so the cost follows the
slowest starts only for as long as they run.

The stopping rules and defaults mirror scipy's L-BFGS-B (memory 10, `ftol` = 2.22e-9 on the relative
decrease of f, `gtol` = 1e-5 on the largest gradient component, 15,000 iterations at most), so a row stops
where `scipy.optimize.minimize(method="L-BFGS-B", jac=True)` would, up to the line search: scipy uses the
Moré-Thuente search, we use a weak-Wolfe bisection/doubling search (Lewis and Overton), which is simpler
to vectorize and still guarantees s.y > 0, so every accepted pair keeps the inverse-Hessian estimate
positive definite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEMORY = 10  # curvature pairs kept (scipy's maxcor)
FTOL = 2.220446049250313e-09  # scipy's default factr * machine epsilon
GTOL = 1e-5  # scipy's default pgtol
MAX_ITER = 15_000  # scipy's default maxiter
MAX_LINE_SEARCH = 30  # trial steps per line search before a row gives up
ARMIJO_C1 = 1e-4  # sufficient decrease
WOLFE_C2 = 0.9  # curvature condition, the usual value for quasi-Newton methods

# Row status codes in `LbfgsResult.status` (`hyperp.fitting.result.LBFGS_STOP` maps them to the codes every
# fit reports: a row that stops on MAX_ITER_REACHED or LINE_SEARCH_FAILED has not converged).
CONVERGED_F = 0  # relative decrease of f below ftol
CONVERGED_G = 1  # gradient below gtol
MAX_ITER_REACHED = 2
LINE_SEARCH_FAILED = 3  # no acceptable step (usually: at the floor of float precision)

# fg(X, rows) -> (f, G): objective values (k,) and gradients (k, p) at the k points X (k, p), which belong
# to batch rows `rows` (k,). The row indices let an objective carry per-row data (bootstrap weights).
ObjectiveGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class LbfgsResult:
    """Final state of every row: x (B, p), f (B,), grad (B, p), iterations (B,), status (B,)."""

    x: np.ndarray
    f: np.ndarray
    grad: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    n_evals: int  # total row-evaluations of the objective, summed over rows


def minimize_lbfgs_batch(fg: ObjectiveGrad, x0: np.ndarray, *, memory: int = MEMORY, ftol: float = FTOL,
                         gtol: float = GTOL, max_iter: int = MAX_ITER, f_floor: float = 1.0) -> LbfgsResult:
    """Minimize B independent problems from the starting points x0 (B, p) with L-BFGS.

    A row stops when (f_old - f_new) <= ftol * max(|f_old|, |f_new|, f_floor) (scipy uses f_floor = 1,
    which makes the test absolute for objectives below 1), when max |grad| <= gtol, or after max_iter.
    """
    x = np.array(x0, dtype=float)
    n_rows, n_par = x.shape
    rows_all = np.arange(n_rows)
    f, g = fg(x, rows_all)
    f = np.where(np.isfinite(f), f, np.inf)
    s_hist = np.zeros((n_rows, memory, n_par))
    y_hist = np.zeros((n_rows, memory, n_par))
    rho = np.zeros((n_rows, memory))  # 0 marks an empty or skipped slot: the two-loop ignores it
    gamma = np.ones(n_rows)  # initial inverse-Hessian scale s.y / y.y of the latest pair
    iterations = np.zeros(n_rows, dtype=int)
    status = np.full(n_rows, MAX_ITER_REACHED)
    n_evals = n_rows

    active = rows_all[np.max(np.abs(g), axis=1) > gtol]
    status[np.setdiff1d(rows_all, active)] = CONVERGED_G
    for it in range(max_iter):
        if active.size == 0:
            break
        slot = it % memory
        d = _two_loop(g[active], s_hist[active], y_hist[active], rho[active], gamma[active], slot, memory)
        gd = np.einsum("ij,ij->i", g[active], d)
        bad = ~(gd < 0)  # not a descent direction (float trouble): restart from steepest descent
        if bad.any():
            d[bad] = -g[active][bad]
            gd[bad] = -np.einsum("ij,ij->i", g[active][bad], g[active][bad])
            rho[active[bad]] = 0.0
            gamma[active[bad]] = 1.0
        t0 = np.ones(active.size)
        if it == 0:  # no curvature information yet: a first step of unit length, as scipy does
            t0 = np.minimum(1.0, 1.0 / np.linalg.norm(g[active], axis=1))
        t, f_new, g_new, ok, evals = _weak_wolfe(fg, x[active], f[active], g[active], d, gd, t0, active)
        n_evals += evals
        iterations[active] += 1

        failed = active[~ok]
        status[failed] = LINE_SEARCH_FAILED
        moved = active[ok]
        step = t[ok, None] * d[ok]
        _store_pair(s_hist, y_hist, rho, gamma, moved, slot, step, g_new[ok] - g[moved])

        f_old = f[moved]
        x[moved] += step
        f[moved] = f_new[ok]
        g[moved] = g_new[ok]
        small_df = (f_old - f[moved]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[moved])), f_floor)
        small_g = np.max(np.abs(g[moved]), axis=1) <= gtol
        status[moved[small_df]] = CONVERGED_F
        status[moved[small_g]] = CONVERGED_G
        active = moved[~(small_df | small_g)]
    return LbfgsResult(x=x, f=f, grad=g, iterations=iterations, status=status, n_evals=n_evals)


def _store_pair(s_hist, y_hist, rho, gamma, moved, slot, step, y_vec) -> None:
    """Store the curvature pair (step, y_vec) of the rows `moved` in history slot `slot`, in place."""
    sy = np.einsum("ij,ij->i", step, y_vec)
    yy = np.einsum("ij,ij->i", y_vec, y_vec)
    keep = sy > 1e-10 * np.maximum(yy, 1e-300)  # weak Wolfe gives sy > 0; guard float round-off
    s_hist[moved, slot] = step
    y_hist[moved, slot] = y_vec
    rho[moved, slot] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
    gamma[moved] = np.where(keep, sy / np.where(keep, yy, 1.0), gamma[moved])


def _two_loop(g: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray, rho: np.ndarray, gamma: np.ndarray,
              slot: int, memory: int) -> np.ndarray:
    """The L-BFGS two-loop recursion, d = -H g, for every row at once (newest pair is slot - 1)."""
    q = g.copy()
    order = [(slot - 1 - k) % memory for k in range(memory)]  # newest to oldest
    alphas = []
    for j in order:
        a = rho[:, j] * np.einsum("ij,ij->i", s_hist[:, j], q)
        q -= a[:, None] * y_hist[:, j]
        alphas.append(a)
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[:, j] * np.einsum("ij,ij->i", y_hist[:, j], r)
        r += s_hist[:, j] * (a - b)[:, None]
    return -r


def _weak_wolfe(fg: ObjectiveGrad, x: np.ndarray, f0: np.ndarray, g0: np.ndarray, d: np.ndarray,
                gd0: np.ndarray, t0: np.ndarray, rows: np.ndarray):
    """Bisection/doubling line search for the weak Wolfe conditions, per row.

    Returns step t, f and gradient there, a success mask, and the number of row-evaluations spent. A row
    that runs out of trials but found a point with sufficient decrease takes that point.
    """
    k = x.shape[0]
    t = t0.copy()
    lo = np.zeros(k)
    hi = np.full(k, np.inf)
    f_out = f0.copy()
    g_out = g0.copy()
    t_out = np.zeros(k)
    done = np.zeros(k, dtype=bool)
    armijo_seen = np.zeros(k, dtype=bool)  # best fallback: the last step with sufficient decrease
    pending = np.arange(k)
    evals = 0
    for _ in range(MAX_LINE_SEARCH):
        if pending.size == 0:
            break
        tp = t[pending]
        f_t, g_t = fg(x[pending] + tp[:, None] * d[pending], rows[pending])
        evals += pending.size
        f_t = np.where(np.isfinite(f_t), f_t, np.inf)
        armijo = f_t <= f0[pending] + ARMIJO_C1 * tp * gd0[pending]
        curv = np.einsum("ij,ij->i", g_t, d[pending]) >= WOLFE_C2 * gd0[pending]
        accept = armijo & curv
        # Remember the latest sufficient-decrease point as a fallback.
        fb = pending[armijo]
        f_out[fb], g_out[fb], t_out[fb] = f_t[armijo], g_t[armijo], tp[armijo]
        armijo_seen[fb] = True
        done[pending[accept]] = True
        too_long = ~armijo
        too_short = armijo & ~curv
        hi[pending[too_long]] = tp[too_long]
        lo[pending[too_short]] = tp[too_short]
        nxt = pending[~accept]
        t[nxt] = np.where(np.isinf(hi[nxt]), 2.0 * lo[nxt], 0.5 * (lo[nxt] + hi[nxt]))
        pending = nxt
    ok = done | armijo_seen
    return t_out, f_out, g_out, ok, evals
