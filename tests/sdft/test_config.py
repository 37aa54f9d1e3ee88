"""The configuration system: TRL's parser over script, method and trainer fields; presets, recipes, overrides."""

import pytest
import yaml

from sdft.config import build_config, config_keys, describe_fields
from sdft.config_layers import PRESETS, parse_overrides
from sdft.registry import get_method, method_names


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("method", ["sdft", "sft", "dft", "reinvoke", "cpt", "offline_distill", "sft_from_teacher",
                                    "base"])
def test_every_preset_builds_every_method_with_its_own_trainer_config(preset, method):
    cfg = build_config(preset, method)
    assert isinstance(cfg.training, get_method(method).config_class)
    assert cfg.method == method and cfg.preset == preset and cfg.seed == 0
    for key, value in get_method(method).defaults.items():  # a method's defining values survive the presets
        assert getattr(cfg, key) == value, key


def test_layers_later_wins_and_both_command_line_forms_reach_the_trainer_config(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": "sdft", "learning_rate": 3e-4, "teacher_update_rate": 0.2,
                                      "max_grad_norm": 0.5}))
    cfg = build_config("mini", recipe=recipe, overrides=parse_overrides(["teacher_update_rate=0.3", "max_steps=7"]),
                       argv=["--max_steps", "9", "--fused_lm_head", "false"])
    assert cfg.learning_rate == pytest.approx(3e-4)  # recipe over preset (mini: 1e-4)
    assert cfg.teacher_update_rate == pytest.approx(0.3)  # key=value over recipe
    assert cfg.max_steps == 9  # --key value over key=value
    assert cfg.fused_lm_head is False and cfg.training.fused_lm_head is False
    assert cfg.max_grad_norm == 0.5 and cfg.rollout_dtype == "bfloat16"  # recipe; mini preset's sdft block
    assert cfg.n_train == 128 and cfg.model == "embedded:smollm2-135m-instruct"  # mini's common block


def test_warmup_ratio_is_an_alias_of_transformers_5_warmup_steps():
    cfg = build_config("smoke", "sdft", overrides={"warmup_ratio": 0.1})
    assert cfg.warmup_steps == pytest.approx(0.1) and cfg.training.get_warmup_steps(30) == 3
    assert build_config("smoke", "sft", argv=["--warmup_ratio", "0.5"]).warmup_steps == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not both"):
        build_config("smoke", "sdft", overrides={"warmup_ratio": 0.1, "warmup_steps": 2})


def test_names_of_trl_and_ours_drive_trl_fields():
    cfg = build_config("smoke", "sdft", overrides={"divergence": "reverse", "teacher_template": "paper"})
    assert cfg.distillation_alpha == 1.0 and cfg.distillation_mode == "full_logits"
    assert "{prompt}" in cfg.teacher_prompt_template and "{privileged_context}" in cfg.teacher_prompt_template
    assert build_config("smoke", "sdft", overrides={"divergence": 0.25}).distillation_alpha == 0.25


@pytest.mark.parametrize("bad,match", [
    ({"bogus_key": 1}, r"command line: unknown config keys \['bogus_key'\] for method 'sdft'"),
    ({"estimator": "magic"}, "estimator"),  # a value from a YAML layer is checked against the field's choices
    ({"teacher_model_kind": "oracle"}, "teacher_model_kind"),
    ({"divergence": "sideways"}, "divergence"),
    ({"max_length": 100}, "max_length"),  # an SFT field is not an SDFT key
    ({"learning_rate": "fast"}, "learning_rate"),
])
def test_bad_values_raise_errors_naming_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        build_config("smoke", "sdft", overrides=bad)


def test_a_recipe_with_an_unknown_key_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("method: sft\nteacher_update_rate: 0.1\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown config keys"):
        build_config("smoke", recipe=recipe)


def test_config_yaml_is_flat_and_rebuilds_the_same_config(tmp_path):
    cfg = build_config("smoke", "sdft", overrides={"output_dir": str(tmp_path / "run"), "learning_rate": 2e-3})
    cfg.save(tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["method"] == "sdft" and saved["learning_rate"] == 2e-3 and saved["divergence"] == "forward"
    assert saved["output_dir"] == str(tmp_path / "run") and saved["teacher_update_rate"] == 0.1


def test_default_output_dir_names_task_method_preset_and_seed():
    assert build_config("smoke", "dft", overrides={"seed": 3}).output_dir == "runs/embedded_tool/dft/smoke-seed3"


def test_help_config_lists_every_field_of_the_method_with_its_help():
    text = describe_fields("reinvoke")
    for key in ("reinvoke_steps", "teacher_update_rate", "learning_rate", "fused_lm_head", "n_train"):
        assert f"  {key} (default" in text
    assert "  teacher_model_kind (default 'base')" in text  # re-invoke's defining value, not the class default
    assert set(method_names()) >= {"base", "sdft", "sft", "dft", "reinvoke", "cpt", "offline_distill",
                                   "sft_from_teacher"}
    assert "max_length" in config_keys("sft") and "max_length" not in config_keys("sdft")


def test_cli_smoke_run_with_a_transformers_and_a_trl_knob(tmp_path, monkeypatch):
    """`python -m sdft.train --method sdft --preset smoke --output-dir D warmup_ratio=0.1 fused_lm_head=false`."""
    import sdft.self_distillation
    from sdft.train import main

    built = []

    class Recording(sdft.self_distillation.SelfDistillationTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(sdft.self_distillation, "SelfDistillationTrainer", Recording)
    out = tmp_path / "a"
    assert main(["--method", "sdft", "--preset", "smoke", "--output-dir", str(out), "warmup_ratio=0.1",
                 "fused_lm_head=false"]) == out
    (trainer,) = built
    assert trainer.args.fused_lm_head is False and not trainer._fused_head_usable(trainer.model)
    assert trainer.args.warmup_steps == pytest.approx(0.1)
    assert trainer.lr_scheduler.lr_lambdas[0](0) == 0.0  # the schedule starts with a warm-up step (3 steps x 0.1)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["warmup_steps"] == pytest.approx(0.1) and saved["fused_lm_head"] is False
    assert (out / "model" / "model.safetensors").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_the_installed_package_answers_help_from_any_directory(tmp_path, run_module):
    """`cd /tmp && python -m sdft.train --help` (setup.sh installs the checkout editable): a fresh interpreter."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sdft.train", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--help-config" in out.stdout and "--output-dir" in out.stdout
    keys = run_module("sdft.train", ["--method", "sft", "--help-config"], cwd=tmp_path)  # forked: no imports
    assert keys.returncode == 0, keys.stderr[-2000:]
    assert all(f"\n  {k} " in keys.stdout for k in ("max_length", "learning_rate", "n_train"))
