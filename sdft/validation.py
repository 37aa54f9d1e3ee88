"""Config-time checks of a run's data sources, before any data, model or prompt is loaded.

Every config value that says where a run's data or weights come from is checked for its form and, when it names a
local path, for that path's existence. Nothing is read, downloaded or looked up on the Hugging Face hub: a hub id
is checked for its form only (whether it exists, and whether the hub is reachable, is the loader's question).

``sdft.config.build_config`` calls :func:`validate_sources` on every config it builds, with the layer each value
came from (the preset, the recipe file, the command line), so a bad source in a recipe fails when the recipe is
read -- for a run, and for the experiment grids (``experiments.grid.validate_grid``) before the first run trains --
not after hours of training (``reinvoke_prompts: hub`` once failed only after the whole SFT stage).

The checked keys (those of them that the run's method has):

  ``task``                     a registered task (``data_prep.registry``)
  ``model``                    ``embedded:NAME`` with a known NAME; a name that can only be a local path
                               (``sdft.models.looks_like_path``) an existing directory, not a LoRA adapter's;
                               else a hub id's form
  ``data_dir``                 an existing directory when given; when not, ``$SDFT_DATA_DIR`` likewise when set and
                               the task reads real data (``data_prep.real_tasks``)
  ``reinvoke_prompts``         a general prompt source (``data_prep.general_prompts.parse_source``: ``embedded``,
                               ``hub:<owner>/<dataset>``, ``file:<path>``); a ``file:`` path an existing file
  ``teacher_template``         a template name (``sdft.prompts.TEACHER_TEMPLATES``) or a text with both placeholders
  ``offline_num_samples``, ``temperature``, ``top_p``  how offline distillation samples its teacher (>= 1, > 0,
                               (0, 1]); checked for the methods whose own knobs they are (``TeacherSamplingArguments``)

and every number of ``NUMBER_CHECKS`` that the method has, against the range in which it can work (batch sizes,
lengths and step counts >= 1, rates in their interval, ...): ``per_device_train_batch_size=-1`` or ``n_train=0``
is refused here, naming the key, instead of failing in a library after the model has loaded (or, for ``n_train=0``,
"training" zero steps). ``None`` passes where the field allows it (``n_train``: every record).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from data_prep.general_prompts import hub_id_problem, source_problem
from data_prep.registry import get_task
from data_prep.task import Task
from sdft.errors import UserError
from sdft.prompts import get_template


@dataclass(frozen=True)
class SourceProblem:
    key: str
    value: Any
    where: str  # the layer the value came from: a recipe file, "preset 'paper'", "command line", "default", ...
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: config key {self.key!r} = {self.value!r}: {self.problem}"


class SourceError(UserError, ValueError):
    """One or more data sources of a config are invalid; ``problems`` lists them, each naming key, value and layer."""

    def __init__(self, problems: list[SourceProblem], method: str | None = None):
        self.problems = list(problems)
        head = f"config of method {method!r}: " if method else ""
        if len(self.problems) == 1:
            text = head + str(self.problems[0])
        else:
            text = head + f"{len(self.problems)} invalid values:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(text)


# ------------------------------------------------------------------------------------------------ one value each
def task_problem(name: Any) -> str | None:
    try:
        get_task(name)
    except KeyError as err:
        return str(err.args[0]) if err.args else f"unknown task {name!r}"
    return None


def model_problem(name: Any) -> str | None:
    from sdft.models import EMBEDDED_MODELS, EMBEDDED_PREFIX, is_embedded, looks_like_path, model_folder_problem

    if not isinstance(name, str) or not name.strip():
        return "a model is a hub id, a local directory or embedded:NAME"
    if is_embedded(name):
        key = name[len(EMBEDDED_PREFIX):]
        return None if key in EMBEDDED_MODELS else \
            f"unknown embedded model; known: {[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS]}"
    if looks_like_path(name) or os.path.isdir(os.path.expanduser(name)):
        from sdft.adapters import is_adapter_dir, merged_dir

        path = os.path.expanduser(name)
        if is_adapter_dir(path):  # a LoRA run's model/: the teachers are built from the model's path
            return (f"{os.path.abspath(path)} holds a LoRA adapter, not a model: train from a full model, e.g. its "
                    f"merged copy {merged_dir(os.path.abspath(path))} (written by a run with merge=true)")
        return model_folder_problem(path) if os.path.isdir(path) else \
            f"no such model directory: {os.path.abspath(path)}"
    problem = hub_id_problem(name)
    return None if problem is None else problem.replace("hub dataset id", "hub model id").replace(
        "<owner>/<dataset>", "<owner>/<model>")


def data_dir_problem(value: Any) -> str | None:
    if value in (None, ""):
        return None
    path = os.path.expanduser(str(value))
    if os.path.isdir(path):
        return None
    what = "is a file, not a directory" if os.path.exists(path) else "does not exist"
    return f"the data directory {os.path.abspath(path)} {what} (a local mirror of the task data: data_prep/README.md)"


def general_prompts_problem(value: Any) -> str | None:
    return source_problem(value)


def teacher_template_problem(value: Any) -> str | None:
    try:
        get_template(value)
    except (ValueError, TypeError) as err:
        return str(err)
    return None


def _number_problem(test: Callable[[float], bool], rule: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and test(value)
        return None if ok else f"must be {rule}"

    return check


# key -> its check; the number checks apply where the key is offline distillation's teacher-sampling knob
FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "task": task_problem,
    "model": model_problem,
    "data_dir": data_dir_problem,
    "reinvoke_prompts": general_prompts_problem,
    "teacher_template": teacher_template_problem,
}
SAMPLING_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "offline_num_samples": _number_problem(lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1"),
    "temperature": _number_problem(lambda v: v > 0, "> 0"),
    "top_p": _number_problem(lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional(value: Any) -> str | None:
        problem = check(value) if value is not None else None
        return f"{problem} (or null)" if problem else None

    return optional


_INT = lambda v: float(v).is_integer()  # noqa: E731  (an int, or a float such as 4.0 from a YAML file)
_POSITIVE_INT = _number_problem(lambda v: _INT(v) and v >= 1, "an integer >= 1")
_NON_NEGATIVE_INT = _number_problem(lambda v: _INT(v) and v >= 0, "an integer >= 0")
# key -> its check, for every method that has the key (transformers' TrainingArguments, TRL's configs, ours)
NUMBER_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "n_train": _optional(_POSITIVE_INT),
    "per_device_train_batch_size": _POSITIVE_INT,
    "per_device_eval_batch_size": _POSITIVE_INT,
    "gradient_accumulation_steps": _POSITIVE_INT,
    "max_completion_length": _POSITIVE_INT,
    "max_prompt_length": _optional(_POSITIVE_INT),
    "max_length": _optional(_POSITIVE_INT),
    "num_train_epochs": _number_problem(lambda v: v > 0, "> 0"),
    "max_steps": _number_problem(lambda v: _INT(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 (epochs decide)"),
    "learning_rate": _number_problem(lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "warmup_steps": _number_problem(lambda v: v >= 0, ">= 0"),
    "weight_decay": _number_problem(lambda v: v >= 0, ">= 0"),
    "max_grad_norm": _number_problem(lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "save_steps": _number_problem(lambda v: v > 0, "> 0 (a step count, or a fraction of the run below 1)"),
    "logging_steps": _number_problem(lambda v: v > 0, "> 0 (a step count, or a fraction of the run below 1)"),
    "selection_steps": _optional(_POSITIVE_INT),
    "selection_records": _optional(_POSITIVE_INT),
    "seed": _NON_NEGATIVE_INT,
    "num_generations": _POSITIVE_INT,
    "num_iterations": _POSITIVE_INT,
    "teacher_update_rate": _number_problem(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "teacher_sync_steps": _POSITIVE_INT,
    "num_loss_tokens_to_skip": _NON_NEGATIVE_INT,
    "distillation_topk": _NON_NEGATIVE_INT,
    "token_kl_clip": _optional(_number_problem(lambda v: v > 0, "> 0")),
    "top_k": _optional(_NON_NEGATIVE_INT),
    "reinvoke_steps": _POSITIVE_INT,
    **SAMPLING_CHECKS,
}


def value_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the source key ``key`` (None: fine, or ``key`` is no source key)."""
    check = FIELD_CHECKS.get(key) or NUMBER_CHECKS.get(key)
    return check(value) if check is not None else None


