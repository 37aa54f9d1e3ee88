#!/usr/bin/env bash
# Figure 6 (on-policy SDFT vs offline distillation vs SFT from the teacher, accuracy against generations) on Tool
# Use, end to end. Default: the `mini` preset (SmolLM2-135M, the embedded tool-use task, CPU, offline).
#   bash experiments/run_figure6.sh                           # mini, one seed, the three methods and the base
#   bash experiments/run_figure6.sh --preset smoke            # tiny random model (tests)
#   bash experiments/run_figure6.sh --preset paper --dry-run  # the paper's grid: 3 methods x 3 seeds + base
# Every option: python -m experiments.figure6 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.figure6 "$@"
