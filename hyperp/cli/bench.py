"""`hyperp bench ...`: benchmarks that print figures measured in the same run."""

from __future__ import annotations

from typing import Annotated

import typer

from hyperp.cli.core import SUBAPPS, JsonFlag, command, new_app, print_json
from hyperp.trainer.config import RunConfig

app = new_app(SUBAPPS["bench"][1])
DEFAULTS = RunConfig()


@command(app, "train")
def train_bench(width: Annotated[int, typer.Option(help="Model width.")] = 256,
                depth: Annotated[int, typer.Option(help="Transformer blocks.")] = DEFAULTS.depth,
                head_dim: Annotated[int, typer.Option(help="Attention head dimension.")] = DEFAULTS.head_dim,
                seq_len: Annotated[int, typer.Option(help="Context length in tokens.")] = DEFAULTS.seq_len,
                batch_tokens: Annotated[int, typer.Option(help="Tokens per step.")] = DEFAULTS.batch_tokens,
                params: Annotated[str, typer.Option(help="Comma-separated schemes; the first is the "
                                                         "reference.")] = "adamw,hyperp,muon",
                steps: Annotated[int, typer.Option(help="Timed steps per scheme.")] = 10,
                warmup: Annotated[int, typer.Option(help="Untimed steps before timing.")] = 3,
                threads: Annotated[int, typer.Option(help="torch CPU threads; 0 keeps torch's default.")] = 0,
                device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = DEFAULTS.device,
                as_json: JsonFlag = False) -> None:
    """Tokens/s, MFU against the measured matmul peak, and the optimizer's share of step time."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from hyperp.trainer.bench import as_dicts, bench_train  # noqa: PLC0415 (torch)

    cfg = RunConfig(width=width, depth=depth, head_dim=head_dim, seq_len=seq_len, batch_tokens=batch_tokens,
                    tokens=batch_tokens, threads=threads, device=device)
    peak, rows = bench_train(cfg, params.split(","), steps=steps, warmup=warmup)
    if as_json:
        print_json({"peak_flops": peak, "config": cfg.to_dict(), "rows": as_dicts(rows)})
        return
    table = Table(title=f"width {width}, depth {depth}, ctx {seq_len}, batch {batch_tokens} tok; "
                        f"matmul peak {peak / 1e9:.1f} GFLOP/s")
    for col in ("scheme", "tok/s", "fwd+bwd ms", "opt ms", "opt share", "MFU fwd+bwd", "MFU step", "NS FLOP share",
                f"step vs {rows[0].param}"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.param, f"{r.tokens_per_s:,.0f}", f"{1e3 * r.fwd_bwd_s:.1f}", f"{1e3 * r.opt_s:.1f}",
                      f"{100 * r.opt_share:.1f}%", f"{100 * r.mfu_fwd_bwd:.1f}%", f"{100 * r.mfu_step:.1f}%",
                      f"{100 * r.ns_flop_share:.2f}%", f"{100 * r.overhead_vs_first:+.1f}%")
    Console(width=160).print(table)
