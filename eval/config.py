"""Every option of an evaluation in one dataclass, :class:`EvalConfig`, resolved once by :func:`build_eval_config`.

Values come from these layers, later ones winning (the same machinery as a run's config, ``sdft.config_layers``):
  1. the dataclass defaults;
  2. the preset's ``eval:`` block (``sdft/presets/<preset>.yaml``: evaluation size, generation length, batch sizes,
     lm-eval limit), the preset being the one given, else the evaluated run's, else ``mini``;
  3. the evaluated run's own values (``config.yaml`` of a run directory: its ``teacher_template``);
  4. the values given: a dict (a grid's ``RunSpec.eval_options``, a caller's), then a command line's ``--key value``
     tokens (``python -m eval.run``).

Below the resolution nothing reads a preset or looks a name up: ``eval.evaluate(model, task, cfg)`` takes the
:class:`~data_prep.task.Task` and this config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Mapping, Sequence

from sdft.config_layers import PRESETS, check_choices, dataclass_parser, load_preset
from sdft.errors import ConfigError

DEFAULT_PRESET = "mini"
VARIANTS = ("student", "teacher", "rag")


@dataclass
class EvalConfig:
    """One evaluation's options (the module docstring says where their values come from)."""

    preset: Literal["smoke", "mini", "paper"] | None = field(default=None, metadata={
        "help": "the preset whose eval: block gave the defaults below (default: the evaluated run's preset, else "
                "mini); recorded in eval.json"})
    split: Literal["train", "val", "test"] = field(default="test", metadata={
        "help": "the task's split to evaluate on"})
    seed: int = field(default=0, metadata={
        "help": "seed of the records (a subsample of n records, the embedded world of the knowledge task) and of "
                "the sampling of pass@k and KL"})
    n: int | None = field(default=None, metadata={
        "help": "number of records of the split (default: all of them); the preset's eval.n"})
    data_dir: str | None = field(default=None, metadata={
        "help": "local mirror of the task data (offline clusters), as sdft.train's data_dir"})
    variant: Literal["student", "teacher", "rag"] = field(default="student", metadata={
        "help": "the prompt: student (the query alone, as every trained method is evaluated), teacher (the "
                "demonstration-conditioned prompt of template) or rag (oracle RAG: the question's source text "
                "before it); on the command line also --teacher / --rag"})
    template: str = field(default="paper", metadata={
        "help": "teacher template of the teacher variant (sdft.prompts): the evaluated run's teacher_template when "
                "it has one, else paper"})
    max_new_tokens: int = field(default=256, metadata={
        "help": "tokens generated per response at most; the preset's eval.max_new_tokens"})
    batch_size: int = field(default=8, metadata={
        "help": "prompts per generation batch of the task's evaluation; the preset's eval.batch_size"})
    prior_batch_size: int | None = field(default=None, metadata={
        "help": "lm-eval's batch size for the prior suite (default: batch_size); the preset's "
                "eval.prior_batch_size, unless batch_size is given above the preset and this is not: then "
                "batch_size"})
    prior_loglikelihood: Literal["shared_context", "lm_eval"] = field(default="shared_context", metadata={
        "help": "how the hf backend scores the prior suite's multiple-choice (loglikelihood) requests: "
                "shared_context runs each item's context once for all its choices (eval/shared_context_lm.py; "
                "lm-eval's values to float rounding, tests/eval/test_shared_context_lm.py), lm_eval runs lm-eval's "
                "HFLM, one full row per choice (the reference); recorded in eval.json as "
                "prior.<suite>.loglikelihood"})
    passk: int | None = field(default=None, metadata={
        "help": "samples per prompt for pass@k (temperature 1.0, top-p 0.95); default: greedy accuracy only"})
    kl_base: str | None = field(default=None, metadata={
        "help": "also estimate KL(model || this base model) on the task prompts (a model reference)"})
    prior_suite: Literal["paper", "embedded", "none"] = field(default="none", metadata={
        "help": "prior-capability suite (lm-eval, eval.prior): paper (the paper's six benchmarks), embedded "
                "(offline stand-ins) or none"})
    prior_benchmarks: list[str] | None = field(default=None, metadata={
        "help": "a subset of the prior suite's benchmarks (default: all of them)"})
    limit: float | None = field(default=None, metadata={
        "help": "lm-eval limit per benchmark: a count (>= 1) or a fraction of each benchmark; the preset's "
                "eval.limit"})
    allow_code_execution: bool = field(default=False, metadata={
        "help": "run humaneval / the code stand-in of the prior suite (executes model-written code, in the "
                "sandbox of eval.sandbox)"})
    ifeval_punkt_fallback: bool = field(default=False, metadata={
        "help": "offline: a parameter-free NLTK Punkt model for ifeval when punkt_tab is not installed"})
    judge_model: str | None = field(default=None, metadata={
        "help": "LLM judge model of a judge-scored task (default: the task's offline judge if it has one, e.g. "
                "embedded_knowledge's fact judge, else gpt-5-mini)"})
    judge_timeout: float | None = field(default=None, metadata={
        "help": "seconds one judge request waits for a reply per attempt (default eval.judge."
                "DEFAULT_JUDGE_TIMEOUT_S)"})
    judge_deadline: float | None = field(default=None, metadata={
        "help": "seconds one judge request may take, all retries and waits together; then the evaluation stops "
                "with an error naming the endpoint (default eval.judge.DEFAULT_JUDGE_DEADLINE_S)"})
    backend: Literal["auto", "hf", "vllm"] = field(default="auto", metadata={
        "help": "generation backend: auto (vLLM when installed and the model is a reference it can load), hf "
                "(transformers) or vllm"})
    skip_task: bool = field(default=False, metadata={
        "help": "evaluate the prior suite only, no task"})

    def to_dict(self) -> dict[str, Any]:
        """Every field, plain values (the form of a grid's ``eval_options`` and of YAML)."""
        return asdict(self)


