"""The mixture-of-experts layer (method.md section 5): equivalences, init RMS, balancing, optimizer, training."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hyperp.config import ConfigError, RunConfig
from hyperp.trainer.hparams import resolve_hparams
from hyperp.trainer.loop import train
from hyperp.trainer.metrics import count_params
from hyperp.trainer.layers import SwiGLU
from hyperp.trainer.model import Transformer
from hyperp.trainer.moe import MoE, maxvio
from hyperp.trainer.optim import MuonH, build_optimizers, frob

WIDTH = 64  # aspect_ratio 32 x depth 2
DISPATCHES = ("grouped", "padded")


def moe_cfg(**kw) -> RunConfig:
    base = dict(depth=2, aspect_ratio=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=1024 * 8,
                moe_every=1, sparsity=4, top_k=2)
    return RunConfig(**(base | kw))


def reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The layer written the slow, obvious way: a Python loop over experts, no sorting."""
    logits = F.linear(x, moe.router.weight).float()
    top, expert = logits.topk(moe.k, dim=-1)
    gates = top.softmax(-1)
    weights = gates.sqrt() if moe.sqrt_gate else gates
    y = torch.zeros_like(x)
    for e in range(moe.n_routed):
        token, slot = (expert == e).nonzero(as_tuple=True)
        xe = x[token]
        out = F.linear(F.silu(F.linear(xe, moe.gate_bank[e])) * F.linear(xe, moe.up_bank[e]), moe.down_bank[e])
        y = y.index_add(0, token, out * weights[token, slot].unsqueeze(-1))
    if moe.shared is not None:
        y = math.sqrt(0.5) * (y + moe.shared(x)) if moe.sqrt_gate else y + moe.shared(x)
    return y


# ---- equivalences ----

@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_one_expert_is_the_dense_swiglu(dispatch):
    torch.manual_seed(0)
    cfg = moe_cfg(sparsity=1, top_k=1)
    dense, moe = SwiGLU(WIDTH, 4 * WIDTH), MoE(cfg)
    moe.dispatch = dispatch
    with torch.no_grad():
        moe.gate_bank[0].copy_(dense.gate.weight)
        moe.up_bank[0].copy_(dense.up.weight)
        moe.down_bank[0].copy_(dense.down.weight)
    x = torch.randn(3, 16, WIDTH)
    torch.testing.assert_close(moe(x), dense(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("variant", [dict(), dict(sqrt_gate=False), dict(shared_expert=True, top_k=4, sparsity=2),
                                     dict(shared_expert=True, top_k=2, sqrt_gate=False)])
def test_batched_dispatch_equals_expert_loop(dispatch, variant):
    torch.manual_seed(1)
    moe = MoE(moe_cfg(**variant))
    moe.dispatch = dispatch
    x = torch.randn(200, WIDTH, requires_grad=True)
    probe = torch.randn(200, WIDTH)

    def grads(fn):
        moe.zero_grad()
        x.grad = None
        y = fn(x)
        (y * probe).sum().backward()
        return y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in moe.named_parameters()}

    y, gx, gp = grads(moe)
    y_ref, gx_ref, gp_ref = grads(lambda t: reference_moe(moe, t))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    assert gp.keys() == gp_ref.keys() and "router.weight" in gp
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], rtol=1e-4, atol=1e-5, msg=name)


# ---- output RMS at init (SqrtGate flat in k, classic ~ 1/sqrt(k)) ----

def init_rms(top_k: int, sqrt_gate: bool, shared_expert: bool = False, seeds: int = 3) -> float:
    """MoE output RMS on unit-RMS inputs (as after RMSNorm), fresh independent init, averaged over seeds."""
    cfg = moe_cfg(top_k=top_k, sparsity=2, sqrt_gate=sqrt_gate, shared_expert=shared_expert)
    out = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        moe = MoE(cfg)
        with torch.no_grad():
            out.append(moe(torch.randn(2048, WIDTH)).pow(2).mean().sqrt().item())
    return sum(out) / len(out)


def test_init_rms_sqrt_gate_flat_classic_falls():
    ks = (1, 2, 4, 8, 16)
    sqrt_rms = {k: init_rms(k, True) for k in ks}
    classic_rms = {k: init_rms(k, False) for k in ks}
    for k in ks:
        assert abs(sqrt_rms[k] / sqrt_rms[1] - 1) < 0.15, sqrt_rms
        # classic gating: RMS ~ sqrt(sum g_i^2) ~ 1/sqrt(k) (a bit above, the gates are not exactly uniform)
        assert 0.8 < classic_rms[k] * math.sqrt(k) / classic_rms[1] < 1.3, classic_rms
    assert all(classic_rms[a] > classic_rms[b] for a, b in zip(ks, ks[1:]))
    # with a shared expert the sqrt(1/2) mix keeps SqrtGate's RMS flat too
    shared = {k: init_rms(k, True, shared_expert=True) for k in (2, 4, 16)}
    assert all(abs(v / sqrt_rms[1] - 1) < 0.15 for v in shared.values()), shared


