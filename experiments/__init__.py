"""One thin script per paper section, sharing the grid runner and the evaluation glue."""

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
