"""Optimizers of method.md section 3: Muon, MuonH, AdamH, and the per-scheme grouping (Newton-Schulz itself
is in `hyperp.kernels.ns`).

All matrix optimizers treat a parameter of shape (..., rows, cols) as a batch of matrices over its leading
dims: a 2-D weight is one matrix; a 3-D MoE expert bank (E, rows, cols) is E matrices, each orthogonalised and
each kept on its own sphere (the sphere is per expert, not per bank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

# Newton-Schulz lives beside its Triton kernel; re-exported here for the optimizers' callers
from hyperp.kernels.ns import NS_COEFFS, NS_EPS, newton_schulz, newton_schulz_torch, ns_flops, ns_schedule
from hyperp.trainer.distributed import computed_once

__all__ = ["NS_COEFFS", "NS_EPS", "AdamH", "Muon", "MuonH", "Optimizers", "build_optimizers", "newton_schulz",
           "newton_schulz_torch", "ns_flops", "ns_schedule", "param_groups", "sphere_step"]

def frob(x: Tensor) -> Tensor:
    return x.norm(dim=(-2, -1), keepdim=True)


def sphere_step(p: Tensor, direction: Tensor, radius: Tensor, lr: float, weight_decay: float = 0.0) -> None:
    """W' = W (1 - lr wd) - lr * (r / ||D||) D, then retract W = r W' / ||W'|| (each matrix of the batch).

    The step has Frobenius norm exactly lr * r. A decay term is accepted only to show it is a first-order
    no-op on the sphere (method.md section 3); the schemes never set it.
    """
    step = direction * (radius / (frob(direction) + NS_EPS))
    new = p * (1.0 - lr * weight_decay) - lr * step
    p.copy_(new * (radius / frob(new)))


def momentum_direction(state: dict, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    buf = state.get("momentum")
    if buf is None:
        buf = state["momentum"] = torch.zeros_like(grad)
    buf.mul_(momentum).add_(grad)
    return grad.add(buf, alpha=momentum) if nesterov else buf


def adam_direction(state: dict, grad: Tensor, betas: tuple[float, float], eps: float) -> Tensor:
    if "exp_avg" not in state:
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(grad), torch.zeros_like(grad)
    state["step"] += 1
    t = state["step"].item()
    b1, b2 = betas
    state["exp_avg"].lerp_(grad, 1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
    m_hat = state["exp_avg"] / (1 - b1**t)
    v_hat = state["exp_avg_sq"] / (1 - b2**t)
    return m_hat / (v_hat.sqrt() + eps)


class _MatrixOptimizer(torch.optim.Optimizer):
    """The step loop shared by Muon, MuonH and AdamH: `prepare` what needs every parameter at once, then
    `update` each parameter that has a gradient."""

    def prepare(self, params: list[tuple[Tensor, dict]]) -> None:
        """Work over all (parameter, group) pairs before the updates; nothing by default."""

    def update(self, p: Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        params = [(p, g) for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.prepare(params)
        for p, g in params:
            self.update(p, self.state[p], g)
        return loss


class _OrthogonalizedMomentum(_MatrixOptimizer):
    """Muon's and MuonH's direction, NS(nesterov momentum), for every matrix at once in `prepare`: under data
    parallelism each matrix's Newton-Schulz runs on one worker and the results are shared
    (hyperp.trainer.distributed.computed_once); `update` then reads `self.directions`."""

    def prepare(self, params: list[tuple[Tensor, dict]]) -> None:
        moments = [momentum_direction(self.state[p], p.grad, g["momentum"], g["nesterov"]) for p, g in params]

        def orthogonalize(i: int) -> Tensor:
            g = params[i][1]
            return newton_schulz(moments[i], g["ns_coeffs"], g["ns_steps"], g["ns_backend"])

        self.directions = dict(zip((p for p, _ in params), computed_once(orthogonalize, moments)))


class Muon(_OrthogonalizedMomentum):
    """Muon: W <- W (1 - lr wd) - lr * sqrt(fan_out / fan_in) * NS(nesterov momentum)."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                 ns_coeffs="per_iter", ns_steps=5, ns_backend="auto"):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_coeffs=ns_coeffs, ns_steps=ns_steps, ns_backend=ns_backend))

    def update(self, p: Tensor, state: dict, g: dict) -> None:
        o = self.directions.pop(p)
        scale = math.sqrt(p.shape[-2] / p.shape[-1])  # fan_out / fan_in of a (out, in) weight
        p.mul_(1 - g["lr"] * g["weight_decay"]).add_(o, alpha=-g["lr"] * scale)


