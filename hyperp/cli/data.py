"""`hyperp data ...`: corpora for the trainer (`data prepare`: a tokenizer and token shards from text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hyperp.cli.core import (PLAIN_PROGRESS_S, SUBAPPS, JsonFlag, PlainProgress, as_count, command, new_app,
                             print_json)
from hyperp.config import RunConfig
from hyperp.trainer.defaults import DEFAULT_SHARD_TOKENS, MAX_VOCAB, MIN_VOCAB

app = new_app(SUBAPPS["data"][1])
MIB = 1 << 20


@app.callback()
def data() -> None:
    """Corpora for the trainer (a group even with one command: `data prepare`)."""


def count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def progress_line(phase: str, done: int, total: int) -> str:
    return f"{phase}: {done / MIB:.1f}/{total / MIB:.1f} MiB"


def prepare_with_progress(console, every_s: float, **kwargs) -> dict:
    """Prepare with one live bar per phase on a terminal, else a plain line every `every_s` seconds."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    from hyperp.trainer.prepare import prepare  # noqa: PLC0415 (numpy, torch; tokenizers loads in prepare)

    if not console.is_terminal:
        plain = PlainProgress(every_s)
        return prepare(**kwargs, progress=lambda phase, done, total: plain(
            lambda: progress_line(phase, done, total), force=done == total))
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        return prepare(**kwargs, progress=update)


@command(app, "prepare")
def prepare_command(
        src: Annotated[str, typer.Argument(help="'stdlib' (the trainer's default corpus) or a directory of text "
                                                "files, split into train/validation by file as the trainer does.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: new, empty, or an earlier output "
                                                             "of this command (rewritten).")],
        vocab_size: Annotated[Optional[int], typer.Option(
            parser=as_count, help=f"Train a byte-level BPE tokenizer with this many tokens ({MIN_VOCAB}.."
                                  f"{MAX_VOCAB}, <|endoftext|> included) on the training files.")] = None,
        tokenizer: Annotated[Optional[Path], typer.Option(
            "--tokenizer", help="Use this tokenizer.json instead of training one (<|endoftext|> is added if "
                                "missing).")] = None,
        shard_tokens: Annotated[int, typer.Option(
            parser=as_count, help="Most tokens per .bin shard (1e8 works).")] = DEFAULT_SHARD_TOKENS,
        val_percent: Annotated[float, typer.Option(
            help="Share of the files held out for validation (the trainer's val_percent rule).")]
        = RunConfig().val_percent,
        progress_every: Annotated[float, typer.Option(
            help="Seconds between plain progress lines when stderr is not a terminal.")] = PLAIN_PROGRESS_S,
        as_json: JsonFlag = False) -> None:
    """Tokenize SRC into uint16 speedrun shards (train_*.bin, val_*.bin), tokenizer.json and meta.json in --out;
    train on it with `--data DIR` (and --vocab-size at least meta.json's vocab_size)."""
    from rich.console import Console  # noqa: PLC0415

    console = Console(stderr=True)
    meta = prepare_with_progress(console, progress_every, src=src, out=out, vocab_size=vocab_size,
                                 tokenizer_file=tokenizer, shard_tokens=shard_tokens, val_percent=val_percent)
    if as_json:
        print_json({"out": str(out), **meta})
        return
    tokens, shards = meta["tokens"], meta["shards"]
    console.print(f"[bold]prepared[/bold] {out}/: vocab_size {meta['vocab_size']}, "
                  f"{tokens['train']:,} train tokens in {count(shards['train'], 'shard')}, "
                  f"{tokens['val']:,} validation tokens in {count(shards['val'], 'shard')}", soft_wrap=True)
    if meta["lossy_files"]:
        console.print(f"{len(meta['lossy_files'])} files were not UTF-8 (bad bytes read as U+FFFD): "
                      "meta.json lists them under lossy_files", soft_wrap=True)
