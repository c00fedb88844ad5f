"""Calibration and backtest of the designer on ledgers with real losses (issue 24; results/design/).

Calibration: for each study's question, the width the response model predicts for the runs that exist (their
losses re-drawn from the model, refitted as the command does, median of `n_sims`) against the width the
command reports on the real losses.

Backtest: start from a pilot (every run of the proxy cells, the smallest scale of each group, and at every
other cell the one run nearest the proxy's best LR, as a user transferring the LR would run first) and add
the study's other runs one at a time until the question's interval is as narrow as the full study's, by three
rules of choice:
- designer: `choose` among the runs that exist, their losses hidden (a candidate's rows carry NaN; the real
  loss is revealed only once the run is chosen), in rounds of ROUND runs, refitting the model after each;
- uniform: round-robin over the cells, each cell's runs nearest the proxy's best LR first;
- random: a random order (median over `n_random` draws, seeded).
Each reports the FLOPs (pilot included) at which the realised width first reaches the target; the target is
the full study's width, so every rule reaches it at the latest with every run. Widths are computed on the
table in one canonical row order, so a subset and the full study differ by their runs only.

Run: python -m hyperp.design.backtest results/sweeps-data -o results/design
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hyperp.design.candidates import Candidate
from hyperp.design.choose import choose, predicted_width
from hyperp.design.model import fit_model
from hyperp.design.questions import Question, make_question
from hyperp.fitting.table import FitInputError, load_table, status_masks

ROUND = 3  # runs the designer chooses before their losses are revealed and the model refitted
N_RANDOM = 20
BACKTEST_SIMS = 4  # simulated outcome sets per candidate in the backtest (a user's design takes 8)


@dataclass(frozen=True)
class Case:
    """One study's question over one group."""

    study: str
    question: str
    axis: str
    where: dict[str, list[str]]
    method: str | None = None
    baseline: str | None = None
    group_col: str = "param"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={'/'.join(v)}" for k, v in self.where.items())


def shipped_cases(root: Path) -> list[Case]:
    """The questions the shipped studies ask (results/README.md), one case per group."""
    cases: list[Case] = []
    for study, question, axis, col in (("width_transfer", "transfer", "width", "param"),
                                       ("depth_transfer", "transfer", "depth", "param"),
                                       ("token_exponent", "exponent", "tokens", "param"),
                                       ("moe_granularity", "transfer", "top_k", "sqrt_gate"),
                                       ("compute_efficiency", "transfer", "depth", "param")):
        if (root / study / "runs.parquet").is_file():
            values = sorted(load_table(root / study)[col].astype(str).unique())
            cases += [Case(study, question, axis, {col: [v]}, group_col=col) for v in values]
    if (root / "compute_efficiency" / "runs.parquet").is_file():
        cases += [Case("compute_efficiency", "cel", "depth", {"param": [m, "muon"]}, method=m, baseline="muon")
                  for m in ("hyperp", "muonh")]
    return cases


def case_table(root: Path, case: Case) -> tuple[pd.DataFrame, Question]:
    """The case's runs (completed or diverged, canonical order) and its question."""
    df = load_table(root / case.study, where=case.where)
    ok, div = status_masks(df)
    df = df[ok | div]
    q = make_question(case.question, df, axis=case.axis, by=(case.group_col,), method=case.method,
                      baseline=case.baseline, at=_target_compute(df, case), source=case.study)
    return canonical(df, q), q


def _target_compute(df: pd.DataFrame, case: Case) -> float | None:
    """cel: the largest compute the baseline's runs reach (a fit-to-fit CEL inside the fitted range)."""
    if case.question != "cel":
        return None
    return float(pd.to_numeric(df.loc[df["param"] == case.baseline, "flops"]).max())


def canonical(df: pd.DataFrame, q: Question) -> pd.DataFrame:
    return df.sort_values([*q.cell_cols, q.lr_col, "seed", "run_id"], kind="mergesort").reset_index(drop=True)


