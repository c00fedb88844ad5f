"""`hyperp data prepare`: a text corpus as a byte-level BPE tokenizer and uint16 speedrun shards.

The source is `stdlib` or a directory of text files, listed and split into training and validation files
exactly as hyperp.trainer.data reads them as bytes (`text_files`, `split_files`: CRC32 of the relative path).
A byte-level BPE tokenizer (`tokenizers`, an optional dependency: `pip install 'hyperp[data]'`) is trained on
the training files, or loaded from a tokenizer.json; `<|endoftext|>` is added as a special token and
precedes every document (file). Files are read as UTF-8; a file that is not valid UTF-8 is encoded with its
bad bytes replaced by U+FFFD and listed in meta.json's `lossy_files`.

The output directory holds `train_000000.bin`, ... and `val_000000.bin`, ... (at most `shard_tokens` tokens
each, in the speedrun format hyperp.trainer.data reads), `tokenizer.json` and `meta.json`. Files are encoded
one at a time into a buffer of one shard, written when full: memory is bounded by a shard, not the corpus.
Every file is written atomically, and the output is a pure function of the source and the options, so a
second run rewrites identical bytes. meta.json is written first as a stub without `"complete": true`
(marking the directory as this command's, and unfinished for the trainer) and last in full.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import hyperp
from hyperp import io
from hyperp.errors import InputError, UnavailableError
from hyperp.config import RunConfig
from hyperp.trainer.data import (PREPARED_FORMAT, PREPARED_META, SPLITS, DataError, prepared_meta, shard_name,
                                 split_files, text_files, write_shard)
from hyperp.trainer.defaults import DEFAULT_SHARD_TOKENS, MAX_VOCAB, MIN_VOCAB

EOT = "<|endoftext|>"
DEFAULT_VAL_PERCENT = RunConfig().val_percent  # the trainer's: the same files are held out as in a bytes run
TOKENIZER_FILE = "tokenizer.json"
SOURCES = "expected 'stdlib' or a directory of text files"
SPLIT_RULE = "validation when crc32(path relative to the source, UTF-8) % 10000 < val_percent * 100"
OUTPUT_NAME_RE = re.compile(rf"^({re.escape(PREPARED_META)}|{re.escape(TOKENIZER_FILE)}|"
                            rf"({'|'.join(SPLITS)})_\d{{6}}\.bin)$")

# progress(phase, bytes done, bytes in the phase), called after each file
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Source:
    spec: str  # as given: 'stdlib' or a directory
    root: Path
    val_percent: float
    files: dict[str, list[Path]]  # split -> files in sorted path order

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def all_files(self) -> list[Path]:
        """Every file of both splits, sorted by relative path (as a string)."""
        return sorted((f for split in SPLITS for f in self.files[split]), key=self.rel)


def open_source(spec: str, val_percent: float) -> Source:
    """The source's files split by data.py's rule; InputError naming SRC or --val-percent when unusable."""
    if not 0 < val_percent < 100:
        raise InputError(f"--val-percent: must be in (0, 100), got {val_percent}")
    root, files = text_files(spec, "SRC", SOURCES)
    if not files:
        raise DataError(f"SRC: {spec!r} holds no files ({SOURCES})")
    train, val = split_files(root, files, val_percent)
    if not train or not val:
        raise InputError(f"--val-percent: {val_percent} puts {len(val)} of the {len(files)} files of {spec!r} in "
                         "validation; each split needs at least one file")
    return Source(spec, root, val_percent, {"train": train, "val": val})


def check_out(out: Path, source: Source) -> None:
    """--out must be new, empty, or a previous output of this command (its meta.json and only its files)."""
    if out.resolve().is_relative_to(source.root.resolve()):
        raise InputError(f"--out: {out} is inside SRC {source.root}; its files would join the corpus")
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out: {out} is not a directory")
    names = sorted(os.listdir(out))
    foreign = [n for n in names if not (OUTPUT_NAME_RE.match(n) or io.STALE_TMP_RE.search(n))]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise InputError(f"--out: {out} holds {foreign[0]!r}{more}, so it is not an output of `hyperp data "
                         "prepare`; choose a new or empty directory")
    if any(OUTPUT_NAME_RE.match(n) for n in names):  # temp files alone: a run killed before its first write
        prepared_meta(out, "--out")


def read_text(path: Path) -> tuple[str, bool]:
    """A file's text and whether it was lossy (not UTF-8: bad bytes replaced by U+FFFD)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def tokenizers_module():
    try:
        import tokenizers  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise UnavailableError("tokenizers is not installed; pip install 'hyperp[data]'") from None
    return tokenizers


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer with `vocab_size` tokens (fewer if the texts run out of merges), EOT id 0."""
    tk = tokenizers_module()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def vocab_size_of(tokenizer) -> int:
    """Largest token id + 1 (the rows a model's embedding needs; ids of a given tokenizer may have gaps)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def load_tokenizer(path: Path):
    """A tokenizer.json, with EOT added as a special token when it lacks one; InputError naming --tokenizer."""
    tk = tokenizers_module()
    if not path.is_file():
        raise InputError(f"--tokenizer: {path} does not exist or is not a file")
    try:
        tokenizer = tk.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise InputError(f"--tokenizer: {path} is not a readable tokenizer.json ({e})") from None
    if tokenizer.token_to_id(EOT) is None:
        tokenizer.add_special_tokens([EOT])
    if vocab_size_of(tokenizer) > MAX_VOCAB:
        raise InputError(f"--tokenizer: {path} has token id {vocab_size_of(tokenizer) - 1}; uint16 shards hold "
                         f"ids below {MAX_VOCAB}")
    return tokenizer


def each_file(files: list[Path], progress: Progress, phase: str) -> Iterator[Path]:
    """The files one at a time, reporting the bytes done after each."""
    sizes = [f.stat().st_size for f in files]
    total, done = sum(sizes), 0
    for f, size in zip(files, sizes):
        yield f
        done += size
        progress(phase, done, total)


@dataclass
class ShardWriter:
    """Tokens of one split into `<split>_NNNNNN.bin` shards of `shard_tokens` tokens (the last may be shorter)."""

    out: Path
    split: str
    shard_tokens: int
    paths: list[Path] = field(default_factory=list)
    tokens: int = 0
    fill: int = 0

    def __post_init__(self):
        self.buffer = np.empty(self.shard_tokens, dtype=np.uint16)

    def add(self, ids: list[int]) -> None:
        arr = np.asarray(ids, dtype=np.uint16)
        while len(arr):
            take = min(len(arr), self.shard_tokens - self.fill)
            self.buffer[self.fill: self.fill + take] = arr[:take]
            self.fill += take
            arr = arr[take:]
            if self.fill == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.fill:
            path = write_shard(self.out / shard_name(self.split, len(self.paths)), self.buffer[: self.fill])
            self.paths.append(path)
            self.tokens += self.fill
            self.fill = 0


def encode_split(tokenizer, source: Source, split: str, writer: ShardWriter, progress: Progress) -> list[str]:
    """Encode a split's files into its shards, EOT before each; return the lossy files' relative paths."""
    eot, lossy = tokenizer.token_to_id(EOT), []
    for f in each_file(source.files[split], progress, f"encoding {split}"):
        text, is_lossy = read_text(f)
        writer.add([eot, *tokenizer.encode(text, add_special_tokens=False).ids])
        if is_lossy:
            lossy.append(source.rel(f))
    writer.flush()
    return lossy


def source_fingerprint(source: Source) -> str:
    """sha256 over every file in sorted relative-path order: its path, NUL, its size, NUL, its bytes."""
    digest = hashlib.sha256()
    for f in source.all_files():
        data = f.read_bytes()
        digest.update(f"{source.rel(f)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def remove_stale_shards(out: Path, keep: set[Path]) -> None:
    """Shards of a previous run beyond this run's count (a smaller corpus or larger shards)."""
    for split in SPLITS:
        for path in out.glob(f"{split}_*.bin"):
            if OUTPUT_NAME_RE.match(path.name) and path not in keep:
                path.unlink()


def no_progress(phase: str, done: int, total: int) -> None:
    pass


def check_options(vocab_size: int | None, tokenizer_file: Path | None, shard_tokens: int) -> None:
    if (vocab_size is None) == (tokenizer_file is None):
        raise InputError("--vocab-size: give --vocab-size (to train a tokenizer) or --tokenizer FILE, not both "
                         "or neither")
    if vocab_size is not None and not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise InputError(f"--vocab-size: {vocab_size} is outside [{MIN_VOCAB}, {MAX_VOCAB}] (256 bytes and "
                         f"{EOT} at least; ids must fit uint16)")
    if shard_tokens < 1:
        raise InputError(f"--shard-tokens: must be at least 1, got {shard_tokens}")


def get_tokenizer(source: Source, vocab_size: int | None, tokenizer_file: Path | None, progress: Progress):
    """The tokenizer of --tokenizer, or one trained on the source's training files."""
    if tokenizer_file is not None:
        return load_tokenizer(Path(tokenizer_file))
    texts = (read_text(f)[0] for f in each_file(source.files["train"], progress, "training tokenizer"))
    return train_tokenizer(texts, vocab_size)


def prepare(src: str, out: Path, vocab_size: int | None = None, tokenizer_file: Path | None = None,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, val_percent: float = DEFAULT_VAL_PERCENT,
            progress: Progress = no_progress) -> dict:
    """Tokenize `src` into `out` (see the module doc); return meta.json's content.

    Every input is checked before anything is written: a bad one raises InputError naming its option.
    """
    started = time.time()
    check_options(vocab_size, tokenizer_file, shard_tokens)
    source = open_source(src, val_percent)
    out = Path(out)
    check_out(out, source)
    tokenizer = get_tokenizer(source, vocab_size, tokenizer_file, progress)

    io.remove_stale_tmp(out, older_than=started)  # temp files of a killed earlier run
    io.write_json(out / PREPARED_META, {"format": PREPARED_FORMAT, "complete": False})
    writers = {split: ShardWriter(out, split, shard_tokens) for split in SPLITS}
    lossy = sorted(rel for split in SPLITS for rel in encode_split(tokenizer, source, split, writers[split], progress))
    tokenizer_bytes = tokenizer.to_str(pretty=True).encode()
    io.write_bytes(out / TOKENIZER_FILE, tokenizer_bytes)
    remove_stale_shards(out, {p for w in writers.values() for p in w.paths})
    meta = full_meta(source, tokenizer, tokenizer_file, tokenizer_bytes, writers, lossy)
    io.write_json(out / PREPARED_META, meta)
    return meta


def full_meta(source: Source, tokenizer, tokenizer_file: Path | None, tokenizer_bytes: bytes,
              writers: dict[str, ShardWriter], lossy: list[str]) -> dict:
    """meta.json of a finished run: a function of the source, the options and the outputs only (no time)."""
    return {
        "format": PREPARED_FORMAT,
        "complete": True,
        "hyperp_version": hyperp.__version__,
        "source": source.spec,
        "source_files": {split: len(source.files[split]) for split in SPLITS},
        "source_sha256": source_fingerprint(source),
        "split": {"rule": SPLIT_RULE, "val_percent": source.val_percent},
        "tokenizer": TOKENIZER_FILE,
        "tokenizer_sha256": hashlib.sha256(tokenizer_bytes).hexdigest(),
        "tokenizer_from": "trained" if tokenizer_file is None else str(tokenizer_file),
        "vocab_size": vocab_size_of(tokenizer),
        "eot": {"token": EOT, "id": tokenizer.token_to_id(EOT)},
        "dtype": "uint16",
        "shard_tokens": writers["train"].shard_tokens,
        "tokens": {split: writers[split].tokens for split in SPLITS},
        "shards": {split: [p.name for p in writers[split].paths] for split in SPLITS},
        "lossy_files": lossy,
    }
