"""Data parallelism inside a run (hyperp.trainer.distributed): two gloo ranks started here with
torch.multiprocessing (Ray Train starts them in a sweep: test_sweep_data_parallel.py) train the model of one
process, up to the float rounding of the gradient all-reduce, under every kind of optimizer and with MoE."""

from __future__ import annotations

import json
import math
import socket

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hyperp import identity
from hyperp.trainer import distributed
from hyperp.config import ConfigError, RunConfig
from hyperp.trainer.loop import train

BASE = dict(depth=2, aspect_ratio=16, head_dim=16, seq_len=64, batch_tokens=1024, tokens=16 * 1024,
            val_tokens=4096, eval_every=8, threads=1, peak_tflops=1.0, device="cpu")
MOE = dict(moe_every=1, sparsity=4, top_k=2, aux_gamma=0.01)
REL = 1e-4  # float rounding of a 2-term all-reduce, grown over 16 steps (measured differences: about 1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, cfg_json: str, out: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        cfg = RunConfig.from_dict(json.loads(cfg_json))
        seen = []
        row = train(cfg, out, on_step=lambda info: seen.append(info.step), run_id="r").row
        part = distributed.shard(torch.arange(cfg.batch_size)).tolist()  # the sequences this rank trains on
        results.put((rank, row["train_loss"], row["val_loss"], len(seen), row["hardware"], part))
    finally:
        dist.destroy_process_group()


def data_parallel(cfg: RunConfig, out, world: int = 2) -> dict[int, tuple]:
    """Train `cfg` on `world` gloo ranks; {rank: (train loss, val loss, on_step calls, hardware, its batch rows)}."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_rank, args=(world, free_port(), cfg.to_json(), str(out), results), nprocs=world,
                       join=True, start_method="spawn")
    return {r[0]: r[1:] for r in (results.get(timeout=60) for _ in range(world))}


@pytest.mark.parametrize("param, extra", [("hyperp", {}), ("adamw", {}), ("hyperp", MOE)],
                         ids=["hyperp", "adamw", "hyperp-moe"])
def test_two_workers_train_the_model_of_one(tmp_path, param, extra):
    one = train(RunConfig(param=param, **BASE | extra)).row
    two = data_parallel(RunConfig(param=param, workers=2, **BASE | extra), tmp_path / "two")
    assert sorted(two[0][-1] + two[1][-1]) == list(range(16)) and two[0][-1] == list(range(8))  # disjoint halves
    for rank, (train_loss, val_loss, calls, hardware, _) in two.items():
        assert train_loss == pytest.approx(one["train_loss"], rel=REL), rank
        assert val_loss == pytest.approx(one["val_loss"], rel=REL), rank
        assert calls == (16 if rank == 0 else 0) and hardware.startswith("2 workers")
    assert math.isfinite(one["val_loss"]) and one["val_loss"] < math.log(256)  # it learned something
    written = [p.name for p in (tmp_path / "two").iterdir()]
    assert "runs.parquet" in written and "checkpoint.pt" not in written  # rank 0's record, once


def test_workers_are_a_neutral_field_that_must_divide_the_batch(tmp_path):
    cfg = RunConfig(**BASE)
    assert identity.run_id(cfg.replace(workers=2)) == identity.run_id(cfg)
    with pytest.raises(ConfigError, match="workers"):
        cfg.replace(workers=3)  # 16 sequences per batch
    with pytest.raises(ConfigError, match="workers.*process group"):
        train(cfg.replace(workers=2), tmp_path)  # no process group: refused before anything is written
    assert not any(tmp_path.iterdir())


class Interrupt(Exception):
    pass


def test_a_checkpoint_of_one_worker_resumes_on_two(tmp_path):
    """A run stopped at step 10 on one worker (checkpoint at step 8) finishes on two, with the loss of a run
    never interrupted."""
    cfg = RunConfig(param="hyperp", **BASE | {"checkpoint_every": 4})

    def stop_at_10(info):
        if info.step == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "run", on_step=stop_at_10)
    two = data_parallel(cfg.replace(workers=2), tmp_path / "run")
    straight = train(cfg).row
    assert two[0][1] == pytest.approx(straight["val_loss"], rel=REL)
    assert pd.read_parquet(tmp_path / "run" / "runs.parquet")["resumed_step"].item() == 8


def _computed_once_rank(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        items = [torch.full((i + 1, 2), float(i)) for i in range(5)]
        calls = []
        out = distributed.computed_once(lambda i: calls.append(i) or items[i] * 10, items)
        results.put((rank, calls, [o.tolist() for o in out]))
    finally:
        dist.destroy_process_group()


def test_computed_once_splits_the_work_and_every_rank_gets_every_result():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_computed_once_rank, args=(free_port(), results), nprocs=2, join=True, start_method="spawn")
    got = {r: (calls, out) for r, calls, out in (results.get(timeout=60) for _ in range(2))}
    assert got[0][0] == [0, 2, 4] and got[1][0] == [1, 3]  # each item computed by one rank
    expected = [torch.full((i + 1, 2), 10.0 * i).tolist() for i in range(5)]
    assert got[0][1] == got[1][1] == expected
