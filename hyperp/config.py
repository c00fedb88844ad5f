"""The run configuration: one flat, typed, JSON/TOML-serialisable object per run.

Every knob of a run lives here, so a run is fully described by its `RunConfig` and nothing is parsed out of
run names. Fields are grouped (model, MoE, parameterization, optimizer, schedule, data, loop, hardware) but
kept flat so that sweep axes, CLI flags and ledger columns all share the same plain names (`depth`, `lr`, ...).
Derived quantities (width from depth, per-group learning rates, ...) are not stored here: they come from
`resolve()` below and `hyperp.trainer.hparams.resolve_hparams`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from hyperp.errors import InputError, close_match

Param = Literal["hyperp", "muonh", "muon", "adamw"]
PARAMS: tuple[str, ...] = get_args(Param)
NSCoeffs = Literal["per_iter", "quintic"]
NSBackend = Literal["auto", "torch", "triton"]
TokenScaling = Literal["all", "hidden"]
TokenRule = Literal["scheme", "on", "off"]
DepthLRGroups = Literal["all", "hidden"]
FusedKernels = Literal["auto", "on", "off"]

# Base learning rates for each scheme when `lr` is not given. For the sphere schemes eta is a relative step
# (the step's Frobenius norm is eta * radius); for Muon it is the spectral-scaled step; for AdamW the usual LR.
# They are starting points, not tuned optima: sweep `lr` on your proxy (results/README.md, study 1: at depth
# 2 and width 32 the optima sit near 0.025 for the sphere schemes and muon and 0.008 for adamw).
DEFAULT_LR: dict[str, float] = {"hyperp": 0.02, "muonh": 0.02, "muon": 0.02, "adamw": 3e-3}


# The SwiGLU hidden size is mlp_ratio * width rounded up to a multiple of this (matmul kernels run whole
# SIMD/tile blocks), and of top_k with MoE layers so that k experts add up to it (since RESULTS_VERSION 2).
MLP_MULTIPLE = 64


class ConfigError(InputError):
    """A configuration value is invalid. The message names the field and what was expected."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def opt(default: Any, help: str) -> Any:
    """A RunConfig field: its default and what it means (shown by `hyperp train --help` and the sweep docs)."""
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    # --- model (method.md section 1) ---
    depth: int = opt(4, "transformer blocks d")
    width: int = opt(0, "model width w; 0: aspect_ratio * depth")
    aspect_ratio: int = opt(32, "width per block (w = aspect_ratio * d) when width is 0")
    head_dim: int = opt(32, "attention head dimension (even, for rotary embeddings); heads = width / head_dim")
    n_kv_heads: int = opt(0, "key/value heads for grouped-query attention; 0: as many as query heads (no GQA)")
    seq_len: int = opt(256, "context length in tokens")
    vocab_size: int = opt(256, "vocabulary size (at least the data's largest token id + 1)")
    mlp_ratio: float = opt(4.0, "SwiGLU hidden size as a multiple of the width")
    attn_gate: bool = opt(False, "head-wise sigmoid output gate on attention")
    fused_gate_up: bool = opt(False, "SwiGLU gate and up projections as one (2h, w) matrix, one sphere and one "
                                     "Newton-Schulz for the optimizer (the authors' code); false: two matrices")
    rope_theta: float = opt(10000.0, "rotary embedding base")
    # --- mixture of experts (method.md section 5); moe_every = 0 means a dense model ---
    # Expert banks are (E, rows, cols) tensors; MuonH/AdamH keep each expert matrix on its own sphere
    # (per expert, not per bank) and Newton-Schulz runs per expert (hyperp/trainer/moe.py, optim.py).
    moe_every: int = opt(0, "MoE feed-forward in every n-th block (1: every block); 0: a dense model")
    sparsity: int = opt(1, "S: total routed experts = top_k * sparsity")
    top_k: int = opt(1, "k: granularity, active routed experts per token (each of hidden size 4w/k)")
    shared_expert: bool = opt(False, "one always-active expert; then top_k - 1 experts are routed")
    sqrt_gate: bool = opt(True, "SqrtGate: weight experts by sqrt(gate), keeping the output RMS independent of k")
    aux_gamma: float = opt(0.1, "weight gamma of the load-balancing loss")
    # --- parameterization (method.md section 2) ---
    param: Param = opt("hyperp", "parameterization and optimizer scheme (method.md section 2)")
    lr: float | None = opt(None, "base LR eta0 at the proxy shape; unset: the scheme's default (DEFAULT_LR)")
    base_depth: int = opt(4, "depth d0 of the proxy where lr was tuned")
    base_width: int = opt(128, "width w0 of the proxy (muon's logit multiplier and width ratio)")
    base_tokens: int = opt(2**20, "token budget T0 of the proxy")
    token_exponent: float = opt(0.32, "data-scaling exponent b of the optimal LR: hyperp scales it by (T/T0)^-b")
    token_scaling: TokenScaling = opt("all", "groups the (T/T0)^-b factor applies to: every group (all, the "
                                             "paper's code) or hidden matrices only")
    token_rule: TokenRule = opt("scheme", "whether the (T/T0)^-b LR factor applies: scheme (hyperp only, "
                                          "method.md section 2), on (any scheme: muonh as the authors' scripts "
                                          "run it), off")
    depth_lr_groups: DepthLRGroups = opt("all", "groups the depth-muP LR factor sqrt(d0/d) applies to: every "
                                                "group (all) or hidden matrices only")
    weight_decay: float = opt(0.1, "decoupled weight decay lambda for muon and adamw; the sphere schemes use none")
    adam_lr_mult: float = opt(1.0, "LR of the AdamW groups of Muon-type schemes relative to the matrix LR")
    # --- init ---
    head_init_std: float = opt(0.02, "std of the LM head's normal init")
    embed_init_std: float = opt(0.02, "std of the embedding's normal init")
    # --- optimizer (method.md section 3) ---
    momentum: float = opt(0.95, "Muon/MuonH momentum mu")
    nesterov: bool = opt(True, "Nesterov momentum for Muon/MuonH")
    ns_coeffs: NSCoeffs = opt("per_iter", "Newton-Schulz coefficients: per-iteration set or the fixed quintic")
    ns_steps: int = opt(5, "Newton-Schulz iterations")
    ns_backend: NSBackend = opt("auto", "Newton-Schulz implementation; auto: the Triton kernel on CUDA when "
                                        "available, else torch")
    adam_beta1: float = opt(0.9, "AdamW/AdamH beta1")
    adam_beta2: float = opt(0.95, "AdamW/AdamH beta2")
    adam_eps: float = opt(1e-8, "AdamW/AdamH epsilon")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this; 0 disables clipping")
    # --- schedule ---
    tokens: int = opt(2**20, "token budget T of the run")
    batch_tokens: int = opt(8192, "tokens per optimizer step (a multiple of seq_len)")
    warmup_tokens: int = opt(0, "linear LR warm-up, in tokens")
    min_lr_mult: float = opt(0.1, "the LR decays linearly to this multiple of the peak")
    # --- data ---
    data: str = opt("stdlib", "corpus: stdlib (Python's standard library source), a directory of text files, "
                              "or a .bin shard / glob of shards")
    val_percent: float = opt(2.0, "share of the corpus held out for validation (by file for text corpora)")
    val_tokens: int = opt(65536, "tokens in the fixed validation set")
    # --- loop ---
    seed: int = opt(0, "seed of the init and the data order")
    eval_every: int = opt(0, "validate every n steps; 0: 10 times per run")
    log_every: int = opt(1, "log the train loss to the curves every n steps")
    stats_every: int = opt(0, "stability indicators every n steps; 0: same as eval_every")
    checkpoint_every: int = opt(0, "checkpoint every n steps; 0: no periodic checkpoints")
    diverge_ratio: float = opt(1.5, "diverged when the train loss exceeds this multiple of the first step's loss")
    # --- hardware ---
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    threads: int = opt(0, "torch CPU threads; 0: leave torch's default")
    workers: int = opt(1, "data-parallel workers (Ray Train; gloo on CPU, NCCL on GPUs), each training on "
                          "1/workers of every global batch; threads and resources are per worker")
    compile: bool = opt(False, "torch.compile the model (CUDA, and CPU where it pays: +16% tokens/s measured on the default block)")
    fused_kernels: FusedKernels = opt("auto", "fused CPU kernels for QK-norm+RoPE, SwiGLU and the RMSNorm backward "
                                              "(Inductor, compiled once per shape; fp32 CPU only): auto (activations "
                                              "of >= 2^20 elements), on, off")
    peak_tflops: float = opt(0.0, "device peak TFLOP/s for MFU; 0: measure with a matmul probe")
    # --- bookkeeping ---
    name: str = opt("", "a label for the run (progress bar, ledger)")
    tags: dict[str, str] = field(default_factory=dict, metadata={"help": "free-form labels (TOML table only)"})

    # ---- derived shape ----
    @property
    def d_model(self) -> int:
        return self.width or self.aspect_ratio * self.depth

    @property
    def mlp_hidden(self) -> int:
        """Hidden size of the dense SwiGLU (the total over a token's routed experts in an MoE layer)."""
        multiple = math.lcm(MLP_MULTIPLE, self.top_k) if self.moe_every else MLP_MULTIPLE
        return -(-int(self.mlp_ratio * self.d_model) // multiple) * multiple

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def base_lr(self) -> float:
        return DEFAULT_LR[self.param] if self.lr is None else self.lr

    @property
    def batch_size(self) -> int:
        return self.batch_tokens // self.seq_len

    @property
    def total_steps(self) -> int:
        return self.tokens // self.batch_tokens

    @property
    def n_experts(self) -> int:
        return self.top_k * self.sparsity

    # ---- (de)serialisation ----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        """Build and validate a config; unknown keys and wrong types name the field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field in {source}{close_match(unknown[0], known)}; "
                                          f"known fields: {', '.join(sorted(known))}")
        cfg = cls(**{k: coerce(k, v) for k, v in data.items()})
        cfg.validate()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", f"file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config", f"{path} is not valid TOML: {e}") from e
        return cls.from_dict(data.get("run", data), source=str(path))

    def replace(self, **changes: Any) -> "RunConfig":
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for f in fields(self):
            coerce(f.name, getattr(self, f.name))  # type check of values set directly
        positive = ["depth", "aspect_ratio", "head_dim", "seq_len", "vocab_size", "sparsity", "top_k",
                    "base_depth", "base_width", "base_tokens", "tokens", "batch_tokens", "val_tokens",
                    "log_every", "ns_steps"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be a positive integer, got {getattr(self, name)}")
        nonneg = ["width", "n_kv_heads", "moe_every", "warmup_tokens", "eval_every", "stats_every",
                  "checkpoint_every", "threads", "grad_clip", "weight_decay", "aux_gamma", "peak_tflops"]
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr", f"must be a positive finite number, got {self.lr}")
        if self.d_model % self.head_dim:
            raise ConfigError("width", f"width {self.d_model} is not divisible by head_dim {self.head_dim}")
        if self.n_heads % self.kv_heads:
            raise ConfigError("n_kv_heads", f"{self.n_heads} query heads are not divisible by "
                                            f"n_kv_heads={self.kv_heads}")
        if self.head_dim % 2:
            raise ConfigError("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        if self.batch_tokens % self.seq_len:
            raise ConfigError("batch_tokens", f"{self.batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.tokens < self.batch_tokens:
            raise ConfigError("tokens", f"token budget {self.tokens} is smaller than one batch "
                                        f"(batch_tokens={self.batch_tokens})")
        if self.val_tokens < self.seq_len:
            raise ConfigError("val_tokens", f"must hold at least one sequence of seq_len={self.seq_len}")
        if not 0 <= self.min_lr_mult <= 1:
            raise ConfigError("min_lr_mult", f"must be in [0, 1], got {self.min_lr_mult}")
        if not 0 < self.val_percent < 100:
            raise ConfigError("val_percent", f"must be in (0, 100), got {self.val_percent}")
        if self.diverge_ratio <= 1:
            raise ConfigError("diverge_ratio", f"must be > 1, got {self.diverge_ratio}")
        if self.workers < 1 or self.batch_size % self.workers:
            raise ConfigError("workers", f"must be >= 1 and divide the {self.batch_size} sequences of a batch "
                                         f"(batch_tokens / seq_len), got {self.workers}")
        if self.moe_every:
            self._validate_moe()

    def _validate_moe(self) -> None:
        hidden = int(self.mlp_ratio * self.d_model)
        if hidden % self.top_k:
            raise ConfigError("top_k", f"MLP hidden size {hidden} (mlp_ratio * width) is not divisible by "
                                       f"top_k={self.top_k}")
        if self.shared_expert and self.top_k < 2:
            raise ConfigError("top_k", f"with shared_expert the shared expert takes one of the top_k={self.top_k} "
                                       f"active experts, so top_k must be >= 2 to leave one routed expert")
        routed_k = self.top_k - 1 if self.shared_expert else self.top_k
        routed_e = self.n_experts - 1 if self.shared_expert else self.n_experts
        if routed_k > routed_e:
            raise ConfigError("top_k", f"routes to {routed_k} experts but only {routed_e} routed experts exist")


@functools.cache
def field_types() -> dict[str, Any]:
    """RunConfig's field names and their (resolved) type hints."""
    return get_type_hints(RunConfig)


def integral(value: Any) -> Any:
    """An integer-valued float (1e6: how TOML, JSON and the command line may write a count) as an int; any other
    value unchanged."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def parse_count(text: str | int) -> int:
    """A count (tokens, steps, sizes) from the command line, read as a spec reads one: 1000000, 1_000_000 or
    1e6 (an integer-valued number), never negative. ValueError says what was expected."""
    value = integral(_number(text) if isinstance(text, str) else text)  # not text: an option's default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number such as 1000000, 1_000_000 or 1e6, got {text!r}")
    if value < 0:
        raise ValueError(f"expected a count >= 0, got {text!r}")
    return value


def _number(text: str) -> int | float | None:
    """The number a text spells (Python's syntax: 1000000, 1_000_000, 1e6, 1.5), or None."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def coerce(name: str, value: Any) -> Any:
    """Check `value` against the field's type, allowing int -> float; raise ConfigError naming the field."""
    hint = field_types()[name]
    args = get_args(hint)
    if hint is float or (float in args and value is not None):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        return float(value)
    if value is None and type(None) in args:
        return None
    if hint is int:
        value = integral(value)  # TOML/JSON may write 1e6 for a token count
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return value
    if args and all(isinstance(a, str) for a in args):  # a Literal
        if value not in args:
            raise ConfigError(name, f"unknown value {value!r}; expected one of {', '.join(args)}")
        return value
    if name == "tags":
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a table of strings, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    return value
