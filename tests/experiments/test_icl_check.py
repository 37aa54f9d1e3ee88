"""Section 3.2 / Figure 2 right (experiments.icl_check): one evaluation file read by hand, the --sft-run checks, the
paper grid, and ``--preset smoke`` end to end (an SFT run trained, then reused)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, run_section

ROOT = Path(__file__).resolve().parents[2]


def test_evaluation_row_reads_accuracy_wilson_interval_and_both_kl_units(tmp_path):
    from eval.stats import proportion_ci
    from experiments.icl_check import evaluation_row

    scores = [{"metric": "tool_call_match", "value": 75.0, "unit": "percent", "n": 8},
              {"metric": "kl_to_base_seq", "value": 1.5, "unit": "nats", "n": 8, "kl_per_token": 0.05,
               "n_samples": 8, "mean_tokens": 30.0, "base": "embedded:tiny-llama"}]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"evaluations": {"teacher": {"scores": scores}}}))
    row = evaluation_row(path, "teacher")
    ci = proportion_ci(6, 8)  # 75% of 8 = 6 successes
    assert (row["successes"], row["n"]) == (6, 8)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(100 * ci["ci_low"]), pytest.approx(100 * ci["ci_high"]))
    assert (row["kl_seq"], row["kl_per_token"], row["kl_samples"]) == (1.5, 0.05, 8)
    with pytest.raises(SystemExit, match=f"{path}: no percentage score of the 'student' evaluation"):
        evaluation_row(path, "student")


def test_sft_run_must_be_a_finished_run_of_a_task_in_the_grid(tmp_path):
    from experiments.icl_check import reused_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: sft\ntask: embedded_tool\nmodel: embedded:tiny-llama\n")
    with pytest.raises(SystemExit, match="not a finished run directory"):
        reused_runs([str(run)], {"embedded_tool"})
    (run / "model").mkdir()
    assert reused_runs([str(run)], {"embedded_tool"}) == {"embedded_tool": run.resolve()}
    with pytest.raises(SystemExit, match="its task 'embedded_tool' is not among"):
        reused_runs([str(run)], {"tooluse"})


def test_paper_dry_run_prints_the_base_and_one_sft_run_on_tool_use():
    proc = paper_dry_run("icl_check")
    assert "[icl_check] preset paper: 2 runs (base: 1, sft: 1)" in proc.stdout
    assert "teacher template 'paper'" in proc.stdout


def _run(args):
    return run_section("icl_check", *args)


@pytest.mark.slow
def test_run_icl_check_smoke_writes_the_table_and_figure_from_the_eval_files_and_reuses_an_sft_run(tmp_path):
    out = tmp_path / "icl"
    proc = _run(["--preset", "smoke", "--jobs", "2", "--results-dir", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("icl_check.md", "icl_check.csv", "figure2_icl.png", "figure2_icl.pdf"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "icl_check.csv")
    assert table["role"].tolist() == ["student", "teacher", "sft"]
    files = {"student": out / "embedded_tool/base/seed0/eval.json",
             "teacher": out / "embedded_tool/base/seed0/teacher/eval.json",
             "sft": out / "embedded_tool/sft/seed0/eval.json"}
    for row in table.itertuples():
        ev = json.loads(files[row.role].read_text())["evaluations"]["teacher" if row.role == "teacher" else "student"]
        assert row.accuracy == pytest.approx(ev["scores"][0]["value"]) and row.n == ev["scores"][0]["n"]
        assert row.ci_low <= row.accuracy <= row.ci_high
        kl = [s for s in ev["scores"] if s["metric"] == "kl_to_base_seq"]
        if row.role == "student":
            assert not kl and pd.isna(row.kl_seq)  # the base model against itself: not estimated
            continue
        assert row.kl_seq == pytest.approx(kl[0]["value"]) and row.kl_seq >= 0
        # the two units by their definitions: per sequence = per token x tokens per sample
        assert row.kl_seq == pytest.approx(row.kl_per_token * row.kl_mean_tokens)
        assert row.kl_samples == row.n  # one sample per test prompt
    assert "*1.26*" in (out / "icl_check.md").read_text()  # the paper's values beside ours (Tool Use stand-in)

    # the same SFT run given with --sft-run: evaluated into a folder of its own, nothing trained
    sft_run = out / "embedded_tool" / "sft" / "seed0"
    again = tmp_path / "icl_reused"
    proc = _run(["--preset", "smoke", "--jobs", "2", "--results-dir", str(again), "--sft-run", str(sft_run)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reused = again / "embedded_tool" / "sft" / "reused__seed0"
    assert json.loads((reused / "reused_from.json").read_text())["run_dir"] == str(sft_run.resolve())
    assert not (reused / "manifest.json").exists() and not (reused / "model").exists()  # no training here
    logs = list(again.rglob("*.log"))  # each run's output (--jobs 2: a process and a log per run)
    assert logs and not any("[sdft.train]" in log.read_text() for log in logs)
    rows = pd.read_csv(again / "icl_check.csv")
    assert rows["role"].tolist() == ["student", "teacher", "sft"] and rows["run_id"].iloc[-1] == "reused__seed0"
    # the same model, the same seeded sample and greedy answers: the same numbers as in the first results tree
    assert rows.iloc[-1]["accuracy"] == table.iloc[-1]["accuracy"]
    assert rows.iloc[-1]["kl_seq"] == pytest.approx(table.iloc[-1]["kl_seq"])


def test_markdown_puts_the_reproductions_teacher_after_the_papers_rows_of_tool_use():
    from experiments.icl_check import to_markdown

    row = {"metric": "tool_call_match", "seed": 0, "accuracy": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 100,
           "kl_seq": None, "kl_seq_ci_low": None, "kl_seq_ci_high": None, "kl_per_token": None, "kl_mean_tokens": None}
    table = pd.DataFrame([{**row, "task": task, "role": role} for task in ("embedded_tool", "embedded_science")
                          for role in ("student", "teacher")])
    lines = to_markdown(table).splitlines()
    repro = "| *repro (unnamed Qwen3-4B check): teacher (base + demonstration)* | | *54.7* | | | | |"
    assert lines.count(repro) == 1  # Tool Use's only: no reproduction checked the science teacher
    assert lines.index(repro) == lines.index("| *paper: SFT model* | | | | *1.26* | | |") + 1
    legend = lines[lines.index(repro) + 2]
    assert legend.startswith("*repro*: independent reproductions, not ours") and "Qwen3-4B" in legend
