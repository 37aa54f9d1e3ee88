"""experiments.reporting on a synthetic results tree: collection, best sweep point, mean ± 95% CI over seeds, n,
and the markdown / CSV tables with the paper's numbers beside ours and the registries' titles."""

import io
import json
import math
import re

import pandas as pd
import pytest
import yaml
from transformers import TrainingArguments

from experiments import reporting as R

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (printed tables: 4.303)
PRIOR = {"arithmetic": ("exact_match,first_number", None), "commonsense": ("acc,none", ["hellaswag", "winogrande"])}


@pytest.fixture
def toy_method():
    """A method of the test's own, registered with a title and a style (removed again afterwards)."""
    import sdft.registry as reg

    reg.method_names()  # the built-in methods first, so the toy one does not shadow them
    method = reg.register_method(reg.Method("toy_distil", train=None, config_class=TrainingArguments,
                                            title="Toy distillation", style={"color": "#123456", "marker": "P"},
                                            distils=True))
    yield method
    reg.METHODS.pop(method.name, None)


def write_run(root, task, method, run_id, seed, new_task, prior, *, val=None, divergence="forward",
              metric="tool_call_match", model="embedded:tiny-llama", suite="embedded"):
    """One run directory as experiments.evaluation writes it: config.yaml, eval.json (and val/eval.json)."""
    run_dir = root / task / method / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"method": method, "task": task, "model": model, "preset": "smoke", "seed": seed, "data_dir": None,
         "divergence": divergence, "teacher_template": "same_format"}))

    def evaluation(value):
        return {"task": task, "variant": "student", "n": 8, "settings": {},
                "scores": [{"metric": metric, "value": value, "unit": "percent", "n": 8},
                           {"metric": "mean_generated_tokens", "value": 12.0, "unit": "tokens", "n": 8}]}

    benchmarks = {name: {"task": f"sdft_{name}", "metric": PRIOR.get(name, ("acc,none",))[0], "value": v, "n": 2,
                         "num_fewshot": 0, "chat_template": False, "stand_in_for": PRIOR.get(name, (0, None))[1]}
                  for name, v in prior.items()}
    result = {"evaluations": {"student": evaluation(new_task)}, "model": model, "preset": "smoke",
              "prior": {suite: {"suite": suite, "benchmarks": benchmarks, "skipped": {}, "limit": 2,
                                "average": sum(prior.values()) / len(prior)}}}
    (run_dir / "eval.json").write_text(json.dumps(result))
    if val is not None:
        (run_dir / "val").mkdir()
        (run_dir / "val" / "eval.json").write_text(json.dumps({"evaluations": {"student": evaluation(val)}}))
    return run_dir


@pytest.fixture
def tree(tmp_path, toy_method):
    root = tmp_path / "results"
    write_run(root, "embedded_tool", "base", "seed0", 0, 5.0, {"arithmetic": 10.0, "commonsense": 50.0})
    # toy method: 3 seeds; seed 0 is a sweep of two points, the second has the better validation score
    write_run(root, "embedded_tool", "toy_distil", "lr0.1_seed0", 0, 99.0, {"arithmetic": 0.0, "commonsense": 0.0},
              val=20.0)
    write_run(root, "embedded_tool", "toy_distil", "lr0.01_seed0", 0, 10.0, {"arithmetic": 20.0, "commonsense": 40.0},
              val=30.0)
    write_run(root, "embedded_tool", "toy_distil", "seed1", 1, 20.0, {"arithmetic": 30.0, "commonsense": 60.0})
    write_run(root, "embedded_tool", "toy_distil", "seed2", 2, 40.0, {"arithmetic": 40.0, "commonsense": 50.0})
    return root


