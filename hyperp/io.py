"""Atomic file writes: a temp file in the target's directory, fsync, then rename over the target.

A crash mid-write leaves either the old file or the new one, never a torn file, and concurrent writers of
different files in one directory never see each other's temp files. The file gets the permissions any new
file gets (0666 less the umask), not mkstemp's 0600. A full disk (ENOSPC, EDQUOT) raises UnavailableError
naming the file; a writer killed mid-write leaves its temp file (`.<name>.<random>.tmp`), which
`remove_stale_tmp` deletes later.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hyperp.errors import UnavailableError

TMP_SUFFIX = ".tmp"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = "No space left on device"  # pyarrow's OSError carries the text but no errno
NEW_FILE_MODE = 0o666  # what open() asks for; the umask takes its bits away
# Temp files of atomic_write (".<name>.<mkstemp's 8 random chars>.tmp") and of torch-style writers (*.pt.tmp).
STALE_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|\.pt\.tmp$")


@functools.cache
def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), else set and restored
    once (cached, so the brief window where another thread could create a file with umask 0 happens once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and (e.errno in DISK_FULL_ERRNOS or DISK_FULL_TEXT in str(e))


def disk_full_error(path: str | Path, e: OSError) -> UnavailableError:
    reason = os.strerror(e.errno) if e.errno in DISK_FULL_ERRNOS else DISK_FULL_TEXT
    return UnavailableError(f"{path}: disk full ({reason}); free space or raise the quota, then rerun")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and then rename tmp_path to `path` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, NEW_FILE_MODE & ~umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    return path


def read_parquet_table(path: str | Path):
    """A Parquet file as a pyarrow Table, read through one open handle.

    pyarrow's path readers (`pq.read_table(path)`, `pd.read_parquet(path)`) may open a file twice, so a
    concurrent `atomic_write` of it (a live sweep rewriting its ledger) can pair one version's footer with
    the next version's pages and fail; an open handle keeps reading the version it opened.
    """
    import pyarrow.parquet as pq  # noqa: PLC0415 (light modules import io)

    with open(path, "rb") as f:
        return pq.read_table(f)


def read_parquet(path: str | Path):
    """A Parquet file as a pandas frame, read through one open handle (see `read_parquet_table`)."""
    import pandas as pd  # noqa: PLC0415

    with open(path, "rb") as f:
        return pd.read_parquet(f)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | Path, default: Any = None) -> Any:
    """A JSON file's value, or `default` when the file is missing or unreadable (a writer's files are replaced
    atomically, so a reader sees the old file or the new one)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def containing(path: str | Path, dirs: Iterable[str | Path]) -> Path | None:
    """The first of `dirs` that is `path` or holds it (symlinks resolved), else None: where a command that
    only reads `dirs` must refuse to write (a report's or an export's output inside a sweep directory)."""
    target = Path(path).resolve()
    for d in dirs:
        if target == Path(d).resolve() or Path(d).resolve() in target.parents:
            return Path(d)
    return None


def write_parquet(path: str | Path, df) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


def remove_stale_tmp(directory: str | Path, older_than: float) -> list[Path]:
    """Delete temp files of killed writers in `directory` (not below it) last modified before `older_than`
    (a Unix time: the start of the process that cleans, so a live writer's file is never touched)."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not STALE_TMP_RE.search(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # gone already, or not ours to delete
    return removed


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values for strict JSON: NaN and infinities -> None, numpy scalars and arrays -> Python
    (duck-typed, so this module needs no numpy), paths -> str, pandas' missing values -> None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # a numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if type(obj).__name__ in ("NAType", "NaTType"):
        return None
    return str(obj)


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (through `jsonable`; allow_nan=False is the final guard: a NaN that slipped
    through raises). The one writer of the JSON that commands print and save."""
    return json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
