"""Training-health curves of SDFT runs (``sdft.health``), drawn from their ``metrics.jsonl`` and the validation
probes of the checkpoint protocol (``selection/step<S>.json``).

    python -m figures.health RUN_DIR [RUN_DIR ...] --out health   # one figure of the given runs

One panel per quantity, one line per run (the runs of one label prefix -- a setting -- share a colour, seeds differ
by line style): the student's and the teacher's entropy, the divergence (mean and max), the rollouts' first-token
mode share, format rate and length, and the greedy validation score and most-common-answer share.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from figures.save import save_figure
from sdft.run_io import read_metrics, read_step_files

PANELS = [  # (metrics.jsonl key or probe field, title)
    ("health/student_entropy", "student entropy (nats)"),
    ("health/teacher_entropy", "teacher entropy (nats)"),
    ("health/divergence_mean", "divergence, mean over tokens"),
    ("health/divergence_max", "divergence, max over tokens"),
    ("health/first_token_mode_share", "rollouts: first-token mode share"),
    ("health/format_rate", "rollouts: format rate"),
    ("probe:value", "validation score, greedy (%)"),
    ("probe:mode_share", "validation: most common answer share"),
]
STYLES = ["-", "--", ":", "-."]


def series(run_dir: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one panel's quantity in one run."""
    if key.startswith("probe:"):
        field = key.split(":", 1)[1]
        steps = read_step_files(run_dir)
        pts = [(s, v[field] if field in v else (v.get("answers") or {}).get(field)) for s, v in steps.items()]
    else:
        pts = [(m["step"], m[key]) for m in read_metrics(run_dir) if isinstance(m.get(key), (int, float))]
    pts = [(s, float(v)) for s, v in pts if v is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def plot_health(runs: Sequence[tuple[str, Path]], out_base: str | Path, title: str = "SDFT training health"):
    """One figure of ``runs`` (label, run directory) saved as ``out_base`` .png and .pdf; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(label.split(" seed")[0] for label, _ in runs))
    colours = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    seen_in_group: dict[str, int] = {}
    for label, run_dir in runs:
        group = label.split(" seed")[0]
        style = STYLES[seen_in_group.get(group, 0) % len(STYLES)]
        seen_in_group[group] = seen_in_group.get(group, 0) + 1
        for ax, (key, _) in zip(axes.flat, PANELS):
            steps, values = series(Path(run_dir), key)
            if steps:
                ax.plot(steps, values, style, color=colours[group], label=label,
                        marker="o" if key.startswith("probe:") else None, markersize=3, linewidth=1.2)
    for ax, (_, panel_title) in zip(axes.flat, PANELS):
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes.flat[6].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    return save_figure(fig, out_base)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    parser.add_argument("--out", default="health", help="output path without suffix (.png and .pdf are written)")
    parser.add_argument("--title", default="SDFT training health")
    args = parser.parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / "metrics.jsonl").exists()]
    if missing:
        raise SystemExit(f"error: no metrics.jsonl in {', '.join(missing)}")
    for path in plot_health([(Path(r).name, Path(r)) for r in args.runs], args.out, args.title):
        print(path)


if __name__ == "__main__":
    main()