class _SphereOptimizer(_MatrixOptimizer):
    """Shared part of MuonH and AdamH: the radius r = ||W_0||_F is fixed at the first step (per matrix)."""

    def direction(self, p: Tensor, state: dict, group: dict) -> Tensor:
        raise NotImplementedError

    def update(self, p: Tensor, state: dict, g: dict) -> None:
        if "radius" not in state:
            state["radius"] = frob(p).clone()
        sphere_step(p, self.direction(p, state, g), state["radius"], g["lr"], g["weight_decay"])

    def radius_drift(self) -> float:
        """max over matrices of | ||W||_F / r - 1 |."""
        drift = 0.0
        for g in self.param_groups:
            for p in g["params"]:
                r = self.state[p].get("radius")
                if r is not None:
                    drift = max(drift, (frob(p.detach()) / r - 1).abs().max().item())
        return drift


class MuonH(_OrthogonalizedMomentum, _SphereOptimizer):
    """Muon on the Frobenius sphere: a step of norm lr * r along NS(momentum), then retraction."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                 ns_coeffs="per_iter", ns_steps=5, ns_backend="auto"):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_coeffs=ns_coeffs, ns_steps=ns_steps, ns_backend=ns_backend))

    def direction(self, p, state, group):
        return self.directions.pop(p)


class AdamH(_SphereOptimizer):
    """Adam's direction m_hat / (sqrt(v_hat) + eps) taken as a sphere step of norm lr * r."""

    def __init__(self, params, lr=0.02, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def direction(self, p, state, group):
        return adam_direction(state, p.grad, group["betas"], group["eps"])


class Optimizers:
    """Several optimizers stepped as one; each param group carries `base_lr` for the schedule."""

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]):
        self.optimizers = [o for o in optimizers if o.param_groups]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def set_lr_mult(self, mult: float) -> None:
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * mult

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, s in zip(self.optimizers, states, strict=True):
            o.load_state_dict(s)

    def radius_drift(self) -> float:
        return max((o.radius_drift() for o in self.optimizers if isinstance(o, _SphereOptimizer)), default=0.0)


def param_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Split parameters into method.md's groups: hidden matrices, LM head, embeddings, vectors (norm gains)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"hidden": [], "head": [], "embed": [], "vector": []}
    for name, p in model.named_parameters():
        if name.startswith("embed."):
            groups["embed"].append(p)
        elif name.startswith("head."):
            groups["head"].append(p)
        elif p.ndim < 2:
            groups["vector"].append(p)
        else:
            groups["hidden"].append(p)
    return groups


def build_optimizers(model: torch.nn.Module, hp, cfg) -> Optimizers:
    """One optimizer per kind (muonh, muon, adamh, adamw), each holding the groups the scheme assigns it."""
    by_kind: dict[str, list[dict]] = {}
    for name, params in param_groups(model).items():
        if params:
            g = hp.group(name)
            by_kind.setdefault(g.optimizer, []).append(
                dict(params=params, lr=g.lr, base_lr=g.lr, weight_decay=g.weight_decay, name=name))
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    matrix_kw = dict(momentum=cfg.momentum, nesterov=cfg.nesterov, ns_coeffs=cfg.ns_coeffs, ns_steps=cfg.ns_steps,
                     ns_backend=cfg.ns_backend)
    make = {
        "muonh": lambda gs: MuonH(gs, **matrix_kw),
        "muon": lambda gs: Muon(gs, **matrix_kw),
        "adamh": lambda gs: AdamH(gs, betas=betas, eps=cfg.adam_eps),
        # fused: one kernel per tensor (on CPU too, torch >= 2.4), where the reference loop runs about ten ops
        # per tensor, each a parallel region with its threads' wait; bit-reproducible across resume (tests)
        "adamw": lambda gs: torch.optim.AdamW(gs, betas=betas, eps=cfg.adam_eps, fused=True),
    }
    return Optimizers(make[kind](groups) for kind, groups in by_kind.items())
