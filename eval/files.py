"""Result files written whole or not at all, and read back with errors that name the file.

* :func:`write_text_atomic` (``sdft.run_io``'s): the text goes to a temporary file in the same folder, then ``os.replace`` puts it in
  place, so a reader (or a run killed mid-write) sees the old file or the new one, never a truncated one.
* :func:`read_json`: a file that is not valid JSON raises :class:`InvalidJSONFile` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdft.errors import UserError
from sdft.run_io import write_text_atomic  # noqa: F401  (re-exported: the one atomic writer)


class InvalidJSONFile(UserError, ValueError):
    """A results file that cannot be read as JSON (truncated by an interrupted write of older code, edited, ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: not valid JSON ({reason}); delete or move it to evaluate this run again")


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``; :class:`InvalidJSONFile` naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidJSONFile(path, str(err)) from None
