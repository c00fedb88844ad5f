"""Is the LM head's sphere binding? (method.md section 10)

Under MuonH and AdamH the head keeps its initial Frobenius norm, about sigma sqrt(V w) (init std sigma,
vocabulary V, width w), so a logit can reach at most about sigma w times the RMS of the final normalised
features, times the final norm's gain. Where that cap is small (w = 64, sigma = 0.02: about 1.3) the runs make
up for it by growing the final norm's gain, which distorts the loss and the optimal LR. Per run of a sphere
scheme (`hyperp`, `muonh`), from its ledger row:

- the cap at init, `head_init_std * width` (the logit per unit of feature RMS and gain);
- `final_norm_gain_max`: the largest RMS of the final norm's gain logged over training (1 at init).

Verdicts follow method.md section 11, on ln(gain_max) per cell (a run config minus its seed): a Student-t
interval over the cell's seeds; a cell of one run borrows the seed SD pooled over the cells that have seeds
(said in a warning), and has no interval when no cell has seeds. A cell *binds* when its whole interval lies
above GAIN_TOL (the head binds and the norm compensates), is *free* when it lies wholly below, and is
*unclear* otherwise. The check fails when a cell of a sphere scheme binds, passes when every one is free, and
is inconclusive otherwise. Schemes whose head is not on a sphere (muon, adamw) are reported, not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import t_interval
from hyperp.fitting.table import FitInputError, fit_rows, require_columns

SPHERE_HEAD_SCHEMES = ("hyperp", "muonh")  # AdamH keeps the LM head on its initial sphere
GAIN_TOL = 3.0  # the final norm's gain RMS grew 3x from its init of 1: the head's cap is being compensated
LEVEL = 0.95
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


CELL_COLUMNS = ("param", "width", "depth", "head_init_std", "lr", "tokens", "batch_tokens", "seq_len")
BINDS, FREE, UNCLEAR = "binds", "free", "unclear"


@dataclass(frozen=True)
class HeadCheck:
    runs: tuple[dict[str, Any], ...]  # per run: run_id, param, width, head_init_std, cap, gain_max, binds, ...
    verdict: str
    why: str
    thresholds: dict[str, float] = field(default_factory=lambda: {"gain_tol": GAIN_TOL, "level": LEVEL})
    warnings: tuple[str, ...] = ()
    decided_by: str = ""
    to_decide: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "why": self.why, "decided_by": self.decided_by, "to_decide": self.to_decide,
                "thresholds": dict(self.thresholds), "runs": list(self.runs), "warnings": list(self.warnings)}


def check_head(runs: pd.DataFrame, source: str = "runs") -> HeadCheck:
    """The head diagnostic of every completed or diverged run of a runs table (ledger columns)."""
    require_columns(runs, ["run_id", "param", "width", "head_init_std", "final_norm_gain_max"], source=source)
    done = fit_rows(runs, source=source)
    gain = pd.to_numeric(done["final_norm_gain_max"], errors="coerce")
    if gain.isna().all():
        raise FitInputError(f"{source}: no run logged final_norm_gain (runs trained before it was logged)")
    keys = [c for c in CELL_COLUMNS if c in done.columns]
    cells, pooled_sd = _cells(done.assign(_ln=np.log(gain)), keys)
    rows = [_row(r, cells.loc[i]) for i, r in zip(done.index, done.itertuples(index=False))]
    warnings = [f"{int(gain.isna().sum())} runs have no final_norm_gain (trained before it was logged)"] \
        if gain.isna().any() else []
    if (cells["n"] == 1).any():
        warnings.append("cells of one run: no seed spread of their own; " + (
            f"they borrow the seed SD of ln(gain) pooled over the cells with seeds ({pooled_sd:.3f})"
            if math.isfinite(pooled_sd) else "no cell has seeds, so they have no interval"))
    return _verdict(rows, warnings)


def _cells(done: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, float]:
    """Per run, its cell's mean ln(gain), n and t-interval (seeds, or the pooled seed SD for one run)."""
    grouped = done.groupby(keys, dropna=False)["_ln"]
    mean, sd, n = grouped.transform("mean"), grouped.transform("std"), grouped.transform("count")
    stats = grouped.agg(["std", "count"]).dropna()
    stats = stats[stats["count"] > 1]
    dof = int((stats["count"] - 1).sum())
    pooled = math.sqrt(float(((stats["count"] - 1) * stats["std"] ** 2).sum()) / dof) if dof else math.nan
    out = pd.DataFrame({"mean": mean, "n": n, "sd": sd.where(n > 1, pooled),
                        "dof": (n - 1).where(n > 1, dof)}, index=done.index)
    ivs = [t_interval(m, s / math.sqrt(k), d, LEVEL) for m, s, k, d in zip(out["mean"], out["sd"], out["n"], out["dof"])]
    return out.assign(low=[iv.low for iv in ivs], high=[iv.high for iv in ivs]), pooled


def _row(r, cell: pd.Series) -> dict[str, Any]:
    gain = float(r.final_norm_gain_max) if pd.notna(r.final_norm_gain_max) else math.nan
    limit = math.log(GAIN_TOL)
    state = BINDS if cell["low"] > limit else FREE if cell["high"] <= limit else UNCLEAR
    sphere = r.param in SPHERE_HEAD_SCHEMES
    return {"run_id": r.run_id, "param": r.param, "width": int(r.width), "head_init_std": float(r.head_init_std),
            "cap": float(r.head_init_std) * int(r.width), "gain_max": gain,
            "gain_low": math.exp(cell["low"]) if math.isfinite(cell["low"]) else math.nan,
            "gain_high": math.exp(cell["high"]) if math.isfinite(cell["high"]) else math.nan,
            "seeds": int(cell["n"]), "cell": state if sphere else "not judged", "binds": bool(sphere and state == BINDS)}


def _verdict(rows: list[dict[str, Any]], warnings: list[str]) -> HeadCheck:
    def text(r: dict[str, Any]) -> str:
        return (f"{r['param']} width {r['width']} std {r['head_init_std']:g}: gain {r['gain_max']:.3g}x "
                f"[{r['gain_low']:.3g}, {r['gain_high']:.3g}] over {r['seeds']} seed(s), cap {r['cap']:.3g}")

    judged = [r for r in rows if r["cell"] != "not judged" and math.isfinite(r["gain_max"])]
    binds = [r for r in judged if r["cell"] == BINDS]
    unclear = [r for r in judged if r["cell"] == UNCLEAR]
    kw = dict(runs=tuple(rows), warnings=tuple(warnings))
    if binds:
        worst = max(binds, key=lambda r: r["gain_low"])
        return HeadCheck(verdict=FAIL, why=f"{len(binds)} of {len(judged)} sphere-scheme runs have a gain interval "
                         f"wholly above {GAIN_TOL}x: the head's sphere binds", decided_by=text(worst), **kw)
    if unclear or not judged:
        top = max(unclear, key=lambda r: r["gain_max"]) if unclear else None
        return HeadCheck(verdict=INCONCLUSIVE, why=f"{len(unclear)} of {len(judged)} sphere-scheme runs have a gain "
                         f"interval that reaches {GAIN_TOL}x or none at all", decided_by=text(top) if top else "",
                         to_decide="repeat those runs with 2 more seeds (seeds = 3 in the sweep spec)", **kw)
    top = max(judged, key=lambda r: r["gain_high"])
    return HeadCheck(verdict=PASS, why=f"every sphere-scheme run's gain interval lies below {GAIN_TOL}x",
                     decided_by=text(top), **kw)
