"""`hyperp bench train`: throughput, MFU and optimizer overhead of the model under several schemes, next to
a classic GPT block of the same shape measured in the same process.

The reference is written here in plain torch: pre-LayerNorm blocks, fused q/k/v projection, PyTorch's
scaled-dot-product attention, a GELU MLP of 4w, learned positions, untied embeddings, no biases in the
linear layers, trained with AdamW (fused, as the `adamw` scheme). The hyperp models run at `mlp_ratio` 8/3 by
default, where SwiGLU's three w x h matrices hold as many weights as the GPT MLP's two w x 4w ones (the hidden
size is then rounded up to a multiple of 64, `hyperp.trainer.layers.mlp_hidden`, so they are slightly larger:
the ratio below counts it).

Protocol: fp32 on CPU, bf16 autocast on CUDA (as the trainer runs). The fp32 (bf16 on CUDA) matmul peak with a
square-matmul probe, repeated after every round (the peak is the best probe: on a shared machine a single probe can
land in a busy moment); then every model is built once and full training steps (forward, backward, optimizer) of all
models alternate, `warmup` untimed rounds and then `steps` timed rounds, the order rotated by one model each round
(the step right after the probe or after another model's step runs measurably slower: two copies of one model
differed by 4% at fixed positions); each figure is the median over rounds, so machine load drifts affect every model
alike. The per-round ratio to the reference's step of the same round gives the spread (quartiles) of the work ratio:
the resolution of the comparison on this machine. MFU counts training FLOPs (method.md section 7, same convention
for both architectures) against the probe. Ratios to the reference: plain tokens/s, and tokens/s x non-embedding
parameters (the work rate at the model's size), and tokens per CPU second (process CPU time; at 1 thread it measures
the work done and is robust to other processes loading the machine, which wall-clock figures are not). The
Newton-Schulz FLOP share predicts the optimizer overhead of the Muon-type schemes; `overhead_per_ns_share` is the
measured step-time overhead over the first scheme divided by that share.

`--reference PATH` adds a GPT-style model.py of the user's (nanoGPT's, run unmodified, is the one meant): the file is
imported from its path, `GPT(GPTConfig(n_layer, n_head, n_embd, block_size, vocab_size, dropout, bias))` is built at
the benchmark's shape (dropout 0, no biases) and trained with its own `configure_optimizers` (AdamW) when it has one,
else torch's AdamW, as one more model in the same rounds; every row then carries its ratios against that file's
model too (the `... vs file` columns). Its parameters are counted by the same convention as the GPT block's
(`module_counts`): a tied embedding and head once, the embeddings and the head outside the non-embedding count.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperp.config import RunConfig
from hyperp.errors import InputError
from hyperp.kernels import fused
from hyperp.trainer.data import load_corpus, train_batch
from hyperp.trainer.defaults import MATCHED_MLP_RATIO  # SwiGLU 3 w (8w/3) = GELU MLP 2 w (4w) weights
from hyperp.trainer.loop import build, mixed_precision, ns_flops_per_step, resolve_device
from hyperp.trainer.metrics import (ParamCounts, compute_dtype, count_params, matmul_flops, matmul_peak_flops,
                                     probe_sizes, training_flops)

GPT_MLP_RATIO = 4  # the classic block's MLP hidden size, in widths
REFERENCE = "gpt-block"  # the reference's row name
PEAK_PROBE_S = 2.0  # seconds of square matmuls for the peak
REFERENCE_LR = 1e-3  # torch's AdamW default, the GPT block's LR (speed does not depend on it)
GPT_INTERFACE = "GPT(GPTConfig(n_layer, n_head, n_embd, block_size, vocab_size, dropout, bias))"  # nanoGPT's


# ---------------------------------------------------------------------------------------------------------
# the reference: a classic GPT block


class GPTBlock(nn.Module):
    def __init__(self, width: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, width, bias=False)
        self.fc = nn.Linear(width, GPT_MLP_RATIO * width, bias=False)
        self.out = nn.Linear(GPT_MLP_RATIO * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, -1))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPTReference(nn.Module):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        w = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, w)
        self.pos = nn.Embedding(cfg.seq_len, w)
        self.blocks = nn.ModuleList(GPTBlock(w, cfg.n_heads, cfg.head_dim) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor):
        x = self.embed(idx) + self.pos.weight[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def counts(self) -> ParamCounts:
        return module_counts(self, self.head.out_features)


def module_counts(model: nn.Module, vocab_size: int) -> ParamCounts:
    """The hyperp convention for any GPT-style module: every distinct parameter once (a head tied to the token
    embedding counts once); the nn.Embedding tables (tokens, positions) and the LM head are not non-embedding
    parameters; FLOPs count the nn.Linear weights, which multiply activations, the head included. The head is
    the nn.Linear with vocab_size outputs whose weight is an embedding's (tied), else the last such module
    (a block's projection can have vocab_size outputs too when the width equals the vocabulary)."""
    params = {id(p): p for p in model.parameters()}
    embeddings = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    heads = [m for m in linears if m.out_features == vocab_size]
    head = next((m for m in heads if id(m.weight) in embeddings), heads[-1] if heads else None)
    outside = embeddings | ({id(head.weight): head.weight} if head is not None else {})
    total = sum(p.numel() for p in params.values())
    matrices = {id(m.weight): m.weight.numel() for m in linears}
    return ParamCounts(total=total, non_embedding=total - sum(p.numel() for p in outside.values()), active=total,
                       active_matrix=sum(matrices.values()))


# ---------------------------------------------------------------------------------------------------------
# a reference model.py of the user's (nanoGPT's interface)


def reference_name(path: str | Path) -> str:
    """The reference's row name: the file with its folder, e.g. `nanogpt/model.py`."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def load_reference(path: str | Path):
    """Import the module at `path` (a fresh module each call); InputError naming the file when it is missing,
    does not import, or lacks GPT and GPTConfig."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (--reference takes a GPT-style model.py)")
    name = f"hyperp_bench_reference_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: not a Python module (--reference takes a GPT-style model.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its prints must not mix with --json on stdout
            spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise InputError(f"{path}: importing it failed: {type(e).__name__}: {e}") from None
    if not (callable(getattr(module, "GPT", None)) and callable(getattr(module, "GPTConfig", None))):
        raise InputError(f"{path}: has no GPT and GPTConfig (a reference model.py exposes nanoGPT's interface, "
                         f"{GPT_INTERFACE})")
    return module


