"""eval.config: every evaluation option in one dataclass, resolved once from the preset's eval: block, the evaluated
run and the values given, by the parser of a run's config; grids carry its values as a dict."""

from dataclasses import fields

import pytest
import yaml

from eval.config import EvalConfig, build_eval_config
from sdft.config_layers import PRESETS, load_preset
from sdft.errors import ConfigError


def test_every_field_has_a_help_paragraph_and_is_an_option_of_eval_run():
    from eval.run import usage

    text = usage()
    for f in fields(EvalConfig):
        assert len(f.metadata.get("help", "").split()) >= 5, f.name
        assert f"--{f.name}" in text or f"--{f.name.replace('_', '-')}" in text, f.name


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_eval_block_gives_the_defaults(preset):
    block = load_preset(preset)["eval"]
    assert set(block) == {"n", "max_new_tokens", "limit", "batch_size", "prior_batch_size"}
    cfg = build_eval_config({"preset": preset})
    assert cfg.preset == preset and {k: getattr(cfg, k) for k in block} == block
    assert build_eval_config().preset == "mini"


def test_the_run_gives_the_preset_and_template_the_values_given_win():
    run = {"preset": "smoke", "teacher_template": "same_format", "task": "embedded_tool"}
    cfg = build_eval_config(run_config=run)
    assert (cfg.preset, cfg.template, cfg.n) == ("smoke", "same_format", 8)
    cfg = build_eval_config({"preset": "mini", "template": "paper", "n": None}, run_config=run)  # None: not given
    assert (cfg.preset, cfg.template, cfg.n) == ("mini", "paper", None)
    cfg = build_eval_config({"n": 3}, ["--n", "4", "--variant", "teacher"], run_config=run)  # the command line last
    assert (cfg.n, cfg.variant) == (4, "teacher")
    assert build_eval_config(run_config={"preset": "not-a-preset"}).preset == "mini"


def test_a_batch_size_given_above_the_preset_is_the_prior_suites_too_unless_that_is_given():
    assert build_eval_config({"preset": "smoke"}).prior_batch_size == 32
    assert build_eval_config({"preset": "smoke", "batch_size": 4}).prior_batch_size == 4
    assert build_eval_config({"preset": "smoke"}, ["--batch-size", "4"]).prior_batch_size == 4
    assert build_eval_config({"batch_size": 4, "prior_batch_size": 16}).prior_batch_size == 16


def test_unknown_keys_and_values_outside_the_choices_are_errors_naming_the_layer():
    with pytest.raises(ConfigError, match=r"the evaluation's values: unknown evaluation keys \['max_tokens'\]"):
        build_eval_config({"max_tokens": 3})
    with pytest.raises(ConfigError, match="'prior_suite': 'all' is not one of"):
        build_eval_config({"prior_suite": "all"})
    with pytest.raises(ConfigError, match="invalid choice"):
        build_eval_config(argv=["--split", "dev"])


def test_a_config_is_its_dict_and_survives_yaml():
    cfg = build_eval_config({"preset": "smoke", "passk": 4, "prior_benchmarks": ["facts"], "limit": 0.5})
    assert build_eval_config(cfg.to_dict()) == cfg
    assert build_eval_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_a_run_config_carries_its_evaluation():
    from sdft.config import build_config

    cfg = build_config("smoke", "sdft", overrides={"seed": 3})
    assert cfg.evaluation == build_eval_config({"preset": "smoke", "seed": 3, "template": "same_format"})
    assert cfg.method_spec.name == "sdft" and cfg.task_spec.name == cfg.task == "embedded_tool"
    assert build_config("smoke", "rag").evaluation.variant == "rag"  # the method's prompt
    assert "evaluation" not in cfg.to_dict()  # not a config key: config.yaml is unchanged


def test_grids_carry_evaluation_options_as_a_dict_through_their_file(tmp_path):
    from experiments import grid as G

    specs = G.expand("t", "smoke", ["embedded_tool"], ["base"], [0], tmp_path,
                     eval_options={"allow_code_execution": True, "max_new_tokens": 16})
    G.write_grid(specs, tmp_path / "grid.json")
    (back,) = G.read_grid(tmp_path / "grid.json")
    assert back == specs[0] and back.eval_options == {"allow_code_execution": True, "max_new_tokens": 16}
    with pytest.raises(ValueError, match=r"unknown evaluation options \['max_tokens'\]"):
        G.expand("t", "smoke", ["embedded_tool"], ["base"], [0], tmp_path, eval_options={"max_tokens": 16})


def test_a_tasks_values_on_a_preset_are_the_preset_files():
    """What a preset means for a task (the validation sweep's learning rates, the knowledge runs' lengths) is in
    its file's ``tasks`` block, a layer above the preset's method blocks and below the command line."""
    from sdft.config import build_config

    assert load_preset("mini")["tasks"]["embedded_tool"] == {"methods": {"sdft": {"learning_rate": 2.0e-4}}}
    assert build_config("mini", "sdft", overrides={"task": "embedded_tool"}).learning_rate == 2.0e-4
    assert build_config("mini", "sft", overrides={"task": "embedded_tool"}).learning_rate == 1.0e-4  # the preset's
    assert build_config("mini", "sdft", overrides={"task": "embedded_tool", "learning_rate": 5e-5}).learning_rate == 5e-5
    paper = build_config("paper", "sdft", overrides={"task": "knowledge_ood"})
    assert (paper.max_completion_length, paper.num_train_epochs, paper.teacher_template) == (1024, 4, "reference")


def test_a_sections_tasks_and_prior_suite_on_a_preset_are_the_preset_files():
    from experiments import section
    from experiments.evaluation import prior_suite_for

    for preset, suite in (("smoke", "embedded"), ("mini", "embedded"), ("paper", "paper")):
        assert prior_suite_for(preset) == suite
    assert section.preset_tasks("table5", "mini") == ["embedded_science", "embedded_tool", "embedded_medical"]
    assert section.preset_tasks("table5", "paper") == ["science", "tooluse", "medical"]
    assert section.preset_tasks("table1", "paper") == ["knowledge"]
    with pytest.raises(SystemExit, match="names no tasks for nowhere"):
        section.preset_tasks("nowhere", "smoke")
