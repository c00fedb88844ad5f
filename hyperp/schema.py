"""The ledger contract: every column of a run record with its type, the statuses, the file names.

One record per run, written by the trainer (`runs.parquet` in its output directory), completed by the sweep
driver (`<sweep>/runs/<run_id>/runs.parquet`) and gathered into `<sweep>/runs.parquet`. Every record written
has every column of `COLUMNS`, in that order, with its Arrow type (nullable: a value that does not apply is
null, and an integer column stays int64 when some rows are null), so a glob over the per-run records reads
as one table in pyarrow.dataset, polars or duckdb. Keys a custom run function returns beyond these columns
are kept as JSON in `extra_json`.

Column types are the plain names "str", "int", "float", "bool"; `arrow_schema()` maps them to Arrow (pyarrow
is imported there, not at import of this module, which the trainer's config-light paths share).
`SCHEMA_VERSION` is stored in every record written; records without it (schema 1) are read correctly
(`normalise`) and rewritten on disk only by `hyperp.sweeps.ledger.migrate`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, fields
from typing import Any, get_args

from hyperp.config import RunConfig, field_types
from hyperp.identity import COMMAND_KIND

# 1: no schema_version column, ids over the full config and the package version (hyperp 0.1.0)
# 2: every column typed, schema_version/results_version/git_commit/extra_json, ids of hyperp.identity
SCHEMA_VERSION = 2

# ---------------------------------------------------------------- statuses

COMPLETED, DIVERGED, FAILED, INFRA_FAILED = "completed", "diverged", "failed", "infra_failed"
STATUSES = (COMPLETED, DIVERGED, FAILED, INFRA_FAILED)

# ---------------------------------------------------------------- file names

RUNS_FILE = "runs.parquet"  # the trainer's one-row record, a sweep run's record, and the sweep's ledger
CURVES_FILE = "curves.parquet"  # the trainer's step curves
CONFIG_FILE = "config.json"
HPARAMS_FILE = "hparams.json"
CHECKPOINT_FILE = "checkpoint.pt"  # hyperp.trainer.checkpoint.CHECKPOINT
RUNS_DIR = "runs"  # <sweep>/runs/<run_id>/
ATTEMPT_FILE = "attempt.json"
ERROR_FILE = "error.txt"
SPEC_FILE = "spec.toml"
PLAN_FILE = "plan.json"
STATE_FILE = "state.json"
SEARCH_FILE = "searches.json"
OPTUNA_DB = "optuna.db"
LOCK_FILE = ".lock"
STOP_FILE = "stop.json"  # <sweep>/stop.json: `hyperp sweep stop` asks the driver holding the lock to stop
COMPILE_CACHE_DIR = "compile-cache"  # Inductor's caches of a sweep's compiled runs ([resources] compile_cache)
TRACKING_DIR = "tracking"  # <sweep>/tracking: the trackers' files of a spec's [tracking] (hyperp.tracking)

# ---------------------------------------------------------------- stability indicators

# What the trainer logs per stats step in the curves (averaged over layers) and summarises per run as
# <name>_final and <name>_max (method.md section 6). router_z and maxvio exist for MoE models only.
STABILITY_INDICATORS = ("attn_z", "router_z", "rms_attn", "rms_mlp", "outlier_attn", "outlier_mlp",
                        "update_rel", "radius_drift", "maxvio", "final_norm_gain")
# Per-step columns of every curves row (val_loss at validation steps only), before the indicators.
CURVE_COLUMNS = ("run_id", "step", "tokens", "train_loss", "lr_mult", "grad_norm", "val_loss")

# ---------------------------------------------------------------- columns

STR, INT, FLOAT, BOOL = "str", "int", "float", "bool"

# First in every record: the names the fitter reads, then what a status table shows.
KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", STR), ("sweep", STR), ("param", STR), ("depth", INT), ("width", INT), ("n_params", INT),
    ("n_params_active", INT), ("tokens", INT), ("batch_tokens", INT), ("lr", FLOAT), ("sparsity", INT),
    ("top_k", INT), ("seed", INT), ("flops", FLOAT), ("val_loss", FLOAT), ("status", STR), ("cell_id", STR),
    ("lr_search", STR), ("tokens_per_param", FLOAT), ("best_val_loss", FLOAT), ("train_loss", FLOAT),
    ("error", STR), ("attempts", INT), ("wall_time_s", FLOAT), ("elapsed_s", FLOAT), ("tokens_per_s", FLOAT),
    ("hardware", STR), ("host", STR), ("started_at", FLOAT), ("finished_at", FLOAT),
)
# After the config fields: sizes, resolved hyperparameters, progress, cost (the trainer's), then provenance.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("n_heads", INT), ("n_params_non_embedding", INT), ("n_params_active_matrix", INT), ("flops_planned", FLOAT),
    ("lr_hidden", FLOAT), ("lr_head", FLOAT), ("lr_embed", FLOAT), ("lr_vector", FLOAT), ("wd_hidden", FLOAT),
    ("residual_alpha", FLOAT), ("logit_mult", FLOAT), ("depth_factor", FLOAT), ("token_factor", FLOAT),
    ("steps", INT), ("tokens_trained", INT), ("diverged_step", INT), ("resumed_step", INT), ("ns_flops", FLOAT),
    ("opt_time_s", FLOAT), ("warmup_s", FLOAT), ("mfu", FLOAT), ("peak_flops", FLOAT), ("device_type", STR),
    *((f"{name}_{stat}", FLOAT) for name in STABILITY_INDICATORS for stat in ("final", "max")),
)
PROVENANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("code_version", STR), ("git_commit", STR), ("results_version", INT), ("schema_version", INT),
    ("config_json", STR), ("extra_json", STR),
)


def _config_type(name: str) -> str:
    hint = field_types()[name]
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    if base is bool:
        return BOOL
    if base is int:
        return INT
    if base is float:
        return FLOAT
    return STR  # str, a Literal of strings, and tags (written as "k=v,k=v")


def _columns() -> tuple[tuple[str, str], ...]:
    first = dict(KEY_COLUMNS)
    config = tuple((f.name, _config_type(f.name)) for f in fields(RunConfig) if f.name not in first)
    return KEY_COLUMNS + config + RESULT_COLUMNS + PROVENANCE_COLUMNS


COLUMNS: tuple[tuple[str, str], ...] = _columns()  # (name, type) of every column, in file order
COLUMN_TYPES: dict[str, str] = dict(COLUMNS)
COLUMN_NAMES: tuple[str, ...] = tuple(COLUMN_TYPES)
assert len(COLUMN_NAMES) == len(COLUMNS), "a column is listed twice"


def tags_text(tags: dict[str, str]) -> str:
    """The `tags` column: "k=v,k=v" sorted by key."""
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def config_columns(cfg: RunConfig) -> dict[str, Any]:
    """A config's columns: every field under its own name (`width` the resolved d_model, `lr` the resolved
    base lr), `tags` as text, and `config_json`. A config that is no RunConfig (a command sweep's) gives its
    own (`cfg.config_columns()`)."""
    if not isinstance(cfg, RunConfig):
        return cfg.config_columns()
    return cfg.to_dict() | {"width": cfg.d_model, "lr": cfg.base_lr, "tags": tags_text(cfg.tags),
                            "config_json": cfg.to_json()}


# ---------------------------------------------------------------- the trainer's record


@dataclass(frozen=True)
class TrainedRun:
    """What the trainer measured of one run, as plain values; `trainer_record` makes it a ledger row."""

    run_id: str
    cell_id: str
    hparams: dict[str, Any]  # the resolved hyperparameters as hparams.json holds them (ResolvedHParams.to_dict)
    params: dict[str, int]  # parameter counts: total, non_embedding, active, active_matrix (ParamCounts)
    steps: int  # steps trained, a resumed run's earlier steps included
    diverged_step: int  # -1: did not diverge
    resumed_step: int  # -1: trained from scratch in this call
    curves: list[dict[str, Any]]  # the step curves' rows (CURVE_COLUMNS and the indicators), in step order
    train_time: float  # seconds in training steps (eval excluded)
    opt_time: float  # seconds in optimizer steps
    warmup_time: float  # seconds the first steps took beyond the steady step time (hyperp.trainer.loop)
    flops_per_token: float  # training FLOPs per token (method.md section 7)
    ns_flops_per_step: float  # Newton-Schulz FLOPs of one optimizer step
    peak_flops: float  # the machine's matmul peak, FLOP/s
    hardware: str
    device_type: str  # cpu or cuda
    provenance: dict[str, Any]  # code_version, git_commit, results_version (hyperp.identity.code_columns)


def _logged(curves: list[dict[str, Any]], name: str) -> list[float]:
    """The values of one curve column over the rows that logged it."""
    return [r[name] for r in curves if not is_null(r.get(name))]


def stability_summary(curves: list[dict[str, Any]]) -> dict[str, float]:
    """<indicator>_final and <indicator>_max of each stability indicator over the run (NaN when not logged)."""
    out = {}
    for name in STABILITY_INDICATORS:
        values = _logged(curves, name)
        out[f"{name}_final"] = float(values[-1]) if values else math.nan
        out[f"{name}_max"] = float(max(values)) if values else math.nan
    return out


def trainer_record(cfg: RunConfig, run: TrainedRun) -> dict[str, Any]:
    """The record the trainer writes for `cfg` (runs.parquet in its output directory)."""
    hp, n = run.hparams, run.params
    trained = run.steps * cfg.batch_tokens
    tokens_per_s = trained / max(run.train_time, 1e-9)
    status = DIVERGED if run.diverged_step >= 0 else COMPLETED
    val = _logged(run.curves, "val_loss")
    return config_columns(cfg) | {
        "run_id": run.run_id, "cell_id": run.cell_id, "n_heads": cfg.n_heads, "lr": hp["base_lr"],
        "lr_hidden": hp["hidden"]["lr"], "lr_head": hp["head"]["lr"], "lr_embed": hp["embed"]["lr"],
        "lr_vector": hp["vector"]["lr"], "wd_hidden": hp["hidden"]["weight_decay"],
        "residual_alpha": hp["residual_alpha"], "logit_mult": hp["logit_mult"], "depth_factor": hp["depth_factor"],
        "token_factor": hp["token_factor"],
        "status": status, "steps": run.steps, "tokens_trained": trained, "diverged_step": run.diverged_step,
        "train_loss": float(run.curves[-1]["train_loss"]) if run.curves else math.nan,
        "val_loss": float(val[-1]) if status == COMPLETED and val else math.nan,
        "best_val_loss": float(min(val)) if val else math.nan,
        "n_params": n["total"], "n_params_non_embedding": n["non_embedding"], "n_params_active": n["active"],
        "n_params_active_matrix": n["active_matrix"],
        "flops": run.flops_per_token * trained, "ns_flops": run.ns_flops_per_step * run.steps,
        "wall_time_s": run.train_time, "opt_time_s": run.opt_time, "tokens_per_s": tokens_per_s,
        "warmup_s": run.warmup_time,
        "mfu": run.flops_per_token * tokens_per_s / run.peak_flops, "peak_flops": run.peak_flops,
        "hardware": run.hardware, "device_type": run.device_type,
        "error": "",
    } | run.provenance | stability_summary(run.curves) | {"resumed_step": run.resumed_step}


# ---------------------------------------------------------------- normalisation


def is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def coerce(name: str, kind: str, v: Any) -> Any:
    """One value to its column's type; None for a missing value (NaN for a float). ValueError names the column."""
    if kind == FLOAT:
        if v is None or isinstance(v, (str, bool)):
            if v is None:
                return math.nan
            raise ValueError(f"column {name}: expected a number, got {v!r}")
        return float(v)
    if is_null(v):
        return None
    if kind == STR:
        return tags_text(v) if isinstance(v, dict) else str(v)
    if kind == BOOL:
        if isinstance(v, str) or float(v) not in (0.0, 1.0):
            raise ValueError(f"column {name}: expected true or false, got {v!r}")
        return bool(v)
    if isinstance(v, str) or float(v) != int(v):  # INT: an integral float from a permissive concat is fine
        raise ValueError(f"column {name}: expected an integer, got {v!r}")
    return int(v)


def _plain(v: Any) -> Any:
    """A JSON-safe value for extra_json (NaN -> null, numpy scalars -> Python)."""
    v = v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


@functools.cache
def _config_defaults() -> dict[str, Any]:
    return {name: value for name, value in RunConfig().to_dict().items() if name in COLUMN_TYPES}


def _added_config_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The config columns a trainer run's record predates (a field added after it was written): the value its
    config_json gives, else the field's default, which is what the run trained with (a field is added with a
    default that keeps what every earlier config trains to: hyperp.identity). Empty for a command sweep's run."""
    missing = [name for name in _config_defaults() if name not in record]
    text = record.get("config_json")
    if not missing or not isinstance(text, str) or not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(config, dict) or config.get("kind") == COMMAND_KIND:
        return {}
    return {name: config.get(name, _config_defaults()[name]) for name in missing}


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every column, in order, each value of its column's type (missing: None, or NaN for a
    float; a config column an older trainer record lacks: its config's value, `_added_config_fields`); keys
    outside the schema are merged into `extra_json`. `schema_version` is kept as given (None for a schema-1
    record): writers stamp it (`to_table(..., stamp=True)`)."""
    record = record | _added_config_fields(record)
    out = {name: coerce(name, kind, record.get(name)) for name, kind in COLUMNS}
    extra = {k: _plain(v) for k, v in record.items() if k not in COLUMN_TYPES}
    if extra:
        known = json.loads(out["extra_json"]) if out["extra_json"] else {}
        out["extra_json"] = json.dumps(known | extra, sort_keys=True, default=str)
    return out


@functools.cache
def arrow_schema():
    """The Arrow schema of a record (pyarrow imported here)."""
    import pyarrow as pa  # noqa: PLC0415

    types = {STR: pa.string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS])


def to_table(records: list[dict[str, Any]], stamp: bool = False):
    """An Arrow table of the records with exactly `arrow_schema()`; a NaN float is stored as null.
    With `stamp`, records get `schema_version = SCHEMA_VERSION` (a record written now follows this schema)."""
    import pyarrow as pa  # noqa: PLC0415

    rows = []
    for r in records:
        n = normalise(r)
        if stamp:
            n["schema_version"] = SCHEMA_VERSION
        rows.append({k: None if is_null(v) else v for k, v in n.items()})
    return pa.Table.from_pylist(rows, schema=arrow_schema())


def write_records(path, records: list[dict[str, Any]]):
    """Records as a Parquet file of exactly `arrow_schema()`, stamped with SCHEMA_VERSION, atomically."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    from hyperp import io  # noqa: PLC0415

    table = to_table(records, stamp=True)
    return io.atomic_write(path, lambda p: pq.write_table(table, p))


