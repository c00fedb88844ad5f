"""`hyperp export SWEEP --to tensorboard|mlflow|wandb`: a finished (or running) sweep's ledger written to trackers.

Each run of the ledger (runs.parquet) is logged as a run that trained with the tracker would have been
(hyperp.tracking): its config (`config_json`), its curves (runs/<run_id>/curves.parquet, wall times spread over
its training time) and its record, under the sweep's name, its cell and its run id, in the trackers' layout
under the output directory. Read-only on the sweep directory. Exporting again replaces what the last export
wrote (TensorBoard's file of each run, MLflow's run); W&B adds new offline runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hyperp.config import ConfigError
from hyperp.errors import InputError, UnavailableError, first_line
from hyperp.io import containing, read_json
from hyperp.schema import CURVES_FILE, PLAN_FILE
from hyperp.sweeps.ledger import LEDGER_FILE, read_ledger, run_dir
from hyperp.tracking import RunLabel, Tracking, check_installed, open_trackers, read_curves, settle


def export_sweep(sweep_dir: Path, to: tuple[str, ...], out: Path) -> dict[str, Any]:
    """Write every run of the sweep's ledger to the trackers `to` under `out`; returns what was written."""
    t0 = time.time()
    check_installed(to, "--to")
    if containing(out, [sweep_dir]) is not None:  # an export replaces its files there: never the sweep's own
        raise InputError(f"--out {out}: inside the sweep directory {sweep_dir}; an export never writes into a "
                         "sweep (give a directory outside it)")
    rows = read_ledger(sweep_dir).to_dict("records")
    if not rows:
        raise InputError(f"{sweep_dir}: no runs in its ledger ({LEDGER_FILE}); nothing to export")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"cannot write to {out}: {e.strerror or e}") from None
    tracking = Tracking(to).resolved(out)
    sweep = (read_json(sweep_dir / PLAN_FILE, {}) or {}).get("sweep") or sweep_dir.name
    steps = sum(export_run(sweep_dir, sweep, row, tracking) for row in rows)
    settle(tracking)  # every file complete when the export returns
    return {"sweep": sweep, "dir": str(sweep_dir), "to": list(to), "out": str(out), "runs": len(rows),
            "steps": steps, "seconds": time.time() - t0}


def export_run(sweep_dir: Path, sweep: str, row: dict[str, Any], tracking: Tracking) -> int:
    """One ledger row with its config and curves; returns the steps logged. A tracker's error ends the export."""
    rid = row["run_id"]
    label = RunLabel(rid, sweep, row.get("cell_id") or rid)
    try:
        trackers = open_trackers(tracking, label, fresh=True, guarded=False)
        try:
            trackers.log_config(config_of(row))
            steps = trackers.log_curves(read_curves(run_dir(sweep_dir, rid) / CURVES_FILE), row.get("started_at"),
                                        row.get("wall_time_s"))
            trackers.log_final(row)
        finally:
            trackers.close()
    except Exception as e:  # noqa: BLE001 (the library's own error, whatever its type, in one line)
        raise UnavailableError(f"export of run {rid} to {', '.join(tracking.log_to)} under {tracking.dir} failed: "
                               f"{first_line(f'{type(e).__name__}: {e}')}") from e
    return steps


def config_of(row: dict[str, Any]) -> dict[str, Any]:
    """The run's config from its record's `config_json` (a command sweep's: template and values)."""
    try:
        config = json.loads(row.get("config_json") or "{}")
    except ValueError:
        config = {}
    return config if isinstance(config, dict) else {}
