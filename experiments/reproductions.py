"""Numbers that independent reproductions of the paper reported: not ours, printed beside the paper's in our tables.

Every number here is copied from ``PAPER_SPEC.md``, section "The authors' released code, and what independent
reproductions found" (read 2026-12), its paragraph "Independent reproductions" and its list "More reproductions"
(read 2026-12-07). None was measured by this repository, none was checked against its source, and none is derived
here (no differences are taken): each is kept as the spec prints it (``value``, a string), with the words it was read
from (``quote``). ``tests/experiments/test_reproductions.py`` checks every quote against the spec's text.

Two kinds of number:

  * :class:`Level`: a score a table has a column for (new-task accuracy, a teacher's accuracy, a final accuracy),
    printed as a ``*repro (<source>): <row>*`` row under the paper's rows (:mod:`experiments.reporting`);
  * :class:`Change`: a change (points, or a before -> after pair) that no table has a column for (a prior-average
    drop, IFEval under another metric, backward transfer): printed as a labelled note line under the table.

Per paper item, the rows are :data:`TABLE5` (Table 5), :data:`ICL_CHECK` (Section 3.2 / Figure 2 right),
:data:`FIGURE8` (Appendix A.3, teacher weights: tinker-cookbook's EMA vs frozen teacher) and :data:`FIGURE5`
(Figure 5 left: Science Q&A, SFT and SDFT by model). Tables 1 and 2 and Figures 3, 6 and 7 have none.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEC_SECTION = ("PAPER_SPEC.md, section \"The authors' released code, and what independent reproductions found\", "
                "read 2026-12")


@dataclass(frozen=True)
class Source:
    """Who reported a number: ``key`` names its columns in a CSV (``repro_<key>_<column>``), ``label`` its rows in
    a table; ``model`` and ``setting`` as the spec states them."""

    key: str
    label: str
    model: str
    setting: str

    def legend(self) -> str:
        return f"{self.label}: {self.model}, {self.setting}"


@dataclass(frozen=True)
class Level:
    """A score in a table's column. ``task``: the paper task (``science``, ``tooluse``, ``medical``); ``method``:
    the table's row key (a method of the registry, an ICL-check role, a Figure 8 teacher kind); ``column``: the
    table's column (``new_task``, ``accuracy``, ``final``); ``value``: as printed in the spec."""

    task: str
    method: str
    column: str
    value: str
    source: Source
    quote: str

    @property
    def number(self) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Change:
    """A change that no table has a column for. ``task``: the paper task, None where the spec does not say;
    ``method``: None where the spec does not say; ``what``: what changed, in words; ``value``: as printed (a signed
    change, or ``before → after``)."""

    task: str | None
    method: str | None
    what: str
    value: str
    source: Source
    quote: str


# ------------------------------------------------------------------------------------------------ sources
KICK = Source("kickitlikeshika", "KickItLikeShika/sdft-reproduction-note", "Qwen2.5-7B-Instruct",
              "lr 2e-5, 400 steps")
ISSUE_9 = Source("issue9", "official repo issue #9", "Qwen2.5-7B-Instruct", "science: lr 5e-5, 2 epochs")
UNNAMED = Source("unnamed_lr1e-5", "unnamed reproduction", "Qwen2.5-7B-Instruct",
                 "lr 1e-5 (the spec names it only \"another\")")
TINKER = Source("tinker", "tinker-cookbook ablation", "model not named in the spec",
                "the official code, tool use, full-vocabulary distillation")
TINKER_TOP20 = Source("tinker_top20", "tinker-cookbook ablation, top-20", "model not named in the spec",
                      "the official code, tool use, distillation on the teacher's top 20 tokens")
TINKER_MOE = Source("tinker_qwen3_5_moe", "tinker-cookbook, Qwen3.5-35B-A3B", "Qwen3.5-35B-A3B",
                    "tinker-cookbook's recipe, LoRA, lr 5e-4")
KYRYLOGY = Source("kyrylogy", "kyrylogy/sdft-replication", "7B", "LoRA, 3 seeds")
QWEN3_CHECK = Source("qwen3-4b_check", "unnamed Qwen3-4B check", "Qwen3-4B",
                     "the demonstration-conditioned teacher before training (the spec names no source)")

# ------------------------------------------------------------------------------------------------ per paper item
_ISSUE_9_SCIENCE = "science base/SFT/SDFT 33.3/68.1/69.6"
_TINKER_MOE = "SDFT tool use 65.98 / science 46.55 (+0.20 prior) vs SFT 67.01 / 29.19 (−17.16)"
_ISSUE_9_IFEVAL = ("IFEval (lm-eval 0.4.11, `prompt_level_strict_acc`) falling −19.97 (SDFT) and −24.22 (SFT) from a "
                   "base of 57.12")
_KYRYLOGY_BWT = "held-out backward transfer −1.0 vs −3.3, p = 0.30"
_KYRYLOGY_IFEVAL = "after a second stage, IFEval SDFT −14.66 vs SFT −9.12"
_PRIOR_DROP = "prior-task average drop SFT −5.3 vs SDFT −4.2"

