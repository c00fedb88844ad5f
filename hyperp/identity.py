"""Run and cell identity, and the provenance of the code that trained a run.

- `run_id(cfg, tag)`: the first 12 hex digits of sha256 over the canonical JSON of
  {"id_of": "run", "results_version": RESULTS_VERSION, "version_tag": tag, "config": <the fields that can
  change the run's result and differ from their default>}. So the same config always gets the same id, a field added with a
  default keeps every id, and neither the package version nor the git commit is hashed (they are the
  `code_version` and `git_commit` columns). What can still change a result without changing the config, a
  code change or a changed default, must bump RESULTS_VERSION; `version_tag` (a spec key) is the user's way
  to start afresh (new data under the same path).
- `cell_id(cfg, tag)`: the same hash without `lr` (and "id_of": "cell"): every learning rate of one (model, data, budget, seed, ...)
  point shares a cell, the unit of an LR search and of a row of `hyperp sweep status`.
- `command_run_id(template, values, tag)` / `command_cell_id`: the ids of a command sweep's runs
  (hyperp.sweeps.command); `run_id` and `cell_id` hand a CommandConfig to them.

This module is pure Python (it imports the config, never torch), so the trainer, the sweeps and the ledger
migration share it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hyperp
from hyperp.config import RunConfig

ID_HEX = 12  # hex digits of a run/cell id: 48 bits, collision-free for any realistic number of runs

# Bump whenever what a config trains to changes: the architecture, the optimizer math, the data order, the
# schedule, an initialisation, or the default of an existing field. Every id changes with it, so no sweep
# silently reuses runs trained by different code. tests/test_identity.py pins the final loss of a tiny run per
# scheme and the RunConfig defaults at this version, and fails (asking for a bump) when they move.
RESULTS_VERSION = 3

# What each bump changed, as a test on a config: True when the config trains to the same model under that
# version as under the one before (up to float rounding). A record trained by an older version whose config
# no later bump changed is carried over to the current ids by `hyperp.sweeps.ledger.migrate` instead of
# being trained again; any other is stale. A bump adds its entry here (a bump with no entry carries nothing).
UNCHANGED_BY: dict[int, Callable[[RunConfig], bool]] = {
    # 2: the SwiGLU hidden size is rounded up to a multiple of 64 (and of top_k with MoE)
    2: lambda cfg: cfg.mlp_hidden == int(cfg.mlp_ratio * cfg.d_model),
    # 3: `muon` no longer decays the LM head (the authors' no-decay group)
    3: lambda cfg: cfg.param != "muon" or cfg.weight_decay == 0,
}


def carries_over(cfg: RunConfig, trained_by: int) -> bool:
    """True when every bump after `trained_by` leaves what `cfg` trains to unchanged."""
    return all(v in UNCHANGED_BY and UNCHANGED_BY[v](cfg) for v in range(trained_by + 1, RESULTS_VERSION + 1))

# Fields that cannot change a run's result, left out of the hash. Those outside ROUNDING_NEUTRAL_FIELDS never
# touch the arithmetic, so the final losses are bit-identical whatever their value; those inside change only
# the order or fusion of float operations, so the losses agree up to float rounding (tests/test_identity.py
# checks each one, within a tolerance it derives from float32 rounding).
RESULT_NEUTRAL_FIELDS = (
    "name",  # a label; nothing reads it
    "log_every",  # how many training steps the curves keep; logging reads, never writes, the model
    "eval_every",  # validation (no_grad, eval mode, fixed batches) reads the model only; best_val_loss is
    #                the best over the evaluations made, a monitoring figure that depends on it
    "stats_every",  # the stability indicators are read from activations and weights, never fed back
    "checkpoint_every",  # a checkpoint saves state; resuming from one is bit-exact on CPU
    "peak_tflops",  # only the MFU denominator
    "threads",  # CPU threads change speed and the order of a kernel's partial sums, not the math
    "device",  # where a run lands (recorded as device_type/hardware): a sweep resumed on other hardware
    #            keeps its runs. CUDA trains in bf16 autocast, so CPU and GPU losses differ at that precision
    "ns_backend",  # the Triton and torch Newton-Schulz compute the same iteration (CUDA only)
    "compile",  # torch.compile fuses the same operations (CUDA only)
    "fused_kernels",  # the fused CPU kernels compute QK-norm, RoPE, SwiGLU and the RMSNorm backward as the
    #                  eager ops do
    "workers",  # data-parallel ranks split the same global batch and average their gradients: the same run up
    #             to the all-reduce's float rounding (so not bit-exact: tests/test_distributed.py bounds it),
    #             and a run resumes on another number of workers
)
# In RESULT_NEUTRAL_FIELDS, but equal only up to float rounding: no torch build promises bit-identical sums
# across thread counts, kernels, devices, compilers or all-reduces.
ROUNDING_NEUTRAL_FIELDS = ("threads", "device", "ns_backend", "compile", "fused_kernels", "workers")
# Not in the list: `tags` changes no trainer result but is the channel through which a custom run function
# gets its settings (hyperp.sweeps.stubs behaves by tag), so two tag sets are two runs.
CELL_EXCLUDED = ("lr",)  # a cell is a run minus its learning rate
COMMAND_KIND = "command"  # the `kind` of a command sweep's config JSON (hyperp.sweeps.command.CommandConfig)


@functools.cache
def config_defaults(cls: type[RunConfig] = RunConfig) -> dict[str, Any]:
    """The field defaults of a config class (default_factory fields called)."""
    return cls().to_dict()


def identity_fields(cfg: RunConfig, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields that make a run's identity: result-changing, not at their default, not in `exclude`."""
    return _identity_fields(cfg.to_dict(), config_defaults(type(cfg)), exclude)


