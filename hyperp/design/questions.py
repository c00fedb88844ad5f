"""The questions a design answers: each the interval of one number a hyperp command already reports, computed
exactly as that command computes it (same function, same defaults), so a design's predicted width and the
width the command prints after the runs are the same quantity.

- `transfer`: the drift slope d ln eta* / d ln scale along an axis (`hyperp check transfer --axis A`);
- `exponent`: the same slope along tokens, the LR law's token exponent (method.md section 4);
- `cel`: CEL of a method over a baseline at a target compute (`hyperp fit compute --at C`, section 7);
- `loss`: the loss `hyperp predict` gives at a target shape and budget (its default law, L = A C^-b + E
  over the best run of each size, at the target's FLOPs from hyperp's accounting);
- `ab`: the optimum-loss difference of a column's variant over its baseline at one scale (`hyperp check ab
  --col C --baseline B --variant V` on the runs at `--axis` = `--at`, each arm at its own optimum): the runs
  that would decide an A/B (of an option, or of two schemes at one size).

A question reads one group (one scheme, one method pair): the caller filters the table first (`--where`).
Each question also says which columns make a *cell* (the runs that share an LR curve) and which column is
its scale, so the response model and the candidates know where runs can be added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import DEFAULT_N_BOOT
from hyperp.fitting.lr import MIN_LR_POINTS
from hyperp.fitting.table import FitInputError, require_columns, status_masks

QUESTIONS = ("transfer", "exponent", "cel", "loss", "ab")
MIN_LRS = MIN_LR_POINTS  # distinct LRs a cell needs before its optimum can be fitted


@dataclass(frozen=True)
class Estimate:
    """A question's number and its interval; NaN bounds when the runs cannot answer it yet."""

    value: float
    low: float
    high: float

    @property
    def width(self) -> float:
        w = self.high - self.low
        return w if math.isfinite(w) else math.inf

    @property
    def answered(self) -> bool:
        return math.isfinite(self.width)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "width": self.width}


