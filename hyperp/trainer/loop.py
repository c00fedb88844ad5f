"""The training loop: one run from a `RunConfig` to a `RunResult` (a ledger row and step curves).

`train(cfg, out_dir)` is the single entry point used by the CLI and the sweep engine. With an `out_dir` it
checkpoints every `checkpoint_every` steps and resumes from `out_dir/checkpoint.pt` when that checkpoint was
written by the same config, so an interrupted run finishes with the same final loss as a straight one
(bit-exact on CPU: batches are a pure function of (seed, step), and model and optimizer state are restored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hyperp import identity, io, schema
from hyperp.config import ConfigError, RunConfig
from hyperp.signals import StopSignals
from hyperp.trainer import checkpoint, distributed
from hyperp.trainer.checkpoint import LoopState
from hyperp.trainer.data import Corpus, check_corpus, load_corpus, train_batch, val_batches
from hyperp.trainer.hparams import ResolvedHParams, resolve_hparams
from hyperp.trainer.metrics import (ParamCounts, compute_dtype, count_params, hidden_shapes, matmul_peak_flops,
                                    training_flops)
from hyperp.trainer.model import Transformer
from hyperp.trainer.optim import Optimizers, build_optimizers, ns_flops

EVALS_PER_RUN = 10  # default number of validations when eval_every = 0


@dataclass
class StepInfo:
    """What the progress callback sees after each step."""

    step: int
    total_steps: int
    tokens: int
    loss: float
    tokens_per_s: float
    row: dict[str, Any] | None = None  # the step's curves row when the curves keep this step (trackers log it)


@dataclass
class RunResult:
    status: str  # completed or diverged
    row: dict[str, Any]  # one row of runs.parquet
    curves: pd.DataFrame  # step curves
    config: RunConfig
    hparams: ResolvedHParams
    out_dir: Path | None = None


@dataclass
class TrainContext:
    """One run's training context, built by `setup`: what every step, the loop and `finish` use."""

    cfg: RunConfig
    hp: ResolvedHParams
    model: Transformer
    run_model: Callable  # the model compiled by torch.compile when cfg.compile asks, else the model itself
    opt: Optimizers  # the parameter groups' optimizers; `lr_mult` is the schedule, set on it every step
    counts: ParamCounts
    state: LoopState  # what a checkpoint keeps; resumed from one when out_dir holds this config's
    device: str
    corpus: Corpus
    vals: list[tuple[torch.Tensor, torch.Tensor]]  # the validation batches
    eval_every: int
    stats_every: int
    out: Path | None = None
    writes: bool = False  # rank 0 of a run with an out_dir: checkpoints and outputs
    on_step: Callable[[StepInfo], None] | None = None  # rank 0 only
    stop_file: Path | None = None  # a data-parallel run is stopped through this file (see `setup`)
    resumed_step: int = -1  # -1: trained from scratch in this call
    steady: bool = True  # False while the optimizer updates the weights and the loop state catches up
    # this process's training step times, plain steps [False] and stats steps [True] apart (`warmup_seconds`)
    step_times: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})

    def autocast(self):
        return mixed_precision(self.device)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError("device", f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")
    return name


def lr_mult(cfg: RunConfig, step: int) -> float:
    """Linear warm-up from 0, then linear decay from 1 to min_lr_mult at the last step."""
    total, warmup = cfg.total_steps, cfg.warmup_tokens // cfg.batch_tokens
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return 1.0 - (1.0 - cfg.min_lr_mult) * min(1.0, progress)


def build(cfg: RunConfig, device: str) -> tuple[Transformer, Optimizers, ResolvedHParams]:
    hp = resolve_hparams(cfg)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg, hp.residual_alpha, hp.logit_mult)
    model.init_weights(hp.embed_init_std, hp.head_init_std)
    model.to(device)
    return model, build_optimizers(model, hp, cfg), hp


def compile_model(model: Transformer, cfg: RunConfig):
    """torch.compile the model when cfg.compile asks, on any device (on the 2-core CPU it gave +16% tokens/s at
    width 256 after about a minute of compilation: results/bench/train.txt), else the model itself."""
    return torch.compile(model) if cfg.compile else model