def test_experts_are_initialised_independently():
    torch.manual_seed(0)
    moe = MoE(moe_cfg(top_k=4, sparsity=2))
    bank = moe.gate_bank.detach().flatten(1)
    corr = torch.corrcoef(bank)
    off_diag = corr - torch.diag(torch.diag(corr))
    assert off_diag.abs().max() < 0.1  # distinct draws per expert, not a copied matrix
    bound = 1 / math.sqrt(WIDTH)  # nn.Linear's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert moe.gate_bank.abs().max() <= bound
    assert moe.gate_bank.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    down_bound = 1 / math.sqrt(moe.hidden)
    assert moe.down_bank.std().item() == pytest.approx(down_bound / math.sqrt(3), rel=0.02)


# ---- load balancing ----

def uniform_router_moe(top_k: int, gamma: float) -> tuple[MoE, torch.Tensor]:
    """Token t sends its top_k slots to experts t, t+1, ... (mod E) and every token's softmax is a cyclic
    shift of the same vector: both f_i and P_i are exactly 1/E."""
    moe = MoE(moe_cfg(top_k=top_k, sparsity=2, aux_gamma=gamma))
    E = moe.n_routed
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:, :E] = 4.0 * torch.eye(E)
    x = torch.zeros(3 * E, WIDTH)
    for t in range(3 * E):
        for j in range(top_k):
            x[t, (t + j) % E] = 1.0
    return moe, x


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("gamma", [0.1, 0.3])
def test_aux_loss_is_gamma_under_uniform_routing(top_k, gamma):
    moe, x = uniform_router_moe(top_k, gamma)
    moe(x)
    assert maxvio(moe._counts) == 0.0
    assert moe.balance_loss.item() == pytest.approx(gamma, rel=1e-6)


def test_aux_loss_off_and_above_gamma_when_unbalanced():
    moe, x = uniform_router_moe(1, 0.0)
    moe(x)
    assert moe.balance_loss is None
    moe = MoE(moe_cfg(top_k=1, sparsity=4, aux_gamma=0.1))
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 10.0  # every token with x[:, 0] > 0 goes to expert 0
    moe(torch.randn(256, WIDTH).abs())
    assert moe.balance_loss.item() > 0.3  # far above gamma: the loss penalises collapse


def _distributed_worker(rank: int, world: int, store: str, x: torch.Tensor, state: dict, out: dict):
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{store}")
    try:
        moe = MoE(moe_cfg(top_k=2, sparsity=4, aux_gamma=0.1))
        moe.load_state_dict(state)
        moe(x.chunk(world)[rank])
        moe.balance_loss.backward()
        grad = moe.router.weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does: average the gradients over ranks
        out[rank] = (moe.balance_loss.item(), (grad / world).numpy(), moe._counts.numpy())
    finally:
        dist.destroy_process_group()


def test_balance_loss_is_global_across_data_parallel_ranks():
    """Two gloo ranks on halves of a batch: loss, router gradient and counts equal the single-process ones."""
    torch.manual_seed(0)
    moe = MoE(moe_cfg(top_k=2, sparsity=4, aux_gamma=0.1))
    x = torch.randn(256, WIDTH)
    moe(x)
    moe.balance_loss.backward()
    world = 2
    with tempfile.TemporaryDirectory() as tmp, mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_distributed_worker, args=(world, os.path.join(tmp, "store"), x, moe.state_dict(), out),
                 nprocs=world)
        for rank in range(world):
            loss, grad, counts = out[rank]
            assert loss == pytest.approx(moe.balance_loss.item(), rel=1e-5)
            assert counts.tolist() == moe._counts.tolist()
            torch.testing.assert_close(torch.from_numpy(grad), moe.router.weight.grad, rtol=1e-4, atol=1e-7)


def stats_run(gamma: float):
    cfg = RunConfig(depth=1, aspect_ratio=64, head_dim=16, seq_len=64, batch_tokens=1024, tokens=1024 * 60,
                    moe_every=1, sparsity=4, top_k=2, aux_gamma=gamma, stats_every=5, val_tokens=4096)
    return train(cfg)


