"""What LR and what loss at a target scale? Predictions from the laws a sweep's runs support.

`predict(df, target)` answers for one scheme:
- the base LR: the law lr_opt = a x^b fitted to the sweep's optima (x = tokens by default), evaluated at the
  target's x, with its bootstrap band. The scheme's own rule (`resolve_hparams`: depth-muP, the token
  factor, ...) then gives every parameter group's LR at the target shape. That step assumes the scheme's
  transfer across width and depth holds beyond the sweep: `hyperp check transfer` measures whether it does
  within it;
- the loss: the loss-versus-compute law L = A C^-b + E (the best run of each model size), or the Chinchilla
  law L(N, D), evaluated at the target with its bootstrap band;
- how far outside the fitted range the target lies: the ratio of the target's tokens and compute to the
  largest fitted ones. A prediction 1e6x beyond the data is reported, and warned about, not refused.

The proxy settings the rule needs (base_depth, base_width, base_tokens, token_exponent, ...) come from the
sweep's own runs, so the rule maps the LR exactly as it did in the sweep. The table is checked first
(`check_inputs`: the columns, the LR sweeps and the sizes each law needs), then both laws are fitted, and only
then is the target model built (torch, on the meta device), so a table that cannot answer costs no model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hyperp.errors import MAX_LISTED
from hyperp.fitting.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval
from hyperp.fitting.chinchilla import MIN_POINTS as CHINCHILLA_MIN_POINTS
from hyperp.fitting.chinchilla import chinchilla_inputs, fit_chinchilla
from hyperp.fitting.compute import MIN_POINTS as COMPUTE_MIN_POINTS
from hyperp.fitting.compute import fit_loss_compute
from hyperp.fitting.lr import MIN_LR_POINTS
from hyperp.fitting.powerlaw import fit_law
from hyperp.fitting.table import FitInputError, best_rows, fit_rows, numeric_column, require_columns

LossLaw = Literal["compute", "chinchilla"]
LR_LAW_POINTS = 3  # values of the LR law's x a power law a x^b needs (2 parameters + 1: powerlaw._validate)
EXTRAPOLATION_WARN = 10.0  # beyond this factor past the largest fitted value, a prediction is an extrapolation
TARGET_FIELDS = ("param", "depth", "width", "aspect_ratio", "tokens", "moe_every", "sparsity", "top_k")


@dataclass(frozen=True)
class Prediction:
    target: dict[str, Any]  # the target's shape and budget, with its parameter counts and FLOPs
    lr: float  # base LR (the `lr` of a run config) at the target
    lr_interval: Interval
    groups: dict[str, dict[str, Any]]  # per parameter group: optimizer, lr, weight_decay (resolve_hparams)
    rule: dict[str, float]  # depth_factor, token_factor, residual_alpha, logit_mult at the target
    loss: float
    loss_interval: Interval
    loss_law: str
    extrapolation: dict[str, float]  # target / largest fitted value, per axis (tokens, compute)
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "lr": self.lr, "lr_low": self.lr_interval.low, "lr_high": self.lr_interval.high,
                "groups": self.groups, "rule": self.rule, "loss": self.loss, "loss_low": self.loss_interval.low,
                "loss_high": self.loss_interval.high, "level": self.loss_interval.level, "loss_law": self.loss_law,
                "extrapolation": self.extrapolation, "warnings": list(self.warnings)}


def predict(df: pd.DataFrame, target: dict[str, Any], *, method_col: str = "param", lr_x: str = "tokens",
            loss_law: LossLaw = "compute", n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
            level: float = DEFAULT_LEVEL, source: str = "table") -> Prediction:
    """Predict the optimal LRs and the loss of `target` (RunConfig fields: param, depth, width or
    aspect_ratio, tokens, MoE shape) from the sweep's runs of the same scheme."""
    cfg = target_config(df, target, method_col, source)
    runs = df[df[method_col].astype(str) == cfg.param] if method_col in df.columns else df
    if runs.empty:
        raise FitInputError(f"{source}: no runs with {method_col}={cfg.param!r}")
    check_inputs(runs, lr_x, loss_law, f"{source} ({method_col}={cfg.param})")
    lr_law = _lr_law(runs, lr_x, n_boot, seed, level, source)
    loss_fit = fit_loss_law(runs, loss_law, n_boot, seed, level, source)
    # Only now that both laws stand: the target model (torch, meta device) and the scheme's rule.
    from hyperp.trainer.metrics import static_columns  # noqa: PLC0415
    from hyperp.trainer.hparams import resolve_hparams  # noqa: PLC0415

    shape = static_columns(cfg)
    lr, lr_interval, lr_warn, lr_fitted = _lr_at(lr_law, float(getattr(cfg, lr_x)), level)
    hp = resolve_hparams(cfg.replace(lr=lr))
    loss, loss_interval, loss_warn, c_fitted = loss_at(loss_fit, loss_law, shape, cfg, level)
    extrapolation = {lr_x: float(getattr(cfg, lr_x)) / lr_fitted, "compute": shape["flops_planned"] / c_fitted}
    far = [f"the target's {k} is {v:.3g}x the largest fitted: an extrapolation, not an interpolation"
           for k, v in extrapolation.items() if v > EXTRAPOLATION_WARN]
    return Prediction(
        target={**{k: getattr(cfg, k) for k in TARGET_FIELDS}, "width": cfg.d_model, **shape},
        lr=lr, lr_interval=lr_interval,
        groups={g: {"optimizer": hp.group(g).optimizer, "lr": hp.group(g).lr, "weight_decay": hp.group(g).weight_decay}
                for g in ("hidden", "head", "embed", "vector")},
        rule={"depth_factor": hp.depth_factor, "token_factor": hp.token_factor, "residual_alpha": hp.residual_alpha,
              "logit_mult": hp.logit_mult},
        loss=loss, loss_interval=loss_interval, loss_law=loss_law, extrapolation=extrapolation,
        warnings=tuple([*lr_warn, *loss_warn, *far]))


