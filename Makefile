# Common tasks. `make help` lists them. PYTHON=python3.11 make test picks another interpreter.
PYTHON ?= python3

.PHONY: help install test test-quick lint smoke gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 14

install:  ## pinned requirements, this checkout (editable) and the embedded models: bash setup.sh
	PYTHON=$(PYTHON) bash setup.sh

test:  ## the whole test suite (several minutes on CPU)
	$(PYTHON) -m pytest -q

test-quick:  ## the test suite without the tests marked slow (under a minute)
	$(PYTHON) -m pytest -q -m "not slow"

lint:  ## ruff check . (settings in pyproject.toml)
	$(PYTHON) -m ruff check .

smoke:  ## Table 5 end to end with the tiny random model, outputs in results/smoke (a few minutes)
	bash experiments/run_table5.sh --preset smoke --results-dir results/smoke

gpu-check:  ## the paper code path at small scale on one CUDA GPU: bash experiments/gpu_check.sh (log in experiments/results/gpu_check)
	bash experiments/gpu_check.sh

clean:  ## remove caches (__pycache__, .pytest_cache, .ruff_cache, build/, dist/); never results/ or runs/
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build dist
