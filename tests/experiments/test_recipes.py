"""Every recipe of experiments/recipes/ builds, as the experiment scripts build it, and its data sources validate at
config time (sdft.validation), before anything trains; a malformed source fails then, naming key, value and file."""

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from experiments import grid as G
from experiments import section
from sdft.config import build_config, load_recipe
from sdft.config_layers import plain
from sdft.validation import SourceError, source_problems, validate_sources

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "experiments" / "recipes").rglob("*.yaml"))
REINVOKE = ROOT / "experiments" / "recipes" / "qwen2.5-7b-instruct" / "reinvoke_science.yaml"


def _spec(recipe, tmp_path, sweep_point=None, preset="paper"):
    """The RunSpec the paper-section scripts make for this recipe (experiments.section.build_grid)."""
    values, _ = load_recipe(recipe)
    return G.RunSpec("table5", values["task"], values["method"], 0, preset, str(tmp_path / "run"), str(recipe),
                     {}, dict(sweep_point or {}))


def _same(got, want) -> bool:
    got = plain(got)
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(float(got), float(want), rel_tol=1e-12)
    return got == want


def test_the_recipe_folder_holds_the_paper_grid():
    names = {p.name for p in RECIPES}
    for method in ("sft", "dft", "reinvoke", "sdft"):
        for task in ("science", "tooluse", "medical"):
            assert f"{method}_{task}.yaml" in names
    assert len(RECIPES) == len(names)  # one recipe per (method, task): section.recipe_for finds it by name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "experiments" / "recipes")))
def test_every_recipe_builds_with_the_paper_preset_its_keys_take_effect_and_its_sources_validate(recipe, tmp_path):
    values, sweep = load_recipe(recipe)
    assert Path(recipe).stem == f"{values['method']}_{values['task']}"  # what section.recipe_for looks up
    assert section.recipe_for(values["task"], values["method"], recipe.parent) == str(recipe)
    cfg = _spec(recipe, tmp_path).config()
    assert cfg.preset == "paper" and cfg.method == values["method"] and cfg.task == values["task"]
    flat = cfg.to_dict()
    for key, value in values.items():
        assert _same(flat[key], value), (key, flat[key], value)
    assert source_problems(cfg) == []
    validate_sources(cfg)
    # The same keys win over a preset whose values differ (smoke): the recipe is not a no-op above the preset.
    smoke_alone = build_config("smoke", values["method"], overrides={"task": values["task"]}).to_dict()
    over_smoke = _spec(recipe, tmp_path, preset="smoke").config().to_dict()
    changed = [k for k, v in values.items() if not _same(smoke_alone[k], v)]
    assert {"learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps"} <= set(changed)
    for key in changed:
        assert _same(over_smoke[key], values[key]), key
    # Every value of the sweep grid builds, one key at a time, and takes effect.
    for key, options in sweep.items():
        for option in options:
            point = _spec(recipe, tmp_path, {key: option}).config()
            assert _same(point.to_dict()[key], option), (key, option)


def test_the_paper_grids_validate_before_any_run_and_use_every_recipe(tmp_path):
    from experiments import table1, table2, table5

    used = set()
    for module in (table5, table1, table2):
        parser = section.build_parser(None, module.EXPERIMENT, module.METHODS)
        if module is table1:
            table1.add_arguments(parser)
        args = parser.parse_args(["--preset", "paper", "--sweep", "--results-dir", str(tmp_path)])
        specs = section.build_grid(args, module.EXPERIMENT, module.METHODS, getattr(module, "RECIPES", section.RECIPES))
        specs = module.adjust_grid(args, specs) if hasattr(module, "adjust_grid") else specs
        assert len(specs) > 100
        G.validate_grid(specs)
        used |= {s.recipe for s in specs if s.recipe}
    assert used == {str(p) for p in RECIPES}


def _bad_copy(tmp_path, text_from, text_to, source=REINVOKE):
    text = source.read_text()
    assert text_from in text
    bad = tmp_path / source.name
    bad.write_text(text.replace(text_from, text_to))
    return bad


def test_the_old_bug_reinvoke_prompts_hub_fails_at_config_time_naming_field_value_and_file(tmp_path):
    bad = _bad_copy(tmp_path, "reinvoke_prompts: hub:allenai/tulu-3-sft-mixture", "reinvoke_prompts: hub")
    with pytest.raises(SourceError) as err:
        _spec(bad, tmp_path).config()
    message = str(err.value)
    assert "reinvoke_prompts" in message and "'hub'" in message and str(bad) in message
    assert "hub:<owner>/<dataset>" in message  # says what a valid value looks like
    [problem] = err.value.problems
    assert (problem.key, problem.value, problem.where) == ("reinvoke_prompts", "hub", str(bad))


def test_the_old_bug_stops_sdft_train_before_the_run_directory_or_any_model(tmp_path):
    from sdft.train import main

    bad = _bad_copy(tmp_path, "reinvoke_prompts: hub:allenai/tulu-3-sft-mixture", "reinvoke_prompts: hub")
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=re.escape(f"{bad}: config key 'reinvoke_prompts' = 'hub'")):
        main(["--config", str(bad), "--preset", "paper", "--output-dir", str(out)])
    assert not out.exists()


def test_a_bad_source_in_a_sweep_fails_the_grid_before_any_run(tmp_path):
    bad = _bad_copy(tmp_path, "sweep:\n", "sweep:\n  reinvoke_prompts: [embedded, hub]\n")
    specs = G.expand("table5", "paper", ["science"], ["reinvoke"], [0], tmp_path, recipe_for=lambda t, m: str(bad),
                     sweep=True)
    with pytest.raises(SourceError, match=re.escape(f"{bad} (sweep): config key 'reinvoke_prompts' = 'hub'")):
        G.validate_grid(specs)


