#!/usr/bin/env bash
# A GPU window in one command. Here, first: `python bench/gpu/prepare.py` (the wheels the device's
# image lacks and a small image set, into the git-ignored gpu-window/). There: `bash bench/gpu.sh
# "$OUT"` (the device tool, carrying gpu-window). It installs the carried wheels the image cannot
# import (nothing is fetched), points the benchmarks at gpu-window's images, and runs the stages on
# `python3` (the device's `python` lacks torch) in the order a short lease should spend them, each
# under its own limit; the limits add up to less than the budget, and each row is written to
# $OUT as it is measured, so a stage cut short keeps what it got:
# 1. tests/test_gpu.py: the CUDA tests (bf16 step, nvJPEG against the CPU and its memory fix, the
#    decode-ahead stream, the batch probe against the H200's line);
# 2. training and scoring from real shards against the model alone, at the loader processes train
#    (2 per GPU) and score (0: a thread; 5: docs/cluster.md's plan) use, and twice train's;
# 3. the same with JPEGs decoded on the device;
# 4. compiled training (--compile: about 120 s of compiling, left out of the rate);
# 5. the model-only sweep (img/s and peak GiB per batch), with what is left.
#   GPU_SMOKE=1 bash bench/gpu.sh OUT      every stage at its smallest on the CPU (tests/test_gpu_window.py)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
window="${GPU_WINDOW:-gpu-window}"
python="${PYTHON:-python3}"
rows="${SECONDS_PER_ROW:-15}"
budget_end=$((SECONDS + ${BUDGET_SECONDS:-480}))
mkdir -p "$out"
log="$out/gpu.log"
store="$(mktemp -d)" # one pack of the sample, shared by the input stages; not in $OUT, which comes back
trap 'rm -rf "$store"' EXIT
if [[ -n "${GPU_SMOKE:-}" ]]; then
  tiny=(--device cpu --backbone resnet18 --image-size 32 --copies 1 --batch 16 --seconds 1 --train-loaders 1 --score-loaders 0,1)
  tiny_sweep=(--device cpu --backbone resnet18 --image-size 32 --max-batch 64 --steps 1)
else
  tiny=()
  tiny_sweep=()
fi

# The carried wheels whose module the image cannot import, unpacked into gpu-window/site.
site="$PWD/$window/site"
missing=()
while read -r module wheel; do
  "$python" -c "import $module" 2>/dev/null || missing+=("$window/wheels/$wheel")
done <"$window/wheels.txt"
if ((${#missing[@]})); then
  echo "installing ${#missing[@]} carried wheel(s): ${missing[*]##*/}" | tee -a "$log"
  if "$python" -m pip --version >/dev/null 2>&1; then
    "$python" -m pip install --quiet --no-index --no-deps --target "$site" "${missing[@]}" 2>&1 | tee -a "$log"
  else # a venv without pip: a wheel is a zip of what goes on the path
    for wheel in "${missing[@]}"; do "$python" -m zipfile -e "$wheel" "$site"; done
  fi
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ARTDATE_SAMPLE="$PWD/$window/artworks-sample"

stage() { # stage NAME LIMIT COMMAND...: run it, bounded by its limit and by what is left of the budget
  local name="$1" limit="$2"
  shift 2
  local left=$((budget_end - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 15)); then
    echo "== $name: skipped, $left s of the budget left" | tee -a "$log"
    return
  fi
  echo "== $name (up to $limit s)" | tee -a "$log"
  # timeout signals the stage's whole process group (its loader processes too), then kills it.
  PYTHONUNBUFFERED=1 timeout -k 5 "$limit" "$@" 2>&1 | tee "$out/$name.txt" | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$log"
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$log"
stage test_gpu 50 "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py
stage input 150 "$python" -m bench.speed.gpu_input --inputs model,cpu --store "$store" --seconds "$rows" "${tiny[@]}"
stage device_decode 70 "$python" -m bench.speed.gpu_input --inputs model,device --store "$store" --seconds "$rows" "${tiny[@]}"
stage compiled 170 "$python" -m bench.speed.gpu_input --compile --modes train --inputs model,cpu --train-loaders 2 \
  --store "$store" --seconds "$rows" "${tiny[@]}"
stage model_sweep 30 "$python" -m bench.speed.gpu_model sweep --max-batch 512 --steps 10 "${tiny_sweep[@]}"