def mixed_precision(device: str):
    """The trainer's precision context: bf16 autocast on CUDA (`compute_dtype`), nothing on CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=compute_dtype(device))
    return contextlib.nullcontext()


def evaluate(model: Transformer, batches, autocast) -> float:
    """Mean validation loss per token; under data parallelism each rank takes its share of the batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in distributed.my_part(batches):
        with autocast():
            _, loss = model(x, y)
        total += loss.item() * x.numel()
        count += x.numel()
    model.train()
    sums = torch.tensor([total, count], dtype=torch.float64, device=next(model.parameters()).device)  # NCCL: GPU only
    total, count = distributed.all_reduce_sum(sums).tolist()
    return total / count


def hidden_matrices(opt: Optimizers) -> list[torch.Tensor]:
    return [p for g in opt.param_groups if g["name"] == "hidden" for p in g["params"]]


def train(cfg: RunConfig, out_dir: str | Path | None = None,
          on_step: Callable[[StepInfo], None] | None = None, run_id: str | None = None) -> RunResult:
    """Train one model; write results to `out_dir` if given. Raises ConfigError/DataError on bad input.

    `run_id` labels the record and the curves (default: the config's identity, `hyperp.identity.run_id`; a
    sweep passes the id under its spec's version_tag). SIGTERM between updates (in the main thread) is handled
    like Ctrl-C: a checkpoint is written, then `Terminated` is raised. Temp files left in `out_dir` by a killed
    writer are removed at the start; a full disk raises UnavailableError naming the file.

    With `cfg.workers` > 1 every rank of a process group of that size calls `train` (hyperp.trainer.distributed:
    each trains on its share of every batch); only rank 0 writes to `out_dir` and calls `on_step`.
    """
    ctx = setup(cfg, out_dir, on_step)
    run_loop(ctx)
    return finish(ctx, run_id)