def calibrate(runs: pd.DataFrame, q: Question, n_sims: int = 20, seed: int = 0) -> dict[str, Any]:
    """The model's predicted width for the runs that exist against the command's width on the real losses."""
    actual = q.estimate(runs).width
    model = fit_model(runs, q)
    predicted, sims = predicted_width(runs, q, model, n_sims=n_sims, seed=seed)
    return {"actual_width": actual, "predicted_width": predicted, "ratio": predicted / actual,
            "within_25pct": bool(abs(predicted / actual - 1) <= 0.25),
            "sim_widths_p10_p90": [float(np.nanpercentile(sims, 10)), float(np.nanpercentile(sims, 90))],
            "noise": model.noise}


def pilot_split(runs: pd.DataFrame, q: Question) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pilot, the rest): every run of each group's proxy cell, and one run per other cell (nearest the
    proxy's best LR, lowest seed)."""
    pilot = []
    for _, group in (runs.groupby(list(q.group_cols)) if q.group_cols else [((), runs)]):
        scale = pd.to_numeric(group[q.scale])
        proxy = group[scale == scale.min()]
        best = _best_lr(proxy, q)
        pilot.append(proxy.index)
        for _, cell in group[scale != scale.min()].groupby(q.scale):
            dist = (np.log(cell[q.lr_col].astype(float)) - math.log(best)).abs()
            pilot.append(cell.assign(_d=dist).sort_values(["_d", "seed"]).index[:1])
    idx = np.concatenate([np.asarray(i) for i in pilot])
    return runs.loc[idx], runs.drop(index=idx)


def _best_lr(cell: pd.DataFrame, q: Question) -> float:
    ok = cell["status"].astype(str) == "completed"
    return float(cell[ok].groupby(q.lr_col)[q.loss_col].mean().idxmin())


def _hidden(rest: pd.DataFrame, q: Question) -> list[Candidate]:
    """One candidate per run, its loss hidden (NaN) and its status shown as completed: the designer learns
    the outcome, diverged or not, only once it chooses the run."""
    out = []
    for i, row in rest.iterrows():
        shown = row.copy()
        shown[q.loss_col] = math.nan
        shown["status"] = "completed"
        out.append(Candidate("run", str(row["run_id"]), pd.DataFrame([shown]), float(row["flops"]), [{"row": i}]))
    return out


def _reached(order: list[Any], known: pd.DataFrame, rest: pd.DataFrame, q: Question, target: float) -> tuple[float, int]:
    """Reveal `order` one run at a time: (FLOPs when the width first reaches `target`, runs added)."""
    table = known
    for n, i in enumerate(order, 1):
        table = canonical(pd.concat([table, rest.loc[[i]]]), q)
        if q.estimate(table).width <= target * (1 + 1e-9):
            return float(table["flops"].sum()), n
    return float(table["flops"].sum()), len(order)


def designer(pilot: pd.DataFrame, rest: pd.DataFrame, q: Question, target: float, seed: int = 0) -> dict[str, Any]:
    """The designer in rounds of ROUND runs; returns its FLOPs to the target, each round's predicted and
    realised width, and how many runs it took in uniform order because no run narrowed in simulation."""
    known, pool, rounds, fallback = pilot, _hidden(rest, q), [], 0
    fallback_order = uniform_order(pilot, rest, q)
    while pool:
        d = choose(known, q, pool, max_candidates=ROUND, seed=seed, n_sims=BACKTEST_SIMS)
        picks = d.chosen
        if not picks:  # nothing narrows in simulation: the next runs in uniform order
            left = {c.settings[0]["row"]: c for c in pool}
            picks = [left[i] for i in fallback_order if i in left][:ROUND]
            fallback += len(picks)
        for c in picks:
            pool.remove(c)
            known = canonical(pd.concat([known, rest.loc[[c.settings[0]["row"]]]]), q)
            width = q.estimate(known).width
            if width <= target * (1 + 1e-9):
                rounds.append({"predicted_width": d.predicted.width, "realised_width": width})
                return _designer_result(known, pilot, rounds, fallback)
        rounds.append({"predicted_width": d.predicted.width, "realised_width": q.estimate(known).width})
    return _designer_result(known, pilot, rounds, fallback)


