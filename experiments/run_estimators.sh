#!/usr/bin/env bash
# Appendix A.1 (KL gradient estimators; teacher top-K; rollouts per prompt) on Tool Use, end to end. Default: the
# `mini` preset (SmolLM2-135M, the embedded tool-use task, CPU, offline).
#   bash experiments/run_estimators.sh                           # mini, one seed, all six rows
#   bash experiments/run_estimators.sh --preset smoke            # tiny random model (tests)
#   bash experiments/run_estimators.sh --preset paper --dry-run  # the paper's grid: 6 rows x 3 seeds
# Every option: python -m experiments.estimators --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.estimators "$@"