def reference_contestant(path: str | Path, cfg: RunConfig, device: str, compile: bool) -> "Contestant":
    """The file's GPT at the benchmark's shape (dropout 0, no biases), with its own configure_optimizers when it
    has one (nanoGPT's: AdamW, decay on the matrices, fused on CUDA) else torch's AdamW as the GPT block's."""
    module = load_reference(path)
    torch.manual_seed(cfg.seed)
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    try:
        conf = module.GPTConfig(n_layer=cfg.depth, n_head=cfg.n_heads, n_embd=cfg.d_model, block_size=cfg.seq_len,
                                vocab_size=cfg.vocab_size, dropout=0.0, bias=False)
        with contextlib.redirect_stdout(sys.stderr):
            model = module.GPT(conf).to(device)
            own = callable(getattr(model, "configure_optimizers", None))
            if own:
                opt = model.configure_optimizers(weight_decay=cfg.weight_decay, learning_rate=REFERENCE_LR,
                                                 betas=betas, device_type=device.split(":")[0])
            else:  # torch's default implementation (on CPU its reference loop), as nanoGPT's would pick
                opt = torch.optim.AdamW(model.parameters(), lr=REFERENCE_LR, betas=betas, eps=cfg.adam_eps)
    except Exception as e:
        raise InputError(f"{path}: building {GPT_INTERFACE} at width {cfg.d_model}, depth {cfg.depth}, "
                         f"{cfg.n_heads} heads failed: {type(e).__name__}: {e}") from None
    counts = module_counts(model, cfg.vocab_size)
    how = f"its configure_optimizers ({type(opt).__name__})" if own else "torch's AdamW (no configure_optimizers)"
    return Contestant(reference_name(path), torch.compile(model) if compile else model, opt,
                      training_flops(counts, cfg, cfg.batch_tokens), 0.0, counts, optimizer=how)


# ---------------------------------------------------------------------------------------------------------
# timing


