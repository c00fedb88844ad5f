"""Turning fit results into JSON and rich tables (the CLI's output; also handy from Python)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to Python and NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(obj: Any) -> str:
    """Strict JSON text of a result's to_dict()."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)


def fmt(value: Any, digits: int = 4) -> str:
    """A compact cell: floats to `digits` significant digits, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def fmt_interval(low: Any, high: Any, digits: int = 3) -> str:
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def make_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Group:
    """A bold title line above a rich table with the given header and (formattable) rows.

    The title is a separate line rather than the table's own title, which rich would wrap to the table width.
    """
    table = Table()
    for c in columns:
        table.add_column(c, justify="left" if c in ("method", "reason", "group", "param") else "right")
    for row in rows:
        table.add_row(*(fmt(v) if not isinstance(v, str) else v for v in row))
    return Group(Text(title, style="bold"), table)
