"""`hyperp report SWEEP... --fill FILE`: a report's tables written into the marked blocks of a Markdown file,
so that a hand-written study report (results/README.md) keeps its prose and takes its numbers from the ledgers.

A block is two marker lines, each on a line of its own:

    <!-- report: STUDY TABLE-ID -->
    (anything: replaced)
    <!-- /report -->

STUDY is a sweep's name as its report names it (the ledger's `sweep` column, else its directory's name) and
TABLE-ID one of the tables that study's report renders (TABLE_IDS; `hyperp report SWEEP -o DIR --json` lists each
sweep's under "tables"). Filling replaces what lies between the two marker lines with a blank line, the table as
the report's Markdown renders it (its caption in bold above it) and a blank line; every byte outside the blocks
is kept, so filling twice changes nothing. A marker that does not parse, a block left open or closed twice, an
unknown study or table id is one error naming the file and line, and the file is not written. A marker is any
line that starts with `<!-- report` or `<!-- /report` (code blocks included: write one mid-line to show it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.errors import InputError
from hyperp.report.doc import Table, markdown_table

# The ids a report gives its tables, each where the ledger supports that section ({axis}: each transfer axis
# among the cell columns, width, depth, tokens or top_k; {group}: a group of the other cell columns such as
# param=hyperp, several joined by commas).
TABLE_IDS: dict[str, str] = {
    "settings": "what varies among the runs, and each setting's role",
    "protocol": "the LR search of each planned cell",
    "verdicts": "every check's verdict and what decided it (the summary)",
    "supports": "every item the report covers or skips, with the reason",
    "runs": "the runs by status",
    "failed-runs": "each failed run with its first error line (only where a run failed)",
    "lr-optima": "each cell's LR optimum with its interval (hyperp fit lr by the cell columns)",
    "slopes:{axis}": "each group's drift of eta* along the axis, its local slopes and its verdict (check transfer)",
    "transfer:{axis}": "each group's optimum at every scale and the regret of the proxy's eta* there",
    "stability:{group}": "each indicator's stability verdict in a group (`stability` with no other cell column)",
    "head": "the head check's cells: cap, runs, largest final-norm gain",
    "head-best": "each cell's best LR: its loss, its final-norm gain, the cap and the cell's LR optimum",
    "compute-fits:per-size": "L(C) = A C^-b + E per method, each size at its own best LR",
    "compute-fits:transferred": "the same under the paper's protocol (the proxy's eta* at every size)",
    "cel:per-size": "the CEL of each method over the baseline at the baseline's runs, per-size tuning",
    "cel:transferred": "the same under the paper's protocol",
    "chinchilla:{method}": "a method's L(N, D) = E + A/N^alpha + B/D^beta with intervals",
}

OPEN = re.compile(r"<!--\s*report:\s*(?P<study>\S+)\s+(?P<table>\S+)\s*-->")
CLOSE = re.compile(r"<!--\s*/report\s*-->")
MARKER = re.compile(r"<!--\s*/?\s*report\b")  # a line meant as a marker, well formed or not


@dataclass(frozen=True)
class Slot:
    """One block of the file: its study and table id, the line numbers (1-based) of its two markers, and whether
    filling it changes it."""

    study: str
    table: str
    open_line: int
    close_line: int
    changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "table": self.table, "line": self.open_line, "changed": self.changed}


def read_slots(path: str | Path) -> tuple[str, list[Slot]]:
    """The file's text and its blocks; InputError for a file that cannot be read or markers that do not pair."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--fill {path}: no such file (the Markdown file whose report blocks to fill)")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--fill {path}: cannot read it as UTF-8 text ({e.__class__.__name__}: {e})") from None
    return text, _slots(text, path)


def _slots(text: str, path: Path) -> list[Slot]:
    slots: list[Slot] = []
    opened: tuple[int, str, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not MARKER.match(s):
            continue
        if m := OPEN.fullmatch(s):
            if opened:
                raise InputError(f"{path}:{n}: a report block opens inside the block opened on line {opened[0]} "
                                 f"(close that one with <!-- /report --> first)")
            opened = (n, m["study"], m["table"])
        elif CLOSE.fullmatch(s):
            if not opened:
                raise InputError(f"{path}:{n}: <!-- /report --> closes no block")
            slots.append(Slot(opened[1], opened[2], opened[0], n))
            opened = None
        else:
            raise InputError(f"{path}:{n}: not a report marker: {s!r} (expected <!-- report: STUDY TABLE-ID --> "
                             f"or <!-- /report -->)")
    if opened:
        raise InputError(f"{path}:{opened[0]}: the report block opened here is never closed (<!-- /report -->)")
    return slots


def check_slots(path: str | Path, slots: Sequence[Slot], studies: Sequence[str]) -> None:
    """InputError for a block whose study is none of `studies` (the sweeps given), before any work is done."""
    for s in slots:
        if s.study not in studies:
            raise InputError(f"{path}:{s.open_line}: no sweep named {s.study!r} among those given "
                             f"({', '.join(studies)})")


def fill_text(text: str, slots: Sequence[Slot], tables: Mapping[str, Mapping[str, Table]],
              path: str | Path = "-") -> tuple[str, list[Slot]]:
    """`text` with each block's content replaced by its table (`tables[study][id]`), and the blocks with whether
    each changed; InputError naming the first unknown study or table id."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    done: list[Slot] = []
    last = 0  # lines[:last] are copied or replaced already
    for s in slots:
        if s.study not in tables:
            raise InputError(f"{path}:{s.open_line}: no sweep named {s.study!r} among those given "
                             f"({', '.join(tables)})")
        known = tables[s.study]
        if s.table not in known:
            raise InputError(f"{path}:{s.open_line}: the report of {s.study} has no table {s.table!r} (its tables: "
                             f"{', '.join(known) or 'none'})")
        body = newline + markdown_table(known[s.table]).replace("\n", newline) + newline + newline
        old = "".join(lines[s.open_line:s.close_line - 1])
        out += [*lines[last:s.open_line], body]
        last = s.close_line - 1
        done.append(Slot(s.study, s.table, s.open_line, s.close_line, changed=old != body))
    out += lines[last:]
    return "".join(out), done


@dataclass(frozen=True)
class Filled:
    """What `fill_file` did: the file, its blocks (each with whether it changed) and whether it was written."""

    path: Path
    slots: tuple[Slot, ...]
    written: bool

    @property
    def changed(self) -> list[Slot]:
        return [s for s in self.slots if s.changed]

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "written": self.written, "blocks": [s.to_dict() for s in self.slots],
                "changed": len(self.changed)}


def fill_file(path: str | Path, tables: Mapping[str, Mapping[str, Table]], check: bool = False) -> Filled:
    """Fill the blocks of the Markdown file `path` from `tables` ({study: {table id: Table}}); written atomically
    only where something changed, and never under `check`. Bad markers or ids write nothing."""
    path = Path(path)
    text, slots = read_slots(path)
    new, done = fill_text(text, slots, tables, path)
    write = not check and new != text
    if write:
        io.write_bytes(path, new.encode("utf-8"))
    return Filled(path, tuple(done), write)


def check_target(path: str | Path, sweep_dirs: Sequence[Path]) -> None:
    """InputError for a --fill file inside a sweep directory (a report only reads sweeps)."""
    path = Path(path)
    resolved = path.resolve()
    for d in sweep_dirs:
        if Path(d).resolve() in resolved.parents:
            raise InputError(f"--fill {path}: inside the sweep directory {d}; a report never writes into a sweep")
