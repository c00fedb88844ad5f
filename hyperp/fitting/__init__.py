"""Scaling-law fits over run tables: optimal LR, power laws, loss versus compute, CEL, Chinchilla approach 3.

Pure functions taking arrays or DataFrames (with optional per-point weights) and returning frozen dataclasses
that follow one protocol, `FitResult` (`result.py`: success, message, n_failed, predict, band, to_dict); the
`hyperp fit` CLI (`hyperp.cli.fit`) is a thin layer over them. The math is method.md section 7.

The names below load on first use (PEP 562), so importing a light submodule (`hyperp.fitting.defaults`, the
CLI's option defaults) does not load numpy, scipy and pandas.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "bootstrap": ("Interval", "case_weights", "percentile_interval", "residual_draws"),
    "chinchilla": ("ChinchillaFit", "chinchilla_inputs", "default_grid", "fit_chinchilla", "huber_objective"),
    "compute": ("CelPoint", "ComputeComparison", "ComputeLawFit", "HoldOut", "cel_at_points", "compare_methods",
                "compute_efficiency", "fit_loss_compute"),
    "lbfgs": ("LbfgsResult", "minimize_lbfgs_batch"),
    "lr": ("LrOptima", "LrOptimum", "fit_lr_curve", "fit_optimal_lr"),
    "powerlaw": ("LawFit", "PowerLawFit", "fit_law", "fit_power_law"),
    "report": ("to_json", "to_jsonable"),
    "result": ("FitResult",),
    "table": ("FitInputError", "load_table", "parse_mapping"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'hyperp.fitting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hyperp.fitting.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
