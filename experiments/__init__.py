"""One thin script per paper section (a grid, the paper's numbers, titles), sharing the grid runner (``grid``), the
command line and run step (``section``), the evaluation of a run (``evaluation``) and the tables (``reporting``)."""
