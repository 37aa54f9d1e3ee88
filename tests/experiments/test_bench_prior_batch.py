"""experiments.bench_prior_batch: one timed run per benchmark and batch size, and the check that scores agree."""

import json

import pandas as pd


def test_times_each_benchmark_and_flags_a_score_that_changes_with_the_batch_size(tmp_path, monkeypatch):
    import eval.prior
    from experiments import bench_prior_batch

    calls = []

    def fake_prior(model, tokenizer, suite, benchmarks, batch_size):
        (name,) = benchmarks
        calls.append((name, batch_size))
        value = 50.0 + (1.0 if (name == "facts" and batch_size == 32) else 0.0)  # one score moves at batch 32
        return {"benchmarks": {name: {"value": value, "n": 7}}}

    monkeypatch.setattr(eval.prior, "evaluate_prior", fake_prior)
    out = tmp_path / "bench.md"
    bench_prior_batch.main(["--models", "embedded:tiny-llama", "--batch-sizes", "8", "32", "--output", str(out)])
    averaged = [k for k, v in eval.prior.SUITES["embedded"].items() if not v.extra and not v.unsafe]
    assert calls == [(b, bs) for bs in (8, 32) for b in averaged]  # every averaged benchmark alone, code excluded
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 2 * len(averaged) and (table["seconds"] >= 0).all()
    moved = table[~table["same_as_first"]]
    assert list(zip(moved["benchmark"], moved["batch_size"])) == [("facts", 32)]
    assert "| True" in out.read_text() and "| False" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["threads"] >= 1