def setup(cfg: RunConfig, out_dir: str | Path | None, on_step: Callable[[StepInfo], None] | None) -> TrainContext:
    """Check the config, the process group, the device and the data; build the model and its optimizers and
    resume from `out_dir`'s checkpoint when it holds this config's."""
    started = time.time()
    cfg.validate()
    rank, world = distributed.rank_and_world()
    if world != cfg.workers:
        raise ConfigError("workers", f"{cfg.workers} workers need a process group of as many ranks, found {world}: "
                                     "`hyperp train` and `hyperp sweep run` start them with Ray Train")
    main = rank == 0
    device = resolve_device(cfg.device)
    if cfg.ns_backend == "triton" and not device.startswith("cuda"):
        raise ConfigError("ns_backend", f"'triton' needs a CUDA device, got {device!r}; use auto or torch")
    corpus = load_corpus(cfg.data, cfg.val_percent)
    check_corpus(corpus, cfg)
    if cfg.threads and device == "cpu":
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir) if out_dir is not None else None
    writes = out is not None and main
    if writes:
        io.remove_stale_tmp(out, older_than=started)

    model, opt, hp = build(cfg, device)
    run_model = compile_model(model, cfg)
    counts = count_params(model, cfg)
    state = (checkpoint.load(out, cfg, model, opt) if out is not None else None) or LoopState()
    vals = val_batches(corpus, cfg.val_tokens, cfg.seq_len, cfg.batch_size, device)
    eval_every = cfg.eval_every or max(1, cfg.total_steps // EVALS_PER_RUN)
    return TrainContext(
        cfg=cfg, hp=hp, model=model, run_model=run_model, opt=opt, counts=counts, state=state, device=device,
        corpus=corpus, vals=vals, eval_every=eval_every, stats_every=cfg.stats_every or eval_every,
        out=out, writes=writes, on_step=on_step if main else None,
        # a data-parallel run is stopped through a file its driver writes (hyperp.sweeps), not a signal
        stop_file=out / distributed.STOP_FILE if out is not None and world > 1 else None,
        resumed_step=state.step if state.step else -1)


def run_loop(ctx: TrainContext) -> None:
    """Train until the last step or divergence. Ctrl-C, SIGTERM or Ray's cancel between updates writes a
    checkpoint (with an out_dir) so that a rerun resumes there, then leaves as KeyboardInterrupt or Terminated."""
    with StopSignals():  # SIGTERM is handled like Ctrl-C here, then leaves as Terminated
        try:
            while ctx.state.step < ctx.cfg.total_steps:
                if not advance(ctx):  # diverged
                    break
        except KeyboardInterrupt:
            if ctx.writes and ctx.steady:
                checkpoint.save(ctx.out, ctx.cfg, ctx.model, ctx.opt, ctx.state)
            raise


def advance(ctx: TrainContext) -> bool:
    """One step of the loop: train, log the curves row, validate, report, checkpoint. False once diverged."""
    cfg, state = ctx.cfg, ctx.state
    step = state.step
    mult = lr_mult(cfg, step)
    ctx.opt.set_lr_mult(mult)
    x, y = map(distributed.shard, train_batch(ctx.corpus, step, cfg.batch_size, cfg.seq_len, cfg.seed, ctx.device))
    stats: dict[str, Any] | None = {} if step % ctx.stats_every == 0 or step == cfg.total_steps - 1 else None
    loss_val, grad_norm, before, stop = train_step(ctx, x, y, stats)
    row = {"step": state.step, "tokens": state.step * cfg.batch_tokens, "train_loss": loss_val,
           "lr_mult": mult, "grad_norm": grad_norm}
    if stats is not None:
        row.update(summarise_stats(stats, ctx.model, ctx.opt, before))
    diverged = not math.isfinite(loss_val) or loss_val > cfg.diverge_ratio * state.first_loss
    if state.step % ctx.eval_every == 0 or state.step == cfg.total_steps or diverged:
        row["val_loss"] = evaluate(ctx.model, ctx.vals, ctx.autocast) if not diverged else math.nan
    kept = state.step % cfg.log_every == 0 or "val_loss" in row or stats is not None or diverged
    if kept:
        state.curves.append(row)
    ctx.steady = True
    if ctx.on_step is not None:
        ctx.on_step(StepInfo(state.step, cfg.total_steps, state.step * cfg.batch_tokens, loss_val,
                             state.step * cfg.batch_tokens / max(state.train_time, 1e-9), row if kept else None))
    if diverged:
        state.diverged_step = state.step
        return False
    if ctx.writes and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
        checkpoint.save(ctx.out, cfg, ctx.model, ctx.opt, state)
    if stop:  # a data-parallel run's driver was cancelled: every rank stops here, as on Ctrl-C
        raise KeyboardInterrupt
    return True


def train_step(ctx: TrainContext, x: torch.Tensor, y: torch.Tensor, stats: dict | None
               ) -> tuple[float, float, list[torch.Tensor] | None, bool]:
    """Forward, backward, clipping and one optimizer step; advances `ctx.state`. Returns (loss, grad norm,
    the hidden matrices before the update when stats are wanted, whether any rank found `ctx.stop_file`)."""
    model, opt, state = ctx.model, ctx.opt, ctx.state
    t0 = time.perf_counter()
    # stats steps run the eager model: their read-outs (.item()) would break the compiled graph and specialise it
    # on their float values, recompiling at every stats step; they are a few steps of a run
    forward = ctx.run_model if stats is None else ctx.model
    with ctx.autocast():
        _, loss = forward(x, y, stats)
        total_loss = loss + model.aux_loss()
    total_loss.backward()
    asked = ctx.stop_file is not None and ctx.stop_file.exists()
    loss_val, stop = distributed.average_gradients(model.parameters(), loss, asked)  # the same on every rank
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.cfg.grad_clip or math.inf).item()
    before = [p.detach().clone() for p in hidden_matrices(opt)] if stats is not None else None
    t1 = time.perf_counter()
    ctx.steady = False
    opt.step()
    opt.zero_grad()
    if ctx.device.startswith("cuda"):
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    state.opt_time += t2 - t1
    state.train_time += t2 - t0
    ctx.step_times[stats is not None].append(t2 - t0)
    state.step += 1
    if state.step == 1:
        state.first_loss = loss_val
    return loss_val, grad_norm, before, stop


PER_LAYER_STATS = ("maxvio", "expert_counts")  # MoE: also one column per MoE block, <name>_l<block index>
UNAVERAGED_STATS = ("expert_counts",)  # per-expert token count lists: logged per layer only