def target_config(df: pd.DataFrame, target: dict[str, Any], method_col: str, source: str):
    """The target's RunConfig: the sweep's proxy settings (from a run of the target's scheme) with the target's
    shape and budget on top."""
    from hyperp.config import RunConfig  # noqa: PLC0415

    require_columns(df, ["config_json"], source=source)
    param = target.get("param")
    rows = df[df[method_col].astype(str) == str(param)] if param is not None and method_col in df.columns else df
    if rows.empty:
        raise FitInputError(f"{source}: no runs with {method_col}={param!r} to take the proxy settings from")
    import json  # noqa: PLC0415

    base = json.loads(rows["config_json"].iloc[0])
    if target.get("width") is not None and target.get("aspect_ratio") is None:
        base["aspect_ratio"] = RunConfig().aspect_ratio  # the target's width wins over the sweep's ratio
    overrides = {k: v for k, v in target.items() if v is not None}
    return RunConfig.from_dict({**base, "lr": None, "name": "", "tags": {}, **overrides}, source="target")


def check_inputs(runs: pd.DataFrame, lr_x: str, loss_law: LossLaw, source: str) -> None:
    """What the two laws need of the scheme's runs, checked before any fit or model: the columns, an LR sweep
    (>= MIN_LR_POINTS learning rates) at >= LR_LAW_POINTS values of `lr_x`, and the model sizes (compute law)
    or (N, D) pairs (Chinchilla) of the loss law. FitInputError names what the table lacks."""
    loss_cols = ["n_params", "flops"] if loss_law == "compute" else ["n_params", "tokens"]
    require_columns(runs, [lr_x, "lr", "val_loss", *loss_cols], source=source)
    done = fit_rows(runs, source=source)
    done = done[np.isfinite(pd.to_numeric(done["val_loss"], errors="coerce"))]
    lrs = done.groupby(lr_x)["lr"].nunique()
    if (lrs >= MIN_LR_POINTS).sum() < LR_LAW_POINTS:
        raise FitInputError(f"{source}: the LR law lr_opt = a {lr_x}^b needs an LR sweep (>= {MIN_LR_POINTS} "
                            f"learning rates, completed) at >= {LR_LAW_POINTS} values of {lr_x}; the table has "
                            f"{_lr_counts(lrs, lr_x)}")
    if loss_law == "compute":
        points = done.groupby("n_params").size().index
        need, what = COMPUTE_MIN_POINTS, "model sizes (n_params: the best run of each)"
    else:
        points = done.groupby(["n_params", "tokens"]).size().index
        need, what = CHINCHILLA_MIN_POINTS, "(n_params, tokens) pairs (the best LR of each)"
    if len(points) < need:
        raise FitInputError(f"{source}: the {loss_law} loss law needs >= {need} {what}; the table has "
                            f"{len(points)}{': ' if len(points) else ''}{_listed(list(points))}")


