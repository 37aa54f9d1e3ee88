"""One thin script per paper section, sharing the grid runner and the evaluation glue."""
