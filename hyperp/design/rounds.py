"""Design rounds (`hyperp sweep run SPEC --design Q ...`): design a batch, run it, refit, design again, until
the interval is as narrow as the target or the budget is spent; each round's predicted and realised widths
are reported side by side (a design's prediction checked against what the runs gave).

Each round's spec is written to <sweep>/designs/round-<n>.toml, n counting on from the sweep's earlier rounds so
a later `--design` never overwrites one (the sweep's spec plus that round's runs as
[[runs]], hyperp.design.sweep.design_toml) and run by the caller's `run_batch`, so runs land in the same
ledger and every finished run is reused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.design.candidates import SweepContext
from hyperp.design.choose import BudgetError
from hyperp.design.sweep import design_sweep, design_toml
from hyperp.fitting.table import FitInputError, filter_rows, load_table


def design_rounds(sweep_dir: Path, question: str, run_batch: Callable[[Path], Any], *, rounds: int = 3,
                  budget_flops: float | None = None, target_width: float | None = None,
                  echo: Callable[[str], None] = print, **design_kw: Any) -> list[dict[str, Any]]:
    """Run up to `rounds` design rounds on the sweep at `sweep_dir`; returns one record per round that ran,
    and a last {"round", "note"} when a round had nothing to add (why the rounds ended early)."""
    if budget_flops is None and target_width is None:
        raise FitInputError("--design: give --budget-flops, --target-width or both")
    spent, history = 0.0, []
    for r in range(1, rounds + 1):
        left = None if budget_flops is None else (budget_flops - spent) / (rounds - r + 1)
        try:
            d = design_sweep(sweep_dir, question, budget_flops=left, target_width=target_width, **design_kw)
        except BudgetError as e:  # this round's share buys no run: the rounds so far stand
            _stop(history, r, f"this round's share of --budget-flops ({e.budget:.3g} of {budget_flops - spent:.3g} "
                              f"FLOPs left) is below the cheapest candidate run ({e.cheapest:.3g} FLOPs)", echo)
            break
        if not d.chosen:
            _stop(history, r, "; ".join(d.notes) or "no affordable candidate", echo)
            break
        path = io.write_bytes(next_round_path(Path(sweep_dir)), design_toml(d, SweepContext.load(sweep_dir)).encode())
        run_batch(path)
        runs = filter_rows(load_table(sweep_dir), design_kw.get("where") or {}, source=str(sweep_dir))
        realised = d.question.estimate(runs)
        spent += d.cost_flops
        history.append({"round": r, "design": str(path), "runs": sum(len(c.settings) for c in d.chosen),
                        "cost_flops": d.cost_flops, "predicted": d.predicted.to_dict(),
                        "realised": realised.to_dict()})
        echo(f"round {r} ({path.name}): {history[-1]['runs']} runs, {d.cost_flops:.3g} FLOPs; {d.question.describe()} "
             f"= {realised.value:.4g} [{realised.low:.4g}, {realised.high:.4g}], width {realised.width:.4g} "
             f"(predicted {d.predicted.width:.4g})")
        if target_width is not None and realised.width <= target_width:
            break
    return history


def next_round_path(sweep_dir: Path) -> Path:
    """<sweep>/designs/round-<n>.toml with n one past the highest round there (1 in a sweep without rounds)."""
    done = [int(m.group(1)) for f in (sweep_dir / "designs").glob("round-*.toml")
            if (m := re.fullmatch(r"round-(\d+)\.toml", f.name))]
    return sweep_dir / "designs" / f"round-{max(done, default=0) + 1}.toml"


def _stop(history: list[dict[str, Any]], r: int, note: str, echo: Callable[[str], None]) -> None:
    history.append({"round": r, "note": f"nothing to add: {note}"})
    echo(f"round {r}: {history[-1]['note']}")