def test_collect_select_summarize(tree):
    runs = R.collect_runs(tree)
    assert len(runs) == 5 and set(runs["method"]) == {"base", "toy_distil"}
    assert R.prior_columns(runs) == ["arithmetic", "commonsense"]
    assert R.prior_columns(runs, ["commonsense", "mmlu"]) == ["commonsense", "arithmetic"]
    base = runs[runs["method"] == "base"].iloc[0]
    assert pd.isna(base["divergence"]) and base["new_task"] == 5.0 and base["new_task_metric"] == "tool_call_match"
    assert base["prior_suite"] == "embedded" and "stand-in for hellaswag, winogrande" in base["prior_metrics"]

    best = R.select_best(runs)
    toy = best[best["method"] == "toy_distil"].sort_values("seed")
    assert list(toy["run_id"]) == ["lr0.01_seed0", "seed1", "seed2"]  # the best validation score of seed 0

    table = R.summarize_runs(runs, ["new_task", "arithmetic", "commonsense", "prior_avg"], ["base", "toy_distil"])
    assert list(table["method"]) == ["base", "toy_distil"] and list(table["paper_task"]) == ["tooluse", "tooluse"]
    row = table[table["method"] == "toy_distil"].iloc[0]
    assert row["n_seeds"] == 3
    for column, values in {"new_task": [10, 20, 40], "arithmetic": [20, 30, 40], "commonsense": [40, 60, 50],
                           "prior_avg": [30, 45, 45]}.items():
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        assert row[column] == pytest.approx(mean)
        assert row[f"{column}_ci"] == pytest.approx(T_975_DF2 * sd / math.sqrt(3), rel=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=70 / 3, scale=scipy_stats.sem([10, 20, 40]))
    assert row["new_task_ci"] == pytest.approx((hi - lo) / 2)
    one = table[table["method"] == "base"].iloc[0]
    assert one["n_seeds"] == 1 and one["new_task"] == 5.0 and math.isnan(one["new_task_ci"])


def test_tables_show_the_paper_beside_ours_with_registry_titles(tree):
    runs = R.collect_runs(tree)
    table = R.summarize_runs(runs, ["new_task", "arithmetic", "prior_avg"], ["base", "toy_distil"])
    paper = R.paper_frame({"tooluse": {"base": [42.9, 65.5], "toy_distil": [70.6, 65.4]}}, ["new_task", "prior_avg"])
    paths = R.write_tables(table, paper, runs, tree / "mine", title="Table X: toy", notes=["A note."],
                           columns=[("new_task", "New task"), ("arithmetic", "arithmetic*"), ("prior_avg", "Avg.")])
    md = (tree / "mine.md").read_text()
    assert paths == [tree / "mine.md", tree / "mine.csv"]
    lines = md.splitlines()
    assert lines[:6] == ["# Table X: toy", "", "Ours: embedded:tiny-llama; prior suite: embedded.",
                         "Accuracies in %; mean ± 95% t-interval over 1-3 seeds.", "A note.", ""]
    assert "## Tool Use (ours: `embedded_tool`, metric `tool_call_match`)" in lines
    assert "| Method | New task | arithmetic* | Avg. | Seeds |" in lines
    ci = T_975_DF2 * math.sqrt(((10 - 70 / 3) ** 2 + (20 - 70 / 3) ** 2 + (40 - 70 / 3) ** 2) / 2) / math.sqrt(3)
    toy_row = next(line for line in lines if line.startswith("| Toy distillation |"))
    assert toy_row.startswith(f"| Toy distillation | {70 / 3:.1f} ± {ci:.1f} | 30.0 ± ") and toy_row.endswith(" | 3 |")
    assert "| Base | 5.0 | 10.0 | 30.0 | 1 |" in lines  # one seed: no interval, and the row says so
    assert "| *paper: Base* | *42.9* |  | *65.5* |  |" in lines
    assert "| *paper: Toy distillation* | *70.6* |  | *65.4* |  |" in lines
    assert lines[-1].startswith("Prior-capability metrics: arithmetic: exact_match,first_number")

    csv = pd.read_csv(tree / "mine.csv")
    assert list(csv.columns) == ["task", "paper_task", "method", "n_seeds", "n_collapsed", "chosen_steps",
                                 "new_task", "new_task_ci95", "arithmetic", "arithmetic_ci95", "prior_avg", "prior_avg_ci95", "paper_new_task", "paper_prior_avg"]
    toy = csv[csv["method"] == "toy_distil"].iloc[0]
    assert toy["n_seeds"] == 3 and toy["new_task"] == pytest.approx(70 / 3) and toy["new_task_ci95"] == pytest.approx(ci)
    assert toy["paper_new_task"] == 70.6 and toy["paper_prior_avg"] == 65.4


