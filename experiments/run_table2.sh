#!/usr/bin/env bash
# Table 2 end to end: a reasoning model trained on answer-only demonstrations (accuracy, average generated tokens).
# Default: the `mini` stand-in (SmolLM2-135M-Instruct, embedded science MCQ with answer-only demonstrations, CPU).
#   bash experiments/run_table2.sh                         # mini, one seed
#   bash experiments/run_table2.sh --preset smoke          # seconds, tiny random model (tests)
#   bash experiments/run_table2.sh --preset paper --launcher slurm --dry-run   # Olmo-3-7B-Think on Medical
# Every option: python -m experiments.table2 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.table2 "$@"
