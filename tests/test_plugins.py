"""Plugins (``sdft.plugins``): a task and a method of a researcher's own, in files outside the repository, imported
with ``--include`` / ``include`` / ``$SDFT_INCLUDE`` by every entry point. The loader's unit tests, the one-line
errors, and ``examples/my_plugin.py`` copied out of the checkout, trained, evaluated and tabulated from the command
line (``sdft.train``, ``eval.run``, ``run_table5.sh``) with no edit inside the repository."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from section_scripts import ROOT, run_ok, script_env

EXAMPLE = ROOT / "examples" / "my_plugin.py"


def _task_module(name: str, task: str, extra: str = "") -> str:
    """The source of a plugin module registering the toy task ``task``."""
    return textwrap.dedent(f'''
        """{name}: registers the task {task!r}."""
        from data_prep.registry import Task, register_task
        from data_prep.scorers import score_short_answer

        def load(split, seed=0, n=None, data_dir=None):
            return [{{"id": "{task}-" + split, "task": "{task}", "prompt": [{{"role": "user", "content": "Hi?"}}],
                      "demonstration": "hello", "reference": "hello", "meta": {{}}}}]

        register_task(Task("{task}", load=load, score=score_short_answer, metric="m", title="{task}"))
        {extra}
    ''')


@pytest.fixture
def registries():
    """The task and method registries and ``sys.modules`` as they were before the test, restored after it."""
    from data_prep.registry import TASKS, task_names
    from sdft.registry import METHODS, method_names

    method_names(), task_names()  # the built-in entries first
    tasks, methods, modules = dict(TASKS), dict(METHODS), set(sys.modules)
    yield
    for registry, before in ((TASKS, tasks), (METHODS, methods)):
        for name in set(registry) - set(before):
            registry.pop(name)
    for name in set(sys.modules) - modules:
        if name.startswith("sdft_plugin_") or name.startswith("lab_plugin"):
            sys.modules.pop(name)


# ------------------------------------------------------------------------------------------------ the loader
def test_a_module_name_importable_from_sys_path(registries, tmp_path, monkeypatch):
    from data_prep.registry import get_task
    from sdft.plugins import import_plugins, is_path_spec, normalize

    (tmp_path / "lab_plugin_mod.py").write_text(_task_module("lab_plugin_mod", "plugin_mod_task"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not is_path_spec("lab_plugin_mod") and normalize("lab_plugin_mod") == "lab_plugin_mod"
    assert import_plugins(["lab_plugin_mod"]) == ["lab_plugin_mod"]
    assert import_plugins(["lab_plugin_mod"]) == ["lab_plugin_mod"]  # a second import is no new registration
    assert get_task("plugin_mod_task").metric == "m"


def test_a_file_path_is_imported_once_under_a_name_of_its_own(registries, tmp_path, monkeypatch):
    from data_prep.registry import get_task
    from sdft.plugins import import_plugins, merge, module_name

    path = tmp_path / "outside" / "task_file.py"
    path.parent.mkdir()
    path.write_text(_task_module("task_file", "plugin_file_task"))
    monkeypatch.chdir(tmp_path)
    (name,) = import_plugins(["outside/task_file.py"])  # relative to the current directory
    assert name == module_name(path) and name.startswith("sdft_plugin_task_file_")
    assert import_plugins([str(path)]) == [name]  # the same file by another spelling: not imported again
    assert get_task("plugin_file_task").title == "plugin_file_task"
    # a run records the spec absolute, each once
    assert merge(["outside/task_file.py"], [str(path)], ["lab.mod"]) == [str(path), "lab.mod"]


def test_a_directory_imports_each_of_its_py_files_in_name_order(registries, tmp_path):
    from data_prep.registry import get_task
    from sdft.plugins import PluginError, import_plugins, module_name

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "b_second.py").write_text(_task_module("b", "plugin_dir_b", extra="import a_first_marker"))
    (folder / "a_first.py").write_text(_task_module("a", "plugin_dir_a",
                                                    extra="import sys; sys.modules['a_first_marker'] = sys"))
    (folder / "notes.txt").write_text("not a module")
    names = import_plugins([str(folder)])
    assert names == [module_name(folder / "a_first.py"), module_name(folder / "b_second.py")]
    assert get_task("plugin_dir_a") and get_task("plugin_dir_b")
    sys.modules.pop("a_first_marker")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PluginError, match=f"^{empty}: a directory without .py files$"):
        import_plugins([str(empty)])


def test_the_environment_variable_is_imported_by_the_registries_first_look_up(registries, tmp_path, monkeypatch):
    from data_prep.registry import TASKS
    from sdft.plugins import ENV_VAR, Registry, env_specs

    one, two = tmp_path / "env_one.py", tmp_path / "env_two.py"
    one.write_text(_task_module("env_one", "plugin_env_one"))
    two.write_text(_task_module("env_two", "plugin_env_two"))
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(one), "", str(two)]))
    assert env_specs() == [str(one), str(two)]
    assert "plugin_env_one" not in TASKS
    fresh = Registry("thing", lambda: [])  # a registry not looked up yet, as in a new process
    assert fresh.names() == []
    assert {"plugin_env_one", "plugin_env_two"} <= set(TASKS)


def test_a_missing_path_or_module_and_a_failing_import_are_one_line_errors_naming_the_spec(registries, tmp_path,
                                                                                         monkeypatch):
    from sdft.plugins import PluginError, as_list, import_plugins

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginError, match=r"^nowhere/missing\.py: no such file or directory \(cwd "):
        import_plugins(["nowhere/missing.py"])
    with pytest.raises(PluginError, match="^lab_plugin_absent: no module of that name on sys.path"):
        import_plugins(["lab_plugin_absent"])
    with pytest.raises(PluginError, match="^not a module!: no such file or directory, and not a module name"):
        import_plugins(["not a module!"])
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(PluginError, match=r"^data\.txt: not a \.py file or a directory$"):
        import_plugins(["data.txt"])
    (tmp_path / "broken.py").write_text("import lab_plugin_dependency_absent\n")
    with pytest.raises(PluginError, match="^broken.py: import failed: ModuleNotFoundError: No module named") as info:
        import_plugins(["broken.py"])
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # the original exception, chained
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="^raises.py: import failed: RuntimeError: boom$") as info:
        import_plugins(["raises.py"])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not [m for m in sys.modules if m.startswith("sdft_plugin_raises_")]  # a failed import leaves nothing
    with pytest.raises(PluginError, match="recipe.yaml: include must be a module name, a path or a list"):
        as_list({"a": 1}, "recipe.yaml")


# ------------------------------------------------------------------------------------------------ entry points
def test_unknown_names_are_one_line_errors_that_suggest_include(tmp_path, capsys):
    from eval.run import main as eval_main
    from sdft.registry import get_method
    from sdft.train import main as train_main

    with pytest.raises(KeyError) as info:
        get_method("lab_nope")
    assert str(info.value).startswith("unknown method 'lab_nope'; known methods: [") and "--include" in str(info.value)
    with pytest.raises(SystemExit, match="^error: unknown method 'lab_nope'; .*--include MODULE_OR_PATH"):
        train_main(["--method", "lab_nope", "--output-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="^error: unknown method 'lab_nope'; "):
        train_main(["--method", "lab_nope", "--help-config"])
    with pytest.raises(SystemExit, match="^error: .*unknown task 'lab_nope_task'; .*--include MODULE_OR_PATH"):
        train_main(["--method", "sft", "--task", "lab_nope_task", "--output-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=r"^error: .*missing\.py: no such file or directory"):
        train_main(["--include", str(tmp_path / "missing.py"), "--method", "sft", "--output-dir", str(tmp_path)])
    # eval.run: before any model is loaded (the model named here does not exist)
    with pytest.raises(SystemExit, match="^error: unknown task 'lab_nope_task'; .*--include"):
        eval_main(["--model", str(tmp_path / "no-model"), "--task", "lab_nope_task"])
    assert not (tmp_path / "run").exists()


def test_the_config_imports_and_records_every_layers_plugins(registries, tmp_path, monkeypatch):
    from sdft.config import build_config
    from sdft.plugins import ENV_VAR

    plugin = tmp_path / "my_plugin.py"
    shutil.copy(EXAMPLE, plugin)
    env_plugin = tmp_path / "env_plugin.py"
    env_plugin.write_text(_task_module("env_plugin", "plugin_env_task"))
    monkeypatch.setenv(ENV_VAR, str(env_plugin))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"method": "mine", "task": "mine_task", "include": [str(plugin)]}))
    cfg = build_config("smoke", None, recipe, {"output_dir": str(tmp_path / "run"), "target": "both"})
    assert cfg.method == "mine" and cfg.task == "mine_task" and cfg.target == "both"
    assert cfg.include == [str(env_plugin), str(plugin)]  # the union of the layers, $SDFT_INCLUDE first
    assert cfg.to_dict()["include"] == cfg.include  # written to config.yaml and the manifest


def test_the_registry_docstring_example_runs(registries):
    import sdft.registry
    from sdft.config import build_config

    block = []
    for line in sdft.registry.__doc__.split("::\n", 1)[1].splitlines():  # the indented block after "::"
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    code = textwrap.dedent("\n".join(block))
    assert "..." not in code and "register_method(" in code
    exec(compile(code, "sdft/registry.py (docstring)", "exec"), {})
    cfg = build_config("smoke", "answer_sft", None, {"output_dir": "runs/x"})
    assert cfg.method == "answer_sft" and cfg.training.completion_only_loss is True


def test_a_section_passes_its_plugins_to_every_run_of_its_grid(registries, tmp_path):
    from experiments import grid as G
    from experiments import section
    from experiments.table5 import METHODS

    plugin = tmp_path / "my_plugin.py"
    shutil.copy(EXAMPLE, plugin)
    parser = section.build_parser(None, "table5", METHODS)
    args = parser.parse_args(["--preset", "smoke", "--include", str(plugin), "--tasks", "mine_task", "--methods",
                              "base,mine", "--results-dir", str(tmp_path / "t5"), "target=both"])
    assert section.import_section_plugins(args) == [str(plugin)]
    specs = section.build_grid(args, "table5", METHODS)
    assert [s.method for s in specs] == ["base", "mine"]
    assert all(s.overrides["include"] == [str(plugin)] for s in specs)
    G.write_grid(specs, tmp_path / "grid.json")  # what experiments.run_one reads in another process
    assert [s.overrides["include"] for s in G.read_grid(tmp_path / "grid.json")] == [[str(plugin)]] * 2
    assert specs[1].config().include == [str(plugin)]
    bad = parser.parse_args(["--preset", "smoke", "--methods", "base,lab_nope", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^error: unknown methods \['lab_nope'\]; .*--include"):
        section.build_grid(bad, "table5", METHODS)


# ------------------------------------------------------------------------------------------------ end to end
def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True).stdout


@pytest.mark.slow
def test_a_plugin_outside_the_repository_is_trained_evaluated_and_tabulated_from_the_command_line(
        tmp_path, tiny_model_path, run_module):
    def _run(dash_m: str, module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """``python -m module args`` from ``cwd``: a process of its own, forked from the preloaded server (its
        stdout and stderr are one log: both fields hold it)."""
        assert dash_m == "-m"
        return run_module(module, list(args), env=script_env(), cwd=cwd)

    before = _git_status()
    plugin = tmp_path / "lab" / "my_plugin.py"  # outside the checkout: the task and the method are not the package's
    plugin.parent.mkdir()
    shutil.copy(EXAMPLE, plugin)
    work = tmp_path / "work"
    work.mkdir()
    model = f"model={tiny_model_path}"

    # without --include the names are unknown: one line, no traceback
    proc = _run("-m", "sdft.train", "--method", "mine", "--task", "mine_task", "--preset", "smoke",
                "--output-dir", str(work / "run"), cwd=work)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown method 'mine'; ")
    assert "--include" in proc.stderr and not (work / "run").exists()

    # train: a relative --include, from the working directory
    proc = _run("-m", "sdft.train", "--include", "../lab/my_plugin.py", "--method", "mine", "--task", "mine_task",
                "--preset", "smoke", "--output-dir", "run", model, "target=both", cwd=work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = work / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["include"] == [str(plugin)] and saved["method"] == "mine" and saved["target"] == "both"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["target"] == "both" and manifest["n_examples"] == 16

    # evaluate the run directory from elsewhere, without --include: the run recorded its plugin
    proc = _run("-m", "eval.run", "--model", str(run), "--max-new-tokens", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    (score,) = [s for s in result["evaluations"]["student"]["scores"] if s["metric"] == "capital_match"]
    assert score["n"] == 4 and result["evaluations"]["student"]["task"] == "mine_task"

    # a Table 5 of the task: base, SFT and the plugin's method; --jobs 2 runs each in its own process
    # (experiments.run_one), which imports the plugin from the grid file
    out = tmp_path / "table5"
    proc = run_ok("table5", "--preset", "smoke", "--include", str(plugin), "--tasks", "mine_task",
                  "--methods", "base,sft,mine", "--jobs", "2", "--results-dir", str(out), model, cwd=work)
    table = pd.read_csv(out / "table5.csv")
    assert list(table["method"]) == ["base", "sft", "mine"] and set(table["task"]) == {"mine_task"}
    assert table["new_task"].notna().all() and table["prior_avg"].notna().all()
    md = (out / "table5.md").read_text()
    assert "## Capitals (mine) (ours: `mine_task`, metric `capital_match`)" in md and "| Answer SFT (mine) |" in md
    assert (out / "figure4_pareto.png").stat().st_size > 0
    for method in ("base", "sft", "mine"):
        assert yaml.safe_load((out / "mine_task" / method / "seed0" / "config.yaml").read_text())["include"] == \
            [str(plugin)]
    assert _git_status() == before  # nothing inside the repository was edited or written
