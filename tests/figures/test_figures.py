"""The figures package draws from the rows and titles it is given (no experiment code, no result files)."""

import pandas as pd

from figures.pareto import plot_pareto
from figures.sequential import phase_spans, plot_sequential


def _curves() -> pd.DataFrame:
    """Two phases of one method (science, then tool use), evaluated on both tasks, and a base row (phase 0)."""
    rows = [("sdft", 0, "", 0, t, 0.2) for t in ("science", "tool")]
    rows += [("sdft", 1, "science", s, t, 0.2 + s / 100) for s in (4, 8) for t in ("science", "tool")]
    rows += [("sdft", 2, "tool", s, t, 0.3) for s in (12, 20) for t in ("science", "tool")]
    return pd.DataFrame(rows, columns=["method", "phase", "phase_task", "global_step", "task", "normalized"])


def test_phase_spans_follow_the_training_order_each_starting_where_the_last_ended():
    assert phase_spans(_curves()) == [("science", 0.0, 8.0), ("tool", 8.0, 20.0)]
    shuffled = _curves().sample(frac=1.0, random_state=0)  # row order does not matter
    assert phase_spans(shuffled) == [("science", 0.0, 8.0), ("tool", 8.0, 20.0)]


def test_figures_are_written_as_png_and_pdf_from_rows(tmp_path):
    paths = plot_sequential(_curves(), tmp_path / "sequential", subtitle="toy")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    table = pd.DataFrame({"task": ["tool", "tool"], "method": ["base", "sdft"], "new_task": [10.0, 40.0],
                          "prior_avg": [50.0, 49.0]})
    paths = plot_pareto(table, tmp_path / "pareto", task_titles={"tool": "Tool use"},
                        method_styles={"sdft": {"color": "C3", "marker": "o", "label": "SDFT"}})
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
