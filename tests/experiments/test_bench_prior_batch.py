"""experiments.bench_prior_batch: one timed run per benchmark, batch size and loglikelihood path, and the check
that scores agree."""

import json

import pandas as pd


def _fake_prior(calls: list, moves):
    """An ``evaluate_prior`` that records its calls; ``moves(name, batch_size, path)`` gives the metrics that
    differ from the reference's there."""

    def fake_prior(model, tokenizer, suite, benchmarks, batch_size, loglikelihood):
        (name,) = benchmarks
        calls.append((name, batch_size, loglikelihood))
        metrics = {"acc,none": 0.5, "acc_norm,none": 0.25, **moves(name, batch_size, loglikelihood)}
        return {"loglikelihood": loglikelihood,
                "benchmarks": {name: {"value": 100 * metrics["acc,none"], "n": 7, "all_metrics": metrics}}}

    return fake_prior


def test_times_each_benchmark_and_flags_a_score_that_changes_with_the_batch_size(tmp_path, monkeypatch):
    import eval.prior
    from experiments import bench_prior_batch

    calls = []
    moved = lambda name, bs, path: {"acc,none": 0.51} if (name == "facts" and bs == 32) else {}  # noqa: E731
    monkeypatch.setattr(eval.prior, "evaluate_prior", _fake_prior(calls, moved))
    out = tmp_path / "bench.md"
    bench_prior_batch.main(["--models", "embedded:tiny-llama", "--batch-sizes", "8", "32", "--output", str(out)])
    averaged = [k for k, v in eval.prior.SUITES["embedded"].items() if not v.extra and not v.unsafe]
    # every averaged benchmark alone, code excluded, with lm-eval's own path unless told otherwise
    assert calls == [(b, bs, "lm_eval") for bs in (8, 32) for b in averaged]
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 2 * len(averaged) and (table["seconds"] >= 0).all()
    moved = table[~table["same_as_first"]]
    assert list(zip(moved["benchmark"], moved["batch_size"])) == [("facts", 32)]
    assert "| True" in out.read_text() and "| False" in out.read_text()
    assert "Speed-up" not in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["threads"] >= 1


def test_paths_interleaved_per_benchmark_and_any_metric_that_differs_is_flagged(tmp_path, monkeypatch):
    import eval.prior
    from experiments import bench_prior_batch

    calls = []
    moved = lambda name, bs, path: {"acc_norm,none": 0.3} if (name == "truthful" and path != "lm_eval") else {}  # noqa: E731
    monkeypatch.setattr(eval.prior, "evaluate_prior", _fake_prior(calls, moved))
    out = tmp_path / "bench.md"
    names = ["commonsense", "winograd", "truthful"]
    bench_prior_batch.main(["--models", "embedded:tiny-llama", "--batch-sizes", "32", "--loglikelihood", "lm_eval",
                            "shared_context", "--benchmarks", *names, "--output", str(out)])
    assert calls == [(b, 32, path) for b in names for path in ("lm_eval", "shared_context")]
    table = pd.read_csv(out.with_suffix(".csv"))
    flagged = table[~table["same_as_first"]]
    # acc is equal; acc_norm alone differs, and that is flagged
    assert list(zip(flagged["benchmark"], flagged["loglikelihood"])) == [("truthful", "shared_context")]
    text = out.read_text()
    assert "Speed-up: lm_eval's seconds / each path's" in text and "shared_context" in text
