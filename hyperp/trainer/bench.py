"""`hyperp bench train`: throughput, MFU and optimizer overhead of one model under several schemes.

Every figure is measured in the same process: the fp32 (or bf16 on CUDA) matmul peak with a square-matmul
probe, then for each scheme the forward+backward time and the optimizer time of `steps` steps on a fixed
batch (after `warmup` steps). MFU counts the model's training FLOPs (method.md section 7) against the
probe's peak. The Newton-Schulz FLOP share predicts the optimizer overhead of the Muon-type schemes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from hyperp.trainer.config import RunConfig
from hyperp.trainer.data import load_corpus, train_batch
from hyperp.trainer.loop import build, ns_flops_per_step, resolve_device
from hyperp.trainer.metrics import count_params, matmul_peak_flops, training_flops


@dataclass
class BenchRow:
    param: str
    tokens_per_s: float  # full steps (forward, backward, optimizer)
    fwd_bwd_s: float  # per step
    opt_s: float  # per step
    opt_share: float  # optimizer time / step time
    mfu_fwd_bwd: float  # model FLOPs of forward+backward / fwd_bwd time / peak
    mfu_step: float  # the same over the whole step
    ns_flop_share: float  # Newton-Schulz FLOPs / model training FLOPs per step
    overhead_vs_first: float = float("nan")  # step time / the first scheme's step time - 1


def time_steps(cfg: RunConfig, model, opt, device: str, steps: int, warmup: int) -> tuple[float, float]:
    x, y = train_batch(load_corpus(cfg.data, cfg.val_percent), 0, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fwd_bwd = opt_time = 0.0
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            fwd_bwd, opt_time = fwd_bwd + t1 - t0, opt_time + t2 - t1
    return fwd_bwd / steps, opt_time / steps


def bench_train(cfg: RunConfig, params: list[str], steps: int = 10, warmup: int = 3) -> tuple[float, list[BenchRow]]:
    device = resolve_device(cfg.device)
    if cfg.threads and device == "cpu":
        torch.set_num_threads(cfg.threads)
    peak = matmul_peak_flops(device, torch.bfloat16 if device.startswith("cuda") else torch.float32, seconds=2.0)
    rows: list[BenchRow] = []
    for param in params:
        run_cfg = cfg.replace(param=param, lr=None)
        model, opt, hp = build(run_cfg, device)
        step_flops = training_flops(count_params(model, run_cfg), run_cfg, run_cfg.batch_tokens)
        ns = ns_flops_per_step(run_cfg, hp)
        fwd_bwd, opt_s = time_steps(run_cfg, model, opt, device, steps, warmup)
        step_s = fwd_bwd + opt_s
        rows.append(BenchRow(param=param, tokens_per_s=run_cfg.batch_tokens / step_s, fwd_bwd_s=fwd_bwd, opt_s=opt_s,
                             opt_share=opt_s / step_s, mfu_fwd_bwd=step_flops / fwd_bwd / peak,
                             mfu_step=step_flops / step_s / peak, ns_flop_share=ns / step_flops))
    first = rows[0].fwd_bwd_s + rows[0].opt_s
    for r in rows:
        r.overhead_vs_first = (r.fwd_bwd_s + r.opt_s) / first - 1
    return peak, rows


def as_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