UNANSWERED = Estimate(math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Question:
    """One question over one group of a runs table."""

    name: str
    scale: str  # the axis along which cells differ (width, depth, tokens, top_k)
    group_cols: tuple[str, ...] = ()  # columns that split cells besides the scale (the method for cel)
    method: str = ""  # cel, ab: the method (ab: the variant) and its baseline, values of method_col
    baseline: str = ""
    method_col: str = "param"
    at: float = math.nan  # cel, loss: the target compute; ab: the scale value the difference is read at
    x: str = "flops"
    lr_col: str = "lr"
    loss_col: str = "val_loss"
    target: tuple[tuple[str, Any], ...] = ()  # loss: the target's fields (depth, width, tokens, ...)
    where: tuple[tuple[str, Any], ...] = ()  # the filters that chose the group (--where), for `command`

    @property
    def cell_cols(self) -> tuple[str, ...]:
        return (*self.group_cols, self.scale)

    @property
    def command(self) -> str:
        """The command whose interval this is, with the group's --where filters."""
        where = "".join(f" --where {k}={v}" for k, v in self.where)
        if self.name == "cel":
            return (f"hyperp fit compute --baseline {self.baseline} --method-col {self.method_col} --x {self.x} "
                    f"--at {self.at:.4g}{where}")
        if self.name == "loss":
            return "hyperp predict " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.target) + where
        if self.name == "ab":
            return (f"hyperp check ab --col {self.method_col} --baseline {self.baseline} --variant {self.method} "
                    f"--where {self.scale}={_number(self.at)}{where}")
        return f"hyperp check transfer --axis {self.scale}{where}"

    def describe(self) -> str:
        if self.name == "cel":
            return f"CEL of {self.method} over {self.baseline} at {self.x} = {self.at:.4g}"
        if self.name == "loss":
            return f"loss at {', '.join(f'{k}={v}' for k, v in self.target)} ({self.at:.4g} FLOPs)"
        if self.name == "ab":
            return (f"optimum loss of {self.method_col}={self.method} minus {self.method_col}={self.baseline} at "
                    f"{self.scale}={_number(self.at)}")
        what = "token exponent" if self.name == "exponent" else "drift slope"
        return f"{what} d ln eta*/d ln {self.scale}"

    def estimate(self, df: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Estimate:
        """The number and its interval as the question's command computes them; UNANSWERED where the runs
        cannot answer it yet (too few LRs at a scale, too few sizes for a law)."""
        try:
            if self.name == "cel":
                return self._cel(df, n_boot, seed)
            if self.name == "loss":
                return self._loss(df, n_boot, seed)
            if self.name == "ab":
                return self._ab(df)
            return self._slope(df, n_boot, seed)
        except FitInputError:
            return UNANSWERED

    def _slope(self, df, n_boot, seed) -> Estimate:
        from hyperp.checks.transfer import check_transfer  # noqa: PLC0415

        (check,) = check_transfer(df, self.scale, lr_col=self.lr_col, loss_col=self.loss_col, n_boot=n_boot,
                                  seed=seed)
        i = check.slope_interval
        return Estimate(check.slope, i.low, i.high)

    def _cel(self, df, n_boot, seed) -> Estimate:
        from hyperp.fitting.compute import compare_methods  # noqa: PLC0415

        res = compare_methods(df, self.baseline, method_col=self.method_col, x=self.x, y=self.loss_col,
                              at=[self.at], n_boot=n_boot, seed=seed)
        rows = [p for p in res.cel_at if p.method == self.method]
        if len(rows) != 1:  # e.g. the method's runs do not give its law yet: estimate() says unanswered
            raise FitInputError(f"{self.method_col}={self.method}: compare_methods gave {len(rows)} CEL rows at "
                                f"{self.at:.3g} FLOPs against {self.baseline}, expected 1")
        (p,) = rows
        return Estimate(p.cel, p.interval.low, p.interval.high)

    def _loss(self, df, n_boot, seed) -> Estimate:
        from hyperp.fitting.predict import fit_loss_law, loss_at  # noqa: PLC0415

        fit = fit_loss_law(df, "compute", n_boot, seed, 0.95, "table")
        value, interval, _, _ = loss_at(fit, "compute", {"flops_planned": self.at}, None, 0.95)
        return Estimate(value, interval.low, interval.high)

    def _ab(self, df) -> Estimate:
        """check ab's interval at the one scale it reads (no bootstrap: a t interval from the runs' noise)."""
        from hyperp.checks.ab import check_ab  # noqa: PLC0415

        check = check_ab(self.read_rows(df), self.method_col, self.baseline, self.method, lr_col=self.lr_col,
                         loss_col=self.loss_col)
        (g,) = check.groups
        return Estimate(g.delta, g.interval.low, g.interval.high)

    def group_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows a design models: ab's two arms at every scale (a third value of the column is no arm: its
        cells would only pool noise the check does not see); every row for the other questions."""
        if self.name != "ab":
            return df
        return df[df[self.method_col].astype(str).isin([self.baseline, self.method])]

    def read_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows the estimate reads: ab's two arms at its scale; every row for the other questions."""
        if self.name != "ab":
            return df
        df = self.group_rows(df)
        return df[np.isclose(pd.to_numeric(df[self.scale], errors="coerce"), self.at)]

    def readiness(self, df: pd.DataFrame) -> int:
        """Progress of runs that cannot answer yet: distinct LRs per cell (of the rows the estimate reads),
        counted up to the MIN_LRS an optimum needs, summed over cells."""
        df = self.read_rows(df)
        ok, _ = status_masks(df)
        done = df[ok & np.isfinite(pd.to_numeric(df[self.loss_col], errors="coerce"))]
        return int(done.groupby(list(self.cell_cols))[self.lr_col].nunique().clip(upper=MIN_LRS).sum())


def check_flags(name: str, axis: str | None, at: float | None = None, flag: str = "question") -> str:
    """The question's flags that need no table (`sweep run --design` checks them before its spec runs): the
    question (`flag` names it), its axis, cel's target compute; returns the axis (tokens for exponent)."""
    if name not in QUESTIONS:
        raise FitInputError(f"{flag}: expected one of {', '.join(QUESTIONS)}, got {name!r}")
    if name == "exponent":
        if axis not in (None, "tokens"):
            raise FitInputError(f"--axis: the exponent question is along tokens, got {axis!r}")
        return "tokens"
    if axis is None:
        raise FitInputError(f"--axis: the {name} question needs the scale axis (e.g. width, depth, tokens)")
    if name == "cel" and (at is None or not at > 0):
        raise FitInputError("--at: the cel question needs the target compute (> 0), e.g. --at 1e13")
    return axis


