"""The error classes every layer raises, and the one table of exit codes the CLI maps them to.

| code | meaning |
|---|---|
| 0 | done |
| 1 | finished, but some runs failed, infra-failed or were left unfinished (or a check's verdict is "fail") |
| 2 | bad input: a flag, spec, config, data path, table or file is wrong (the message names it); nothing written |
| 3 | cannot run now: the sweep is locked by another driver, the cluster is too small or unreachable, disk full |
| 130 | interrupted (SIGINT, Ctrl-C): runs in flight checkpointed, ledger rewritten; rerun to resume |
| 143 | terminated (SIGTERM): as for 130 |

This module is at the bottom of the import graph (no third-party imports), so any layer can raise these.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class InputError(ValueError):
    """Bad input. The message starts with the field, file or column at fault and says what was expected."""

    exit_code = EXIT_BAD_INPUT


class FitInputError(InputError):
    """The input table cannot be fitted as asked; the message names the file or column at fault (raised by
    hyperp.fitting, defined here so that the CLI can name it without loading pandas)."""


class UnavailableError(RuntimeError):
    """The input is fine but the work cannot run now (lock held, cluster too small or unreachable, disk full)."""

    exit_code = EXIT_UNAVAILABLE


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, like KeyboardInterrupt on SIGINT, so the same cleanup runs."""

    exit_code = EXIT_TERMINATED


_ANSI = "\x1b["  # start of a terminal colour/style sequence (rich tracebacks are full of them)
ONE_LINE_CHARS = 500  # longest error text kept in a ledger row


def first_line(text: str) -> str:
    """The first non-empty line of an error text, without ANSI escape sequences, at most ONE_LINE_CHARS long."""
    import re  # noqa: PLC0415 (this module stays import-free at load)

    plain = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", text) if _ANSI in text else text
    line = next((s.strip() for s in plain.splitlines() if s.strip()), "")
    return line[:ONE_LINE_CHARS]


MAX_SUGGESTIONS = 3  # close matches named by a did-you-mean message
MAX_LISTED = 12  # known names listed when nothing is close, before "..."


def close_match(name: str, choices) -> str:
    """` (did you mean 'depth'?)` for a mistyped name when one choice is close, else empty: to splice into a
    message that goes on to list what is known."""
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def did_you_mean(given: str, known) -> str:
    """`did you mean param?` for a mistyped name or value, or a short list of what exists when nothing is close."""
    import difflib  # noqa: PLC0415

    known = sorted({str(k) for k in known})
    close = difflib.get_close_matches(str(given), known, n=MAX_SUGGESTIONS, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return f"expected one of: {', '.join(known[:MAX_LISTED])}" + (", ..." if len(known) > MAX_LISTED else "")
