#!/usr/bin/env bash
# Figure 5 end to end: SDFT - SFT by model size (left) and pass@k of Base, SFT, SDFT (right) on Science Q&A.
# Default: the `mini` preset (embedded SmolLM2-135M-Instruct and Gemma 3 270M, CPU, offline).
#   bash experiments/run_figure5.sh                        # mini, one seed (Gemma 3 270M: opt-in install)
#   bash experiments/run_figure5.sh --models embedded:smollm2-135m-instruct   # mini without Gemma
#   bash experiments/run_figure5.sh --preset smoke         # seconds-to-minutes, tiny random model (tests)
#   bash experiments/run_figure5.sh --preset paper --launcher slurm --dry-run   # Qwen2.5 3B / 7B / 14B, pass@128
# Every option: python -m experiments.figure5 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.figure5 "$@"
