"""Is the LM head's sphere binding? (method.md section 10)

Under MuonH and AdamH the head keeps its initial Frobenius norm, about sigma sqrt(V w) (init std sigma,
vocabulary V, width w), so a logit can reach at most about sigma w times the RMS of the final normalised
features, times the final norm's gain. Where that cap is small (w = 64, sigma = 0.02: about 1.3) the runs make
up for it by growing the final norm's gain, which distorts the loss and the optimal LR. Per run of a sphere
scheme (`hyperp`, `muonh`), from its ledger row:

- the cap at init, `head_init_std * width` (the logit per unit of feature RMS and gain);
- `final_norm_gain_max`: the largest RMS of the final norm's gain logged over training (1 at init).

A run is flagged when its gain grew beyond GAIN_TOL (the head binds and the norm compensates). The check
fails when any run is flagged. Schemes whose head is not on a sphere (muon, adamw) are reported, not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hyperp.fitting.table import FitInputError, fit_rows, require_columns

SPHERE_HEAD_SCHEMES = ("hyperp", "muonh")  # AdamH keeps the LM head on its initial sphere
GAIN_TOL = 3.0  # the final norm's gain RMS grew 3x from its init of 1: the head's cap is being compensated
PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class HeadCheck:
    runs: tuple[dict[str, Any], ...]  # per run: run_id, param, width, head_init_std, cap, gain_max, binds
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"gain_tol": GAIN_TOL})
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "why": self.why, "thresholds": dict(self.thresholds),
                "runs": list(self.runs), "warnings": list(self.warnings)}


def check_head(runs: pd.DataFrame, source: str = "runs") -> HeadCheck:
    """The head diagnostic of every completed or diverged run of a runs table (ledger columns)."""
    require_columns(runs, ["run_id", "param", "width", "head_init_std", "final_norm_gain_max"], source=source)
    rows, unlogged = [], 0
    for r in fit_rows(runs, source=source).itertuples(index=False):
        gain = float(r.final_norm_gain_max) if pd.notna(r.final_norm_gain_max) else math.nan
        unlogged += math.isnan(gain)
        sphere = r.param in SPHERE_HEAD_SCHEMES
        rows.append({"run_id": r.run_id, "param": r.param, "width": int(r.width),
                     "head_init_std": float(r.head_init_std), "cap": float(r.head_init_std) * int(r.width),
                     "gain_max": gain, "binds": bool(sphere and gain > GAIN_TOL)})
    if len(rows) == unlogged:
        raise FitInputError(f"{source}: no run logged final_norm_gain (runs trained before it was logged)")
    flagged = [r for r in rows if r["binds"]]
    why = (f"{len(flagged)} of {len(rows)} runs grew the final norm's gain beyond {GAIN_TOL}x (worst "
           f"{max(r['gain_max'] for r in flagged):.2f}x at width {flagged[0]['width']}, cap sigma*w = "
           f"{flagged[0]['cap']:.3g}): the head's sphere binds" if flagged else
           f"no run of a sphere scheme grew the final norm's gain beyond {GAIN_TOL}x")
    warnings = (f"{unlogged} runs have no final_norm_gain (trained before it was logged)",) if unlogged else ()
    return HeadCheck(runs=tuple(rows), verdict=FAIL if flagged else PASS, why=why, warnings=warnings)
