"""Run and cell identity: short hashes of the fully resolved config plus a code/data version tag.

- `run_id(cfg)`: first 12 hex digits of sha256 over "hyperp <__version__>|<version_tag>|<cfg.to_json()>".
  The same resolved config always gets the same id; any changed field (including loop settings such as
  `checkpoint_every`) gives a new id, and so does a new hyperp version or a new spec `version_tag`.
- `cell_id(cfg)`: the same hash over the config with `lr` removed, so every learning rate of one
  (model, data, budget, seed, ...) point shares a cell: the unit of an LR search and of a row in
  `hyperp sweep status`.
"""

from __future__ import annotations

import hashlib
import json

import hyperp
from hyperp.trainer.config import RunConfig

ID_HEX = 12


def version_tag(extra: str = "") -> str:
    return f"hyperp {hyperp.__version__}|{extra}"


def digest(text: str, tag: str = "") -> str:
    return hashlib.sha256(f"{version_tag(tag)}|{text}".encode()).hexdigest()[:ID_HEX]


def run_id(cfg: RunConfig, tag: str = "") -> str:
    return digest(cfg.to_json(), tag)


def cell_id(cfg: RunConfig, tag: str = "") -> str:
    d = cfg.to_dict()
    d.pop("lr", None)
    return digest(json.dumps(d, sort_keys=True), tag)
