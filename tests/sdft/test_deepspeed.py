"""DeepSpeed ZeRO-2 / ZeRO-3: the shipped launch configs (always checked) and training under them (where deepspeed
imports).

Dry runs, without deepspeed (CI does not install it): ``experiments/accelerate/zero2.yaml`` and ``zero3.yaml`` are
read by accelerate's launcher, every key is one it knows, and ``DeepSpeedPlugin`` builds the stage's config from
the environment the launcher gives the training processes; transformers fills that config's "auto" batch values
from each paper recipe's trainer config (``propagate_args_to_deepspeed``) without a mismatch, and with the
recipe's gradient accumulation divided by the 8 processes the global batch is the recipe's.

Runs, slow, skipped where deepspeed does not import (``pip install -e ".[deepspeed]"``): ``tests/sdft/ds_worker.py``
launched three times on 2 CPU processes -- ZeRO-2 and ZeRO-3 (the shipped configs with 2 processes, no mixed
precision and ``use_cpu: true``: ``cpu_launch_config``) and plain DDP, the layout ``tests/sdft/test_multiprocess.py``
holds to one process -- and compared:

  * one SGD step (lr 1, as tests/sdft/test_multiprocess.py) of SFT and of SDFT (greedy rollouts): the same loss, gradient
    norm and weights as DDP, and SDFT's EMA teacher is then phi_0 + alpha (theta_1 - phi_0);
  * four AdamW steps of SDFT with sampled rollouts, an EMA teacher that moves and checkpoints: student and teacher
    as DDP's (measured: ZeRO-2 bitwise, ZeRO-3 within 2.4e-6), ``model/`` the gathered final weights;
  * the same run stopped by SIGTERM after step 2 and resumed: student and teacher bitwise those of the uninterrupted
    run (transformers restores a DeepSpeed student itself and never calls ``_load_from_checkpoint``: the teacher is
    restored in ``SelfDistillationTrainer._load_optimizer_and_scheduler``);
  * the teacher: under ZeRO-3 a DeepSpeed engine whose parameters are partitions like the student's, updated by
    ``FusedEMATeacherCallback`` a gathered bucket at a time; under ZeRO-2 a whole copy on each process, updated by
    the fused EMA as with DDP;
  * only the main process writes run files; the other writes its RNG state and its ZeRO shards into checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "accelerate"
WORKER = Path(__file__).resolve().parent / "ds_worker.py"
RECIPES = ROOT / "experiments" / "recipes" / "qwen2.5-7b-instruct"
GPUS = 8  # the shipped configs' num_processes
# the one-step comparison: tests/sdft/test_multiprocess.py's tolerances
LOSS_TOL = dict(rel=1e-5, abs=1e-7)
WEIGHT_TOL = dict(rtol=1e-5, atol=1e-6)
# four AdamW steps: Adam's first steps divide each gradient by its own magnitude and magnify float rounding
# (measured on this CPU: ZeRO-2 0, ZeRO-3 2.4e-6 for the student, 1.6e-6 for the teacher)
FOUR_STEP_TOL = dict(rtol=1e-5, atol=2e-5)
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install -e \".[deepspeed]\")")


def cpu_launch_config(stage: int, folder: Path) -> Path:
    """``experiments/accelerate/zero<stage>.yaml`` for 2 CPU processes: ``num_processes: 2``, ``mixed_precision:
    'no'`` and ``use_cpu: true``, every other key as shipped. (``accelerate launch --cpu`` would not do: it picks
    accelerate's simple launcher, one process, no DeepSpeed.)"""
    config = yaml.safe_load((CONFIGS / f"zero{stage}.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no", use_cpu=True)
    path = folder / f"zero{stage}_cpu.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _launch_args(config_file: Path):
    """accelerate's own reading of a launch config: its parser and its validation, as ``accelerate launch`` does."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "sdft.train"])
    return _validate_launch_command(args)


def _plugin_config(config_file: Path, monkeypatch, bf16: bool = False) -> dict:
    """The DeepSpeed config accelerate's ``DeepSpeedPlugin`` builds in a training process of this launch, with the
    mixed precision ``TrainingArguments`` sets on it (the launch's, or bf16 when the trainer config's ``bf16``).
    The ``ACCELERATE_*`` environment of the launch is left set (``monkeypatch``)."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _launch_args(config_file)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16" if bf16 else env.get("ACCELERATE_MIXED_PRECISION", "no"))
    return plugin.deepspeed_config


# ------------------------------------------------------------------------------------------------ dry runs
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_config_resolves_to_its_stage(stage, monkeypatch):
    args, defaults, _ = _launch_args(CONFIGS / f"zero{stage}.yaml")
    assert args.use_deepspeed and not args.use_fsdp and not args.cpu
    assert args.num_processes == GPUS and args.mixed_precision == "bf16"
    unknown = [k for k in defaults.deepspeed_config if not hasattr(args, k)]
    assert unknown == [], f"keys accelerate's launcher does not know (it would ignore them): {unknown}"
    ds = _plugin_config(CONFIGS / f"zero{stage}.yaml", monkeypatch)
    assert os.environ["ACCELERATE_USE_DEEPSPEED"] == "true" and os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "none"
    assert ds["bf16"]["enabled"] is True
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes a whole model
    # the batch values are left to the trainer config (filled by transformers: the next test)
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    _assert_no_deepspeed_left_on()


def _assert_no_deepspeed_left_on() -> None:
    """A dry run leaves transformers' process-wide ZeRO-3 switch off (the tests after it would load models
    partitioned)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    assert not is_deepspeed_zero3_enabled()


class _OnProcesses:
    """A trainer config as it reads on one of ``world_size`` processes."""

    def __init__(self, args, world_size: int):
        self._args, self.world_size = args, world_size

    def __getattr__(self, name):
        return getattr(self._args, name)


def _filled(ds_config: dict, args, world_size: int = GPUS) -> tuple[dict, list[str]]:
    """transformers' fill of the DeepSpeed config's "auto" values from the trainer config ``args`` on
    ``world_size`` processes (``propagate_args_to_deepspeed``): the filled config and the mismatches.

    transformers' own fill (``HfTrainerDeepSpeedConfig``'s ``trainer_config_process``, ``fill_match``,
    ``fill_only``) on accelerate's config class: transformers' class needs deepspeed installed (without it, it
    derives from ``object``), and each of its objects becomes transformers' process-wide ZeRO-3 switch."""
    import copy

    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig as Hf

    class Fill(HfDeepSpeedConfig):
        fill_match, fill_only, trainer_config_process = Hf.fill_match, Hf.fill_only, Hf.trainer_config_process

    hf = Fill(copy.deepcopy(ds_config))
    hf.mismatches, hf._dtype = [], None
    hf.trainer_config_process(_OnProcesses(args, world_size))
    return hf.config, hf.mismatches


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("recipe", ["sdft_science", "sft_science", "dft_science", "reinvoke_science",
                                    "cpt_knowledge"])
