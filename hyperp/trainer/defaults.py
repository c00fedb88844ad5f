"""Trainer constants that the CLI shows in `--help`, in a module that imports nothing, so that help loads
neither torch nor numpy. The trainer modules import them from here (one definition each)."""

from __future__ import annotations

BYTE_VOCAB = 256  # text corpora are read as bytes (hyperp.trainer.data)

# `hyperp data prepare` (hyperp.trainer.prepare)
MIN_VOCAB = BYTE_VOCAB + 1  # the 256 byte tokens and <|endoftext|>
MAX_VOCAB = 1 << 16  # token ids are stored as uint16
DEFAULT_SHARD_TOKENS = 1 << 24

# `hyperp bench train` (hyperp.trainer.bench)
MATCHED_MLP_RATIO = 8 / 3  # SwiGLU 3 w (8w/3) = GELU MLP 2 w (4w) weights
