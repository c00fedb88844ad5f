"""Scaling-law fits over run tables: optimal LR, power laws, loss versus compute, CEL, Chinchilla approach 3.

Pure functions taking arrays or DataFrames and returning frozen dataclasses with a `to_dict()`; the
`hyperp fit` CLI (`hyperp.cli.fit`) is a thin layer over them. The math is method.md section 7.
"""

from hyperp.fitting.bootstrap import Interval, case_weights, percentile_interval, residual_draws
from hyperp.fitting.chinchilla import ChinchillaFit, chinchilla_inputs, default_grid, fit_chinchilla, huber_objective
from hyperp.fitting.compute import (CelPoint, ComputeComparison, ComputeLawFit, HoldOut, cel_at_points,
                                    compare_methods, compute_efficiency, fit_loss_compute)
from hyperp.fitting.lbfgs import LbfgsResult, minimize_lbfgs_batch
from hyperp.fitting.lr import LrOptima, LrOptimum, fit_lr_curve, fit_optimal_lr
from hyperp.fitting.powerlaw import LawFit, PowerLawFit, fit_law, fit_power_law
from hyperp.fitting.report import to_json, to_jsonable
from hyperp.fitting.table import FitInputError, load_table, parse_mapping

__all__ = [
    "CelPoint", "ChinchillaFit", "ComputeComparison", "ComputeLawFit", "FitInputError", "HoldOut", "Interval",
    "LawFit", "LbfgsResult", "LrOptima", "LrOptimum", "PowerLawFit", "case_weights", "cel_at_points",
    "chinchilla_inputs", "compare_methods", "compute_efficiency", "default_grid", "fit_chinchilla", "fit_law",
    "fit_loss_compute", "fit_lr_curve", "fit_optimal_lr", "fit_power_law", "huber_objective", "load_table",
    "minimize_lbfgs_batch", "parse_mapping", "percentile_interval", "residual_draws", "to_json", "to_jsonable",
]