TABLE5 = (
    Level("science", "base", "new_task", "33.3", ISSUE_9, _ISSUE_9_SCIENCE),
    Level("science", "sft", "new_task", "68.1", ISSUE_9, _ISSUE_9_SCIENCE),
    Level("science", "sdft", "new_task", "69.6", ISSUE_9, _ISSUE_9_SCIENCE),
    Change("science", "sft", "prior-task average, change", "−5.3", ISSUE_9, _PRIOR_DROP),
    Change("science", "sdft", "prior-task average, change", "−4.2", ISSUE_9, _PRIOR_DROP),
    Level("science", "sft", "new_task", "50.6", UNNAMED, "science SDFT 48.3 < SFT 50.6 at lr 1e-5"),
    Level("science", "sdft", "new_task", "48.3", UNNAMED, "science SDFT 48.3 < SFT 50.6 at lr 1e-5"),
    Level("science", "sft", "new_task", "29.19", TINKER_MOE, _TINKER_MOE),
    Level("science", "sdft", "new_task", "46.55", TINKER_MOE, _TINKER_MOE),
    Change("science", "sft", "prior capabilities, change (printed beside its science scores)", "−17.16", TINKER_MOE,
           _TINKER_MOE),
    Change("science", "sdft", "prior capabilities, change (printed beside its science scores)", "+0.20", TINKER_MOE,
           _TINKER_MOE),
    Level("tooluse", "sdft", "new_task", "70.1", KICK, "tool use SDFT 70.1"),
    Level("tooluse", "sft", "new_task", "66.0", TINKER, "SFT 66.0"),
    Level("tooluse", "sdft", "new_task", "68.0", TINKER, "full vocabulary + EMA 68.0"),
    Level("tooluse", "sft", "new_task", "67.01", TINKER_MOE, _TINKER_MOE),
    Level("tooluse", "sdft", "new_task", "65.98", TINKER_MOE, _TINKER_MOE),
    Change("tooluse", None, "tool-use accuracy as a fraction, before → after training (method not stated)",
           "0.559 → 0.574", ISSUE_9, "tool use moved only 0.559 → 0.574 for that user"),
    Change(None, "sft", "IFEval `prompt_level_strict_acc` (lm-eval 0.4.11; task not stated), change from 57.12",
           "−24.22", ISSUE_9, _ISSUE_9_IFEVAL),
    Change(None, "sdft", "IFEval `prompt_level_strict_acc` (lm-eval 0.4.11; task not stated), change from 57.12",
           "−19.97", ISSUE_9, _ISSUE_9_IFEVAL),
    Change(None, "sft", "held-out backward transfer (SDFT vs SFT: p = 0.30)", "−3.3", KYRYLOGY, _KYRYLOGY_BWT),
    Change(None, "sdft", "held-out backward transfer (SDFT vs SFT: p = 0.30)", "−1.0", KYRYLOGY, _KYRYLOGY_BWT),
    Change(None, "sft", "IFEval after a second stage, change", "−9.12", KYRYLOGY, _KYRYLOGY_IFEVAL),
    Change(None, "sdft", "IFEval after a second stage, change", "−14.66", KYRYLOGY, _KYRYLOGY_IFEVAL),
)

# Section 3.2: the role is experiments.icl_check's ("teacher": the base model with the demonstration in its prompt).
ICL_CHECK = (
    Level("tooluse", "teacher", "accuracy", "54.7", QWEN3_CHECK,
          "demonstration-conditioned teacher at 54.7% on tool use"),
)

# Figure 8: the teacher kind is experiments.figure8's ("ema", "base" = the frozen base model). The spec gives one
# accuracy per run, not a curve: shown in the "final" column.
FIGURE8 = (
    Level("tooluse", "ema", "final", "68.0", TINKER, "full vocabulary + EMA 68.0"),
    Level("tooluse", "base", "final", "67.0", TINKER, "full + frozen teacher 67.0"),
    Level("tooluse", "ema", "final", "68.0", TINKER_TOP20, "top-20 + EMA 68.0"),
    Level("tooluse", "base", "final", "69.1", TINKER_TOP20, "top-20 + frozen 69.1"),
)

# Figure 5 (left): Science Q&A, SFT and SDFT, one row per source (its model); Table 5's science scores.
FIGURE5 = tuple(r for r in TABLE5 if isinstance(r, Level) and r.task == "science" and r.method in ("sft", "sdft"))

ALL = (*TABLE5, *ICL_CHECK, *FIGURE8)


# ------------------------------------------------------------------------------------------------ text
def row_title(title: str) -> str:
    """A method's title for a reproduction's row: the paper's "SDFT (ours)" without "(ours)" (not this row's)."""
    return title.removesuffix(" (ours)")


def levels(rows) -> list[Level]:
    return [r for r in rows if isinstance(r, Level)]


def changes(rows) -> list[Change]:
    return [r for r in rows if isinstance(r, Change)]


def grouped(rows) -> dict[tuple, list]:
    """``rows`` by (task, source, row key) for levels, (task, source, what) for changes, in their order."""
    out: dict[tuple, list] = {}
    for r in rows:
        key = (r.task, r.source, r.method) if isinstance(r, Level) else (r.task, r.source, r.what)
        out.setdefault(key, []).append(r)
    return out


def change_lines(rows, task: str | None, method_title) -> list[str]:
    """One labelled markdown list item per (source, what) of the changes of ``task`` (None: those with no task
    stated); ``method_title`` names a method."""
    lines = []
    for (t, source, what), group in grouped(changes(rows)).items():
        if t != task:
            continue
        values = ", ".join(r.value if r.method is None else f"{row_title(method_title(r.method))} {r.value}"
                           for r in group)
        lines.append(f"- *repro ({source.label})*: {what}: {values}.")
    return lines


def legend_line(rows) -> str:
    """The sources of ``rows`` with their model and setting, in one line (empty when there are none)."""
    sources = list(dict.fromkeys(r.source for r in rows))
    if not sources:
        return ""
    return (f"*repro*: independent reproductions, not ours (numbers from {SPEC_SECTION}): "
            + "; ".join(s.legend() for s in sources) + ".")