def summarise_stats(stats: dict[str, list[Any]], model: Transformer, opt: Optimizers,
                    before: list[torch.Tensor] | None) -> dict[str, Any]:
    """Average per-layer indicators over layers; relative update size of hidden matrices; radius drift."""
    row: dict[str, Any] = {k: sum(v) / len(v) for k, v in stats.items() if v and k not in UNAVERAGED_STATS}
    row.update(moe_layer_columns(stats, model))
    if before:
        after = hidden_matrices(opt)
        rel = [((a - b).norm() / b.norm().clamp_min(1e-12)).item() for a, b in zip(after, before)]
        row["update_rel"] = sum(rel) / len(rel)
    row["radius_drift"] = opt.radius_drift()
    return row


def moe_layer_columns(stats: dict[str, list[Any]], model: Transformer) -> dict[str, Any]:
    """maxvio_l<i> and expert_counts_l<i> (a list over experts) for each MoE block i, in block order."""
    layers = [i for i, block in enumerate(model.blocks) if hasattr(block.mlp, "collect_stats")]
    return {f"{name}_l{i}": value for name in PER_LAYER_STATS for i, value in zip(layers, stats.get(name, []))}


def hardware_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    world = distributed.rank_and_world()[1]
    return cpu if world == 1 else f"{world} workers of {cpu}"


def finish(ctx: TrainContext, run_id: str | None = None) -> RunResult:
    """The run's record (built by `hyperp.schema.trainer_record` from plain values) and curves; with an out_dir,
    written there in place of the checkpoint."""
    cfg, state, device = ctx.cfg, ctx.state, ctx.device
    run_id = run_id or identity.run_id(cfg)
    row = schema.trainer_record(cfg, schema.TrainedRun(
        run_id=run_id, cell_id=identity.cell_id(cfg), hparams=ctx.hp.to_dict(),
        params=dataclasses.asdict(ctx.counts), steps=state.step, diverged_step=state.diverged_step,
        resumed_step=ctx.resumed_step, curves=state.curves, train_time=state.train_time, opt_time=state.opt_time,
        warmup_time=warmup_seconds(ctx.step_times),
        flops_per_token=training_flops(ctx.counts, cfg, 1), ns_flops_per_step=ns_flops_per_step(cfg, ctx.hp),
        peak_flops=cfg.peak_tflops * 1e12 if cfg.peak_tflops else matmul_peak_flops(device),
        hardware=hardware_name(device), device_type=device.split(":")[0], provenance=identity.code_columns()))
    curves = pd.DataFrame(state.curves)
    curves.insert(0, "run_id", run_id)
    result = RunResult(status=row["status"], row=row, curves=curves, config=cfg, hparams=ctx.hp, out_dir=ctx.out)
    if ctx.writes:
        write_outputs(ctx.out, result)
        checkpoint.remove(ctx.out)
    return result


def warmup_seconds(step_times: dict[bool, list[float]]) -> float:
    """The training time of this process beyond what its steps take at the median step time of their kind
    (plain, and with stability statistics): torch.compile's compilations and recompilations on a compiled run,
    first allocations and jitter on an eager one. So tokens / (train time - warmup) is the steady throughput."""
    return sum(sum(times) - len(times) * statistics.median(times) for times in step_times.values() if times)


def ns_flops_per_step(cfg: RunConfig, hp: ResolvedHParams) -> float:
    """Newton-Schulz FLOPs of one optimizer step: one NS call per hidden matrix under Muon-type schemes."""
    if hp.hidden.optimizer not in ("muon", "muonh"):
        return 0.0
    return sum(ns_flops(shape, cfg.ns_steps) for shape in hidden_shapes(cfg))


def write_outputs(out: Path, result: RunResult) -> None:
    """runs.parquet (one record of the full schema), curves.parquet, config.json and hparams.json, each written
    atomically."""
    io.write_json(out / schema.CONFIG_FILE, result.config.to_dict())
    io.write_json(out / schema.HPARAMS_FILE, result.hparams.to_dict())
    io.write_parquet(out / schema.CURVES_FILE, result.curves)
    schema.write_records(out / schema.RUNS_FILE, [result.row])
