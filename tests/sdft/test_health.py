"""Training-health metrics and the collapse rule (sdft.health), each against a computation of its own."""

import json
import math

import pytest
import torch

from sdft.health import (
    COLLAPSED_ANSWER_SHARE,
    CollapseRule,
    answer_collapse,
    divergence_summary,
    format_rate,
    head_entropy,
    masked_mean,
    rollout_health,
    token_entropy,
    token_health,
)


def test_rollout_health_of_a_hand_made_batch():
    eos = 2
    batch = [[5, 6, eos], [5, 6, eos], [7, 8, 9, 10], [5, 1]]  # the third is cut at the cap of 4, the last is not
    h = rollout_health(batch, [eos], max_length=4, prefix_tokens=1)
    assert h["length_mean"] == pytest.approx((3 + 3 + 4 + 2) / 4)
    assert h["eos_share"] == pytest.approx(2 / 4)
    assert h["truncated_share"] == pytest.approx(1 / 4)
    assert h["distinct_share"] == pytest.approx(3 / 4)  # the first two are the same rollout
    assert h["distinct_prefix_share"] == pytest.approx(2 / 4)  # first tokens {5, 7}
    assert h["first_token_mode_share"] == pytest.approx(3 / 4)  # token 5 opens three of them


def test_rollout_health_against_a_second_implementation_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = []
        for _ in range(int(torch.randint(1, 9, (1,), generator=gen))):
            n = int(torch.randint(1, 7, (1,), generator=gen))
            batch.append(torch.randint(0, 4, (n,), generator=gen).tolist())
        h = rollout_health(batch, [0], max_length=6, prefix_tokens=2)
        # the same quantities by counting in plain Python
        n = len(batch)
        firsts = [b[0] for b in batch]
        assert h["first_token_mode_share"] == pytest.approx(max(firsts.count(f) for f in firsts) / n)
        assert h["distinct_prefix_share"] == pytest.approx(len({str(b[:2]) for b in batch}) / n)
        assert h["eos_share"] == pytest.approx(sum(b[-1] == 0 for b in batch) / n)
        assert h["truncated_share"] == pytest.approx(sum(b[-1] != 0 and len(b) == 6 for b in batch) / n)


def test_format_rate_counts_the_tasks_format():
    assert format_rate(["<answer>A</answer>", "no", "<answer>B</answer>"], lambda t: "<answer>" in t) == 2 / 3
    with pytest.raises(ValueError):
        format_rate([], bool)


def test_entropy_against_an_explicit_sum_and_chunking():
    logits = torch.randn(2, 7, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.empty(2, 7, dtype=torch.float64)
    for b in range(2):
        for t in range(7):
            p = [math.exp(x) for x in logits[b, t].tolist()]
            z = sum(p)
            expected[b, t] = -sum(q / z * math.log(q / z) for q in p)
    assert torch.allclose(token_entropy(logits, chunk_size=None).double(), expected, atol=1e-5)
    assert torch.allclose(token_entropy(logits, chunk_size=3).double(), expected, atol=1e-5)
    # the output head's form: the same entropies from hidden states and a linear head
    hidden = torch.randn(2, 7, 5, dtype=torch.float32)
    head = torch.nn.Linear(5, 11)
    direct = token_entropy(head(hidden) / 0.7, chunk_size=None)
    assert torch.allclose(head_entropy(hidden, head.weight, head.bias, temperature=0.7, chunk_size=2), direct,
                          atol=1e-5)


def test_divergence_summary_and_masked_mean_over_loss_tokens_only():
    div = torch.tensor([[0.1, 5.0, 0.3], [9.0, 0.2, 0.4]])
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]])
    s = divergence_summary(div, mask)
    assert s["divergence_mean"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.4) / 4)
    assert s["divergence_max"] == pytest.approx(0.4)  # 5.0 and 9.0 are not loss tokens
    assert divergence_summary(div, torch.zeros_like(mask)) is None
    assert masked_mean(div[0], mask[0]) == pytest.approx(0.2)