@dataclass
class BenchRow:
    param: str
    tokens_per_s: float  # full steps (forward, backward, optimizer), median over rounds
    fwd_bwd_s: float  # per step, median
    opt_s: float  # per step, median
    opt_share: float  # optimizer time / step time
    mfu_fwd_bwd: float  # model FLOPs of forward+backward / fwd_bwd time / peak
    mfu_step: float  # the same over the whole step
    ns_flop_share: float  # Newton-Schulz FLOPs / model training FLOPs per step
    overhead_vs_first: float = float("nan")  # step time / the first scheme's step time - 1
    non_embedding_params: int = 0
    tokens_vs_reference: float = float("nan")  # tokens/s / the GPT block's tokens/s
    work_vs_reference: float = float("nan")  # (tokens/s x non-embedding params) / the GPT block's
    overhead_per_ns_share: float = float("nan")  # overhead_vs_first / ns_flop_share (Muon-type schemes)
    cpu_step_s: float = float("nan")  # process CPU seconds per step, median (robust to other processes' load
    # at 1 thread, where it is the work done; with more threads it includes the threads' spin-waits)
    cpu_vs_reference: float = float("nan")  # the GPT block's CPU s/token / this model's (1.0: as fast)
    work_vs_reference_quartiles: tuple[float, float] = (float("nan"), float("nan"))  # of the per-round ratios
    # the same three against the --reference file's model (NaN without one)
    tokens_vs_file: float = float("nan")
    work_vs_file: float = float("nan")
    work_vs_file_quartiles: tuple[float, float] = (float("nan"), float("nan"))
    cpu_vs_file: float = float("nan")
    optimizer: str = ""  # the reference file's: its configure_optimizers' class, or torch's AdamW


@dataclass
class Contestant:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    step_flops: float
    ns_flops: float
    counts: ParamCounts
    fwd_bwd: list[float] = field(default_factory=list)
    opt_time: list[float] = field(default_factory=list)
    cpu_time: list[float] = field(default_factory=list)
    optimizer: str = ""  # how the reference file's model is trained (the report says it)

    def drop(self, n: int) -> None:
        """Forget the first n steps (warm-up)."""
        del self.fwd_bwd[:n], self.opt_time[:n], self.cpu_time[:n]


def timed_step(c: Contestant, x: torch.Tensor, y: torch.Tensor, sync: Callable[[], None], device: str) -> None:
    """One full training step, under bf16 autocast on CUDA as the trainer runs it; appends its forward+backward
    and optimizer seconds (wall) and its CPU seconds."""
    sync()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with mixed_precision(device):
        _, loss = c.model(x, y)
    loss.backward()
    sync()
    t1 = time.perf_counter()
    c.opt.step()
    c.opt.zero_grad()
    sync()
    c.fwd_bwd.append(t1 - t0)
    c.opt_time.append(time.perf_counter() - t1)
    c.cpu_time.append(time.process_time() - cpu0)


def contestants(cfg: RunConfig, params: list[str], device: str, compile: bool,
                reference: str | Path | None = None) -> list[Contestant]:
    """The schemes' models, the GPT block, then the `reference` file's model when given."""
    out = []
    for param in params:
        run_cfg = cfg.replace(param=param, lr=None)
        model, opt, hp = build(run_cfg, device)
        counts = count_params(model, run_cfg)
        out.append(Contestant(param, torch.compile(model) if compile else model, opt,
                              training_flops(counts, run_cfg, run_cfg.batch_tokens), ns_flops_per_step(run_cfg, hp),
                              counts))
    torch.manual_seed(cfg.seed)
    gpt = GPTReference(cfg).to(device)
    # AdamW as the `adamw` scheme builds it (fused), at torch's default LR
    opt = torch.optim.AdamW(gpt.parameters(), lr=REFERENCE_LR, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            eps=cfg.adam_eps, fused=True)
    counts = gpt.counts()
    model = torch.compile(gpt) if compile else gpt
    out.append(Contestant(REFERENCE, model, opt, training_flops(counts, cfg, cfg.batch_tokens), 0.0, counts))
    if reference is not None:
        out.append(reference_contestant(reference, cfg, device, compile))
    return out


def prepare(cfg: RunConfig, mlp_ratio: float | None) -> tuple[RunConfig, str]:
    """The device, torch's CPU threads, and the config at the compared MLP ratio (None keeps cfg's)."""
    device = resolve_device(cfg.device)
    if cfg.threads and device == "cpu":
        torch.set_num_threads(cfg.threads)
    return (cfg if mlp_ratio is None else cfg.replace(mlp_ratio=mlp_ratio)), device


def bench_train(cfg: RunConfig, params: list[str], steps: int = 10, warmup: int = 3,
                mlp_ratio: float | None = MATCHED_MLP_RATIO, compile: bool = False,
                reference: str | Path | None = None) -> tuple[float, list[BenchRow]]:
    """Time `params` (the first is the overhead reference), the GPT block and the `reference` file's model when
    given, interleaved; one row each, in that order. `mlp_ratio` None keeps cfg's; `compile` compiles every
    model (the references too)."""
    cfg, device = prepare(cfg, mlp_ratio)
    models = contestants(cfg, params, device, compile, reference)  # a bad reference file fails here, untimed
    return run_rounds(cfg, models, device, steps, warmup, file_reference=reference is not None)


