"""Data parallelism inside one run (`RunConfig.workers`).

The workers are the ranks of a torch.distributed process group (Ray Train starts them: gloo on CPU, NCCL on
GPUs; `hyperp.sweeps.data_parallel`). Each rank draws the same global batch (a pure function of seed and step,
hyperp.trainer.data) and trains on its contiguous 1/world of the sequences; gradients are averaged over the
ranks before clipping and the optimizer, so every rank takes the same sphere steps on the same averaged
gradient and holds the same weights and radii (each matrix's Newton-Schulz runs on one rank and is shared:
`computed_once`). With equal shards the average of the ranks' mean-token gradients is the global batch's, so
the run trains the model of one process up to the float rounding of the all-reduce. MoE balance statistics
are all-reduced inside the layer (hyperp.trainer.moe). A cancelled run stops through `STOP_FILE`: the ranks'
flags ride in the gradients' all-reduce, so all of them stop after the same step and rank 0 checkpoints it.

Without a process group every function here is the identity: one process is a world of one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def shard(batch: Tensor) -> Tensor:
    """This rank's contiguous 1/world of the sequences (dim 0) of a global batch."""
    rank, world = rank_and_world()
    if world == 1:
        return batch
    per = batch.shape[0] // world
    return batch[rank * per:(rank + 1) * per]


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of `t` over the ranks, in a new tensor (`t` itself, unmodified, without a process group)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


STOP_FILE = "stop.requested"  # in a run's out dir: its driver was cancelled; every rank stops after this step


def average_gradients(params, loss: Tensor, stop: bool = False) -> tuple[float, bool]:
    """Average every gradient over the ranks in place, with the loss and a stop flag in the same all-reduce (one
    collective per step). Returns the mean loss and whether any rank asked to stop, the same on every rank
    (divergence is decided on the loss; a stop must be too, or one rank would wait for the others forever)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not active():
        return loss.item(), stop
    ref = grads[0]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(ref.dtype), ref.new_tensor([stop])])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-2].item(), flat[-1].item() > 0


def my_part(items: list) -> list:
    """This rank's share of a list (items rank, rank + world, ...): the validation batches."""
    rank, world = rank_and_world()
    return items[rank::world]


def computed_once(fn, items: list[Tensor]) -> list[Tensor]:
    """[fn(i) for i in range(len(items))], fn(i) shaped like items[i], each computed by one rank only (rank r
    takes items r, r + world, ..., as `my_part`) and the results all-gathered, so every rank ends with the same
    tensors, in the items' dtype. On 2 CPU workers this made Newton-Schulz 1.6x faster than every rank
    computing every matrix (benchmarks/bench_ddp.py)."""
    if not items:
        return []
    rank, world = rank_and_world()
    if world == 1:
        return [fn(i) for i in range(len(items))]
    owned = [list(range(r, len(items), world)) for r in range(world)]
    sizes = [sum(items[i].numel() for i in idx) for idx in owned]
    ref = items[0]
    buf = torch.zeros(max(sizes), dtype=ref.dtype, device=ref.device)
    if owned[rank]:
        torch.cat([fn(i).reshape(-1).to(ref.dtype) for i in owned[rank]], out=buf[:sizes[rank]])
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    out: list[Tensor] = [ref] * len(items)
    for r, idx in enumerate(owned):
        offset = 0
        for i in idx:
            out[i] = parts[r][offset:offset + items[i].numel()].view_as(items[i])
            offset += items[i].numel()
    return out
