"""Reading and checking the tables the fits consume.

A table is a Parquet or CSV file, or a sweep directory holding `runs.parquet`, with the ledger's column
names (run_id, sweep, param, depth, width, n_params, n_params_active, tokens, batch_tokens, lr, sparsity,
top_k, seed, flops, val_loss, status). Other tables (the Chinchilla CSV) come in through a column mapping
{"Model Size": "n_params", ...}. Every problem with the input raises `FitInputError` naming the file or
column and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hyperp import io, schema
from hyperp.errors import FitInputError, did_you_mean
from hyperp.schema import COMPLETED, CURVES_FILE, DIVERGED, RUNS_FILE  # noqa: F401 (the ledger's names)

STATUS_COL = "status"


def load_table(path: str | Path, mapping: Mapping[str, str] | None = None,
               where: Mapping[str, str | Sequence[str]] | None = None, default_file: str = RUNS_FILE) -> pd.DataFrame:
    """Read a Parquet/CSV table or a sweep directory's `default_file`, rename columns, filter rows.

    Keys of an `extra_json` column become columns where no column has their name (`schema.expand_extra`).
    mapping renames source columns to ledger names; where keeps rows whose column equals the given value
    (compared as text, so `--where depth=4` works on an integer column).
    """
    path = Path(path)
    file = path / default_file if path.is_dir() else path
    if path.is_dir() and not file.exists():
        alt = file.with_suffix(".csv")
        if not alt.exists():
            raise FitInputError(f"{path}: directory has no {default_file} (nor {alt.name})")
        file = alt
    df = schema.expand_extra(read_file(file))  # a command sweep's values and results, as columns
    df = apply_mapping(df, mapping or {}, source=str(file))
    return filter_rows(df, where or {}, source=str(file))


def read_file(file: Path) -> pd.DataFrame:
    """Read one Parquet or CSV file."""
    if not file.exists():
        raise FitInputError(f"{file}: no such file")
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return io.read_parquet(file)  # one handle: safe beside a live sweep's atomic rewrites
        if suffix in (".csv", ".txt"):
            return pd.read_csv(file)
    except Exception as exc:  # a corrupt file: report it as an input problem, not a crash
        raise FitInputError(f"{file}: cannot read ({type(exc).__name__}: {exc})") from exc
    raise FitInputError(f"{file}: expected a .parquet or .csv file or a sweep directory")


def _pairs(items: Iterable[str], what: str, example: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key.strip() or not value.strip():
            raise FitInputError(f"{what} {item!r}: expected {example}")
        out.append((key.strip(), value.strip()))
    return out


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI mapping items "SOURCE=TARGET" into {SOURCE: TARGET} (a source given twice is an error)."""
    mapping: dict[str, str] = {}
    for src, dst in _pairs(items, "mapping", "SOURCE=TARGET, e.g. 'Model Size=n_params'"):
        if src in mapping:
            raise FitInputError(f"mapping: column {src!r} is renamed twice ({mapping[src]!r} and {dst!r})")
        mapping[src] = dst
    return mapping


def parse_where(items: Iterable[str]) -> dict[str, list[str]]:
    """Parse CLI filters "COL=VALUE" into {COL: [values]}: a column given twice keeps rows matching either."""
    where: dict[str, list[str]] = {}
    for col, value in _pairs(items, "filter", "COL=VALUE, e.g. param=hyperp"):
        where.setdefault(col, []).append(value)
    return where


def apply_mapping(df: pd.DataFrame, mapping: Mapping[str, str], source: str = "table") -> pd.DataFrame:
    """Rename columns; a target that already exists is replaced by the mapped column."""
    missing = [s for s in mapping if s not in df.columns]
    if missing:
        raise FitInputError(f"{source}: mapped column {missing[0]!r} not found; {did_you_mean(missing[0], df.columns)}")
    clash = [t for s, t in mapping.items() if t in df.columns and t not in mapping]
    return df.drop(columns=clash).rename(columns=dict(mapping))


def where_values(values: object) -> list:
    """A filter's values as a list: one value (a string, a number) or several (`parse_where`'s lists)."""
    return list(values) if isinstance(values, Iterable) and not isinstance(values, str) else [values]