def test_zero_config_takes_the_batch_of_the_recipe_with_accumulation_divided_by_the_gpus(stage, recipe,
                                                                                         monkeypatch, tmp_path):
    """What the README's command gives DeepSpeed: the recipe with ``gradient_accumulation_steps`` divided by the 8
    processes keeps the recipe's global batch (one GPU: per-device batch x accumulation); transformers' fill of
    the "auto" values from that trainer config finds no mismatch with the launch config (bf16 included)."""
    from sdft.config import build_config, load_recipe

    values, _ = load_recipe(RECIPES / f"{recipe}.yaml")
    one_gpu_batch = values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
    assert values["gradient_accumulation_steps"] % GPUS == 0, "the README's rule needs accumulation divisible by 8"
    accumulation = values["gradient_accumulation_steps"] // GPUS
    # the trainer config as one process builds it (the world size is set below), outside the launch's environment
    cfg = build_config("paper", recipe=RECIPES / f"{recipe}.yaml",
                       overrides={"gradient_accumulation_steps": accumulation, "output_dir": str(tmp_path / "r")})
    args = cfg.training
    ds, mismatches = _filled(_plugin_config(CONFIGS / f"zero{stage}.yaml", monkeypatch, bf16=args.bf16), args)
    _assert_no_deepspeed_left_on()
    assert mismatches == []
    generations = args.num_generations if cfg.method == "sdft" else 1
    assert ds["train_micro_batch_size_per_gpu"] == values["per_device_train_batch_size"]
    # the trainer's accumulation (SDFT: x num_generations, its field help) is DeepSpeed's
    assert ds["gradient_accumulation_steps"] == args.gradient_accumulation_steps == accumulation * generations
    assert ds["train_batch_size"] == one_gpu_batch * generations
    assert ds["gradient_clipping"] == args.max_grad_norm
    assert ds["bf16"]["enabled"] is True and args.bf16


