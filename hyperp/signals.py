"""SIGTERM as an exception: what SLURM, systemd and `kill` send gets the cleanup Ctrl-C gets.

Inside `with StopSignals() as s:` (main thread only; elsewhere `signal.signal` raises and it does nothing),
SIGTERM raises KeyboardInterrupt and sets `s.terminated`, so the Ctrl-C cleanup runs (checkpoint, ledger
rewrite); a KeyboardInterrupt leaving the block after a SIGTERM becomes `hyperp.errors.Terminated`. It is a
KeyboardInterrupt while it travels because that is the one exception Ray's blocking calls (`ray.wait`,
`ray.get`) let a signal handler raise; anything else comes out of them as a SystemError. Code that catches
KeyboardInterrupt inside the block checks `s.terminated` to tell the two apart.

With `sigint=True`, SIGINT raises KeyboardInterrupt even where a non-interactive shell started the process
with SIGINT ignored. The previous handlers are restored on exit. `install()` may be called again to take the
handlers back from a library that set its own (`ray.init` installs a SIGTERM handler that exits at once).
"""

from __future__ import annotations

import signal
import threading

from hyperp.errors import Terminated


class StopSignals:
    def __init__(self, sigint: bool = False):
        self.wanted = {signal.SIGTERM: self._on_sigterm}
        if sigint:
            self.wanted[signal.SIGINT] = signal.default_int_handler
        self.previous: dict[int, object] = {}
        self.terminated = False

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        raise KeyboardInterrupt("SIGTERM")

    def error(self) -> Terminated:
        return Terminated("terminated by SIGTERM")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self.wanted.items():
            old = signal.signal(sig, handler)
            self.previous.setdefault(sig, old)  # the handler before the first install is what exit restores

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self.previous.clear()
        if self.terminated and exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            raise self.error() from None