def filter_rows(df: pd.DataFrame, where: Mapping[str, str | Sequence[str]], source: str = "table") -> pd.DataFrame:
    """Keep rows whose column equals the value (or one of the values), compared as text."""
    for col, values in where.items():
        require_columns(df, [col], source=source)
        keep = pd.Series(False, index=df.index)
        for value in where_values(values):
            keep |= _equals(df, col, str(value), source)
        df = df[keep]
    return df


def _equals(df: pd.DataFrame, col: str, value: str, source: str) -> pd.Series:
    keep = df[col].astype(str) == value
    if not keep.any():  # tolerate "4" matching 4.0
        try:
            keep = pd.to_numeric(df[col], errors="coerce") == float(value)
        except ValueError:
            pass
    if not keep.any():
        present = df[col].astype(str).unique()
        raise FitInputError(f"{source}: no rows with {col} == {value!r}; {did_you_mean(value, present)}")
    return keep


def require_columns(df: pd.DataFrame, columns: Sequence[str], source: str = "table") -> None:
    """Raise unless every column is present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FitInputError(f"{source}: missing column {missing[0]!r}; {did_you_mean(missing[0], df.columns)} "
                            "(or map one with --map 'SOURCE=TARGET', e.g. --map 'loss=val_loss')")


def numeric_column(df: pd.DataFrame, column: str, source: str = "table", positive: bool = False,
                   allow_nan: bool = True) -> np.ndarray:
    """A column as float64, with a clear error when it is missing, not numeric, or (optionally) <= 0."""
    require_columns(df, [column], source=source)
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        example = raw[bad].iloc[0]
        raise FitInputError(f"{source}: column {column!r} must be numeric; found {example!r}")
    out = values.to_numpy(dtype=float)
    if not allow_nan and np.isnan(out).any():
        raise FitInputError(f"{source}: column {column!r} has missing values")
    if positive:
        finite = out[np.isfinite(out)]
        if finite.size and finite.min() <= 0:
            raise FitInputError(f"{source}: column {column!r} must be > 0 (it is used on a log scale); "
                                f"found {finite.min():g}")
    return out


def status_masks(df: pd.DataFrame, all_status: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(fit, diverged) row masks: which rows may enter a fit, which are known-bad (diverged) runs.

    Without a status column every row is fitted. Diverged rows never enter a fit, even with all_status,
    which only admits the other non-completed statuses (e.g. a failed run that still logged a loss).
    """
    if STATUS_COL not in df.columns:
        n = len(df)
        return np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    status = df[STATUS_COL].astype(str).str.lower().to_numpy()
    diverged = status == DIVERGED
    fit = ~diverged if all_status else status == COMPLETED
    return fit, diverged


def fit_rows(df: pd.DataFrame, all_status: bool = False, source: str = "table") -> pd.DataFrame:
    """The rows that may enter a fit (completed, or all non-diverged with all_status)."""
    fit, _ = status_masks(df, all_status)
    if not fit.any():
        what = "non-diverged" if all_status else "completed"
        raise FitInputError(f"{source}: no {what} rows to fit (status column counts: "
                            f"{df[STATUS_COL].value_counts().to_dict()})")
    return df[fit]


def finite_losses(values: np.ndarray, column: str, source: str = "table") -> np.ndarray:
    """Mask of finite losses; an error when there is none at all."""
    ok = np.isfinite(values)
    if not ok.any():
        raise FitInputError(f"{source}: column {column!r} has no finite values (all NaN?)")
    return ok


def group_indices(df: pd.DataFrame, by: Sequence[str], source: str = "table") -> list[tuple[dict, np.ndarray]]:
    """(keys dict, positional row indices) per group of the `by` columns, in sorted key order.

    One group of all rows when by is empty. Positions index the frame's rows (use with .iloc or arrays).
    """
    require_columns(df, list(by), source=source)
    if not by:
        return [({}, np.arange(len(df)))]
    groups = df.groupby(list(by), sort=True, dropna=False).indices
    out = []
    for keys, idx in groups.items():
        keys = keys if isinstance(keys, tuple) else (keys,)
        out.append(({k: _plain(v) for k, v in zip(by, keys)}, np.asarray(idx)))
    return out


def _plain(value):
    """numpy scalars to Python scalars, so group keys print and serialize cleanly."""
    return value.item() if hasattr(value, "item") else value