def test_table5_aggregate_on_the_paper_suite_names(tmp_path, toy_method):
    """Table 5's aggregate through the reporting module: paper benchmarks get the paper's cells; figure written."""
    from experiments import table5

    root = tmp_path / "t5"
    six = dict.fromkeys(table5.PRIOR, 50.0)  # the paper suite's six benchmarks instead of the stand-ins
    for seed, value in enumerate([30.0, 34.0]):
        for method, gain in [("base", 0), ("toy_distil", 30)]:
            write_run(root, "science", method, f"seed{seed}", seed, value + gain, six, metric="answer_letter_exact",
                      model="Qwen/Qwen2.5-7B-Instruct", suite="paper")
    table = table5.aggregate(root)
    assert list(table["method"]) == ["base", "toy_distil"] and set(table["n_seeds"]) == {2}
    md = (root / "table5.md").read_text()
    assert "| Method | New task | hellaswag | humaneval | ifeval | mmlu | truthfulqa | winogrande | Avg. |" in md
    assert "| *paper: Base* | *32.1* | *62.0* | *65.8* | *74.3* | *71.7* | *47.9* | *71.1* | *65.5* |" in md
    assert "| Toy distillation | 62.0 ± 25.4 |" in md  # mean 62, t(0.975, 1) * sd / sqrt(2) = 12.706 * 2
    assert "stand-ins" not in md
    assert (root / "figure4_pareto.png").stat().st_size > 0 and (root / "figure4_pareto.pdf").stat().st_size > 0


def test_pareto_takes_style_and_label_from_the_method_registry(toy_method):
    from figures.pareto import _style

    styles = {m: R.method_style(m) for m in ("toy_distil", "base", "not_a_method")}
    assert _style("toy_distil", styles) == {"color": "#123456", "marker": "P", "label": "Toy distillation"}
    assert _style("base", styles)["label"] == "Base"
    assert styles["not_a_method"] == {}
    assert _style("not_a_method", styles) == {"color": "black", "marker": "x", "label": "not_a_method"}


def test_a_run_without_its_config_takes_its_seed_from_its_folder_name(tree):
    for run_id in ("seed1", "seed2"):
        (tree / "embedded_tool" / "toy_distil" / run_id / "config.yaml").unlink()
    runs = R.collect_runs(tree).set_index("run_id")
    assert runs.loc["seed1", "seed"] == 1 and runs.loc["seed2", "seed"] == 2 and runs.loc["lr0.1_seed0", "seed"] == 0
    table = R.summarize_runs(runs.reset_index(), ["new_task"], ["toy_distil"])
    assert table.iloc[0]["n_seeds"] == 3  # not one seed "None" standing for all three
    assert R.seed_of("ema__seed12", {}) == 12 and R.seed_of("lr1e-4_seed3", {}) == 3
    assert R.seed_of("seed3", {"seed": 5}) == 5  # the config decides when it is there
    assert R.seed_of("myrun", {}) is None and R.seed_of("reseed1x", {}) is None


