#!/usr/bin/env bash
# GPU throughput of the training model on one CUDA device (written for a lent H200), in the order
# a short lease should spend it:
# 1. bench/gpu_model.py sweep: ResNet152 train and eval img/s, bf16 autocast + channels_last, at
#    growing batch sizes until memory runs out, against fp32 at batch 64 in the same run;
# 2. bench/gpu_input.py: the same model fed from real shards, JPEGs decoded by the CPU loader and
#    by nvJPEG on the device, against tensors already there;
# 3. bench/gpu_model.py compile: torch.compile (default mode) against eager bf16 at batch 256,
#    last because compiling takes minutes.
#   bash bench/gpu.sh [resnet152] [224]
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/gpu_model.py sweep --backbone "${1:-resnet152}" --image-size "${2:-224}"
python bench/gpu_input.py --backbone "${1:-resnet152}" --image-size "${2:-224}"
python bench/gpu_model.py compile --backbone "${1:-resnet152}" --image-size "${2:-224}"
