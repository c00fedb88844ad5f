"""Timing of the fits (issue 3's performance targets).

1. Chinchilla approach 3 on the 245-run CSV with the full grid of 4,500 L-BFGS starts (batched L-BFGS,
   analytic gradient), and for comparison scipy loops (one `minimize(method="L-BFGS-B")` per start, scipy's
   default tolerances): the straightforward one (a textbook objective with scipy.special.logsumexp and
   scipy.special.huber, numeric gradient), and the same loop with hyperp's objective with and without its
   analytic gradient. Each loop is timed on a subset of starts and EXTRAPOLATED to 4,500 (subset time
   times 4,500 / subset size).
2. Every other fit on a 10,000-row synthetic table, with its default bootstrap (1,000 replicates).

Run: python benchmarks/bench_fit.py [--subset 45]
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads. On a shared 2-core machine OpenBLAS's worker threads make the
# thousands of tiny BLAS calls inside the scipy loops ~9x slower (measured: 9.1 s vs 1.1 s for the same 45
# starts), which would flatter the batched fit. The batched fit itself is not BLAS-bound.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import huber, logsumexp  # noqa: E402

from hyperp.fitting import (compare_methods, default_grid, fit_chinchilla, fit_law,  # noqa: E402
                            fit_optimal_lr, fit_power_law, huber_objective, minimize_lbfgs_batch)

CSV = Path(__file__).resolve().parents[2] / "shared/data/chinchilla_svg_extracted.csv"
ROWS = 10_000


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def chinchilla_inputs():
    df = pd.read_csv(CSV)
    n = df["Model Size"].to_numpy(float)
    return n, df["Training FLOP"].to_numpy(float) / (6 * n), df["loss"].to_numpy(float)


def bench_chinchilla(subset: int) -> None:
    n, d, loss = chinchilla_inputs()
    print(f"Chinchilla approach 3, {n.size}-run CSV, full grid of {len(default_grid())} starts, no bootstrap")
    for workers in (1, 2):  # 2 threads pay only when both cores are idle
        dt, fit = timed(lambda: fit_chinchilla(n, d, loss, n_boot=0, workers=workers))
        print(f"  batched L-BFGS, analytic gradient, {workers} thread(s): {dt:6.2f} s  "
              f"(E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} alpha={fit.alpha:.4f} beta={fit.beta:.4f}; "
              f"{fit.n_converged}/{fit.n_starts} converged, max {fit.iterations_max} iterations)")
    dt, fit = timed(lambda: fit_chinchilla(n, d, loss, drop_worst=5, n_boot=0))
    print(f"  same, 5 highest-loss runs dropped (Epoch's setting):      {dt:6.2f} s  "
          f"(E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} alpha={fit.alpha:.4f} beta={fit.beta:.4f})")
    dt, fit = timed(lambda: fit_chinchilla(n, d, loss, drop_worst=5, n_boot=200))
    print(f"  same with the default 200 bootstrap replicates:            {dt:6.2f} s")
    args = (np.log(n), np.log(d), np.log(loss))
    grid = default_grid()
    dt, res = timed(lambda: minimize_lbfgs_batch(lambda x, rows: huber_objective(x, *args), grid))
    print(f"  batched L-BFGS with scipy's default stopping rules (as the loops below), all 245 runs: {dt:6.2f} s "
          f"(best objective {res.f.min():.6g})")

    starts = grid[:: len(grid) // subset][:subset]
    f = lambda p: float(huber_objective(p[None], *args)[0][0])  # noqa: E731
    g = lambda p: huber_objective(p[None], *args)[1][0]  # noqa: E731
    loops = [("scipy loop, textbook objective, numeric gradient", lambda x0: minimize(
                 textbook_objective, x0, args=args, method="L-BFGS-B")),
             ("scipy loop, hyperp objective, numeric gradient", lambda x0: minimize(f, x0, method="L-BFGS-B")),
             ("scipy loop, hyperp objective, analytic gradient", lambda x0: minimize(f, x0, jac=g, method="L-BFGS-B"))]
    scale = len(grid) / len(starts)
    for name, run in loops:
        dt, res = timed(lambda: [run(x0) for x0 in starts])
        print(f"  {name}: {dt:6.2f} s for {len(starts)} starts -> EXTRAPOLATED {dt * scale:7.1f} s for "
              f"{len(grid)} (best objective of the subset {min(r.fun for r in res):.6g})")


def textbook_objective(p, log_n, log_d, log_loss, delta=1e-3):
    """The Huber/LSE objective written the obvious way (as in Epoch's notebook), for the scipy baseline."""
    a, b, e, alpha, beta = p
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(huber(delta, pred - log_loss)))


def lr_table(rng) -> pd.DataFrame:
    """10 depths x 100 token budgets x 10 LRs; optimal LR = 0.02 (T / 1e8)^-0.32."""
    depth, tokens, k = np.meshgrid(np.arange(2, 12), np.geomspace(1e8, 1e10, 100), np.arange(10), indexing="ij")
    best = 0.02 * (tokens / 1e8) ** -0.32
    lr = best * np.geomspace(0.2, 5, 10)[k]
    loss = 2 + 10 * tokens**-0.1 + 0.05 * np.log(lr / best) ** 2 + rng.normal(0, 1e-3, lr.shape)
    return pd.DataFrame({"depth": depth.ravel(), "tokens": tokens.ravel(), "lr": lr.ravel(),
                         "val_loss": loss.ravel(), "status": "completed"})


def compute_table(rng) -> pd.DataFrame:
    methods = rng.choice(["adamw", "muon", "hyperp"], ROWS)
    k = pd.Series(methods).map({"adamw": 0.7, "muon": 1.0, "hyperp": 1.6}).to_numpy()
    flops = 10 ** rng.uniform(18, 22, ROWS)
    loss = 400 * (k * flops) ** -0.15 + 1.8 + rng.normal(0, 0.01, ROWS)
    return pd.DataFrame({"param": methods, "flops": flops, "val_loss": loss, "status": "completed"})


def bench_other() -> None:
    rng = np.random.default_rng(0)
    lr_df, cmp_df = lr_table(rng), compute_table(rng)
    x = 10 ** rng.uniform(6, 10, ROWS)
    y = 40 * x**-0.3 * np.exp(rng.normal(0, 0.02, ROWS))
    cases = [
        ("fit_optimal_lr, 1,000 groups x 10 LRs", lambda: fit_optimal_lr(lr_df, by=["depth", "tokens"])),
        ("fit_power_law linear space, 10,000 points", lambda: fit_power_law(x, y)),
        ("fit_power_law log space, 10,000 points", lambda: fit_power_law(x, y, space="log")),
        ("fit_power_law linear + offset, 10,000 points", lambda: fit_power_law(x, y + 1.0, offset=True)),
        ("fit_law --y lr_opt (1,000 optima, 10 laws)", lambda: fit_law(lr_df, "tokens", "lr_opt", by=["depth"])),
        ("compare_methods, 3 methods, --at 2 values", lambda: compare_methods(cmp_df, "muon", at=[1e20, 1e21])),
    ]
    print(f"Other fits on {ROWS:,}-row synthetic tables (default bootstrap: 1,000 replicates)")
    for name, fn in cases:
        dt, _ = timed(fn)
        print(f"  {name:<48} {dt:6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=45, help="starts timed in the scipy loops (extrapolated)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPU cores, load average {load:.2f} at start, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if CSV.exists():
        bench_chinchilla(args.subset)
    else:
        print(f"(skipping Chinchilla: {CSV} not found)")
    bench_other()


if __name__ == "__main__":
    main()