def test_the_section_command_line_refuses_a_bad_recipe_before_running(tmp_path, capsys):
    from experiments import table5

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for path in RECIPES:
        (recipes / path.name).write_text(path.read_text())
    (recipes / "reinvoke_medical.yaml").write_text(
        (recipes / "reinvoke_medical.yaml").read_text().replace("hub:allenai/tulu-3-sft-mixture", "hub"))
    with pytest.raises(SystemExit, match="reinvoke_medical.yaml: config key 'reinvoke_prompts' = 'hub'"):
        section.main(["--preset", "paper", "--dry-run", "--results-dir", str(tmp_path / "results")],
                     experiment="table5", doc=None, methods=table5.METHODS,
                     aggregate=lambda d: None, outputs=[], recipes=recipes)
    assert "->" not in capsys.readouterr().out  # no run was listed, let alone started


@pytest.mark.parametrize("key,value,match", [
    ("reinvoke_prompts", "hub:", "no dataset id after 'hub:'"),
    ("reinvoke_prompts", "hub:owner//name", "not a hub dataset id"),
    ("reinvoke_prompts", "hub:a/b/c", "not a hub dataset id"),
    ("reinvoke_prompts", "hub:-owner/name", "not a hub dataset id"),
    ("reinvoke_prompts", "file:", "no path after 'file:'"),
    ("reinvoke_prompts", "file:/no/such/prompts.jsonl", "/no/such/prompts.jsonl: no such file"),
    ("reinvoke_prompts", "/data/tulu.jsonl", r"a local file is written file:/data/tulu\.jsonl"),
    ("reinvoke_prompts", "tulu", "unknown general prompt source 'tulu'"),
    ("task", "sciense", "unknown task 'sciense'"),
    ("data_dir", "/no/such/mirror", "the data directory /no/such/mirror does not exist"),
    ("model", "./no-such-model", "no such model directory"),
    ("model", "embedded:gpt-7", "unknown embedded model"),
    ("model", "Qwen/Qwen 2.5", "not a hub model id"),
])
def test_malformed_sources_in_a_recipe_name_the_key_the_value_and_the_file(tmp_path, key, value, match):
    values, _ = load_recipe(REINVOKE)
    bad = tmp_path / "bad_recipe.yaml"
    bad.write_text(yaml.safe_dump({**values, key: value}))
    with pytest.raises(SourceError, match=match) as err:
        build_config("paper", recipe=bad)
    assert f"{bad}: config key {key!r} = {value!r}" in str(err.value)


def test_the_layer_named_is_the_one_whose_value_won(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("method: reinvoke\nreinvoke_prompts: hub\n")
    good = build_config("paper", recipe=bad, overrides={"reinvoke_prompts": "embedded"})  # the command line wins
    assert good.reinvoke_prompts == "embedded"
    with pytest.raises(SourceError, match=r"^config of method 'reinvoke': command line: config key 'data_dir'"):
        build_config("smoke", "reinvoke", argv=["--data_dir", str(tmp_path / "absent")])
    with pytest.raises(SourceError, match="command line: config key 'task' = 'nope'"):
        build_config("smoke", "sft", overrides={"task": "nope"})


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(SourceError) as err:
        build_config("smoke", "offline_distill", overrides={
            "data_dir": str(tmp_path / "absent"), "top_p": 0.0, "temperature": -1.0, "offline_num_samples": 0})
    assert {p.key for p in err.value.problems} == {"data_dir", "top_p", "temperature", "offline_num_samples"}
    assert str(err.value).startswith("config of method 'offline_distill': 4 invalid values:")


def test_valid_local_and_hub_sources_pass_without_reading_them(tmp_path, monkeypatch):
    import data_prep.general_prompts as gp

    def no_download(*a, **k):
        raise AssertionError("config validation must not load prompts")

    monkeypatch.setattr(gp, "_hub", no_download)
    monkeypatch.setattr(gp, "_file", no_download)
    prompts = tmp_path / "general.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    model = tmp_path / "model"  # a folder with a config is a local model to the check; its weights are not read
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for source in ("embedded", "hub:allenai/tulu-3-sft-mixture", "hub:squad", f"file:{prompts}"):
        cfg = build_config("paper", "reinvoke", overrides={"reinvoke_prompts": source, "task": "science",
                                                           "data_dir": str(mirror), "model": str(model)})
        assert cfg.reinvoke_prompts == source and source_problems(cfg) == []


def test_the_loader_and_the_check_agree_on_the_form(tmp_path):
    from data_prep.general_prompts import load_general_prompts, parse_source, source_problem

    with pytest.raises(ValueError, match="a hub source names its dataset"):
        load_general_prompts("hub", n=4)  # rejected by its form: no download was tried
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "say hi"}) + "\n")
    assert load_general_prompts(f"file:{prompts}") == [[{"role": "user", "content": "say hi"}]]
    assert source_problem(f"file:{prompts}") is None and parse_source(f"file:{prompts}") == ("file", str(prompts))
    assert source_problem(f"file:{tmp_path}").endswith("a directory, not a file")
    assert len(load_general_prompts("embedded", n=3)) == 3 and source_problem("embedded") is None


def test_a_missing_sdft_data_dir_fails_a_real_task_config_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SDFT_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(SourceError, match=re.escape("$SDFT_DATA_DIR (data_dir not given): config key 'data_dir'")):
        build_config("paper", recipe=REINVOKE)
    assert build_config("paper", recipe=REINVOKE, overrides={"data_dir": str(tmp_path)}).data_dir == str(tmp_path)
    assert build_config("smoke", "sft").task == "embedded_tool"  # the embedded tasks read no data directory
