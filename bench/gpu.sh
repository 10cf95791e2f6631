#!/usr/bin/env bash
# What a short GPU lease should measure, in order, within 8 minutes (each step under its own
# timeout, each row printed and kept as it is measured, so a step cut short keeps what it got):
# 1. tests/test_gpu.py: the CUDA tests (bf16 training step, nvJPEG against the CPU, the nvJPEG
#    memory fix, batches decoded a batch ahead on their own stream);
# 2. bench/gpu_input.py: ResNet152 training and scoring from real shards in steady state, CPU and
#    device decode, against the model alone on tensors already there (the input gap as a ratio);
# 3. bench/loader.py: the loader alone, no model, its img/s against the number of processes
#    (the scaling curve this machine's cores give);
# 4. bench/gpu_input.py --compile: the same with torch.compile (compiling left out of the rate).
# Then bench/gpu_model.py sweep for the model-only table at every batch size, if time is left.
#   bash bench/gpu.sh [OUT_DIR]            (SECONDS_PER_ROW=60 for the issue's 60 s rows)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
mkdir -p "$out"
rows="${SECONDS_PER_ROW:-25}"
budget_end=$((SECONDS + 470))

stage() {  # stage NAME TIMEOUT COMMAND...: run it, bounded by its timeout and what is left of 8 minutes
  local name="$1" limit="$2"
  shift 2
  local left=$((budget_end - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 20)); then
    echo "== $name: skipped, $left s of the budget left" | tee -a "$out/gpu.log"
    return
  fi
  echo "== $name (up to $limit s)" | tee -a "$out/gpu.log"
  PYTHONUNBUFFERED=1 timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" | tee -a "$out/gpu.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$out/gpu.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.log"
stage test_gpu 100 python -m pytest -q -p no:cacheprovider tests/test_gpu.py
stage gpu_input 200 python bench/gpu_input.py --seconds "$rows"
stage loader 90 python bench/loader.py --copies 20 --workers 1 4 8 15 --pack-sizes 384 256
stage gpu_input_compiled 150 python bench/gpu_input.py --compile --inputs model,cpu --seconds "$((rows / 2))"
stage gpu_model 60 python bench/gpu_model.py sweep --max-batch 512
