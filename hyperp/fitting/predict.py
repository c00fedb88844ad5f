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
sweep's own runs, so the rule maps the LR exactly as it did in the sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hyperp.fitting.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, Interval, percentile_interval
from hyperp.fitting.chinchilla import chinchilla_inputs, fit_chinchilla
from hyperp.fitting.compute import fit_loss_compute
from hyperp.fitting.powerlaw import fit_law
from hyperp.fitting.table import FitInputError, best_rows, numeric_column, require_columns

LossLaw = Literal["compute", "chinchilla"]
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
    from hyperp.sweeps.spec import static_columns  # noqa: PLC0415 (torch, meta device: only when predicting)
    from hyperp.trainer.hparams import resolve_hparams  # noqa: PLC0415

    shape = static_columns(cfg)
    lr, lr_interval, lr_warn, lr_fitted = _lr_at(runs, lr_x, float(getattr(cfg, lr_x)), n_boot, seed, level, source)
    hp = resolve_hparams(cfg.replace(lr=lr))
    loss, loss_interval, loss_warn, c_fitted = _loss_at(runs, loss_law, shape, cfg, n_boot, seed, level, source)
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
    from hyperp.trainer.config import RunConfig  # noqa: PLC0415

    require_columns(df, ["config_json"], source=source)
    param = target.get("param")
    rows = df[df[method_col].astype(str) == str(param)] if param is not None and method_col in df.columns else df
    if rows.empty:
        raise FitInputError(f"{source}: no runs with {method_col}={param!r} to take the proxy settings from")
    import json  # noqa: PLC0415

    base = json.loads(rows["config_json"].iloc[0])
    if "width" in target and "aspect_ratio" not in target:
        base["aspect_ratio"] = RunConfig().aspect_ratio  # the target's width wins over the sweep's ratio
    overrides = {k: v for k, v in target.items() if v is not None}
    return RunConfig.from_dict({**base, "lr": None, "name": "", "tags": {}, **overrides}, source="target")


def _lr_at(runs, x: str, value: float, n_boot, seed, level, source) -> tuple[float, Interval, list[str], float]:
    try:
        law = fit_law(runs, x=x, y="lr_opt", n_boot=n_boot, seed=seed, level=level, source=source)[0]
    except FitInputError as exc:
        raise FitInputError(f"{source}: the LR law lr_opt = a {x}^b cannot be fitted from these runs ({exc}); "
                            f"it needs bracketed optima at >= 3 values of {x}") from exc
    lo, hi = law.fit.band(np.array([value]), level) if len(law.fit.boot_params) else (np.array([np.nan]),) * 2
    x_max = max(p[0] for p in law.fit.points)
    return (float(law.fit.predict(np.array([value]))[0]), Interval(float(lo[0]), float(hi[0]), level),
            [f"lr law: {w}" for w in law.warnings], x_max)


def _loss_at(runs, law: LossLaw, shape, cfg, n_boot, seed, level, source) -> tuple[float, Interval, list[str], float]:
    if law == "chinchilla":
        n, d, loss = chinchilla_inputs(runs, best_of="lr", source=source)
        fit = fit_chinchilla(n, d, loss, n_boot=n_boot, seed=seed, level=level)
        point = float(fit.predict(np.array([shape["n_params"]]), np.array([float(cfg.tokens)]))[0])
        p = fit.boot_params
        draws = p[:, 0] + p[:, 1] / shape["n_params"] ** p[:, 3] + p[:, 2] / float(cfg.tokens) ** p[:, 4]
        c_max = float((6 * n * d).max())
        return point, percentile_interval(draws, level), [f"loss law: {w}" for w in fit.warnings], c_max
    best = best_rows(runs, ["n_params"], source=source)  # the best LR of each model size
    c = numeric_column(best, "flops", source=source, positive=True)
    fit = fit_loss_compute(c, numeric_column(best, "val_loss", source=source), n_boot=n_boot, seed=seed, level=level)
    compute = np.array([shape["flops_planned"]])
    lo, hi = fit.band(compute, level) if len(fit.boot_params) else (np.array([math.nan]),) * 2
    return (float(fit.predict(compute)[0]), Interval(float(lo[0]), float(hi[0]), level),
            [f"loss law: {w}" for w in fit.warnings], float(c.max()))
