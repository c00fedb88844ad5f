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

from hyperp import io


to_jsonable = io.jsonable  # numpy to Python, NaN and infinities to None (strict JSON)


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


BINARY_UNITS = ((1024**3, "G"), (1024**2, "M"), (1024, "k"))
DECIMAL_UNITS = ((1e6, "M"), (1e3, "k"))
SCIENTIFIC_FROM = 1e9  # at and beyond this (FLOPs), 1e18 reads better than a suffix


def readable(v) -> str:
    """A number as a person writes it: 131072 -> 128k and 2**20 -> 1M (token counts are often powers of two),
    250000 -> 250k, 6e18 -> 6e18, 0.0213 -> 0.0213; anything else as str()."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    x = float(v)
    if not np.isfinite(x) or x == 0:
        return f"{x:g}"
    whole = x.is_integer()
    for size, suffix in BINARY_UNITS:
        if whole and abs(x) >= size:
            if (x / size).is_integer():
                return f"{x / size:g}{suffix}"
            break
    if abs(x) >= SCIENTIFIC_FROM:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    for size, suffix in DECIMAL_UNITS:
        if whole and abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"
