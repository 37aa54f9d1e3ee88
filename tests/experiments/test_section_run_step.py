"""section.main runs a section's own ``execute`` in this process (``--jobs 1``), as ``experiments.run_one`` does for
``--jobs N`` and SLURM."""

import importlib

import pytest


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["table1", "estimators", "figure6", "figure8", "icl_check"])
def test_jobs_1_runs_the_sections_own_execute(name, monkeypatch, tmp_path):
    from experiments import grid as G

    module = importlib.import_module(f"experiments.{name}")
    seen = []

    def run_local(specs, execute, force=False):
        seen.append(execute)
        raise _Stop

    monkeypatch.setattr(G, "run_local", run_local)
    if hasattr(module, "preflight"):
        monkeypatch.setattr(module, "preflight", lambda args, specs: None)  # table1's teacher view: not this test's
    with pytest.raises(_Stop):
        module.main(["--preset", "smoke", "--results-dir", str(tmp_path / name)])
    assert seen == [module.execute]
