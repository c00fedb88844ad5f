"""Chinchilla approach 3: L(N, D) = E + A / N^alpha + B / D^beta (method.md section 7).

Following Hoffmann et al. (2022) and Epoch's replication (Besiroglu et al., 2024), the fit minimizes the
summed Huber loss (delta = 1e-3) between log L and the log-sum-exp form
    lse(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e),
with L-BFGS from every point of a grid of starts, and keeps the start with the lowest objective. The grid
is Hoffmann's/Epoch's: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}
(5 x 5 x 5 x 6 x 6 = 4,500 starts).

Every start is a full L-BFGS run (see `lbfgs.py`), with the analytic gradient below; the runs are batched
so that one objective evaluation covers all running starts. Optional per-run weights multiply each run's
Huber term; the result follows `hyperp.fitting.result.FitResult` (success, message, refits that did not
converge, band at given (N, D)).
"""

from __future__ import annotations

import dataclasses
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hyperp.fitting.bootstrap import Interval, case_weights, percentile_interval, rng_for
from hyperp.fitting.defaults import BOOT_STARTS, HUBER_DELTA
from hyperp.fitting.defaults import CHINCHILLA_N_BOOT as DEFAULT_N_BOOT
from hyperp.fitting.diagnostics import interval_crosses, not_separable, too_few_points
from hyperp.fitting.lbfgs import CONVERGED_F, CONVERGED_G, LbfgsResult, minimize_lbfgs_batch
from hyperp.fitting.result import (CONVERGED, LBFGS_STOP, NOT_FINITE, LawResult, failed_note, main_status,
                                   not_converged_note)
from hyperp.fitting.table import (FitInputError, best_lr_note, check_weights, fit_rows, lowest, numeric_column,
                                  relative_weights, require_columns, several_lrs)

# The initialization grid of Hoffmann et al. / Epoch, in parameter order (a, b, e, alpha, beta).
GRID_A = tuple(np.arange(0.0, 30.0, 5.0))  # 0, 5, ..., 25
GRID_B = GRID_A
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_ALPHA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_BETA = GRID_ALPHA
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
# HUBER_DELTA: Hoffmann et al.'s delta. BOOT_STARTS: bootstrap replicates restart from the best distinct optima
# of the full-grid fit rather than from all 4,500 starts (which would cost 4,500 x n_boot runs): the replicate's
# data are a reweighting of the original data, so its optimum lies in one of the original basins.
# L-BFGS stopping tolerances. scipy's defaults (ftol 2.2e-9 times max(|f|, 1), gtol 1e-5) are absolute for
# this objective (a sum of Huber terms ~1e-3), and stop runs before they have moved along the flat valleys
# of (a, alpha) and (b, beta): the full-grid optimum still lands right (many starts reach it), but bootstrap
# refits started at the optimum barely move and give intervals ~30x too narrow (measured on the Chinchilla
# CSV). So the test is relative to |f| itself, as for any objective scale.
FTOL = 1e-12
GTOL = 1e-9
# Starts whose final objective is within this relative distance of the best count as reaching it.
SAME_OPTIMUM_RTOL = 1e-6
MIN_POINTS = 6  # more runs than the 5 parameters
E_ZERO_FRACTION = 1e-3  # E below this fraction of the lowest loss counts as 0 (exp(e) never reaches 0 itself)
OBJECTIVE_BLOCK = 128  # parameter rows per block of the objective (128 x 240 doubles = 245 KB per array)
METHOD = "Huber loss on log L by L-BFGS, the best of the starts"


def default_grid() -> np.ndarray:
    """The 4,500 starting points (a, b, e, alpha, beta) of Hoffmann et al. and Epoch."""
    return np.array(list(itertools.product(GRID_A, GRID_B, GRID_E, GRID_ALPHA, GRID_BETA)))


