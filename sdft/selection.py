"""The paper's checkpoint protocol: report the checkpoint with the best validation score on the target task.

Appendix B.1: "We report test results for the model checkpoint that achieved the best validation performance on
the target task." Here, with ``checkpoint_selection=best_val`` (the ``mini`` and ``paper`` presets):

  * during training, every ``selection_steps`` optimizer steps and at the last step, :class:`BestValidationCheckpoint`
    evaluates the live model greedily on the task's validation split (``selection_records`` of them; the task's
    headline metric, the evaluation of ``eval.task_eval``, loaded once per run) and writes
    ``<run_dir>/selection/step<S>.json`` (score, n, how alike the answers are: ``sdft.health.answer_collapse``, and
    ``wall_s``, the seconds of the evaluation: generation and scoring);
  * a score strictly above every earlier one saves the model to ``<run_dir>/best_model/`` (ties keep the earlier
    checkpoint), so the disk holds one extra model, never a checkpoint per evaluation;
  * at the end ``<run_dir>/selection.json`` names the chosen step (``choose_step``), the final step and every
    step's score; the evaluation of the run (``experiments.evaluation``) then reports the test split of the chosen
    checkpoint and, beside it, the final model's.

The evaluations run between optimizer steps under a forked RNG: a run trains the same model with and without them
(``tests/sdft/test_selection.py``). A resumed run reads the step files it already wrote. ``checkpoint_selection=final``
turns all of this off: the final model is reported, as before.

With several processes the main process evaluates and writes, the others go on to the next step -- unless the
weights are sharded (DeepSpeed ZeRO-3, ``sdft.distributed.weights_sharded``): every forward then needs every process, so all of them
run the same evaluation (the main one writes its files) and gather the model together to save ``best_model/``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers import TrainerCallback

from data_prep.task import Task
from sdft.adapters import save_model_dir
from sdft.distributed import any_process, gathered, weights_sharded
from sdft.health import answer_collapse
from sdft.interrupts import training_interrupted
from sdft.run_io import SELECTION_DIR, read_json_or_none, read_step_files, write_json_atomic

SELECTION_FILE = "selection.json"
BEST_MODEL_DIR = "best_model"
CHECKPOINT_SELECTIONS = ("best_val", "final")


def choose_step(scores: Mapping[int, float]) -> int:
    """The step with the highest validation score; among equal scores the earliest. ``scores``: step -> score."""
    if not scores:
        raise ValueError("no validation scores to choose a checkpoint from")
    return min(scores, key=lambda step: (-scores[step], step))


def read_selection(run_dir: str | Path) -> dict | None:
    """``<run_dir>/selection.json``, or None for a run without the protocol."""
    return read_json_or_none(Path(run_dir) / SELECTION_FILE)


def selection_summary(steps: Mapping[int, dict], final_step: int, metric: str | None) -> dict[str, Any]:
    """The content of ``selection.json`` from the per-step evaluations."""
    scores = {s: float(v["value"]) for s, v in steps.items()}
    chosen = choose_step(scores)
    return {"criterion": f"validation {metric or 'score'} (greedy), best; ties to the earlier step",
            "chosen_step": chosen, "chosen_val": scores[chosen], "final_step": final_step,
            "final_val": scores.get(final_step), "steps": {str(s): scores[s] for s in scores},
            "collapsed_steps": [s for s, v in steps.items() if (v.get("answers") or {}).get("collapsed")],
            "model_dir": BEST_MODEL_DIR if chosen != final_step else "model"}


class BestValidationCheckpoint(TrainerCallback):
    """Evaluates the validation split during training and keeps the best model (module docstring).

    ``records``: the validation records; ``task`` and ``variant``: how they are prompted and scored
    (``eval.task_eval.evaluate_task``); ``every``: optimizer steps between evaluations; ``on_probe(step, answers)``:
    called with each evaluation's ``answer_collapse`` (the collapse rule's greedy arm); ``judge``: a judge-scored
    task's judge, made once per run.
    """

    def __init__(self, run_dir: str | Path, records: Sequence[dict], task: Task, *, every: int, variant: str = "student",
                 template: str = "paper", max_new_tokens: int = 64, batch_size: int = 8, seed: int = 0,
                 stage: str | None = None, on_probe: Callable[[int, dict, Any], None] | None = None,
                 judge=None):
        if every < 1:
            raise ValueError(f"selection_steps must be >= 1, got {every}")
        self.run_dir, self.records, self.task = Path(run_dir), list(records), task
        self.every, self.variant, self.template = every, variant, template
        self.max_new_tokens, self.batch_size, self.seed, self.stage = max_new_tokens, batch_size, seed, stage
        self.on_probe, self.judge = on_probe, judge
        self.best: float | None = None
        self.metric: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        done = read_step_files(self.run_dir) if state.is_world_process_zero else {}
        if done:  # resumed: the best so far is what the earlier steps found
            self.best = max(float(v["value"]) for v in done.values())
            self.metric = next(iter(done.values())).get("metric")

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if training_interrupted():  # an uninterrupted run would not evaluate this step (sdft.interrupts)
            return
        last = state.global_step >= state.max_steps
        due = state.global_step % self.every == 0 or last or control.should_training_stop
        if weights_sharded():  # (a collapse stop is decided on the main process only)
            due = any_process(due, args.device)
        if due:
            self._evaluate(args, state, control, model, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if training_interrupted():  # the resumed run chooses
            return
        sharded = weights_sharded()
        if not (state.is_world_process_zero or sharded):
            return
        missing = state.global_step not in read_step_files(self.run_dir)
        if sharded:
            missing = any_process(missing, args.device)
        if missing:  # stopped between evaluations (stop_on_collapse)
            self._evaluate(args, state, control, model, processing_class)
        if not state.is_world_process_zero:
            return
        steps = read_step_files(self.run_dir)
        summary = selection_summary(steps, state.global_step, self.metric)
        summary["stage"] = self.stage
        write_json_atomic(self.run_dir / SELECTION_FILE, summary)
        if summary["chosen_step"] == state.global_step:  # the final model is the chosen one: no second copy
            shutil.rmtree(self.run_dir / BEST_MODEL_DIR, ignore_errors=True)
        print(f"[selection] chose step {summary['chosen_step']} of {state.global_step} (validation "
              f"{summary['chosen_val']:.1f}; final {summary['final_val']:.1f})", flush=True)

    @torch.no_grad()
    def _evaluate(self, args, state, control, model, tokenizer) -> None:
        """Evaluate on the main process, or on every process when the weights are sharded (module docstring); the
        main process writes. Under sharding each evaluation ends in a collective after the main process's writes,
        so every process sees the same step files."""
        sharded, main = weights_sharded(), state.is_world_process_zero
        if model is None or not (main or sharded):
            return
        out = self.run_dir / SELECTION_DIR / f"step{state.global_step}.json"
        done = out.exists()
        if sharded:
            done = any_process(done, args.device)
        if done:
            return
        from eval.task_eval import evaluate_task

        began = time.perf_counter()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):  # greedy, but eval.generation seeds the global RNG
            result = evaluate_task(model, tokenizer, self.records, self.task, variant=self.variant,
                                   template=self.template, max_new_tokens=self.max_new_tokens,
                                   batch_size=self.batch_size, seed=self.seed, backend="hf", judge=self.judge)
        model.train()
        score = next(s for s in result["scores"] if s.get("unit") == "percent")
        answers = answer_collapse([p["response"] for p in result["predictions"]])
        wall_s = round(time.perf_counter() - began, 3)
        improved = main and (self.best is None or score["value"] > self.best)
        if main:
            row = {"step": state.global_step, "stage": self.stage, "metric": score["metric"], "value": score["value"],
                   "n": score["n"], "answers": answers, "wall_s": wall_s,
                   "format_rate": next((s["value"] for s in result["scores"] if s["metric"] == "format_rate"), None)}
            write_json_atomic(out, row)
            self.metric = score["metric"]
        if sharded:  # the main process's decision, for the gathering every process takes part in
            improved = any_process(improved, args.device)
        if improved:
            with gathered(model, sharded):
                if main:
                    self._save_best(model, tokenizer, state.global_step, score["value"])
        if not main:
            return
        print(f"[selection] step {state.global_step}: validation {score['metric']} {score['value']:.1f} "
              f"(n={score['n']}; best {self.best:.1f}); most common answer on {answers['mode_share']:.0%} of items",
              flush=True)
        if self.on_probe is not None:
            self.on_probe(state.global_step, answers, control)

    def _save_best(self, model, tokenizer, step: int, score: float) -> None:
        self.best = score
        target = self.run_dir / BEST_MODEL_DIR
        partial = self.run_dir / f".{BEST_MODEL_DIR}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_model_dir(model, partial)  # of a LoRA run, its adapter
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        (partial / "selection_step.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
