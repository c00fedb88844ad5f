"""Token streams and batches.

Three sources, chosen by `RunConfig.data`:
- "stdlib" (the default corpus every machine has): the `.py` files of the running Python's standard library
  (under `sysconfig.get_path("stdlib")`, site-packages and dist-packages excluded), read as bytes
  (vocabulary 256) and concatenated in sorted path order. A file goes to validation when the CRC32 of its
  relative path falls in the first `val_percent` of the hash range: deterministic, and no file is split.
  The corpus differs between Python versions; `corpus_id` (stored with results) says which one was used.
- a directory: every regular file below it (bytes, sorted paths), split by file the same way.
- a prepared directory (one holding the `meta.json` of `hyperp data prepare`): its `train_*.bin` shards are
  training, its `val_*.bin` shards validation; `corpus_id` comes from the source and tokenizer hashes of
  meta.json, and the vocabulary from meta.json (at least; the shards are scanned as below).
- a `.bin` file or glob of them: uint16 tokens, raw or with the 256-int32 header of nanoGPT-style speedrun
  shards (magic 20240520), memory-mapped. With several shards the last is validation; with one, its tail.
  Every shard is scanned once for its largest token id (vectorised over the memory map, in chunks), so a
  token id >= `vocab_size` anywhere is refused before training, naming the shard.

`check_data(cfg)` loads (once per process) and checks a config's corpus: the sweep driver calls it for every
distinct data source of a plan before anything is written, the trainer before it builds the model.

Training batches are random windows drawn from a generator seeded by (seed, step), so the batch at a step
does not depend on what came before: a resumed run sees exactly the batches of an uninterrupted one.
Validation uses fixed, evenly spaced windows of the validation stream, the same for every run of a corpus.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import platform
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperp import io
from hyperp.errors import InputError
from hyperp.config import ConfigError, RunConfig
from hyperp.trainer.defaults import BYTE_VOCAB  # text corpora are read as bytes

STDLIB = "stdlib"
SHARD_MAGIC = 20240520
SHARD_VERSION = 1  # header[1] of a speedrun shard of uint16 tokens
SHARD_HEADER_INTS = 256
SCAN_CHUNK_TOKENS = 1 << 24  # tokens per step of the vocab scan of a shard (32 MiB of uint16)
EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
DATA_SOURCES = "expected 'stdlib', a directory of text files, a prepared directory, or .bin token shards"
# A prepared directory (written by `hyperp data prepare`, hyperp.trainer.prepare): meta.json marks it.
PREPARED_META = "meta.json"
PREPARED_FORMAT = "hyperp-prepared-1"  # meta.json's "format"
SPLITS = ("train", "val")
META_KEYS = ("vocab_size", "source_sha256", "tokenizer_sha256")  # what the trainer reads of meta.json


class DataError(InputError):
    """The data source is missing, empty or malformed. The message names the path."""


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # 1-D token array (uint8 or uint16; may be a memmap)
    val: np.ndarray
    corpus_id: str  # e.g. "stdlib:3.11.7:31525224"
    vocab_size: int  # largest token id + 1 (256 for bytes)
    vocab_source: str = ""  # the file holding the largest token id (shards), else the corpus


def is_val_file(rel_path: str, val_percent: float) -> bool:
    return zlib.crc32(rel_path.encode()) % 10_000 < val_percent * 100


def split_files(root: Path, files: list[Path], val_percent: float) -> tuple[list[Path], list[Path]]:
    """(train, validation) files, each in the order given: a file is validation by `is_val_file`."""
    train, val = [], []
    for f in files:
        (val if is_val_file(f.relative_to(root).as_posix(), val_percent) else train).append(f)
    return train, val


def read_files(root: Path, files: list[Path], val_percent: float, corpus_id: str) -> Corpus:
    train_files, val_files = split_files(root, files, val_percent)
    train = b"".join(f.read_bytes() for f in train_files)
    val = b"".join(f.read_bytes() for f in val_files)
    if not train or not val:
        raise DataError(f"data: corpus at {root} is empty or too small to split "
                        f"({len(train)} train bytes, {len(val)} validation bytes from {len(files)} files)")
    to_array = lambda b: np.frombuffer(b, dtype=np.uint8)  # noqa: E731
    return Corpus(to_array(train), to_array(val), f"{corpus_id}:{len(train) + len(val)}", BYTE_VOCAB, str(root))


def stdlib_files() -> tuple[Path, list[Path]]:
    """The stdlib's .py files outside EXCLUDED_DIRS, sorted. os.walk prunes the excluded trees instead of
    listing them (Path.rglob took 3.4 s of a tiny run's start on the 2-core CPU; this about a tenth)."""
    root = Path(sysconfig.get_path("stdlib"))
    files = []
    for here, dirs, names in os.walk(root):  # like rglob: symlinked directories are not followed
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        files += [Path(here, n) for n in names if n.endswith(".py") and n not in EXCLUDED_DIRS]
    return root, sorted(f for f in files if f.is_file())


def existing_dir(spec: str, field: str, expected: str) -> Path:
    """`spec` as a directory, or an InputError naming `field` when it is missing or a file."""
    root = Path(spec)
    if not root.exists():
        raise DataError(f"{field}: path {spec!r} does not exist ({expected})")
    if not root.is_dir():
        raise DataError(f"{field}: {spec!r} is not a directory ({expected})")
    return root


def dir_files(root: Path) -> list[Path]:
    """Every regular file below `root`, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def text_files(spec: str, field: str = "data", expected: str = DATA_SOURCES) -> tuple[Path, list[Path]]:
    """The root and sorted files of a text corpus: 'stdlib' or a directory."""
    if spec == STDLIB:
        return stdlib_files()
    root = existing_dir(spec, field, expected)
    return root, dir_files(root)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    """Write uint16 `tokens` as a speedrun shard (256-int32 header: magic, version, token count), atomically."""
    header = np.zeros(SHARD_HEADER_INTS, dtype=np.int32)
    header[:3] = SHARD_MAGIC, SHARD_VERSION, len(tokens)
    return io.write_bytes(path, header.tobytes() + np.asarray(tokens, dtype=np.uint16).tobytes())


def read_shard(path: Path) -> np.ndarray:
    """uint16 tokens of a shard: with a speedrun header when the first int32 is the magic, else raw."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"data: shard {path} is empty (0 bytes); expected uint16 tokens")
    if size >= SHARD_HEADER_INTS * 4:
        header = np.fromfile(path, dtype=np.int32, count=SHARD_HEADER_INTS)
        if header[0] == SHARD_MAGIC:
            n = int(header[2])
            expected = SHARD_HEADER_INTS * 4 + 2 * n
            if size < expected:
                raise DataError(f"data: shard {path} header says {n} tokens but the file holds "
                                f"{(size - SHARD_HEADER_INTS * 4) // 2}")
            if n <= 0:
                raise DataError(f"data: shard {path} header says it holds {n} tokens; expected at least one")
            return np.memmap(path, dtype=np.uint16, mode="r", offset=SHARD_HEADER_INTS * 4, shape=(n,))
    if size % 2:
        raise DataError(f"data: shard {path} has an odd byte count; expected uint16 tokens")
    return np.memmap(path, dtype=np.uint16, mode="r")


def max_token(tokens: np.ndarray) -> int:
    """The largest token id, scanning a memory map in chunks (bounded memory, vectorised per chunk)."""
    return max(int(tokens[i: i + SCAN_CHUNK_TOKENS].max()) for i in range(0, len(tokens), SCAN_CHUNK_TOKENS))


def largest_token(shards: list[np.ndarray], paths: list[Path]) -> tuple[int, str]:
    """The largest token id of the shards and the shard holding it."""
    return max((max_token(s), str(p)) for s, p in zip(shards, paths))


def joined(shards: list[np.ndarray]) -> np.ndarray:
    """One token stream: a single shard stays memory-mapped, several are concatenated."""
    return shards[0] if len(shards) == 1 else np.concatenate(shards)


def load_shards(paths: list[Path], val_percent: float, spec: str) -> Corpus:
    shards = [read_shard(p) for p in paths]
    top, source = largest_token(shards, paths)
    if len(shards) > 1:
        train, val = joined(shards[:-1]), shards[-1]
    else:
        cut = int(len(shards[0]) * (1 - val_percent / 100))
        train, val = shards[0][:cut], shards[0][cut:]
    return Corpus(train, val, f"shards:{spec}:{sum(len(s) for s in shards)}", top + 1, source)


def prepared_meta(root: Path, field: str = "data") -> dict:
    """The meta.json of a prepared directory (finished or not), or a DataError naming `field` and the file."""
    path = root / PREPARED_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{field}: {path} is not a readable meta.json of `hyperp data prepare` ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != PREPARED_FORMAT:
        raise DataError(f"{field}: {path} is not a meta.json of `hyperp data prepare` "
                        f"(expected \"format\": \"{PREPARED_FORMAT}\")")
    return meta


def read_meta(root: Path) -> dict:
    """The meta.json of a finished prepared directory, or a DataError naming it."""
    meta = prepared_meta(root)
    path = root / PREPARED_META
    if not meta.get("complete"):
        raise DataError(f"data: {path} marks an unfinished `hyperp data prepare` (interrupted?); run it again")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataError(f"data: {path} lacks {', '.join(missing)}; prepare the directory again")
    return meta


def split_shards(root: Path, split: str) -> list[Path]:
    paths = sorted(root.glob(f"{split}_*.bin"))
    if not paths:
        raise DataError(f"data: prepared directory {root} has no {split} shard ({shard_name(split, 0)}, ...)")
    return paths


def load_prepared(root: Path) -> Corpus:
    """A prepared directory: train_*.bin for training, val_*.bin for validation, vocabulary from meta.json."""
    meta = read_meta(root)
    paths = {split: split_shards(root, split) for split in SPLITS}
    shards = {split: [read_shard(p) for p in ps] for split, ps in paths.items()}
    top, source = largest_token(shards["train"] + shards["val"], paths["train"] + paths["val"])
    vocab = top + 1
    if meta["vocab_size"] > vocab:  # the model needs every id of the tokenizer, not only those in the shards
        vocab, source = meta["vocab_size"], f"the tokenizer of {root / PREPARED_META}"
    corpus_id = f"prepared:{meta['source_sha256'][:16]}:{meta['tokenizer_sha256'][:16]}"
    return Corpus(joined(shards["train"]), joined(shards["val"]), corpus_id, vocab, source)


@functools.lru_cache(maxsize=4)
def load_corpus(spec: str, val_percent: float) -> Corpus:
    """Resolve a `data` spec to train and validation token arrays (cached per process)."""
    if spec == STDLIB:
        root, files = stdlib_files()
        return read_files(root, files, val_percent, f"stdlib:{platform.python_version()}")
    if spec.endswith(".bin") or any(ch in spec for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec))
        if not paths:
            raise DataError(f"data: no shard matches {spec!r} (expected a .bin file or a glob of them)")
        return load_shards(paths, val_percent, spec)
    root = existing_dir(spec, "data", DATA_SOURCES)
    if (root / PREPARED_META).exists():
        return load_prepared(root)
    return read_files(root, dir_files(root), val_percent, f"dir:{root.resolve()}")


