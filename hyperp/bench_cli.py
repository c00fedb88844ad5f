"""`hyperp bench ...`: benchmarks that print figures measured in the same run."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from hyperp.trainer.bench import as_dicts, bench_train
from hyperp.trainer.config import RunConfig

app = typer.Typer(help="Benchmarks (figures measured in this run, never timed tests).", no_args_is_help=True)


@app.command("train")
def train_bench(width: int = typer.Option(256), depth: int = typer.Option(4), head_dim: int = typer.Option(32),
                seq_len: int = typer.Option(256), batch_tokens: int = typer.Option(8192),
                params: str = typer.Option("adamw,hyperp,muon", help="comma-separated schemes; the first is the reference"),
                steps: int = typer.Option(10), warmup: int = typer.Option(3),
                threads: int = typer.Option(0, help="torch CPU threads; 0 keeps torch's default"),
                device: str = typer.Option("auto"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Tokens/s, MFU against the measured matmul peak, and the optimizer's share of step time."""
    cfg = RunConfig(width=width, depth=depth, head_dim=head_dim, seq_len=seq_len, batch_tokens=batch_tokens,
                    tokens=batch_tokens, threads=threads, device=device)
    peak, rows = bench_train(cfg, params.split(","), steps=steps, warmup=warmup)
    if as_json:
        print(json.dumps({"peak_flops": peak, "config": cfg.to_dict(), "rows": as_dicts(rows)}))
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
