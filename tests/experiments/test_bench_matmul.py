"""experiments.bench_matmul: its FLOP count against torch's own counter, and the command end to end."""

import torch

from experiments.bench_matmul import forward_flops, linear_flops, linear_shapes, main


def test_forward_flops_equals_torchs_flop_counter_on_the_tiny_model():
    """The count the benchmark divides by is what torch's FlopCounterMode tallies, op by op, for the tiny Llama's
    forward with eager attention (its two attention products are matmuls the counter sees): the linear layers'
    ``mm`` and the attention's ``bmm``, the rotary embedding's small ``bmm`` left out."""
    from torch.utils.flop_counter import FlopCounterMode

    from sdft.models import load_model

    model = load_model("embedded:tiny-llama", dtype=torch.float32).eval()
    model.set_attn_implementation("eager")
    for batch, length in ((1, 7), (3, 16)):
        ids = torch.randint(0, model.config.vocab_size, (batch, length))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(input_ids=ids)
        counts = counter.get_flop_counts()
        total = counter.get_total_flops() - sum(counts["LlamaForCausalLM.model.rotary_emb"].values())
        assert sum(counts["LlamaForCausalLM.lm_head"].values()) > 0  # the head is counted among the linear layers
        assert forward_flops(model.config, batch, length) == total
        assert linear_flops(model.config, batch * length) == sum(
            v for name, per_op in counts.items() if name.endswith("_proj") or name.endswith("lm_head")
            for v in per_op.values())


def test_linear_shapes_cover_every_weight_matrix_of_the_model():
    from sdft.models import load_model

    model = load_model("embedded:tiny-llama", dtype=torch.float32)
    counted = sum(i * o * n for _, i, o, n in linear_shapes(model.config))
    matrices = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert counted == matrices


def test_bench_matmul_writes_its_table(tmp_path):
    out = tmp_path / "matmul.md"
    result = main(["--model", "embedded:tiny-llama", "--square", "64", "--repeats", "1", "--batch", "2",
                   "--length", "8", "--output", str(out)])
    md = out.read_text()
    assert "python -m experiments.bench_matmul" in md and "lm_head" in md and "all of a step's linear layers" in md
    measured = result["measured"]
    assert measured["step"]["seconds"] > 0 and measured["step"]["gflop"] > 0
    assert all(rate > 0 for rate in measured["square"].values())
