"""The task and method registries: a task and a method of a user's own, registered in the test itself, are
trainable (``python -m sdft.train``), evaluable (``eval.evaluate``) and tabulated (``experiments.reporting``)
with no other edit of the repository."""

from dataclasses import dataclass, field

import pandas as pd
import pytest
import yaml

WORDS = ["apple", "river", "stone", "cloud", "ember", "maple", "tiger", "lemon"]


def _echo_records(split: str, seed: int = 0, n: int | None = None, data_dir=None) -> list[dict]:
    words = WORDS[:6] if split == "train" else WORDS[6:]
    records = [{"id": f"echo-{split}-{w}", "task": "toy_echo", "prompt": [{"role": "user", "content": f"Say {w}."}],
                "demonstration": w, "reference": w, "meta": {}} for w in words]
    return records[:n] if n is not None else records


@dataclass
class EchoArguments:
    echo_repeats: int = field(default=1, metadata={"help": "how often the target repeats the demonstration"})


def _train_echo(cfg, records, run_dir, resume_from_checkpoint=None):
    from sdft.baselines.sft import build_sft_trainer

    targets = [" ".join([r["demonstration"]] * cfg.echo_repeats) for r in records]
    trainer = build_sft_trainer(cfg, records, run_dir, completions=targets)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, {"echo_repeats": cfg.echo_repeats, "targets": targets}


@pytest.fixture
def toy_registrations():
    from trl import SFTConfig

    from data_prep.registry import TASKS, Task, register_task
    from data_prep.scorers import score_short_answer
    from sdft.registry import METHODS, Method, method_names, register_method

    method_names()  # the built-in methods first
    task = register_task(Task("toy_echo", load=_echo_records, score=score_short_answer,
                              metric="normalized_containment", title="Toy echo", split_rule="fixed words"))
    method = register_method(Method("toy_echo_sft", train=_train_echo, config_class=SFTConfig,
                                    args_class=EchoArguments, title="Echo SFT", defaults={"shuffle_dataset": True},
                                    style={"color": "#00aa88", "marker": "h"}))
    yield task, method
    TASKS.pop(task.name)
    METHODS.pop(method.name)


def test_a_registered_toy_task_and_method_are_trainable_evaluable_and_tabulated(toy_registrations, tmp_path):
    from experiments import reporting as R
    from experiments.evaluation import evaluate_model
    from experiments.grid import RunSpec
    from experiments.section import execute
    from figures.pareto import plot_pareto

    root = tmp_path / "results"
    eval_options = {"n": 2, "max_new_tokens": 4, "prior_suite": "none"}
    for method in ("base", "toy_echo_sft"):
        execute(RunSpec("toy", "toy_echo", method, 0, "smoke", str(root / "toy_echo" / method / "seed0"),
                        overrides={"echo_repeats": 2, "max_steps": 2}, eval_options=eval_options))

    # trained: the method's own knob reached its training function and its config file; its model was saved
    run_dir = root / "toy_echo" / "toy_echo_sft" / "seed0"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["echo_repeats"] == 2 and saved["method"] == "toy_echo_sft" and saved["task"] == "toy_echo"
    manifest = yaml.safe_load((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["targets"][0] == "apple apple"
    assert (run_dir / "model" / "model.safetensors").exists()
    # base skipped the knob it does not have (a grid override reaches the methods that have the key)
    assert "echo_repeats" not in yaml.safe_load((root / "toy_echo" / "base" / "seed0" / "config.yaml").read_text())

    # evaluated with the task's own scorer and metric name, from the run directory alone
    result = evaluate_model(str(run_dir), n=2, max_new_tokens=4)
    (score,) = [s for s in result["evaluations"]["student"]["scores"] if s["unit"] == "percent"]
    assert score["metric"] == "normalized_containment" and score["n"] == 2

    # tabulated and drawn with the registries' titles and style
    runs = R.collect_runs(root)
    table = R.summarize_runs(runs, ["new_task"], ["base", "toy_echo_sft"])
    assert list(table["method"]) == ["base", "toy_echo_sft"] and list(table["n_seeds"]) == [1, 1]
    paper = pd.DataFrame(columns=["task", "method", "new_task"])
    R.write_tables(table, paper, runs, tmp_path / "toy", title="Toy table", columns=[("new_task", "New task")])
    md = (tmp_path / "toy.md").read_text()
    assert "## Toy echo (ours: `toy_echo`, metric `normalized_containment`)" in md and "| Echo SFT |" in md
    assert list(pd.read_csv(tmp_path / "toy.csv")["method"]) == ["base", "toy_echo_sft"]
    plot = table.assign(prior_avg=50.0)
    paths = plot_pareto(plot, tmp_path / "toy_pareto", task_titles={"toy_echo": R.task_title("toy_echo")},
                        method_styles={m: R.method_style(m) for m in table["method"]})
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_registering_a_name_twice_is_an_error_and_a_task_needs_exactly_one_way_to_be_scored():
    from data_prep.registry import Task, register_task, task_names
    from sdft.registry import Method, get_method, register_method

    assert "science" in task_names()
    sft = get_method("sft")
    with pytest.raises(ValueError, match="registered already"):
        register_method(Method("sft", train=sft.train, config_class=sft.config_class, title="another SFT"))
    with pytest.raises(ValueError, match="registered already"):
        register_task(Task("science", load=_echo_records, judge="medical", metric="m", title="t"))
    with pytest.raises(ValueError, match="exactly one"):
        Task("x", load=_echo_records, metric="m", title="t")
    with pytest.raises(ValueError, match="judge must be one of"):
        Task("x", load=_echo_records, judge="poetry", metric="m", title="t")
    with pytest.raises(KeyError, match="unknown method 'nope'; known methods"):
        get_method("nope")
