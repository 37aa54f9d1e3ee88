"""One error style for users, in every command line of the repository.

    error: <file, endpoint or run directory>: <what is wrong> (<the key or field>)

A mistake in what a user gave -- a config value, a recipe, a data file, a model folder, a judge endpoint, a run
directory -- raises a ``UserError`` (the user-facing error classes of ``sdft``, ``data_prep`` and ``eval`` derive
from it besides their built-in base, so ``except ValueError`` still catches a ``RecordError``). The command lines run
their work inside ``reported_as_one_line``, which ends the process with ``SystemExit("error: <message>")`` (Python
prints it on stderr and exits with status 1), without a traceback; a run stopped by SIGTERM / Ctrl-C (``sdft.interrupts``) is said in one line too and exits
with 128 + the signal's number. ``--debug`` on the command line, or ``SDFT_DEBUG=1``, lets the traceback through. Anything else
(a bug) keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from sdft.interrupts import RunInterrupted

DEBUG_ENV = "SDFT_DEBUG"


class UserError(Exception):
    """A problem in something the user gave, named in the message (file, endpoint or key): no traceback needed."""


class ConfigError(UserError, ValueError):
    """A config that cannot work: an unknown key or preset, a value out of range, a recipe file that cannot be read
    (the message names the key, and the file and line where there is one)."""


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` among ``argv`` (default ``sys.argv``) or ``SDFT_DEBUG`` set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def strip_debug(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug`` (read by ``debug_requested``, not by the command's own parser)."""
    return [a for a in argv if a != "--debug"]


@contextmanager
def reported_as_one_line(argv: list[str] | None = None) -> Iterator[None]:
    """Run a command line's work: a ``UserError`` becomes ``SystemExit("error: <message>")`` (its traceback only
    with ``--debug`` / ``SDFT_DEBUG=1``)."""
    try:
        yield
    except RunInterrupted as err:  # SIGTERM / Ctrl-C: checkpointed, said in one line, exit 128 + the signal
        print(f"[sdft] {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except UserError as err:
        if debug_requested(argv):
            raise
        raise SystemExit(f"error: {str(err).strip()}") from None