def test_balancing_lowers_maxvio_and_moe_training_learns():
    free, balanced = stats_run(0.0), stats_run(0.1)
    late = lambda r: r.curves["maxvio"].dropna().tail(4).mean()  # noqa: E731
    assert late(balanced) < 0.5 * late(free), (late(balanced), late(free))
    for run in (free, balanced):
        assert run.status == "completed"
        curves = run.curves
        val = curves["val_loss"].dropna()
        assert val.iloc[-1] < val.iloc[0] - 0.3 and val.iloc[-1] < math.log(256) - 2.0
        # per-layer MoE columns reach the curves: maxvio_l0 and expert_counts_l0 over all 8 experts
        last = curves.dropna(subset=["maxvio"]).iloc[-1]
        assert last["maxvio_l0"] == last["maxvio"] and math.isfinite(last["router_z"])
        assert len(last["expert_counts_l0"]) == 8 and sum(last["expert_counts_l0"]) == 1024 * 2
    assert balanced.row["maxvio_final"] < free.row["maxvio_final"]


# ---- optimizer: MuonH per expert ----

def test_muonh_keeps_each_expert_on_its_own_sphere():
    torch.manual_seed(0)
    cfg = moe_cfg(top_k=2, sparsity=4)
    model = Transformer(cfg)
    opt = build_optimizers(model, resolve_hparams(cfg), cfg)
    hidden = [g for g in opt.param_groups if g["name"] == "hidden"][0]
    banks = {n: p for n, p in model.named_parameters() if "bank" in n or "router" in n}
    assert banks and all(any(p is q for q in hidden["params"]) for p in banks.values())  # all on MuonH
    assert any(isinstance(o, MuonH) and any(p is hidden["params"][0] for p in o.param_groups[0]["params"])
               for o in opt.optimizers)
    radius = {n: frob(p.detach()).flatten().clone() for n, p in banks.items()}
    start = {n: p.detach().clone() for n, p in banks.items()}
    x = torch.randint(0, 256, (4, 64))
    for _ in range(3):
        _, loss = model(x, x)
        (loss + model.aux_loss()).backward()
        opt.step()
        opt.zero_grad()
    for n, p in banks.items():
        norms = frob(p.detach()).flatten()
        torch.testing.assert_close(norms, radius[n], rtol=1e-5, atol=0, msg=n)  # per expert
        assert (p.detach() - start[n]).norm() > 0  # and the weights did move
    assert opt.radius_drift() < 1e-5


def test_muonh_on_a_bank_equals_muonh_per_expert_matrix():
    """Newton-Schulz and the sphere step act per expert: a bank steps like E separate matrices."""
    torch.manual_seed(0)
    bank = torch.nn.Parameter(torch.randn(4, 16, 32))
    singles = [torch.nn.Parameter(bank.detach()[e].clone()) for e in range(4)]
    opt_bank, opt_single = MuonH([bank], lr=0.05), MuonH(singles, lr=0.05)
    for _ in range(2):
        grad = torch.randn(4, 16, 32)
        bank.grad = grad.clone()
        for e, p in enumerate(singles):
            p.grad = grad[e].clone()
        opt_bank.step()
        opt_single.step()
    torch.testing.assert_close(bank.detach(), torch.stack([p.detach() for p in singles]), rtol=1e-5, atol=1e-6)


# ---- accounting and validation ----

@pytest.mark.parametrize("variant", [dict(top_k=2, sparsity=4), dict(top_k=4, sparsity=2, shared_expert=True)])
def test_active_params_equal_dense_plus_router(variant):
    moe_model = Transformer(moe_cfg(**variant))
    dense_model = Transformer(moe_cfg(moe_every=0))
    moe_counts, dense_counts = count_params(moe_model, moe_model.cfg), count_params(dense_model, dense_model.cfg)
    router = sum(b.mlp.router.weight.numel() for b in moe_model.blocks)
    assert moe_counts.active == dense_counts.active + router
    assert moe_counts.active_matrix == dense_counts.active_matrix + router
    assert moe_counts.total > moe_counts.active


@pytest.mark.parametrize("changes, field", [
    (dict(top_k=3), "top_k"),  # 4 * 64 = 256 hidden units do not split into 3 experts
    (dict(top_k=512, sparsity=1), "top_k"),  # more experts than hidden units
    (dict(shared_expert=True, top_k=1), "top_k"),  # no routed expert left
    (dict(sparsity=0), "sparsity"),  # top_k larger than the k * S expert count
])
def test_bad_moe_shapes_name_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        moe_cfg(**changes).validate()
    assert err.value.field == field and field in str(err.value)
    with pytest.raises(ConfigError):  # the same through the serialised path
        RunConfig.from_dict(moe_cfg().to_dict() | changes)


def test_moe_every_second_block():
    model = Transformer(moe_cfg(depth=2, moe_every=2))
    assert not isinstance(model.blocks[0].mlp, MoE) and isinstance(model.blocks[1].mlp, MoE)
