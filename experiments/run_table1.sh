#!/usr/bin/env bash
# Table 1 and Figure 7 (knowledge acquisition) end to end. Default: the `mini` preset (embedded fictional world,
# SmolLM2-135M, CPU, offline, the offline fact judge).
#   bash experiments/run_table1.sh                        # mini, one seed
#   bash experiments/run_table1.sh --preset smoke         # seconds-to-minutes, tiny random model (tests)
#   bash experiments/run_table1.sh --preset paper --sweep --launcher slurm --dry-run   # grid + judge-call estimate
# Every option: python -m experiments.table1 --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m experiments.table1 "$@"