@dataclass(frozen=True)
class ChinchillaFit(LawResult):
    """Result of `fit_chinchilla`. Intervals are bootstrap percentile intervals over resampled runs."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    exponent_n: float  # a = beta / (alpha + beta): N_opt(C) proportional to C^a
    exponent_d: float  # b = alpha / (alpha + beta): D_opt(C) proportional to C^b
    objective: float  # summed Huber loss at the optimum
    huber_delta: float
    n_points: int
    n_dropped: int
    n_starts: int
    n_converged: int  # starts that stopped on the f or gradient tolerance
    n_at_best: int  # starts whose objective ties the best (relative tolerance SAME_OPTIMUM_RTOL)
    iterations_max: int
    intervals: dict[str, Interval]
    n_boot: int
    seed: int
    boot_params: np.ndarray = field(repr=False)  # (n_boot, 5) replicate (E, A, B, alpha, beta); NaN: failed
    warnings: tuple[str, ...] = ()
    kept: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=int))  # input rows fitted
    success: bool = True  # the best start converged (`message` says how, or why not)
    message: str = ""
    n_failed: int = 0  # bootstrap refits that did not converge, left out of the intervals and the band
    weighted: bool = False

    def predict(self, n: Any, d: np.ndarray | None = None) -> np.ndarray:
        """Loss predicted by the fitted law at parameters n and tokens d; or predict(x) with x a pair (n, d)
        or an array whose last axis holds (N, D)."""
        n, d = _pair(n) if d is None else (n, d)
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def _curves(self, params: np.ndarray, x: Any) -> np.ndarray:
        n, d = (np.asarray(v, dtype=float).ravel() for v in np.broadcast_arrays(*_pair(x)))
        p = params
        return p[:, :1] + p[:, 1:2] / np.power(n[None, :], p[:, 3:4]) + p[:, 2:3] / np.power(d[None, :], p[:, 4:5])

    def optimal_allocation(self, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N, D) under C = 6 N D (the efficient frontier of the fitted law)."""
        c = np.asarray(compute, dtype=float)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        n_opt = g * (c / 6.0) ** self.exponent_n
        return n_opt, c / (6.0 * n_opt)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("E", "A", "B", "alpha", "beta", "exponent_n", "exponent_d",
                                            "objective", "huber_delta", "n_points", "n_dropped", "n_starts",
                                            "n_converged", "n_at_best", "iterations_max", "n_boot", "seed")}
        out["intervals"] = {k: v.to_dict() for k, v in self.intervals.items()}
        out["warnings"] = list(self.warnings)
        return {**out, **self.status_dict()}


def _pair(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) from a pair (n, d) or from an array whose last axis is (N, D)."""
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return np.asarray(x[0], dtype=float), np.asarray(x[1], dtype=float)
    x = np.asarray(x, dtype=float)
    if x.shape[-1:] != (2,):
        raise ValueError(f"Chinchilla's x is a pair (N, D) or an array whose last axis is (N, D), got shape {x.shape}")
    return x[..., 0], x[..., 1]


class ChinchillaInputs(tuple):
    """(n, d, loss), unpacked as a tuple; `notes` says what was done to the table (the best LR kept)."""

    notes: tuple[str, ...]

    def __new__(cls, n: np.ndarray, d: np.ndarray, loss: np.ndarray, notes: tuple[str, ...] = ()):
        self = super().__new__(cls, (n, d, loss))
        self.notes = tuple(notes)
        return self


def chinchilla_inputs(df, *, n_col: str = "n_params", tokens_col: str = "tokens", loss_col: str = "val_loss",
                      flops_col: str = "flops", all_status: bool = False, best_of: str | None = None,
                      every_lr: bool = False, source: str = "table") -> ChinchillaInputs:
    """(n, d, loss) arrays from a runs table; tokens come from flops / (6 N) when the table has no tokens.

    best_of: a column swept at each (N, D), such as `lr`: only the lowest-loss run of each (N, D) is kept, so
    that an LR sweep contributes its best run instead of every LR (a loss at a bad LR is not L(N, D)); the
    seeds at each value (a `seed` column) are averaged first. Without best_of, a table with several LRs at
    one (N, D) keeps the best LR of each all the same and says so in `notes`; every_lr fits every run.
    """
    require_columns(df, [n_col, loss_col, *([best_of] if best_of else [])], source=source)
    df = fit_rows(df, all_status, source=source)
    n = numeric_column(df, n_col, source=source, positive=True)
    if tokens_col in df.columns:
        d = numeric_column(df, tokens_col, source=source, positive=True)
    elif flops_col in df.columns:
        d = numeric_column(df, flops_col, source=source, positive=True) / (6.0 * n)
    else:
        raise FitInputError(f"{source}: needs a {tokens_col!r} column or a {flops_col!r} column "
                            f"(tokens = flops / (6 N)); columns are {list(df.columns)}")
    loss = numeric_column(df, loss_col, source=source)
    if not np.isfinite(loss).any():
        raise FitInputError(f"{source}: column {loss_col!r} has no finite values (all NaN?)")
    if not best_of and not every_lr and several_lrs(df.assign(_n=n, _d=d), ["_n", "_d"]):
        return ChinchillaInputs(*_best_per_point(df, "lr", n, d, loss), notes=(best_lr_note("(N, D)", "--best-of lr"),))
    return ChinchillaInputs(*(_best_per_point(df, best_of, n, d, loss) if best_of else (n, d, loss)))


def _best_per_point(df, best_of: str, n: np.ndarray, d: np.ndarray, loss: np.ndarray):
    """The lowest finite loss over `best_of` at each distinct (N, D), seeds averaged at each value first."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame({"n": n, "d": d, "loss": loss, best_of: df[best_of].to_numpy(),
                          **({"seed": df["seed"].to_numpy()} if "seed" in df.columns else {})})
    best = lowest(frame[np.isfinite(loss)], ["n", "d"], "loss", lr_col=best_of).sort_values(["n", "d"])
    return best["n"].to_numpy(), best["d"].to_numpy(), best["loss"].to_numpy()


