"""Run and cell identity for sweeps: `hyperp.identity`, which the trainer shares (see its docstring)."""

from hyperp.identity import RESULTS_VERSION, cell_id, run_id

__all__ = ["RESULTS_VERSION", "cell_id", "run_id"]