def finite_pairs(a, b, names: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray]:
    """Flatten two equal-length sequences to float arrays and keep the pairs where both are finite."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size != b.size:
        raise FitInputError(f"{names[0]} and {names[1]} must have the same length (got {a.size} and {b.size})")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def finite_points(a, b, weights=None, names: tuple[str, str] = ("x", "y")):
    """`finite_pairs` with optional per-point weights: (a, b, w). A point is kept where both values are finite
    and its weight is > 0 (a weight of 0 leaves it out). Weights come back scaled to mean 1 (only relative
    weights matter), or None when absent or all equal: then the fit is the unweighted one, exactly."""
    if weights is None:
        return (*finite_pairs(a, b, names), None)
    a, b, w = (np.asarray(v, dtype=float).ravel() for v in (a, b, weights))
    if not a.size == b.size == w.size:
        raise FitInputError(f"{names[0]}, {names[1]} and weights must have the same length "
                            f"(got {a.size}, {b.size} and {w.size})")
    keep = np.isfinite(a) & np.isfinite(b)
    check_weights(w[keep])
    keep &= w > 0
    return a[keep], b[keep], relative_weights(w[keep])


def check_weights(w: np.ndarray) -> None:
    bad = ~(np.isfinite(w) & (w >= 0))
    if bad.any():
        raise FitInputError(f"weights must be finite and >= 0, found {w[bad][0]:g}")


def relative_weights(w: np.ndarray) -> np.ndarray | None:
    """Weights scaled to mean 1, or None when they are all equal (the unweighted fit)."""
    if w.size == 0 or np.all(w == w[0]):
        return None
    return w / w.mean()


def best_rows(df: pd.DataFrame, by: Sequence[str], loss: str = "val_loss", source: str = "table",
              lr_col: str = "lr", seed_col: str = "seed") -> pd.DataFrame:
    """The best LR of each group of `by` (the best LR of each model size, say): one completed row per group,
    rows without a finite loss never winning. Where the table has `lr_col` and `seed_col`, the loss of each
    (group, LR) is first the mean over its seeds (`n_seeds` says how many), so that a group's best loss is its
    best LR's mean and not its luckiest seed's."""
    require_columns(df, [loss, *by], source=source)
    done = fit_rows(df, source=source)
    done = done[np.isfinite(pd.to_numeric(done[loss], errors="coerce"))]
    return lowest(done, by, loss, lr_col, seed_col)


def several_lrs(df: pd.DataFrame, keys: Sequence[str], lr_col: str = "lr") -> bool:
    """Some group of `keys` holds runs at more than one learning rate: an LR sweep, not one point of a law."""
    return lr_col in df.columns and bool((df.groupby(list(keys), dropna=False)[lr_col].nunique() > 1).any())


def best_lr_note(point: str, flag: str) -> str:
    """What a law fit says when it kept the best LR of each point by default."""
    return (f"several learning rates at one {point}: fitted the best LR of each (seeds averaged), as {flag} "
            f"does; --every-lr fits every run instead")


def lowest(df: pd.DataFrame, by: Sequence[str], loss: str, lr_col: str | None = "lr",
           seed_col: str = "seed", also_mean: Sequence[str] = ()) -> pd.DataFrame:
    """The lowest-`loss` row of each group of `by`, averaging seeds at each (group, `lr_col`) first when both
    columns are present (and the `also_mean` columns with them); `df` holds only rows with a finite loss."""
    by = list(by)
    if lr_col and lr_col in df.columns and seed_col in df.columns and lr_col not in by:
        df = seed_mean(df, [*by, lr_col], loss, also_mean)
    return df.loc[df.groupby(by, dropna=False)[loss].idxmin()]


def seed_mean(df: pd.DataFrame, keys: Sequence[str], loss: str, also_mean: Sequence[str] = ()) -> pd.DataFrame:
    """One row per distinct `keys` (the other columns from its first row): `loss` (and each `also_mean`
    column) the mean over the rows that share the keys, the seeds of one cell, and `n_seeds` their number."""
    grouped = df.groupby(list(keys), dropna=False, sort=False)
    first = df.loc[grouped.head(1).index].set_index(list(keys))
    for col in (loss, *also_mean):
        first[col] = grouped[col].mean()
    first["n_seeds"] = grouped[loss].size()
    return first.reset_index()[df.columns.tolist() + (["n_seeds"] if "n_seeds" not in df.columns else [])]
