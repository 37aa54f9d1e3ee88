"""One thin script per paper section (a grid, the paper's numbers, titles), sharing the grid runner (``grid``), the
command line and run step (``section``), the evaluation of a run (``evaluation``) and the tables (``reporting``)."""

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
