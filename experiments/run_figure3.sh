#!/usr/bin/env bash
# Figure 3 (continual learning: Tool Use -> Science Q&A -> Medical, SDFT and SFT) end to end. Default: the `mini`
# preset (SmolLM2-135M, the embedded tasks, CPU, offline).
#   bash experiments/run_figure3.sh                          # mini, one seed, both methods
#   bash experiments/run_figure3.sh --jobs 2                 # the two sequences side by side (one core each)
#   bash experiments/run_figure3.sh --preset smoke           # seconds-to-minutes, tiny random model (tests)
#   bash experiments/run_figure3.sh --preset paper --dry-run # the paper's sequences and phases
# Every option: python -m experiments.figure3 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.figure3 "$@"