def _designer_result(known, pilot, rounds, fallback) -> dict[str, Any]:
    return {"flops": float(known["flops"].sum()), "runs": len(known) - len(pilot), "rounds": rounds,
            "fallback_runs": fallback}


def uniform_order(pilot: pd.DataFrame, rest: pd.DataFrame, q: Question) -> list[Any]:
    """Round-robin over cells (in scale order), each cell's runs nearest the proxy's best LR first."""
    best = {g: _best_lr(p[pd.to_numeric(p[q.scale]) == pd.to_numeric(p[q.scale]).min()], q)
            for g, p in _groups(pilot, q)}
    queues = []
    for _, cell in rest.groupby(list(q.cell_cols), sort=True):
        g = tuple(cell.iloc[0][list(q.group_cols)]) if q.group_cols else ()
        dist = (np.log(cell[q.lr_col].astype(float)) - math.log(best[g])).abs()
        queues.append(list(cell.assign(_d=dist).sort_values(["_d", "seed"]).index))
    order = []
    while any(queues):
        for qu in queues:
            if qu:
                order.append(qu.pop(0))
    return order


def _groups(df: pd.DataFrame, q: Question):
    if not q.group_cols:
        yield (), df
        return
    for g, sub in df.groupby(list(q.group_cols)):
        yield (g if isinstance(g, tuple) else (g,)), sub


def backtest_case(root: Path, case: Case, n_random: int = N_RANDOM, seed: int = 0) -> dict[str, Any]:
    runs, q = case_table(root, case)
    target = q.estimate(runs).width
    pilot, rest = pilot_split(runs, q)
    out = {"study": case.study, "question": case.question, "group": case.label, "axis": case.axis,
           "target_width": target, "flops_full": float(runs["flops"].sum()),
           "flops_pilot": float(pilot["flops"].sum()), "n_runs": len(runs), "n_pilot": len(pilot)}
    t = time.perf_counter()
    d = designer(pilot, rest, q, target, seed)
    out |= {"flops_designer": d["flops"], "rounds_designer": d["rounds"], "designer_fallback_runs": d["fallback_runs"],
            "designer_s": time.perf_counter() - t}
    out["flops_uniform"] = _reached(uniform_order(pilot, rest, q), pilot, rest, q, target)[0]
    rng = np.random.default_rng(seed)
    draws = [_reached(list(rng.permutation(rest.index)), pilot, rest, q, target)[0] for _ in range(n_random)]
    out["flops_random_median"] = float(np.median(draws))
    for k in ("designer", "uniform", "random_median"):
        out[f"fraction_{k}"] = out[f"flops_{k}"] / out["flops_full"]
    return out


def run_case(root: Path, case: Case, n_random: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(calibration record, backtest record) of one case; on a FitInputError of either, one error record and
    None, so a case is recorded once whichever step failed."""
    meta = {"study": case.study, "question": case.question, "group": case.label}
    try:
        runs, q = case_table(root, case)
        calib = meta | calibrate(runs, q)
        return calib, backtest_case(root, case, n_random=n_random)
    except FitInputError as exc:
        return meta | {"error": str(exc)}, None


def main(argv: list[str] | None = None) -> None:
    from hyperp import io  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--random", type=int, default=N_RANDOM)
    ap.add_argument("--only", default=None, help="one study")
    args = ap.parse_args(argv)
    cases = [c for c in shipped_cases(args.root) if args.only in (None, c.study)]
    calib, backtest = [], []
    for case in cases:
        cal, bt = run_case(args.root, case, args.random)
        calib.append(cal)
        print(io.json_text(cal, indent=None), flush=True)
        if bt is not None:  # this case's own line: a failed case prints no earlier case's result again
            backtest.append(bt)
            print(io.json_text({k: v for k, v in bt.items() if k != "rounds_designer"}, indent=None), flush=True)
    suffix = "" if args.only is None else f"_{args.only}"
    io.write_bytes(args.out / f"calibration{suffix}.json", (io.json_text(calib) + "\n").encode())
    io.write_bytes(args.out / f"backtest{suffix}.json", (io.json_text(backtest) + "\n").encode())


if __name__ == "__main__":
    main()
