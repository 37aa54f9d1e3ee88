#!/usr/bin/env bash
# Table 5 and Figure 4 end to end. Default: the `mini` preset (embedded SmolLM2-135M, CPU, offline).
#   bash experiments/run_table5.sh                       # mini, one seed
#   bash experiments/run_table5.sh --preset smoke        # a few minutes, tiny random model (CI)
#   bash experiments/run_table5.sh --preset paper --sweep --launcher slurm --dry-run
# Every option: python -m experiments.table5 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.table5 "$@"