def field_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(EvalConfig))


def build_eval_config(values: Mapping[str, Any] | None = None, argv: Sequence[str] = (),
                      run_config: Mapping[str, Any] | None = None) -> EvalConfig:
    """Resolve an :class:`EvalConfig` from the layers of the module docstring.

    ``values``: the given values by field name (``None`` counts as not given); ``argv``: ``--key value`` tokens of
    its fields, above ``values``; ``run_config``: the evaluated run's ``config.yaml`` (its ``preset`` when none is
    given, its ``teacher_template``). A key that is no field, or a value outside a field's choices, is a
    ``ConfigError`` naming the layer.
    """
    given = {k: v for k, v in (values or {}).items() if v is not None}
    run_config = run_config or {}
    run_preset = run_config.get("preset") if run_config.get("preset") in PRESETS else None
    preset = given.get("preset") or run_preset or DEFAULT_PRESET
    run_values = {"template": run_config["teacher_template"]} if run_config.get("teacher_template") else {}
    parser = dataclass_parser([EvalConfig])
    known = field_names()
    layers = [(f"preset {preset!r}: eval", load_preset(preset)["eval"]), ("the evaluated run", run_values),
              ("the evaluation's values", given)]
    for where, layer in layers:
        unknown = sorted(set(layer) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown evaluation keys {unknown}; see `python -m eval.run --help`")
        parser.set_defaults_with_config(**layer)
    parser.set_defaults_with_config(preset=preset)
    try:
        (cfg,) = parser.parse_args_into_dataclasses(args=list(argv))
    except ValueError as err:
        raise ConfigError(f"evaluation options: {err}") from None
    check_choices(parser, cfg)
    if _given("batch_size", given, argv) and not _given("prior_batch_size", given, argv):
        cfg.prior_batch_size = cfg.batch_size
    return cfg


def _given(name: str, values: Mapping[str, Any], argv: Sequence[str]) -> bool:
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    return name in values or any(token.split("=", 1)[0] in flags for token in argv)