def test_a_float32_trainer_config_under_the_bf16_launch_configs_is_a_mismatch(monkeypatch, tmp_path):
    """The smoke and mini presets train in float32 (``bf16: false``): under the shipped configs (mixed precision
    bf16) DeepSpeed's bf16 and the trainer's disagree, which transformers refuses when the trainer starts; such a run
    is launched with ``--mixed_precision no`` (as the CPU runs here are)."""
    from sdft.config import build_config

    args = build_config("mini", "sdft", overrides={"output_dir": str(tmp_path / "r")}).training
    assert not args.bf16
    _, mismatches = _filled(_plugin_config(CONFIGS / "zero3.yaml", monkeypatch), args)
    _assert_no_deepspeed_left_on()
    assert any("bf16" in m for m in mismatches), mismatches


def test_cpu_launch_config_starts_deepspeed_on_two_processes(tmp_path, monkeypatch):
    for stage in (2, 3):
        path = cpu_launch_config(stage, tmp_path)
        args, _, _ = _launch_args(path)
        assert args.use_deepspeed and not args.cpu and args.num_processes == 2 and args.mixed_precision == "no"
        assert _plugin_config(path, monkeypatch)["zero_optimization"]["stage"] == stage
        shipped = yaml.safe_load((CONFIGS / f"zero{stage}.yaml").read_text())
        ours = yaml.safe_load(path.read_text())
        assert {k for k in shipped if shipped[k] != ours[k]} == {"num_processes", "mixed_precision", "use_cpu"}


def test_the_run_banner_names_the_zero_stage():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from sdft.train import distributed_kind

    state = SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_CPU)
    assert distributed_kind(state, {}) == "MULTI_CPU"
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    assert distributed_kind(state, env) == "DeepSpeed ZeRO-3"


# ------------------------------------------------------------------------------------------------ runs
LAYOUTS = {
    "ddp": ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no"],
    "zero2": None,  # cpu_launch_config(2)
    "zero3": None,
}


@pytest.fixture(scope="module")
def launched(tiny_model_path, tmp_path_factory):
    """layout -> the output folder of ``tests/sdft/ds_worker.py`` launched on that layout (each launched once)."""
    made = {}

    def launch(layout: str) -> Path:
        if layout not in made:
            out = tmp_path_factory.mktemp(layout)
            flags = LAYOUTS[layout] or ["--config_file", str(cpu_launch_config(int(layout[-1]), out))]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "DS_ACCELERATOR": "cpu",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
            cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--main_process_port", "0",
                   str(WORKER), str(out / "w"), tiny_model_path]
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
            (out / "w" / "stdout.txt").write_text(proc.stdout)
            made[layout] = out / "w"
        return made[layout]
    return launch


