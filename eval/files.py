"""Result files written whole or not at all, and read back with errors that name the file.

* :func:`write_text_atomic`: the text goes to a temporary file in the same folder, then ``os.replace`` puts it in
  place, so a reader (or a run killed mid-write) sees the old file or the new one, never a truncated one.
* :func:`read_json`: a file that is not valid JSON raises :class:`InvalidJSONFile` naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class InvalidJSONFile(ValueError):
    """A results file that cannot be read as JSON (truncated by an interrupted write of older code, edited, ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: not valid JSON ({reason}); delete or move it to evaluate this run again")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's own mode is 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``; :class:`InvalidJSONFile` naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidJSONFile(path, str(err)) from None