def test_token_health_per_rollout_over_its_loss_tokens_only():
    """One value per rollout that has loss tokens, each over those tokens alone; a rollout without any adds none."""
    div = torch.tensor([[0.1, 0.4, 9.0], [0.2, 0.3, 0.5], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    s_ent = torch.tensor([[1.0, 3.0, 50.0], [2.0, 4.0, 6.0], [9.0, 9.0, 9.0]])
    t_ent = s_ent / 2
    rows = token_health(s_ent, t_ent, div, mask, clipped=div > 0.35)
    assert rows.keys() == {"divergence_mean", "divergence_max", "student_entropy", "teacher_entropy", "clipped_share"}
    assert rows["divergence_mean"] == pytest.approx([0.25, 0.4])
    assert rows["divergence_max"] == pytest.approx([0.4, 0.5])
    assert rows["student_entropy"] == pytest.approx([2.0, 5.0])
    assert rows["teacher_entropy"] == pytest.approx([1.0, 2.5])
    assert rows["clipped_share"] == pytest.approx([0.5, 0.5])
    # no teacher entropy (a top-K teacher) and no clip: those keys are left out
    assert token_health(s_ent, None, div, mask, None).keys() == {"divergence_mean", "divergence_max",
                                                                 "student_entropy"}
    assert token_health(s_ent, t_ent, div, torch.zeros_like(mask), None) == {}


def test_answer_collapse():
    same = answer_collapse(["I'm ready to assist."] * 6 + ["Action: a", "Action: b"])
    assert same["collapsed"] and same["mode_share"] == pytest.approx(6 / 8)
    assert same["mode_answer"] == "I'm ready to assist."
    diverse = answer_collapse([f"Action: call_{i}" for i in range(8)])
    assert not diverse["collapsed"] and diverse["distinct_share"] == 1.0
    # the threshold itself: exactly half is collapsed, just under half is not
    assert answer_collapse(["x", "x", "y", "z"])["collapsed"] is (2 / 4 >= COLLAPSED_ANSWER_SHARE)
    assert not answer_collapse(["x", "x", "y", "z", "w"])["collapsed"]


def _row(batch, entropy):
    return {f"health/{k}": v for k, v in rollout_health(batch, [0], 8).items()} | {"health/student_entropy": entropy}


def test_collapse_rule_fires_on_a_degenerate_run_and_names_the_step():
    rule = CollapseRule(window=3)
    identical = [[7, 8, 9, 0]] * 4  # every rollout the same
    fired = [rule.observe_step(step, _row(identical, 4.0 if step == 1 else 0.5)) for step in range(1, 6)]
    # step 1 sets the reference entropy (not yet 4x lower); steps 2, 3, 4 make the window: it fires at step 4, once
    assert [f is not None for f in fired] == [False, False, False, True, False]
    assert fired[3].startswith("step 4:")


def test_collapse_rule_stays_silent_on_a_diverse_run():
    rule = CollapseRule(window=3)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 30):
        batch = [torch.randint(1, 50, (6,), generator=gen).tolist() for _ in range(4)]
        assert rule.observe_step(step, _row(batch, 4.0 - 0.01 * step)) is None
    # alike rollouts with a steady entropy are not a collapse either (a model that learned one format)
    steady = CollapseRule(window=3)
    assert all(steady.observe_step(s, _row([[7, 8, 0]] * 4, 3.0)) is None for s in range(1, 10))


def test_collapse_rule_greedy_arm():
    rule = CollapseRule()
    assert rule.observe_probe(8, answer_collapse([f"a{i}" for i in range(10)])) is None
    reason = rule.observe_probe(16, answer_collapse(["I'm ready."] * 9 + ["x"]))
    assert reason is not None and reason.startswith("step 16:") and "90%" in reason


def test_collapse_watch_writes_health_json_and_stops_when_asked(tmp_path):
    from transformers import TrainerControl

    from sdft.health import CollapseWatch

    watch = CollapseWatch(tmp_path, stop=True)
    control = TrainerControl()
    watch.observe_probe(8, answer_collapse(["same"] * 4), control)
    assert control.should_training_stop
    record = json.loads((tmp_path / "health.json").read_text())
    assert record["collapse"][0]["step"] == 8 and record["collapse"][0]["stopped"]


def test_with_several_processes_the_collapse_stop_is_agreed_on_so_every_process_stops(tmp_path, monkeypatch):
    """The rule observes on the main process only; a stop set there alone would leave the others waiting on it."""
    import types

    from transformers import TrainerControl

    import sdft.distributed
    from sdft.health import CollapseWatch

    flags = {}  # process -> its stop_pending, as the all-reduce would see them
    monkeypatch.setattr(sdft.distributed, "several_processes", lambda: True)
    monkeypatch.setattr(sdft.distributed, "any_process", lambda flag, device: any(flags.values()))
    main, other = CollapseWatch(tmp_path, stop=True), CollapseWatch(tmp_path / "other", stop=True)
    main_control, other_control = TrainerControl(), TrainerControl()
    main.observe_probe(8, answer_collapse(["same"] * 4), main_control)
    assert not main_control.should_training_stop  # not alone
    flags.update(main=main.stop_pending, other=other.stop_pending)
    args = types.SimpleNamespace(device="cpu")
    main.on_step_end(args, None, main_control)
    other.on_step_end(args, None, other_control)
    assert main_control.should_training_stop and other_control.should_training_stop
