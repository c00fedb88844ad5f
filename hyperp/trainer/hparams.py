"""Derive a run's hyperparameters from the proxy's base hyperparameters: one pure function.

This is method.md section 2 in code. `resolve_hparams(cfg)` reads the scheme, the base LR eta0 tuned on the
proxy (d0, w0, T0) and the run's target shape and token budget, and returns everything the model and the
optimizer builder need. Nothing else in hyperp applies a scaling rule.

Choices where method.md leaves one open:
- `adam_lr_mult` scales the AdamW groups of the Muon-type schemes (embeddings and vectors; also the LM head
  under `muon`); under `adamw` every group uses eta0.
- The depth factor sqrt(d0/d) multiplies every parameter group's LR by default (for `muon` that is muP++'s rule
  with the width moving with depth); `depth_lr_groups="hidden"` puts it on the hidden matrices only. The token
  factor (T/T0)^-b multiplies every group by default (the paper's code); `token_scaling="hidden"` puts it on
  the hidden matrices only (the paper's table). Which schemes carry the token factor is the table's (hyperp
  only) unless `token_rule` is "on" (any scheme: the authors' scripts run their MuonH baseline with it) or
  "off".
- Weight decay is coupled to the LR (W <- W (1 - lr wd), as torch's AdamW does). For `muon` it is
  lambda * d0/d on the hidden matrices only: the LM head does not decay, as in the authors' code (its
  no-decay group holds lm_head). For `adamw` it is lambda on the hidden matrices and the LM head.
  Embeddings, norms and other vectors never decay.
- `muon` multiplies the output logits by w0/w; the other schemes use 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hyperp.config import RunConfig

# Which optimizer updates each parameter group, per scheme (method.md section 2).
GROUP_OPTIMIZERS: dict[str, dict[str, str]] = {
    "hyperp": {"hidden": "muonh", "head": "adamh", "embed": "adamw", "vector": "adamw"},
    "muonh": {"hidden": "muonh", "head": "adamh", "embed": "adamw", "vector": "adamw"},
    "muon": {"hidden": "muon", "head": "adamw", "embed": "adamw", "vector": "adamw"},
    "adamw": {"hidden": "adamw", "head": "adamw", "embed": "adamw", "vector": "adamw"},
}
DEPTH_MUP = {"hyperp", "muon"}  # schemes with residual alpha = 1/sqrt(2d) and the sqrt(d0/d) LR factor
TOKEN_SCALED = {"hyperp"}  # schemes with the (T/T0)^-b LR factor


@dataclass(frozen=True)
class GroupHParams:
    optimizer: str  # muonh, muon, adamh or adamw
    lr: float  # peak LR of the group
    weight_decay: float


@dataclass(frozen=True)
class ResolvedHParams:
    """Everything a scheme derives for one run. Serialisable with `to_dict()` and stored with results."""

    param: str
    base_lr: float
    depth_factor: float
    token_factor: float
    residual_alpha: float
    logit_mult: float
    hidden: GroupHParams
    head: GroupHParams
    embed: GroupHParams
    vector: GroupHParams
    head_init_std: float
    embed_init_std: float

    def group(self, name: str) -> GroupHParams:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_scaled(cfg: RunConfig) -> bool:
    """Whether the run's LR carries the (T/T0)^-b factor: the scheme's rule unless `token_rule` says on or off."""
    return cfg.param in TOKEN_SCALED if cfg.token_rule == "scheme" else cfg.token_rule == "on"


def resolve_hparams(cfg: RunConfig) -> ResolvedHParams:
    """Turn (scheme, proxy base hyperparameters, target shape, token budget) into the run's hyperparameters."""
    scheme = cfg.param
    depth_factor = math.sqrt(cfg.base_depth / cfg.depth) if scheme in DEPTH_MUP else 1.0
    token_factor = (cfg.tokens / cfg.base_tokens) ** (-cfg.token_exponent) if token_scaled(cfg) else 1.0
    other_token_factor = token_factor if cfg.token_scaling == "all" else 1.0
    other_depth_factor = depth_factor if cfg.depth_lr_groups == "all" else 1.0

    eta0 = cfg.base_lr
    matrix_wd = {"muon": cfg.weight_decay * cfg.base_depth / cfg.depth, "adamw": cfg.weight_decay}.get(scheme, 0.0)
    opts = GROUP_OPTIMIZERS[scheme]

    def group(name: str, wd: float) -> GroupHParams:
        hidden = name == "hidden"
        lr = eta0 * (depth_factor if hidden else other_depth_factor) * (token_factor if hidden else other_token_factor)
        if opts[name] == "adamw" and opts["hidden"] != "adamw":  # AdamW groups beside Muon-type matrices
            lr *= cfg.adam_lr_mult
        return GroupHParams(optimizer=opts[name], lr=lr, weight_decay=wd)

    return ResolvedHParams(
        param=scheme,
        base_lr=eta0,
        depth_factor=depth_factor,
        token_factor=token_factor,
        residual_alpha=1.0 / math.sqrt(2 * cfg.depth) if scheme in DEPTH_MUP else 1.0,
        logit_mult=cfg.base_width / cfg.d_model if scheme == "muon" else 1.0,
        hidden=group("hidden", matrix_wd),
        head=group("head", 0.0 if scheme == "muon" else matrix_wd),
        embed=group("embed", 0.0),
        vector=group("vector", 0.0),
        head_init_std=cfg.head_init_std,
        embed_init_std=cfg.embed_init_std,
    )
