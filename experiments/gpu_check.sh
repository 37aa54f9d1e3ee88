#!/usr/bin/env bash
# GPU check: the paper preset's code path at small scale on one CUDA GPU, offline, in a few minutes -- a few steps
# of SDFT and SFT, each in full and with a LoRA adapter (bf16, gradient checkpointing, vLLM colocated when it
# imports, the speed switches' defaults), greedy evaluation of the four trained models, with per-step times,
# torch.cuda.max_memory_allocated and the memory planner's prediction (sdft.plan); then the mini preset's Table 5
# tool-use cells (Base, SFT, SDFT, 1 seed, best-validation checkpoints) into OUT_DIR/table5_mini.
#
#   bash experiments/gpu_check.sh [OUT_DIR]                 # default OUT_DIR: experiments/results/gpu_check
#   bash experiments/gpu_check.sh --cpu-dry-run [OUT_DIR]   # the same steps on the CPU (smoke preset, float32),
#                                                           # without the Table 5 cells (it says so)
#   bash experiments/gpu_check.sh --steps=4 --eval-n=4 --model=embedded:tiny-llama --keep-runs --skip-table5
#
# Options take their value after '=' (a bare word is OUT_DIR); $SDFT_GPU_CHECK_CPU_DRY_RUN=1 is --cpu-dry-run.
# Writes OUT_DIR/gpu_check.log (everything printed) and OUT_DIR/gpu_check.json. Exit status: 0 pass, 1 a check
# failed, 2 no CUDA device (without --cpu-dry-run). Details: experiments/gpu_check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="experiments/results/gpu_check"
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) exec python -m experiments.gpu_check --help ;;
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -*) pass+=("$1"); shift ;;
    *) out="$1"; shift ;;
  esac
done

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, also where it is not pip-installed
mkdir -p "$out"
python -m experiments.gpu_check ${pass[@]+"${pass[@]}"} --out "$out" 2>&1 | tee "$out/gpu_check.log"