def test_checkpoint_protocol_and_collapse_in_the_tables(tmp_path):
    """A run under the checkpoint protocol shows its final model's score beside the reported one, and a seed whose
    reported answers are mostly one answer is counted as collapsed in the Seeds cell."""
    root = tmp_path / "results"
    for seed, (reported, final, answers) in enumerate([(60.0, 40.0, ["Action: a", "Action: b", "Action: c"]),
                                                       (30.0, 30.0, ["I'm ready."] * 2 + ["Action: a"])]):
        run_dir = write_run(root, "embedded_tool", "sdft", f"seed{seed}", seed, reported, {"arithmetic": 50.0})
        result = json.loads((run_dir / "eval.json").read_text())
        result["evaluations"]["student"]["settings"]["predictions"] = "predictions_student.jsonl"
        (run_dir / "predictions_student.jsonl").write_text("".join(json.dumps({"response": a}) + "\n"
                                                                   for a in answers))
        final_test = {"student": {"scores": [{"metric": "tool_call_match", "value": final, "unit": "percent",
                                              "n": 8}]}} if final != reported else "same as the reported checkpoint"
        result["checkpoint"] = {"chosen_step": 8 if final != reported else 32, "final_step": 32,
                                "final_test": final_test}
        (run_dir / "eval.json").write_text(json.dumps(result))
    runs = R.collect_runs(root)
    by_seed = runs.set_index("seed")
    assert by_seed.loc[0, "new_task_final"] == 40.0 and by_seed.loc[1, "new_task_final"] == 30.0
    assert by_seed.loc[0, "chosen_step"] == 8 and not by_seed.loc[0, "collapsed"] and by_seed.loc[1, "collapsed"]
    columns = [("new_task", "New task"), *R.final_model_columns(runs)]
    assert columns[1] == ("new_task_final", "Final model")
    table = R.summarize_runs(runs, [c for c, _ in columns])
    assert table.loc[0, "new_task_final"] == pytest.approx(35.0) and table.loc[0, "n_collapsed"] == 1
    R.write_tables(table, R.paper_frame({"tooluse": {"sdft": [70.6]}}, ["new_task"]), runs, tmp_path / "t", title="T", columns=columns)
    md = (tmp_path / "t.md").read_text()
    assert "| 2 (1 collapsed) |" in md and "Final model" in md and "8/32, 32/32" in md
    assert pd.read_csv(tmp_path / "t.csv")["n_collapsed"].tolist() == [1]


def _toy_reproductions():
    """Reproductions of the test's own: two scores and a change on Tool Use, one of each elsewhere."""
    from experiments.reproductions import Change, Level, Source

    src = Source("toy", "Toy repro", "Toy-7B", "lr 1e-5")
    return (Level("tooluse", "toy_distil", "new_task", "71.5", src, ""),
            Level("tooluse", "base", "prior_avg", "60.0", src, ""),
            Change("tooluse", "toy_distil", "prior average, change", "−1.5", src, ""),
            Level("science", "base", "new_task", "99.9", src, ""),
            Change("science", "base", "science only", "+7.7", src, ""),
            Change(None, None, "a general finding", "0.1 → 0.2", src, ""))


def _write(tree, name, **kwargs):
    runs = R.collect_runs(tree)
    table = R.summarize_runs(runs, ["new_task", "arithmetic", "prior_avg"], ["base", "toy_distil"])
    paper = R.paper_frame({"tooluse": {"base": [42.9, 65.5], "toy_distil": [70.6, 65.4]}}, ["new_task", "prior_avg"])
    R.write_tables(table, paper, runs, tree / name, title="Table X: toy", notes=["A note."],
                   columns=[("new_task", "New task"), ("arithmetic", "arithmetic*"), ("prior_avg", "Avg.")], **kwargs)
    return (tree / f"{name}.md").read_text(), (tree / f"{name}.csv").read_text()


