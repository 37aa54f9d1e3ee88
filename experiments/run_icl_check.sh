#!/usr/bin/env bash
# Section 3.2 / Figure 2 (right): the demonstration-conditioned teacher's accuracy and its KL to the base model, vs
# an SFT model's, on Tool Use. Default: the `mini` preset (SmolLM2-135M, the embedded tool-use task, CPU, offline).
#   bash experiments/run_icl_check.sh                                # mini: base, teacher, one SFT run
#   bash experiments/run_icl_check.sh --sft-run results/table5/embedded_tool/sft/seed0   # reuse an SFT run
#   bash experiments/run_icl_check.sh --preset smoke                 # tiny random model (tests)
#   bash experiments/run_icl_check.sh --preset paper --dry-run       # the paper's grid
# Every option: python -m experiments.icl_check --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.icl_check "$@"
