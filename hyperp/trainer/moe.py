"""The mixture-of-experts feed-forward layer of method.md section 5.

Shape names: N tokens (batch * sequence, flattened), w the width, E routed experts, k routed experts per
token (top_k, or top_k - 1 with a shared expert), h = mlp_hidden(cfg) / top_k the hidden size of one expert
(mlp_hidden: mlp_ratio * w rounded up to a multiple of 64 and of top_k, as the dense SwiGLU).

Experts. k * S fine-grained SwiGLU experts (k * S - 1 routed plus one shared expert when `shared_expert`),
each of hidden size h, so a token's active MLP parameters equal the dense SwiGLU's. Routed experts live in
three 3-D banks, `gate_bank`, `up_bank` (E, h, w) and `down_bank` (E, w, h) (with `fused_gate_up`, one
`gate_up_bank` (E, 2h, w) in place of the first two), in nn.Linear's (out, in) orientation: the optimizers
treat a bank as E matrices (Newton-Schulz per expert, MuonH/AdamH sphere per expert, Muon's
sqrt(fan_out / fan_in) from the last two dims). Each expert matrix is initialised
independently like nn.Linear (uniform, bound 1/sqrt(fan_in)), so experts are uncorrelated at init.

Routing. A bias-free router w -> E; top-k of the logits, softmax over the k selected logits only, so the
gates g sum to 1. Classic gating: y = sum g_i E_i(x); its RMS falls like 1/sqrt(k) for uncorrelated
experts. SqrtGate: y = sum sqrt(g_i) E_i(x), RMS independent of k. A shared expert is mixed in as
y = sqrt(1/2) routed + sqrt(1/2) shared under SqrtGate (both parts have the same RMS, so the mix keeps it),
and as a plain sum y = routed + shared under classic gating (the DeepSeekMoE convention: the shared expert
acts as one more expert with gate 1; method.md only specifies the SqrtGate mix). Capacity is unlimited
(dropless): every token slot is computed.

Dispatch (no Python loop over tokens or experts on the hot path):
1. router logits (N, E) -> top-k -> gates (N, k);
2. the N * k token slots are stable-sorted by expert id; bincount gives the per-expert group sizes;
3. the token rows are gathered in that order, xs (N k, w), so each expert's slots are one contiguous group;
4. the experts run as grouped matmuls over those groups: `torch._grouped_mm(xs, bank^T, offs)` computes
   every group against its own expert matrix in one call, forward and backward (weight gradients are the
   2-D x 2-D grouped form). Where `_grouped_mm` is missing (older torch) or cannot run (CUDA outside
   bf16 autocast), the "padded" path scatters the groups into an (E, C, w) buffer, C = the largest group,
   and uses bmm;
5. each slot's output is scaled by its gate (g or sqrt(g)) and summed into its token with index_add_.
Measured on the 2-core CPU (N = 8192, w = 128, S = 8, k = 4; results/moe/bench.md): the grouped path beats
the padded one (no padding copies), and router, sort, gather and combine together cost a few percent of the
layer; the grouped expert matmuls themselves run below the dense SwiGLU's matmul speed (many small GEMMs).

Memory (activations kept for backward, per MoE layer; k = top_k without a shared expert): the gathered inputs
xs (N k w), four (N k h) tensors of the SwiGLU (gate and up outputs, silu, product) and the slot outputs
(N k w), plus router logits and probabilities (2 N E) and O(N k) integer indices. Since k h = mlp_hidden,
the SwiGLU part equals the dense layer's; the extra is (2 k - 1) N w (the dense layer keeps one N w input),
i.e. (2 k - 1) / (4 mlp_ratio + 1) of the dense layer's saved activations (+41% at k = 4). The weight copies
bank^T are 3 E h w per layer. The padded path replaces N k by E * C in every buffer: equal under perfect
balance, up to E times more when one expert takes every slot, which is why it is only the fallback.

Load balancing. The Switch loss gamma * E * sum_i f_i P_i over the whole batch (f_i: share of routed slots
sent to expert i; P_i: mean router probability, softmax over all E logits), set as `self.balance_loss` in
forward (None when gamma == 0). Under torch.distributed the expert counts and the mean probabilities are
all-reduced so f and P are global-batch quantities; P keeps only the local gradient (straight-through),
which after DDP's gradient averaging is the gradient of the global loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from hyperp.config import RunConfig
from hyperp.trainer.distributed import active, all_reduce_sum, rank_and_world
from hyperp.trainer.layers import SwiGLU, mlp_hidden, z_value

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")
SHARED_MIX = math.sqrt(0.5)  # SqrtGate with a shared expert: sqrt(1/2) routed + sqrt(1/2) shared


# ---------------------------------------------------------------------------------------------------------
# grouped expert matmuls


class _GroupedMM(torch.autograd.Function):
    """y[group e] = x[group e] @ w[e] for contiguous row groups ending at `offs`; x (M, K), w (E, K, N).

    torch._grouped_mm has its own backward, but on CPU it rejects a gradient with zero strides (e.g. from
    `.sum()`), so the backward is spelled out here on a contiguous gradient with the same kernel.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, offs: Tensor) -> Tensor:
        ctx.save_for_backward(x, w, offs)
        return torch._grouped_mm(x, w, offs=offs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w, offs = ctx.saved_tensors
        grad = grad.contiguous()
        dx = torch._grouped_mm(grad, w.mT.contiguous(), offs=offs) if ctx.needs_input_grad[0] else None
        dw = torch._grouped_mm(x.mT, grad, offs=offs) if ctx.needs_input_grad[1] else None
        return dx, dw, None


def grouped_linear(xs: Tensor, bank: Tensor, offs: Tensor) -> Tensor:
    """Apply expert e's (out, in) matrix bank[e] to its group of rows of xs (rows sorted by expert)."""
    return _GroupedMM.apply(xs, bank.mT.contiguous(), offs)


def experts_grouped(xs: Tensor, banks: tuple[Tensor, Tensor, Tensor], counts: Tensor) -> Tensor:
    gate, up, down = banks
    offs = counts.cumsum(0).to(torch.int32)
    hidden = F.silu(grouped_linear(xs, gate, offs)) * grouped_linear(xs, up, offs)
    return grouped_linear(hidden, down, offs)


def experts_padded(xs: Tensor, banks: tuple[Tensor, Tensor, Tensor], counts: Tensor, expert: Tensor) -> Tensor:
    """Fallback: scatter the groups into an (E, C, w) buffer padded to the largest group C, then bmm."""
    gate, up, down = banks
    starts = counts.cumsum(0) - counts
    pos = torch.arange(len(expert), device=xs.device) - starts[expert]  # slot's row within its group
    buf = xs.new_zeros(len(counts), int(counts.max()), xs.shape[-1])
    buf = buf.index_put((expert, pos), xs)
    hidden = F.silu(torch.bmm(buf, gate.mT)) * torch.bmm(buf, up.mT)
    return torch.bmm(hidden, down.mT)[expert, pos]


def can_group(x: Tensor) -> bool:
    """torch._grouped_mm runs fp32/bf16 on CPU; on CUDA only bf16 (under autocast)."""
    return HAS_GROUPED_MM and (x.device.type == "cpu" or x.dtype == torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------
# the layer


class MoE(nn.Module):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        w = cfg.d_model
        self.hidden = mlp_hidden(cfg) // cfg.top_k
        self.n_routed = cfg.n_experts - 1 if cfg.shared_expert else cfg.n_experts  # E
        self.k = cfg.top_k - 1 if cfg.shared_expert else cfg.top_k  # routed experts per token
        self.sqrt_gate, self.gamma = cfg.sqrt_gate, cfg.aux_gamma
        self.dispatch = "grouped"  # "grouped" or "padded"; grouped falls back to padded where it cannot run
        self.router = nn.Linear(w, self.n_routed, bias=False)
        if cfg.fused_gate_up:  # each expert's gate and up matrices as one (2h, w) matrix for the optimizers
            self.gate_up_bank = nn.Parameter(torch.empty(self.n_routed, 2 * self.hidden, w))
        else:
            self.gate_bank = nn.Parameter(torch.empty(self.n_routed, self.hidden, w))
            self.up_bank = nn.Parameter(torch.empty(self.n_routed, self.hidden, w))
        self.down_bank = nn.Parameter(torch.empty(self.n_routed, w, self.hidden))
        self.shared = SwiGLU(w, self.hidden, fused=cfg.fused_gate_up) if cfg.shared_expert else None
        self.reset_parameters()
        self.balance_loss: Tensor | None = None
        self._logits: Tensor | None = None  # last forward's router logits and counts, for collect_stats
        self._counts: Tensor | None = None

    def reset_parameters(self) -> None:
        """Each expert matrix like nn.Linear's default: uniform with bound 1/sqrt(fan_in), independently."""
        fused = hasattr(self, "gate_up_bank")
        for bank in (self.gate_up_bank,) if fused else (self.gate_bank, self.up_bank):
            bound = 1.0 / math.sqrt(bank.shape[-1])
            nn.init.uniform_(bank, -bound, bound)
        bound = 1.0 / math.sqrt(self.down_bank.shape[-1])
        nn.init.uniform_(self.down_bank, -bound, bound)

    @property
    def banks(self) -> tuple[Tensor, Tensor, Tensor]:
        """(gate, up, down) banks; gate and up are views of `gate_up_bank` when fused."""
        if hasattr(self, "gate_up_bank"):
            gate, up = self.gate_up_bank.split(self.hidden, dim=1)
            return gate, up, self.down_bank
        return self.gate_bank, self.up_bank, self.down_bank

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router logits (N, E) in fp32, the top-k expert ids (N, k) and their gates (N, k) summing to 1."""
        logits = self.router(x).float()
        top, expert = logits.topk(self.k, dim=-1)
        return logits, expert, top.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        # record_function ranges name the phases in torch.profiler traces (benchmarks/bench_moe.py)
        with record_function("moe.router"):
            logits, expert, gates = self.route(x)
        with record_function("moe.dispatch"):
            order, counts = sort_slots(expert, self.n_routed)
            token = order // self.k  # the token each sorted slot came from
            xs = autocast_input(x.index_select(0, token))
        with record_function("moe.experts"):
            ys = self.run_experts(xs, counts, expert.flatten()[order])
        with record_function("moe.combine"):
            weights = (gates.sqrt() if self.sqrt_gate else gates).flatten()[order]
            ys = ys * weights.unsqueeze(-1).to(ys.dtype)
            y = ys.new_zeros(x.shape[0], ys.shape[-1]).index_add_(0, token, ys)
            if self.shared is not None:
                shared = self.shared(x)
                y = SHARED_MIX * (y + shared) if self.sqrt_gate else y + shared
        with record_function("moe.balance"):
            counts = all_reduce_sum(counts)  # the global batch's counts under data parallelism
            self.balance_loss = self.switch_loss(logits, counts) if self.gamma > 0 else None
            self._logits, self._counts = logits.detach(), counts.detach()
        return y.reshape(shape[:-1] + (y.shape[-1],))

    def run_experts(self, xs: Tensor, counts: Tensor, sorted_expert: Tensor) -> Tensor:
        """Every expert on its contiguous group of xs (rows sorted by expert), as grouped or padded matmuls."""
        banks = self.cast_banks(xs)
        if self.dispatch == "grouped" and can_group(xs):
            return experts_grouped(xs, banks, counts)
        return experts_padded(xs, banks, counts, sorted_expert)

    def cast_banks(self, xs: Tensor) -> tuple[Tensor, ...]:
        """Banks in the activations' dtype (bf16 under CUDA autocast: grouped_mm is not an autocast op)."""
        return tuple(b.to(xs.dtype) for b in self.banks)

    def switch_loss(self, logits: Tensor, counts: Tensor) -> Tensor:
        """gamma * E * sum_i f_i P_i over the (global) batch; equals gamma under perfectly uniform routing."""
        probs = logits.softmax(dim=-1).mean(0)
        if active():  # global P's value, local P's gradient (DDP averages the gradients over ranks)
            global_probs = all_reduce_sum(probs.detach()) / rank_and_world()[1]
            probs = probs + (global_probs - probs.detach())
        f = counts.float() / counts.sum()
        return self.gamma * self.n_routed * (f * probs).sum()

    @torch.no_grad()
    def collect_stats(self, stats: dict) -> None:
        """Router Z-value, MaxVio and expert token counts of the last forward (appended per layer)."""
        if self._logits is None:
            return
        stats.setdefault("router_z", []).append(z_value(self._logits))
        stats.setdefault("maxvio", []).append(maxvio(self._counts))
        stats.setdefault("expert_counts", []).append(self._counts.tolist())

    def inactive_params(self) -> int:
        """Routed-expert parameters a token does not use: (E - k) experts of 3 * w * h weights each."""
        per_expert = sum(b[0].numel() for b in self.banks)
        return (self.n_routed - self.k) * per_expert


def sort_slots(expert: Tensor, n_experts: int) -> tuple[Tensor, Tensor]:
    """Stable order of the flattened (token, slot) pairs by expert id, and the number of slots per expert."""
    flat = expert.flatten()
    return flat.argsort(stable=True), torch.bincount(flat, minlength=n_experts)


def maxvio(counts: Tensor) -> float:
    """(max_i c_i - mean c) / mean c over the expert token counts c."""
    c = counts.float()
    return ((c.max() - c.mean()) / c.mean()).item()


def autocast_input(xs: Tensor) -> Tensor:
    """Cast the gathered expert inputs to the autocast dtype, as autocast would for a matmul."""
    device = xs.device.type
    return xs.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else xs