def _first_step(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(row for row in rows if row.get("step") == 1 and "loss" in row)


def _dump(out: Path, run: str, part: str, rank: int = 0) -> dict:
    return load_file(str(out / "dumps" / run / f"{part}-rank{rank}.safetensors"))


def _assert_close(got: dict, want: dict, what: str, **tol) -> None:
    if "lm_head.weight" in got.keys() - want.keys():
        # ZeRO-2's save_model writes the tied output head too (accelerate clones each tensor of a DeepSpeed state
        # dict for saving, which unties it): a copy of the embedding, which loading ties again
        assert torch.equal(got["lm_head.weight"], got["model.embed_tokens.weight"])
        got = {k: v for k, v in got.items() if k != "lm_head.weight"}
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], **tol, msg=lambda m, k=k: f"{what} {k}: {m}")


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_one_step_equals_the_ddp_step(stage, method, launched, tiny_model_path):
    ddp, zero = launched("ddp"), launched(stage)
    a, b = _first_step(ddp / "runs" / f"eq_{method}"), _first_step(zero / "runs" / f"eq_{method}")
    assert a["epoch"] == b["epoch"] == 0.5
    for key in ("loss", "grad_norm"):
        assert b[key] == pytest.approx(a[key], **LOSS_TOL), key
    want = load_file(str(ddp / "runs" / f"eq_{method}" / "model" / "model.safetensors"))
    got = load_file(str(zero / "runs" / f"eq_{method}" / "model" / "model.safetensors"))
    initial = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    assert max((want[k] - initial[k]).abs().max().item() for k in want) > 5e-4, "the step moved nothing"
    _assert_close(got, want, f"{method}: {stage} vs DDP", **WEIGHT_TOL)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_ema_teacher_after_one_step_is_the_lerp_towards_the_student(stage, launched, tiny_model_path):
    out = launched(stage)
    initial = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    theta1 = load_file(str(out / "runs" / "eq_sdft" / "model" / "model.safetensors"))
    teacher = _dump(out, "eq_sdft", "teacher")
    for k in initial:  # (the tied output head is the embedding)
        torch.testing.assert_close(teacher[k], torch.lerp(initial[k], theta1[k], 0.1), atol=1e-7, rtol=1e-6)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_four_sdft_steps_train_the_student_and_teacher_ddp_trains(stage, launched):
    ddp, zero = launched("ddp"), launched(stage)
    for part in ("student", "teacher"):
        want, got = _dump(ddp, "sdft", part), _dump(zero, "sdft", part)
        assert max((want[k] - got[k]).abs().max().item() for k in want) < 1e-4  # (the tolerance below is looser)
        _assert_close(got, want, f"{part}: {stage} vs DDP", **FOUR_STEP_TOL)
    # model/ is the gathered final student, the checkpoint's teacher the gathered final teacher
    saved = load_file(str(zero / "runs" / "sdft" / "model" / "model.safetensors"))
    student = _dump(zero, "sdft", "student")
    assert all(torch.equal(saved[k], student[k]) for k in saved)
    ckpt = load_file(str(zero / "runs" / "sdft" / "checkpoints" / "checkpoint-4" / "teacher_model.safetensors"))
    teacher = _dump(zero, "sdft", "teacher")
    assert all(torch.equal(ckpt[k], teacher[k]) for k in ckpt)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_a_run_stopped_after_step_2_resumes_to_the_uninterrupted_student_and_teacher(stage, launched):
    from sdft.checkpoints import checkpoint_problem

    out = launched(stage)
    report = json.loads((out / "report-rank0.json").read_text())
    assert report["sdft_resumed"]["interrupted_exit"] == 143
    manifest = json.loads((out / "runs" / "sdft_resumed" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"].endswith("checkpoint-2")
    for part in ("student", "teacher"):
        straight, resumed = _dump(out, "sdft", part), _dump(out, "sdft_resumed", part)
        for k in straight:
            assert torch.equal(straight[k], resumed[k]), f"{part} {k}"
    # (checkpoint-2, resumed from, was rotated away: save_total_limit 1)
    assert checkpoint_problem(out / "runs" / "sdft_resumed" / "checkpoints" / "checkpoint-4") is None


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_the_teacher_is_partitioned_under_zero3_and_whole_under_zero2(stage, launched):
    out = launched(stage)
    assert f"2 processes (DeepSpeed ZeRO-{stage[-1]}) -> " in (out / "stdout.txt").read_text()
    for rank in (0, 1):
        teacher = json.loads((out / f"report-rank{rank}.json").read_text())["sdft"]["teacher"]
        assert teacher["type"] == "DeepSpeedEngine" and not teacher["is_student"]
        assert teacher["ema"] == [{"callback": "FusedEMATeacherCallback", "sharded": stage == "zero3"}]
        assert teacher["partitioned"] is (stage == "zero3")
        if stage == "zero3":  # each process holds about half of the teacher's weights
            assert teacher["local_elements"] < 0.6 * teacher["elements"]
        else:
            assert teacher["local_elements"] == teacher["elements"]


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_only_the_main_process_writes_run_files(stage, launched):
    out = launched(stage)
    main = json.loads((out / "writes-rank0.json").read_text())
    assert any(rel.endswith("teacher_model.safetensors") for _, rel in main)
    for event, rel in json.loads((out / "writes-rank1.json").read_text()):
        parts = rel.split("/")
        checkpoint = next(i for i, p in enumerate(parts) if p.startswith("checkpoint-"))  # (StopIteration: outside)
        inside = parts[checkpoint + 1:]
        if event == "os.mkdir":
            assert len(inside) <= 1 and all(p.startswith("global_step") for p in inside), rel
        else:
            assert inside == ["rng_state_1.pth"] or (
                len(inside) == 2 and inside[0].startswith("global_step") and "_rank_1_" in inside[1]), rel
