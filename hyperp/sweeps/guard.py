"""`python guard.py COMMAND [ARGS...]`: a command sweep's command, kept from outliving the worker that started it.

The worker (hyperp.sweeps.command.run_process) starts this guard in a session of its own; the guard starts the
command in that session and asks the kernel (Linux, prctl PR_SET_PDEATHSIG) to send the guard SIGTERM when the
worker dies, also by SIGKILL, where no code of the worker runs: it then kills the session's whole process
group, the command's own children included. Ray kills a dying worker's children itself, with SIGKILL, which the
guard cannot catch: so the command asks for SIGKILL when the guard dies, and a watcher (a fork of the guard,
asleep in the same group) asks for SIGTERM then and kills the group, the command's own children included. The
watcher does so too when the guard ends normally: nothing a run started outlives it. The command's exit status
is passed on, a death by a signal as a death by the same signal. Elsewhere than Linux the guard only passes the
command through.

Run as a file, not as `-m hyperp...`: it imports the standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
NOT_STARTED = 127  # the shell's status for a command that cannot be run


def kill_group(*_) -> None:
    os.killpg(0, signal.SIGKILL)  # this guard, the command and whatever it started


def on_parent_death(sig: int) -> None:
    """Ask the kernel for `sig` when this process's parent dies (Linux; nothing elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def die_with_parent(parent: int) -> None:
    """SIGTERM (-> kill_group) when the parent dies; at once if it already has."""
    signal.signal(signal.SIGTERM, kill_group)
    on_parent_death(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        kill_group()


def command_dies_with_guard(guard: int) -> None:
    """Runs in the command's process between fork and exec (safe: the guard has one thread)."""
    on_parent_death(signal.SIGKILL)
    if os.getppid() != guard:
        os.kill(os.getpid(), signal.SIGKILL)


def start_watcher(guard: int) -> None:
    """Fork a process that sleeps until the guard dies (however it dies), then kills the group (Linux only)."""
    if not sys.platform.startswith("linux") or os.fork():
        return
    try:  # the watcher: its SIGTERM (-> kill_group) comes with the guard's death
        die_with_parent(guard)
        while True:
            signal.pause()
    finally:
        os._exit(0)  # never return into the guard's code


def main(argv: list[str], parent: int) -> int:
    die_with_parent(parent)
    start_watcher(os.getpid())
    try:
        proc = subprocess.Popen(argv, preexec_fn=lambda guard=os.getpid(): command_dies_with_guard(guard))
    except OSError as e:
        print(f"cannot start {argv[0]!r}: {e.strerror or e}", file=sys.stderr)
        return NOT_STARTED
    status = proc.wait()
    if status < 0:  # killed by a signal: die by it too, so the worker sees what the command saw
        if -status != signal.SIGKILL:  # whose disposition cannot be changed (nor caught)
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], int(os.environ.pop("HYPERP_GUARD_PARENT", os.getppid()))))
