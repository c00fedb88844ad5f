"""SIGTERM as an exception: what SLURM, systemd and `kill` send gets the cleanup Ctrl-C gets.

`StopSignals` raises `hyperp.errors.Terminated` in the main thread on SIGTERM (and, with `sigint=True`,
KeyboardInterrupt on SIGINT even where a non-interactive shell started the process with SIGINT ignored),
so `except (KeyboardInterrupt, Terminated)` blocks checkpoint and rewrite the ledger before exiting.
The previous handlers are restored on exit. Outside the main thread (where `signal.signal` raises) it does
nothing. `install()` may be called again to take the handlers back from a library that set its own (Ray's
`ray.init` installs a SIGTERM handler that exits the process).
"""

from __future__ import annotations

import signal
import threading

from hyperp.errors import Terminated


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


class StopSignals:
    def __init__(self, sigint: bool = False):
        self.wanted = {signal.SIGTERM: _raise_terminated}
        if sigint:
            self.wanted[signal.SIGINT] = signal.default_int_handler
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self.wanted.items():
            old = signal.signal(sig, handler)
            self.previous.setdefault(sig, old)  # the handler before the first install is what exit restores

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self.previous.clear()