def check_corpus(corpus: Corpus, cfg: RunConfig) -> None:
    """The config fits the corpus: every token id below vocab_size, both streams longer than a window."""
    if corpus.vocab_size > cfg.vocab_size:
        raise ConfigError("vocab_size", f"{cfg.vocab_size} is too small for the data: {corpus.vocab_source} holds "
                                        f"token id {corpus.vocab_size - 1}; set vocab_size >= {corpus.vocab_size}")
    for split, arr in (("training", corpus.train), ("validation", corpus.val)):
        if len(arr) <= cfg.seq_len + 1:
            raise DataError(f"data: the {split} stream of {cfg.data!r} has {len(arr)} tokens, fewer than "
                            f"seq_len+1 = {cfg.seq_len + 1}")


def check_data(cfg: RunConfig) -> None:
    """Raise DataError/ConfigError when the config's corpus is missing, empty, or has ids >= vocab_size.

    The stdlib corpus (the running Python's own sources, bytes) is not loaded for this: its vocabulary is
    known and it is tens of megabytes long.
    """
    if cfg.data == STDLIB:
        if cfg.vocab_size < BYTE_VOCAB:
            raise ConfigError("vocab_size", f"{cfg.vocab_size} is too small for the stdlib corpus (bytes); "
                                            f"set vocab_size >= {BYTE_VOCAB}")
        return
    check_corpus(load_corpus(cfg.data, cfg.val_percent), cfg)


def window_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[s: s + seq_len + 1], dtype=np.int64) for s in starts])
    batch = torch.from_numpy(rows).to(device)
    return batch[:, :-1], batch[:, 1:]


def train_batch(corpus: Corpus, step: int, batch_size: int, seq_len: int, seed: int,
                device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of training step `step`: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(corpus.train) - seq_len - 1, size=batch_size)
    return window_batch(corpus.train, starts, seq_len, device)


def val_batches(corpus: Corpus, val_tokens: int, seq_len: int, batch_size: int,
                device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation windows, evenly spaced over the validation stream."""
    n_seq = max(1, val_tokens // seq_len)
    span = len(corpus.val) - seq_len - 1
    if span < 0:
        raise DataError(f"data: validation stream of {len(corpus.val)} tokens is shorter than seq_len+1")
    starts = np.linspace(0, span, n_seq).astype(np.int64)
    return [window_batch(corpus.val, starts[i: i + batch_size], seq_len, device)
            for i in range(0, n_seq, batch_size)]