def huber_objective(params: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                    weights: np.ndarray | None = None, delta: float = HUBER_DELTA):
    """Summed Huber loss of log L against the LSE form, and its analytic gradient, for k parameter rows.

    params: (k, 5) rows of (a, b, e, alpha, beta); weights: None, (n,) point weights shared by every row, or
    (k, n) per-row point weights.
    Returns f (k,) and grad (k, 5). Rows are processed in blocks of OBJECTIVE_BLOCK so that the
    temporaries stay in cache (the evaluation is memory-bound: about 2x faster than one big pass).
    """
    k = params.shape[0]
    f = np.empty(k)
    grad = np.empty((k, 5))
    for lo in range(0, k, OBJECTIVE_BLOCK):
        hi = min(lo + OBJECTIVE_BLOCK, k)
        w = None if weights is None else weights if weights.ndim == 1 else weights[lo:hi]
        f[lo:hi], grad[lo:hi] = _huber_block(params[lo:hi], log_n, log_d, log_loss, w, delta)
    return f, grad


def _huber_block(params, log_n, log_d, log_loss, weights, delta):
    a, b, e, alpha, beta = (params[:, j : j + 1] for j in range(5))
    t1 = a - alpha * log_n  # (k, n): log of the A / N^alpha term
    t2 = b - beta * log_d
    top = np.maximum(np.maximum(t1, t2), e)  # log-sum-exp with the largest term factored out
    p1 = np.exp(np.subtract(t1, top, out=t1), out=t1)
    p2 = np.exp(np.subtract(t2, top, out=t2), out=t2)
    p3 = np.exp(e - top)
    total = p1 + p2
    total += p3
    r = np.log(total)
    r += top
    r -= log_loss  # residual: prediction minus observation, in log space
    dr = np.clip(r, -delta, delta)  # the Huber derivative
    huber = (r - 0.5 * dr) * dr  # = r^2 / 2 inside [-delta, delta], delta (|r| - delta / 2) outside
    if weights is not None:
        huber *= weights
        dr *= weights
    grad = np.empty((params.shape[0], 5))
    grad[:, 2] = dr.sum(axis=1)  # d lse / d(a, b, e) are the softmax weights p_i / total, which sum to 1
    dr /= total
    p1 *= dr
    p2 *= dr
    grad[:, 0] = p1.sum(axis=1)
    grad[:, 1] = p2.sum(axis=1)
    grad[:, 2] -= grad[:, 0] + grad[:, 1]
    grad[:, 3] = -(p1 @ log_n)
    grad[:, 4] = -(p2 @ log_d)
    return huber.sum(axis=1), grad