def test_reproduction_rows_follow_the_papers_under_their_task_and_only_add_lines(tree):
    plain = _write(tree, "plain")
    assert _write(tree, "empty", reproductions=()) == plain
    other_task = [r for r in _toy_reproductions() if r.task == "science"]
    assert _write(tree, "other", reproductions=other_task) == plain  # nothing of a task the table lacks

    md, csv_text = _write(tree, "repro", reproductions=_toy_reproductions())
    lines = md.splitlines()
    paper_row = lines.index("| *paper: Toy distillation* | *70.6* |  | *65.4* |  |")
    assert lines[paper_row + 1:paper_row + 6] == [
        "| *repro (Toy repro): Toy distillation* | *71.5* |  |  |  |",  # its cells only, as the spec printed them
        "| *repro (Toy repro): Base* |  |  | *60.0* |  |",
        "",
        "- *repro (Toy repro)*: prior average, change: Toy distillation −1.5.",
        ""]
    assert "- *repro (Toy repro)*: a general finding: 0.1 → 0.2." in lines[paper_row + 6:]
    assert lines[-1] == ("*repro*: independent reproductions, not ours (numbers from PAPER_SPEC.md, section \"The "
                         "authors' released code, and what independent reproductions found\", read 2026-12): Toy "
                         "repro: Toy-7B, lr 1e-5.")
    assert "99.9" not in md and "science only" not in md
    # without its added lines, the table is the one written without reproductions
    kept = [line for line in lines if "*repro" not in line and line != "Changes reported by independent "
            "reproductions, no task named:"]
    assert re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).rstrip() == plain[0].rstrip()

    csv = pd.read_csv(io.StringIO(csv_text)).set_index("method")
    plain_csv = pd.read_csv(io.StringIO(plain[1])).set_index("method")
    assert list(csv.columns) == [*plain_csv.columns, "repro_toy_new_task", "repro_toy_prior_avg"]
    pd.testing.assert_frame_equal(csv[plain_csv.columns], plain_csv)
    assert csv.loc["toy_distil", "repro_toy_new_task"] == 71.5 and csv.loc["base", "repro_toy_prior_avg"] == 60.0
    assert pd.isna(csv.loc["base", "repro_toy_new_task"])  # not Science's 99.9: another task


def test_table5_aggregate_prints_the_reproductions_under_the_papers_rows(tmp_path):
    from experiments import table5

    root = tmp_path / "t5"
    six = dict.fromkeys(table5.PRIOR, 50.0)
    for task in ("science", "tooluse"):
        for method in ("base", "sdft"):
            write_run(root, task, method, "seed0", 0, 40.0, six, model="Qwen/Qwen2.5-7B-Instruct", suite="paper")
    table5.aggregate(root)
    lines = (root / "table5.md").read_text().splitlines()
    science, tool = lines.index("## Science Q&A (ours: `science`, metric `tool_call_match`)"), lines.index(
        "## Tool Use (ours: `tooluse`, metric `tool_call_match`)")
    empty = " |  |  |  |  |  |  |  |  |"  # the six benchmarks, Avg. and Seeds: no number there
    issue9 = lines.index("| *repro (official repo issue #9): SDFT* | *69.6*" + empty)
    assert lines.index("| *paper: SDFT (ours)* | *70.2* | *60.9* | *68.9* | *66.8* | *70.7* | *46.5* | *73.1* | "
                       "*64.5* |  |") < issue9 < tool
    assert science < lines.index("- *repro (official repo issue #9)*: prior-task average, change: SFT −5.3, SDFT "
                                 "−4.2.") < tool
    assert lines.index("| *repro (KickItLikeShika/sdft-reproduction-note): SDFT* | *70.1*" + empty) > tool
    assert "| *repro (tinker-cookbook, Qwen3.5-35B-A3B): SFT* | *67.01*" + empty in lines[tool:]
    assert any(line.startswith("*repro*: independent reproductions, not ours") for line in lines)
    csv = pd.read_csv(root / "table5.csv").set_index(["task", "method"])
    assert csv.loc[("science", "sdft"), "repro_issue9_new_task"] == 69.6
    assert csv.loc[("tooluse", "sdft"), "repro_kickitlikeshika_new_task"] == 70.1
    assert pd.isna(csv.loc[("tooluse", "sdft"), "repro_issue9_new_task"]) and len(csv) == 4
