"""`hyperp bench ...`: benchmarks that print figures measured in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, as_count, command, new_app, print_json
from hyperp.config import RunConfig
from hyperp.errors import InputError
from hyperp.trainer.defaults import MATCHED_MLP_RATIO

app = new_app(SUBAPPS["bench"][1])
DEFAULTS = RunConfig()


@app.callback()
def bench() -> None:
    """Benchmarks that print figures measured in the same run (a group even with one command: `bench train`)."""


@command(app, "train")
def train_bench(width: Annotated[int, typer.Option(parser=as_count, help="Model width.")] = 256,
                depth: Annotated[int, typer.Option(parser=as_count, help="Transformer blocks.")] = DEFAULTS.depth,
                head_dim: Annotated[int, typer.Option(parser=as_count, help="Attention head dimension.")]
                = DEFAULTS.head_dim,
                seq_len: Annotated[int, typer.Option(parser=as_count, help="Context length in tokens.")]
                = DEFAULTS.seq_len,
                batch_tokens: Annotated[int, typer.Option(parser=as_count, help="Tokens per step (1e4 works).")]
                = DEFAULTS.batch_tokens,
                params: Annotated[str, typer.Option(help="Comma-separated schemes; the first is the "
                                                         "reference.")] = "adamw,hyperp,muon",
                steps: Annotated[int, typer.Option(help="Timed steps per scheme.")] = 10,
                warmup: Annotated[int, typer.Option(help="Untimed steps before timing.")] = 3,
                threads: Annotated[int, typer.Option(help="torch CPU threads; 0 keeps torch's default.")] = 0,
                device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = DEFAULTS.device,
                mlp_ratio: Annotated[float, typer.Option(
                    help="SwiGLU ratio of the hyperp models; 8/3 matches the GPT block's MLP parameters, 0 "
                         "keeps the config default (4).")] = MATCHED_MLP_RATIO,
                compile: Annotated[bool, typer.Option("--compile", help="torch.compile every model.")] = False,
                fused_kernels: Annotated[str, typer.Option(
                    help="The hyperp models' fused CPU kernels for QK-norm+RoPE, SwiGLU and the RMSNorm "
                         "backward: auto, on or off (the config's fused_kernels).")] = DEFAULTS.fused_kernels,
                compare_compile: Annotated[bool, typer.Option(
                    "--compare-compile", help="Time the first scheme and the GPT block eager and compiled "
                                              "instead.")] = False,
                reference: Annotated[Optional[Path], typer.Option(
                    help="A GPT-style model.py (nanoGPT's interface: GPT, GPTConfig) to time beside the GPT "
                         "block, built at this shape (no biases, dropout 0) and trained with its own "
                         "configure_optimizers (else AdamW); every row gets its ratios against it too.",
                    dir_okay=False)] = None,
                as_json: JsonFlag = False) -> None:
    """Tokens/s, MFU against the measured matmul peak and the optimizer's share of step time, beside a classic
    GPT block (LayerNorm, GELU MLP, learned positions, SDPA) timed interleaved in the same process, and beside
    the model of a GPT-style model.py given as --reference (nanoGPT's)."""
    from hyperp.trainer.bench import (as_dicts, bench_compile, bench_train, format_report,  # noqa: PLC0415 (torch)
                                      load_reference, machine_line)

    cfg = RunConfig(width=width, depth=depth, head_dim=head_dim, seq_len=seq_len, batch_tokens=batch_tokens,
                    tokens=batch_tokens, threads=threads, device=device, fused_kernels=fused_kernels)
    ratio = mlp_ratio or None
    if reference is not None:
        if compare_compile:
            raise InputError("--reference: not with --compare-compile (that compares the first scheme and the GPT "
                             "block, eager and compiled)")
        load_reference(reference)  # a bad file: one line naming it, exit 2, before anything is timed
    started = machine_line()
    if compare_compile:
        peak, rows = bench_compile(cfg, params.split(",")[0], steps=steps, warmup=warmup, mlp_ratio=ratio)
    else:
        peak, rows = bench_train(cfg, params.split(","), steps=steps, warmup=warmup, mlp_ratio=ratio,
                                 compile=compile, reference=reference)
    if as_json:
        print_json({"peak_flops": peak, "config": cfg.to_dict(), "reference": str(reference) if reference else None,
                    "started": started, "finished": machine_line(), "rows": as_dicts(rows)})
        return
    typer.echo(format_report(cfg if ratio is None else cfg.replace(mlp_ratio=ratio), peak, rows, reference,
                             started))