def fit_chinchilla(n: np.ndarray, d: np.ndarray, loss: np.ndarray, *, drop_worst: int = 0,
                   weights: np.ndarray | None = None, delta: float = HUBER_DELTA, starts: np.ndarray | None = None,
                   n_boot: int = DEFAULT_N_BOOT, boot_starts: int = BOOT_STARTS, seed: int = 0,
                   level: float = 0.95, workers: int = 1, ftol: float = FTOL, gtol: float = GTOL,
                   notes: tuple[str, ...] = ()) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta by Huber/LSE L-BFGS from a grid of starts.

    n: parameters, d: training tokens, loss: final loss, one entry per run. drop_worst removes that many
    highest-loss runs first (Epoch drops 5). starts: (k, 5) rows (a, b, e, alpha, beta), default the
    4,500-point grid. n_boot bootstrap replicates resample runs with replacement and refit from the
    `boot_starts` best distinct optima of the main fit. workers: threads sharing the batch (numpy releases
    the GIL in its array loops; it pays only on an otherwise idle machine, so the default is 1). ftol, gtol:
    L-BFGS stopping tolerances (see FTOL). notes: what was done to the table (`ChinchillaInputs.notes`),
    carried into the fit's warnings. weights: optional per-run weights of the Huber terms (only their ratios
    matter, a weight of 0 leaves the run out, and equal weights give the unweighted fit exactly).
    """
    log_n, log_d, log_loss, kept, w = _prepare(n, d, loss, drop_worst, weights)
    grid = default_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    opts = {"ftol": ftol, "gtol": gtol, "f_floor": 0.0}
    res = _run_starts(grid, log_n, log_d, log_loss, w, delta, workers, opts)
    order = np.argsort(res.f)
    best = res.x[order[0]]
    f_best = res.f[order[0]]
    boot, boot_status = _bootstrap(res.x[order], log_n, log_d, log_loss, w, delta, n_boot, boot_starts, seed,
                                   workers, opts)
    converged = np.isin(res.status, (CONVERGED_F, CONVERGED_G))
    at_best = np.abs(res.f - f_best) <= SAME_OPTIMUM_RTOL * max(abs(f_best), 1e-300)
    success, message = main_status(LBFGS_STOP[int(res.status[order[0]])] if np.isfinite(f_best) else NOT_FINITE,
                                   METHOD)
    fit = _make_fit(best, f_best, boot, level, delta=delta, n_points=log_n.size, n_dropped=drop_worst, kept=kept,
                    n_starts=grid.shape[0], n_converged=int(converged.sum()), n_at_best=int(at_best.sum()),
                    iterations_max=int(res.iterations.max()), n_boot=n_boot, seed=seed, success=success,
                    message=message, n_failed=int(np.sum(boot_status != CONVERGED)), weighted=w is not None)
    return dataclasses.replace(fit, warnings=(*notes, *_warnings(fit, log_n, log_d, float(np.exp(log_loss.min())),
                                                                 boot_status)))


def _warnings(fit: ChinchillaFit, log_n: np.ndarray, log_d: np.ndarray, min_loss: float,
              boot_status: np.ndarray) -> list[str]:
    """The fit or its refits not converged, N and D not separable, E at zero, exponents beyond the grid or
    intervals below 0, too few points."""
    out = [*not_converged_note(fit.success, fit.message),
           *failed_note(boot_status, "bootstrap refits", "the intervals and the band"),
           *not_separable(log_n, log_d, "log N", "log D"), *too_few_points(fit.n_points, 5, "Chinchilla fit")]
    if fit.E < E_ZERO_FRACTION * min_loss:
        out.append(f"E = {fit.E:.3g} is at its lower bound 0: the data show no irreducible loss (often the sign "
                   f"of a fit that traded E against A or B)")
    for name in ("alpha", "beta"):
        value = getattr(fit, name)
        if value > max(GRID_ALPHA):
            out.append(f"{name} = {value:.3g} lies beyond the starting grid's range [0, {max(GRID_ALPHA):g}]: "
                       f"exponents this large are not plausible and suggest the data do not constrain it")
        out += interval_crosses(name, fit.intervals[name], low=0.0, limit="loss must fall with N and D")
    return out


def _prepare(n, d, loss, drop_worst: int, weights=None):
    """Logs of the runs to fit, their indices in the inputs (finite rows of weight > 0 minus the drop_worst
    highest losses) and their weights (`table.relative_weights`: None when absent or all equal)."""
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    w = np.ones(n.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (n.size == d.size == loss.size == w.size):
        raise FitInputError(f"n, d, loss and weights must have the same length "
                            f"(got {n.size}, {d.size}, {loss.size}, {w.size})")
    idx = np.flatnonzero(np.isfinite(n) & np.isfinite(d) & np.isfinite(loss))
    check_weights(w[idx])
    idx = idx[w[idx] > 0]
    for name, v in (("n_params", n[idx]), ("tokens", d[idx]), ("val_loss", loss[idx])):
        if np.any(v <= 0):
            raise FitInputError(f"column {name}: Chinchilla fit needs positive values, found {v.min():g}")
    if drop_worst < 0 or drop_worst >= idx.size:
        raise FitInputError(f"drop_worst={drop_worst} must be in [0, {idx.size - 1}] for {idx.size} points")
    if drop_worst:
        idx = np.sort(idx[np.argsort(loss[idx], kind="stable")[: idx.size - drop_worst]])  # drop highest losses
    if idx.size < MIN_POINTS:
        raise FitInputError(f"Chinchilla fit needs at least {MIN_POINTS} runs with finite N, D and loss, "
                            f"got {idx.size}")
    return np.log(n[idx]), np.log(d[idx]), np.log(loss[idx]), idx, relative_weights(w[idx])


def _run_starts(starts, log_n, log_d, log_loss, weights, delta, workers, opts=None):
    """Run L-BFGS from every start; `weights` is None, (n,) point weights or (k, n) per-start point weights."""

    def fg(x, rows):
        w = None if weights is None else weights if weights.ndim == 1 else weights[rows]
        return huber_objective(x, log_n, log_d, log_loss, w, delta)

    k = starts.shape[0]
    workers = max(1, min(workers, k // 64))  # small batches are not worth a thread
    opts = opts or {}
    if workers == 1:
        return minimize_lbfgs_batch(fg, starts, **opts)
    chunks = np.array_split(np.arange(k), workers)

    def run(idx):
        def fg_chunk(x, rows):
            return fg(x, idx[rows])

        return minimize_lbfgs_batch(fg_chunk, starts[idx], **opts)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, chunks))
    return _concat(parts)


def _concat(parts: list[LbfgsResult]) -> LbfgsResult:
    return LbfgsResult(x=np.concatenate([p.x for p in parts]), f=np.concatenate([p.f for p in parts]),
                       grad=np.concatenate([p.grad for p in parts]),
                       iterations=np.concatenate([p.iterations for p in parts]),
                       status=np.concatenate([p.status for p in parts]), n_evals=sum(p.n_evals for p in parts))


def _distinct(x_sorted: np.ndarray, k: int) -> np.ndarray:
    """The first k rows of x_sorted (best first) that differ from each other (rounded to 1e-3)."""
    picked: list[np.ndarray] = []
    for row in x_sorted:
        if all(np.max(np.abs(row - p)) > 1e-3 for p in picked):
            picked.append(row)
        if len(picked) == k:
            break
    return np.array(picked)


def _bootstrap(x_sorted, log_n, log_d, log_loss, w, delta, n_boot, boot_starts, seed, workers,
               opts) -> tuple[np.ndarray, np.ndarray]:
    """Replicate (E, A, B, alpha, beta) for n_boot resamples of the runs ((0, 5) when n_boot == 0), and each
    replicate's stop code: that of its best start. Replicates that did not converge are NaN rows."""
    if n_boot <= 0:
        return np.empty((0, 5)), np.empty(0, dtype=int)
    starts = _distinct(x_sorted, boot_starts)
    counts = case_weights(log_n.size, n_boot, rng_for(seed))  # (n_boot, n) multiplicities
    if w is not None:
        counts *= w[None, :]
    weights = np.repeat(counts, starts.shape[0], axis=0)  # each replicate from each start
    x0 = np.tile(starts, (n_boot, 1))
    res = _run_starts(x0, log_n, log_d, log_loss, weights, delta, workers, opts)
    f = res.f.reshape(n_boot, starts.shape[0])
    pick = np.argmin(f, axis=1)
    best = res.x.reshape(n_boot, starts.shape[0], 5)[np.arange(n_boot), pick]
    status = np.array([LBFGS_STOP[int(s)] for s in res.status.reshape(n_boot, -1)[np.arange(n_boot), pick]], dtype=int)
    status[~np.isfinite(f[np.arange(n_boot), pick])] = NOT_FINITE
    out = _natural(best)
    out[status != CONVERGED] = np.nan
    return out, status


