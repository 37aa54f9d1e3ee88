"""Same seed, same machine, same command -> the same model, for every method (the README's promise)."""

import pytest
import torch
from safetensors.torch import load_file

from sdft.train import main

RUNS = [
    ("sdft", []),
    # the mini preset's path: rollouts from a bf16 copy of the student, the teacher's forward under bf16 autocast
    ("sdft", ["rollout_dtype=bfloat16", "teacher_dtype=bfloat16"]),
    ("sft", []),  # also the trainer of dft and cpt, which sample nothing
    ("reinvoke", ["rollout_dtype=bfloat16"]),
    ("offline_distill", []),
    ("sft_from_teacher", []),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "extra"), RUNS, ids=[m + ("-bf16" if e else "") for m, e in RUNS])
def test_two_runs_of_the_same_seed_give_identical_models(method, extra, tmp_path):
    weights = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["--method", method, "--preset", "smoke", "--output-dir", str(out), *extra]) == out
        weights.append(load_file(str(out / "model" / "model.safetensors")))
    first, second = weights
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{method} {extra}: {len(different)} tensors differ, e.g. {different[:3]}"
