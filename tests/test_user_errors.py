"""A user's mistake is one line naming its key, file or endpoint, raised before anything loads (sdft.errors).

Each probe below once failed late, with a library traceback that named neither the key nor the file.
"""

import json
import os
import re

import pytest

from sdft.train import main


def _argv(out, model, *extra):
    return ["--method", "sdft", "--preset", "smoke", "--output-dir", str(out), f"model={model}", *extra]


@pytest.mark.parametrize("override,message", [
    ("per_device_train_batch_size=-1", "config key 'per_device_train_batch_size' = -1: must be an integer >= 1"),
    ("max_completion_length=0", "config key 'max_completion_length' = 0: must be an integer >= 1"),
    ("n_train=0", "config key 'n_train' = 0: must be an integer >= 1 (or null)"),
    ("teacher_update_rate=1.5", "teacher_update_rate"),
    ("learning_rate=-1", "config key 'learning_rate' = -1: must be a finite number >= 0"),
])
def test_a_value_that_cannot_work_is_refused_before_anything_loads(override, message, tiny_model_path, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(_argv(out, tiny_model_path, override))
    text = str(err.value.code)
    assert text.startswith("error: ") and message in text and "Traceback" not in text
    assert "command line" in text or override.startswith("teacher_update_rate")  # the layer the value came from
    assert not out.exists()  # refused before the run directory (or the model, or the data) was touched


def test_a_model_folder_without_a_config_or_with_a_cut_weights_file_is_named(tiny_model_path, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=re.escape(f"{empty}: no config.json")):
        main(_argv(tmp_path / "a", empty))
    cut = tmp_path / "cut"
    shutil.copytree(tiny_model_path, cut)
    weights = cut / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 10)
    with pytest.raises(SystemExit, match=re.escape(f"{weights}: truncated or padded safetensors file")):
        main(_argv(tmp_path / "b", cut))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_recipe_that_is_not_yaml_is_named_with_its_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: sft\nlearning_rate: 1e-4\ntask: [embedded_tool\n")
    with pytest.raises(SystemExit, match=re.escape(f"error: {recipe}: line 4, column 1: not valid YAML")):
        main(["--config", str(recipe), "--output-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=re.escape(f"error: {tmp_path / 'absent.yaml'}: no such file")):
        main(["--config", str(tmp_path / "absent.yaml"), "--output-dir", str(tmp_path / "run")])


def test_debug_lets_the_traceback_through(tiny_model_path, tmp_path, monkeypatch):
    from sdft.errors import UserError
    from sdft.validation import SourceError

    with pytest.raises(SourceError):
        main(_argv(tmp_path / "run", tiny_model_path, "n_train=0", "--debug"))
    monkeypatch.setenv("SDFT_DEBUG", "1")
    with pytest.raises(UserError):
        main(_argv(tmp_path / "run", tiny_model_path, "n_train=0"))


def _science_mirror(root, lines):
    folder = root / "sciknoweval" / "Chemistry_L3"
    folder.mkdir(parents=True)
    (folder / "part.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_a_data_error_is_one_line_and_skip_invalid_may_follow_it(tiny_model_path, tmp_path):
    good = {"question": "Which?", "choices": {"text": ["a", "b", "c", "d"], "label": list("ABCD")}, "answerKey": "A",
            "type": "mcq-4-choices", "level": "L3"}
    mirror = _science_mirror(tmp_path / "mirror", [json.dumps(good), "{not json"])
    out = tmp_path / "run"
    argv = ["--method", "sft", "--preset", "smoke", "--task", "science", "--output-dir", str(out),
            f"model={tiny_model_path}", f"data_dir={mirror}"]
    with pytest.raises(SystemExit) as err:
        main(argv)
    text = str(err.value.code)
    assert text.startswith(f"error: {mirror / 'sciknoweval' / 'Chemistry_L3' / 'part.jsonl'}: record line 2")
    assert "\n" not in text
    # the failed run trained nothing: asking to skip the bad record is not "another config" of a run to protect
    with pytest.raises(SystemExit) as err:
        main(argv + ["skip_invalid=true"])
    assert "of another config" not in str(err.value.code)


def test_help_is_short_and_help_config_shows_resolved_values_and_their_layer(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 40
    assert all(flag in text for flag in ("--help-config", "--config", "--force", "--output-dir", "--debug"))
    main(["--method", "sft", "--preset", "mini", "--help-config"])
    text = capsys.readouterr().out
    assert "learning_rate = 0.0001 (preset 'mini')" in text
    assert "max_length = 576 (preset 'mini', method 'sft')" in text
    assert re.search(r"^  weight_decay = 0\.0 \(preset 'mini'\)", text, re.M)
    main(["--method", "sft", "--preset", "mini", "--help-config", "learning_rate=3e-4"])
    assert "learning_rate = 0.0003 (command line)" in capsys.readouterr().out