def _natural(p: np.ndarray) -> np.ndarray:
    """(a, b, e, alpha, beta) rows to (E, A, B, alpha, beta) rows."""
    p = np.atleast_2d(p)
    with np.errstate(over="ignore"):  # a coefficient that ran off to infinity is reported as inf (and warned)
        return np.column_stack([np.exp(p[:, 2]), np.exp(p[:, 0]), np.exp(p[:, 1]), p[:, 3], p[:, 4]])


def _make_fit(best, f_best, boot, level, **info) -> ChinchillaFit:
    E, A, B, alpha, beta = _natural(best)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        exp_n = boot[:, 4] / (boot[:, 3] + boot[:, 4])
    samples = {"E": boot[:, 0], "A": boot[:, 1], "B": boot[:, 2], "alpha": boot[:, 3], "beta": boot[:, 4],
               "exponent_n": exp_n, "exponent_d": 1.0 - exp_n}
    intervals = {k: percentile_interval(v, level) for k, v in samples.items()}
    return ChinchillaFit(E=float(E), A=float(A), B=float(B), alpha=float(alpha), beta=float(beta),
                         exponent_n=float(beta / (alpha + beta)), exponent_d=float(alpha / (alpha + beta)),
                         objective=float(f_best), huber_delta=info.pop("delta"), intervals=intervals,
                         boot_params=boot, **info)