def to_frame(records: list[dict[str, Any]]):
    """A pandas frame of the records with the schema's dtypes: nullable Int64 and boolean, str, float64."""
    import pandas as pd  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return to_table(records).to_pandas(types_mapper=nullable.get)


def expand_extra(df):
    """A frame of records with each key of its `extra_json` column as a column of its own, where the frame has
    no column of that name (the swept values and results of a command sweep, a custom run function's keys);
    rows without the key get a missing value. The one place that does it: `hyperp.fitting.table.load_table`
    and `hyperp.sweeps.ledger.read_ledger` call it, so `fit lr --by width` sees a command sweep's width."""
    if "extra_json" not in df.columns or not df["extra_json"].notna().any():
        return df
    import pandas as pd  # noqa: PLC0415

    extra = pd.DataFrame([json.loads(t) if isinstance(t, str) and t else {} for t in df["extra_json"]],
                         index=df.index)
    new = [c for c in extra.columns if c not in df.columns]
    return pd.concat([df, extra[new]], axis=1) if new else df


FLOAT_COLUMNS = tuple(name for name, kind in COLUMNS if kind == FLOAT)


def read_rows(table) -> list[dict[str, Any]]:
    """Normalised records of an Arrow table of any (older) schema: missing columns null, types coerced.
    A table of the current schema only needs its null floats read as NaN (the fast path)."""
    rows = table.to_pylist()
    if not table.schema.equals(arrow_schema()):
        return [normalise(r) for r in rows]
    for r in rows:
        for name in FLOAT_COLUMNS:
            if r[name] is None:
                r[name] = math.nan
    return rows