def run_rounds(cfg: RunConfig, models: list[Contestant], device: str, steps: int, warmup: int,
               file_reference: bool = False) -> tuple[float, list[BenchRow]]:
    """Alternate one full step of each model, `warmup` untimed rounds then `steps` timed ones. The GPT block
    is the last model, or the one before last when `file_reference` puts the file's model last."""
    dtype = compute_dtype(device)
    peak = matmul_peak_flops(device, dtype, seconds=PEAK_PROBE_S)
    x, y = train_batch(load_corpus(cfg.data, cfg.val_percent), 0, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    x, y = x.contiguous(), y.contiguous()  # (a reference model.py may view them flat: nanoGPT's does)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sizes = probe_sizes(device)
    for r in range(warmup + steps):
        for c in models[r % len(models):] + models[: r % len(models)]:
            timed_step(c, x, y, sync, device)
        # the peak is the best the machine gives: probe it between rounds too, as load comes and goes
        peak = max(peak, matmul_flops(sizes[-1], device, dtype, PEAK_PROBE_S / len(sizes)))
    for c in models:
        c.drop(warmup)
    return peak, summarise(models, cfg.batch_tokens, peak, file_reference)


def bench_compile(cfg: RunConfig, param: str = "adamw", steps: int = 10, warmup: int = 3,
                  mlp_ratio: float | None = MATCHED_MLP_RATIO) -> tuple[float, list[BenchRow]]:
    """What torch.compile gives: the model under `param` and the GPT block, eager and compiled, interleaved in
    one process (rows: eager model, compiled model, eager GPT block, compiled GPT block = the reference)."""
    cfg, device = prepare(cfg, mlp_ratio)
    eager, compiled = contestants(cfg, [param], device, False), contestants(cfg, [param], device, True)
    for c in compiled:
        c.name += " compiled"
    return run_rounds(cfg, [eager[0], compiled[0], eager[1], compiled[1]], device, steps, warmup)


def summarise(models: list[Contestant], batch_tokens: int, peak: float,
              file_reference: bool = False) -> list[BenchRow]:
    """One row per model; ratios against the GPT block (the last model, or the one before last when
    `file_reference`) and, with `file_reference`, against the last model (the file's)."""
    rows = []
    for c in models:
        fwd_bwd, opt_s = statistics.median(c.fwd_bwd), statistics.median(c.opt_time)
        step_s = statistics.median(f + o for f, o in zip(c.fwd_bwd, c.opt_time))
        rows.append(BenchRow(param=c.name, tokens_per_s=batch_tokens / step_s, fwd_bwd_s=fwd_bwd, opt_s=opt_s,
                             opt_share=opt_s / step_s, mfu_fwd_bwd=c.step_flops / fwd_bwd / peak,
                             mfu_step=c.step_flops / step_s / peak, ns_flop_share=c.ns_flops / c.step_flops,
                             non_embedding_params=c.counts.non_embedding,
                             cpu_step_s=statistics.median(c.cpu_time), optimizer=c.optimizer))
    first = rows[0]
    gpt = len(rows) - 2 if file_reference else len(rows) - 1
    for r, c in zip(rows, models):
        r.overhead_vs_first = first.tokens_per_s / r.tokens_per_s - 1
        if r.ns_flop_share > 0:
            r.overhead_per_ns_share = r.overhead_vs_first / r.ns_flop_share
        (r.tokens_vs_reference, r.work_vs_reference, r.cpu_vs_reference,
         r.work_vs_reference_quartiles) = ratios(r, rows[gpt], c, models[gpt])
        if file_reference:
            r.tokens_vs_file, r.work_vs_file, r.cpu_vs_file, r.work_vs_file_quartiles = ratios(
                r, rows[-1], c, models[-1])
    return rows


def ratios(r: BenchRow, ref: BenchRow, c: Contestant,
           ref_c: Contestant) -> tuple[float, float, float, tuple[float, float]]:
    """Row r against ref: tokens/s, tokens/s x non-embedding params, tokens per CPU second, and the quartiles of
    the per-round work ratios (NaN with fewer than two rounds)."""
    tokens = r.tokens_per_s / ref.tokens_per_s
    scale = r.non_embedding_params / ref.non_embedding_params
    per_round = [(rf + ro) / (f + o) * scale
                 for f, o, rf, ro in zip(c.fwd_bwd, c.opt_time, ref_c.fwd_bwd, ref_c.opt_time)]
    quartiles = (math.nan, math.nan)
    if len(per_round) >= 2:
        q1, _, q3 = statistics.quantiles(per_round, n=4)
        quartiles = (q1, q3)
    return tokens, tokens * scale, ref.cpu_step_s / r.cpu_step_s, quartiles


def as_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]