def is_source_key(key: str) -> bool:
    return key in FIELD_CHECKS or key in NUMBER_CHECKS


# ------------------------------------------------------------------------------------------------ a whole config
def source_problems(cfg, origins: Mapping[str, str] | None = None, unset: str = "config") -> list[SourceProblem]:
    """Every problem of ``cfg``'s data sources (a :class:`sdft.config.RunConfig`); ``origins`` maps a key to the
    layer its value came from (``build_config`` passes it), ``unset`` names the layer of the keys it lacks."""
    origins = origins or {}
    values = cfg.to_dict()
    problems = []

    def add(key: str, value: Any, problem: str | None, where: str | None = None):
        if problem:
            problems.append(SourceProblem(key, value, where or origins.get(key, unset), problem))

    for key, check in FIELD_CHECKS.items():
        if key in values:
            add(key, values[key], check(values[key]))
    for key, check in NUMBER_CHECKS.items():
        if key in values:
            add(key, values[key], check(values[key]))
    args = cfg.method_args
    sampling = {f.name for f in fields(args)} if args is not None else set()
    if "offline_num_samples" in sampling:  # offline distillation's teacher-sampling knobs (TeacherSamplingArguments)
        for key, check in SAMPLING_CHECKS.items():
            if key in sampling and values.get(key) != getattr(args, key):  # not already checked above
                add(key, getattr(args, key), check(getattr(args, key)))
    if values.get("data_dir") in (None, "") and os.environ.get("SDFT_DATA_DIR") and _reads_real_data(cfg.task_spec):
        add("data_dir", None, data_dir_problem(os.environ["SDFT_DATA_DIR"]), "$SDFT_DATA_DIR (data_dir not given)")
    return problems


def validate_sources(cfg, origins: Mapping[str, str] | None = None, unset: str = "config") -> None:
    """Raise :class:`SourceError` (a ``ValueError``) naming every invalid data source of ``cfg``: its key, its
    value and the layer (recipe file, preset, command line) it came from. Reads and downloads nothing."""
    problems = source_problems(cfg, origins, unset)
    if problems:
        raise SourceError(problems, getattr(cfg.script, "method", None))


def _reads_real_data(task: Task | None) -> bool:
    """Whether ``task`` is one of the paper's tasks (read from ``data_dir`` / ``$SDFT_DATA_DIR`` or the hub)."""
    return task is not None and getattr(task.load, "__module__", "") == "data_prep.real_tasks"