def _identity_fields(values: dict[str, Any], defaults: dict[str, Any], exclude: tuple[str, ...] = ()) -> dict:
    skip = set(RESULT_NEUTRAL_FIELDS) | set(exclude)
    return {k: v for k, v in values.items() if k not in skip and (k not in defaults or v != defaults[k])}


def digest(fields: dict[str, Any], tag: str = "", kind: str = "run", version: int | None = None) -> str:
    return _sha({"id_of": kind, "results_version": RESULTS_VERSION if version is None else version,
                 "version_tag": tag, "config": fields})


def run_id(cfg: RunConfig, tag: str = "") -> str:
    if not isinstance(cfg, RunConfig):  # a command sweep's run (hyperp.sweeps.command) names itself
        return cfg.run_id(tag)
    return digest(identity_fields(cfg), tag)


def cell_id(cfg: RunConfig, tag: str = "") -> str:
    if not isinstance(cfg, RunConfig):
        return cfg.cell_id(tag)
    return digest(identity_fields(cfg, CELL_EXCLUDED), tag, "cell")


def _sha(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:ID_HEX]


def command_run_id(template: str, values: dict[str, Any], tag: str = "", cwd: str = "",
                   env: dict[str, str] | None = None, kind: str = "command-run") -> str:
    """The id of a command sweep's run: the same hash as `run_id` over {"id_of": "command-run", "version_tag",
    "template", "values", "cwd", "env"} (as written in the spec). No RESULTS_VERSION: the trainer's version
    cannot change what a command computes (`version_tag` can start afresh)."""
    return _sha({"id_of": kind, "version_tag": tag, "template": template, "values": values, "cwd": cwd,
                 "env": env or {}})


def command_cell_id(template: str, values: dict[str, Any], tag: str = "", cwd: str = "",
                    env: dict[str, str] | None = None) -> str:
    """The cell of a command run: its id without `lr`."""
    cell = {k: v for k, v in values.items() if k not in CELL_EXCLUDED}
    return command_run_id(template, cell, tag, cwd, env, kind="command-cell")


def run_id_of_json(config_json: Any, tag: str = "", version: int | None = None) -> str | None:
    """The run id of a record's `config_json` (as `RunConfig.to_json` wrote it), or None when it is not JSON of
    a config of this code, under the current RESULTS_VERSION or the given one. No validation (about 30x faster
    than building the config: a sweep checks every record this way on each `sweep run`); a field missing from
    the JSON takes its default."""
    try:
        values = json.loads(config_json) if isinstance(config_json, str) else None
    except ValueError:
        return None
    if isinstance(values, dict) and values.get("kind") == COMMAND_KIND:
        return command_run_id(values.get("template"), values.get("values"), tag, values.get("cwd", ""),
                              values.get("env"))
    defaults = config_defaults()
    if not isinstance(values, dict) or not set(values) <= set(defaults):
        return None
    return digest(_identity_fields(values, defaults), tag, version=version)


# ---------------------------------------------------------------- the ids before RESULTS_VERSION (schema 1)

LEGACY_VERSION = "0.1.0"  # the package version the shipped schema-1 ledgers hashed


def legacy_run_id(config_json: str, tag: str = "", version: str = LEGACY_VERSION) -> str:
    """The schema-1 id: sha256 over "hyperp <version>|<tag>|<full config JSON>" (for migration only)."""
    return hashlib.sha256(f"hyperp {version}|{tag}|{config_json}".encode()).hexdigest()[:ID_HEX]


# ---------------------------------------------------------------- provenance columns

GIT_TIMEOUT_S = 5  # a git that hangs (network filesystem) must not hold up a run


@functools.cache
def git_commit() -> str:
    """HEAD of the git checkout hyperp is imported from, or "" (installed from a wheel, no git, any error)."""
    package = Path(hyperp.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ""
    # only our own checkout: an installed copy inside some other repository must not report that one's HEAD
    if len(out) != 2 or Path(out[0]).resolve() != package.parent:
        return ""
    return out[1]


def code_columns() -> dict[str, Any]:
    """The provenance columns of a record written now."""
    return {"code_version": hyperp.__version__, "git_commit": git_commit(), "results_version": RESULTS_VERSION}

