#!/usr/bin/env bash
# Figure 8 (Appendix A.3: teacher weights EMA vs frozen base vs current student) on Tool Use, end to end. Default:
# the `mini` preset (SmolLM2-135M, the embedded tool-use task, CPU, offline).
#   bash experiments/run_figure8.sh                           # mini, one seed, the three teacher kinds
#   bash experiments/run_figure8.sh --preset smoke            # tiny random model (tests)
#   bash experiments/run_figure8.sh --preset paper --dry-run  # the paper's grid: 3 kinds x 3 seeds + base
# Every option: python -m experiments.figure8 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.figure8 "$@"