COLUMNS = ("scheme", "tok/s", "fwd+bwd ms", "opt ms", "opt share", "MFU fwd+bwd", "MFU step", "NS FLOP share",
           "step vs first", "overhead/NS share", "non-emb params", "tok/s vs GPT", "tok/s x params vs GPT",
           "(rounds' quartiles)", "CPU s/step", "tok/CPU-s vs GPT")
FILE_COLUMNS = ("tok/s vs file", "tok/s x params vs file", "(rounds' quartiles)", "tok/CPU-s vs file")


def table_cells(r: BenchRow, file_reference: bool = False) -> tuple[str, ...]:
    """One row of the report, formatted (shared by the CLI's table and `format_report`)."""
    per_ns = f"{r.overhead_per_ns_share:.2f}x" if r.ns_flop_share > 0 else "-"
    cells = (r.param, f"{r.tokens_per_s:,.0f}", f"{1e3 * r.fwd_bwd_s:.1f}", f"{1e3 * r.opt_s:.1f}",
             f"{100 * r.opt_share:.1f}%", f"{100 * r.mfu_fwd_bwd:.1f}%", f"{100 * r.mfu_step:.1f}%",
             f"{100 * r.ns_flop_share:.2f}%", f"{100 * r.overhead_vs_first:+.1f}%", per_ns,
             f"{r.non_embedding_params:,}", f"{r.tokens_vs_reference:.2f}x", f"{r.work_vs_reference:.2f}x",
             "{:.2f}-{:.2f}".format(*r.work_vs_reference_quartiles), f"{r.cpu_step_s:.2f}",
             f"{r.cpu_vs_reference:.2f}x")
    if file_reference:
        cells += (f"{r.tokens_vs_file:.2f}x", f"{r.work_vs_file:.2f}x",
                  "{:.2f}-{:.2f}".format(*r.work_vs_file_quartiles), f"{r.cpu_vs_file:.2f}x")
    return cells


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_line() -> str:
    """The machine, torch, the load average and the time: what a figure is read beside."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs), torch {torch.__version__}; load average "
            f"{load}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def kernels_note(cfg: RunConfig) -> str:
    """Whether the hyperp models ran QK-norm+RoPE, SwiGLU and the RMSNorm backward by the fused CPU kernels
    (hyperp.kernels.fused)."""
    probe = torch.empty(0, device=resolve_device(cfg.device))  # the activations' device and dtype (fp32)
    on = fused.enabled(cfg.fused_kernels, probe, elements=cfg.batch_tokens * cfg.d_model)
    return f"hyperp's fused CPU kernels: {cfg.fused_kernels} ({'on' if on else 'off'} at this shape)"


def format_report(cfg: RunConfig, peak: float, rows: list[BenchRow], reference: str | Path | None = None,
                  started: str | None = None) -> str:
    """Plain-text table of the rows under a title naming the shape and the measured peak; with `reference`,
    the ratios against that file's model (the last row) in four more columns. `started` (`machine_line()` at
    the start) is printed first, the machine line at the end last."""
    file_reference = reference is not None
    columns = COLUMNS + (FILE_COLUMNS if file_reference else ())
    cells = [columns] + [table_cells(r, file_reference) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [f"started: {started}"] if started else []
    lines += [f"width {cfg.d_model}, depth {cfg.depth}, head dim {cfg.head_dim}, ctx {cfg.seq_len}, batch "
              f"{cfg.batch_tokens} tok, {torch.get_num_threads()} threads; matmul peak {peak / 1e9:.1f} GFLOP/s; "
              f"{kernels_note(cfg)}"]
    if file_reference:
        lines.append(f"vs file: {rows[-1].param} = {Path(reference).resolve()}, GPT(GPTConfig(n_layer={cfg.depth}, "
                     f"n_head={cfg.n_heads}, n_embd={cfg.d_model}, block_size={cfg.seq_len}, "
                     f"vocab_size={cfg.vocab_size}, dropout=0.0, bias=False)), trained with {rows[-1].optimizer}")
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    if started:
        lines.append(f"finished: {machine_line()}")
    return "\n".join(lines)