def make_question(name: str, df: pd.DataFrame, *, axis: str | None = None, by: tuple[str, ...] = ("param",),
                  method: str | None = None,
                  baseline: str | None = None, method_col: str = "param", at: float | None = None,
                  x: str = "flops", lr_col: str = "lr", loss_col: str = "val_loss",
                  target: dict[str, Any] | None = None, source: str = "table") -> Question:
    """The question `name` over a table already filtered to one group (each `by` column, the columns that
    split `check transfer` into groups, holds one value); a one-line FitInputError when the table cannot pose
    it (an axis that does not vary, several groups, a method missing)."""
    axis = check_flags(name, axis, at)
    require_columns(df, [axis, lr_col, loss_col], source=source)
    if name == "ab":
        _one_group(df, tuple(c for c in by if c in df.columns and c != method_col), source)
        return _ab_question(df, axis, method, baseline, method_col, at, lr_col, loss_col, source)
    if pd.to_numeric(df[axis], errors="coerce").nunique() < 2:
        raise FitInputError(f"{source}: --axis {axis}: the column has {df[axis].nunique()} value(s); the question "
                            f"needs >= 2 scales")
    if name == "loss":
        _one_group(df, tuple(c for c in by if c in df.columns), source)
        return _loss_question(df, axis, target or {}, method_col, lr_col, loss_col, source)
    if name != "cel":
        _one_group(df, tuple(c for c in by if c in df.columns), source)
        return Question(name=name, scale=axis, lr_col=lr_col, loss_col=loss_col)
    return _cel_question(df, axis, method, baseline, method_col, at, x, lr_col, loss_col, source)


def _cel_question(df, axis, method, baseline, method_col, at, x, lr_col, loss_col, source) -> Question:
    require_columns(df, [method_col, x], source=source)
    methods, method = _arms(df, method_col, method, baseline, " (keep two methods with --where)")
    if len(methods) > 2:
        raise FitInputError(f"{source}: {len(methods)} methods in {method_col!r} ({', '.join(methods)}); keep the "
                            f"method and its baseline, e.g. --where {method_col}={method} --where {method_col}={baseline}")
    return Question(name="cel", scale=axis, group_cols=(method_col,), method=method, baseline=baseline,
                    method_col=method_col, at=float(at), x=x, lr_col=lr_col, loss_col=loss_col)


def _number(x: float) -> str:
    """A scale value as --where reads it back: 16777216, not 1.67772e+07."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _arms(df, method_col, method, baseline, hint: str) -> tuple[list[str], str]:
    """(the column's values as text, the method): --baseline must be one of them, --method another (default:
    the one other value)."""
    values = sorted(df[method_col].astype(str).unique())
    if baseline is None or baseline not in values:
        raise FitInputError(f"--baseline: expected one of {values} (values of {method_col}), got {baseline!r}")
    others = [v for v in values if v != baseline]
    method = method or (others[0] if len(others) == 1 else None)
    if method is None or method not in others:
        raise FitInputError(f"--method: expected one of {others}{hint}, got {method!r}")
    return values, method


def _ab_question(df, axis, variant, baseline, method_col, at, lr_col, loss_col, source) -> Question:
    """ab: the two arms (text values of method_col, as check ab compares them) and the scale they are read at
    (--at; may be left out when the axis holds one value)."""
    require_columns(df, [method_col], source=source)
    _, variant = _arms(df, method_col, variant, baseline, " (the variant)")
    scales = sorted(pd.to_numeric(df[axis], errors="coerce").dropna().unique())
    if at is None and len(scales) == 1:
        at = scales[0]
    if at is None or not np.any(np.isclose(scales, at)):
        raise FitInputError(f"--at: the ab question reads the difference at one {axis}; expected one of "
                            f"{[float(s) for s in scales]}, got {at}")
    return Question(name="ab", scale=axis, group_cols=(method_col,), method=variant, baseline=baseline,
                    method_col=method_col, at=float(at), lr_col=lr_col, loss_col=loss_col)


def _loss_question(df, axis, target, method_col, lr_col, loss_col, source) -> Question:
    """loss: the target's FLOPs from hyperp's accounting, on the sweep's own proxy settings (as predict)."""
    from hyperp.fitting.predict import target_config  # noqa: PLC0415
    from hyperp.trainer.metrics import static_columns  # noqa: PLC0415

    if "tokens" not in target:
        raise FitInputError("--tokens: the loss question needs the target's token budget (and --depth/--width)")
    param = str(df[method_col].iloc[0]) if method_col in df.columns else None
    cfg = target_config(df, {"param": param, **target}, method_col, source)
    flops = float(static_columns(cfg)["flops_planned"])
    return Question(name="loss", scale=axis, method_col=method_col, at=flops, lr_col=lr_col, loss_col=loss_col,
                    target=tuple((k, v) for k, v in target.items() if v is not None))


def _one_group(df: pd.DataFrame, cols: tuple[str, ...], source: str) -> None:
    for c in cols:
        values = sorted(df[c].astype(str).unique())
        if len(values) > 1:
            raise FitInputError(f"{source}: {len(values)} values of {c!r} ({', '.join(values)}); a design answers "
                                f"one group: pick one with --where {c}={values[0]}")