def _lr_counts(per_value: pd.Series, column: str) -> str:
    """`tokens=524288 (5 LRs), ...`: how many learning rates each value of `column` has."""
    if per_value.empty:
        return f"no completed run with a finite loss and a {column}"
    return _listed([f"{column}={_plain(k)} ({n} LR{'' if n == 1 else 's'})" for k, n in per_value.items()])


def _listed(items: list) -> str:
    """The first MAX_LISTED items (text, numbers or tuples of numbers), comma-separated, then `...`."""
    def text(item) -> str:
        if isinstance(item, tuple):
            return f"({', '.join(text(i) for i in item)})"
        return item if isinstance(item, str) else _plain(item)

    return ", ".join(text(i) for i in items[:MAX_LISTED]) + (", ..." if len(items) > MAX_LISTED else "")


def _plain(value) -> str:
    """A number as a message shows it: 9845760, not 9.84576e+06; 0.02 as 0.02."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"


def _lr_law(runs, x: str, n_boot, seed, level, source):
    try:
        return fit_law(runs, x=x, y="lr_opt", n_boot=n_boot, seed=seed, level=level, source=source)[0]
    except FitInputError as exc:
        raise FitInputError(f"{source}: the LR law lr_opt = a {x}^b cannot be fitted from these runs ({exc}); "
                            f"it needs bracketed optima at >= {LR_LAW_POINTS} values of {x}") from exc


def _lr_at(law, value: float, level) -> tuple[float, Interval, list[str], float]:
    lo, hi = law.fit.band(np.array([value]), level) if len(law.fit.boot_params) else (np.array([np.nan]),) * 2
    x_max = max(p[0] for p in law.fit.points)
    return (float(law.fit.predict(np.array([value]))[0]), Interval(float(lo[0]), float(hi[0]), level),
            [f"lr law: {w}" for w in law.warnings], x_max)


def fit_loss_law(runs, law: LossLaw, n_boot, seed, level, source):
    """The loss law's fit and the largest compute it was fitted on."""
    if law == "chinchilla":
        n, d, loss = chinchilla_inputs(runs, best_of="lr", source=source)
        return fit_chinchilla(n, d, loss, n_boot=n_boot, seed=seed, level=level), float((6 * n * d).max())
    best = best_rows(runs, ["n_params"], source=source)  # the best LR of each model size
    c = numeric_column(best, "flops", source=source, positive=True)
    fit = fit_loss_compute(c, numeric_column(best, "val_loss", source=source), n_boot=n_boot, seed=seed, level=level)
    return fit, float(c.max())


def loss_at(law_fit, law: LossLaw, shape, cfg, level) -> tuple[float, Interval, list[str], float]:
    fit, c_max = law_fit
    if law == "chinchilla":
        point = float(fit.predict(np.array([shape["n_params"]]), np.array([float(cfg.tokens)]))[0])
        p = fit.boot_params
        draws = p[:, 0] + p[:, 1] / shape["n_params"] ** p[:, 3] + p[:, 2] / float(cfg.tokens) ** p[:, 4]
        return point, percentile_interval(draws, level), [f"loss law: {w}" for w in fit.warnings], c_max
    compute = np.array([shape["flops_planned"]])
    lo, hi = fit.band(compute, level) if len(fit.boot_params) else (np.array([math.nan]),) * 2
    return (float(fit.predict(compute)[0]), Interval(float(lo[0]), float(hi[0]), level),
            [f"loss law: {w}" for w in fit.warnings], c_max)
