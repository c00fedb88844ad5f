"""`hyperp sweep stop`: ask a sweep's running driver, from another terminal or host, to stop as Ctrl-C stops it.

The request is a file, <sweep>/stop.json, addressed to the driver that holds the sweep's lock (its pid, host and
the time it took the lock, from the lock file: `ledger.lock_owner`). The driver looks for it on every poll of its
loop, so the request works from any host that sees the sweep directory, and stops as on Ctrl-C: the runs in
flight checkpoint, the ledger is rewritten, state.json says interrupted, exit 130; `sweep run` resumes. On the
driver's own host it is also sent SIGINT, which stops it at once, even while it is still starting Ray.

A request names the driver by the time it took the lock too, so a request left for an earlier driver never
matches a later one (`is_for`) and a starting driver need not remove it: removing it there could delete a
request written for the new driver between the read and the unlink. A driver removes whatever request is
there when it ends, while it still holds the lock (then every request is for it or for a driver gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from hyperp import io
from hyperp.errors import UnavailableError
from hyperp.schema import STOP_FILE
from hyperp.sweeps.ledger import is_running, lock_owner

STOP_SIGNAL = signal.SIGINT  # what Ctrl-C sends: the driver exits 130 whether the signal or the file stops it


def request_stop(sweep_dir: Path) -> dict[str, Any]:
    """Ask the driver holding the sweep's lock to stop: write the request, and signal the driver when it runs on
    this host. Returns what was done: `asked` (False when no driver is running), the driver's pid and host, the
    request `file` (None when it could not be written but the signal was sent), `signalled`. UnavailableError
    when neither reaches the driver."""
    owner = running_owner(sweep_dir)
    out = {"dir": str(sweep_dir), "asked": owner is not None, "pid": None, "host": None, "file": None,
           "signalled": False}
    if owner is None:
        return out
    path, error = sweep_dir / STOP_FILE, ""
    try:
        io.write_json(path, owner | {"requested_at": time.time(),
                                     "requested_by": f"{os.getpid()}@{socket.gethostname()}"})
    except OSError as e:  # not ours to write: the signal may still reach the driver
        error = e.strerror or str(e)
    signalled = owner["host"] == socket.gethostname() and send_stop(sweep_dir, owner)
    if error and not signalled:
        raise UnavailableError(f"{path}: cannot write the stop request ({error}), and the driver (pid {owner['pid']} "
                               f"on {owner['host'] or '?'}) cannot be signalled from here")
    return out | {"pid": owner["pid"], "host": owner["host"], "file": None if error else str(path),
                  "signalled": signalled}


def running_owner(sweep_dir: Path, wait_s: float = 1.0) -> dict[str, Any] | None:
    """The driver holding the sweep's lock, or None when none does (a driver that took the lock a moment ago may
    not have named itself in the lock file yet: waited for up to `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while is_running(sweep_dir):
        owner = lock_owner(sweep_dir)
        if owner is not None or time.monotonic() > deadline:
            return owner
        time.sleep(0.05)
    return None


def holds_lock(sweep_dir: Path, owner: dict[str, Any]) -> bool:
    """`owner` still holds the sweep's lock: the lock is held (a non-blocking flock probe fails) and the lock file
    still names `owner` (a driver that has exited, cleanly or not, may have left its pid there for reuse)."""
    return is_running(sweep_dir) and lock_owner(sweep_dir) == owner


def send_stop(sweep_dir: Path, owner: dict[str, Any]) -> bool:
    """SIGINT to the driver's process; False when it no longer holds the lock (its pid may be another process's
    by now), is gone, or is not ours to signal."""
    if not holds_lock(sweep_dir, owner):
        return False
    try:
        os.kill(owner["pid"], STOP_SIGNAL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def is_for(request: Any, owner: dict[str, Any] | None) -> bool:
    """A stop request addressed to the lock holder `owner` (pid, host and the time it took the lock)."""
    return isinstance(request, dict) and owner is not None and all(request.get(k) == owner[k]
                                                                   for k in ("pid", "host", "since"))


def stop_requested(sweep_dir: Path, owner: dict[str, Any] | None) -> bool:
    """True when the sweep holds a stop request for `owner` (a driver checks on every poll: one stat when none)."""
    path = sweep_dir / STOP_FILE
    return path.exists() and is_for(io.read_json(path), owner)


def clear_stop(sweep_dir: Path) -> None:
    """Remove the sweep's stop request: only by a driver that ends and still holds the lock, so the request is
    for it (handled) or for a driver gone (stale), never one for a later driver (see the module doc)."""
    with contextlib.suppress(FileNotFoundError):
        (sweep_dir / STOP_FILE).unlink()


def wait_stopped(sweep_dir: Path, poll_s: float = 0.2) -> None:
    """Return once no driver holds the sweep's lock."""
    while is_running(sweep_dir):
        time.sleep(poll_s)
