#!/usr/bin/env bash
# GPU throughput of the training model on one CUDA device (written for a lent H200):
# ResNet152, bf16 autocast, channels_last; train and eval img/s at growing batch sizes until
# memory runs out, against fp32 at batch 64 as the same-run baseline. Synthetic 224 px inputs,
# so the figures are the model's; bench/gpu_input.py (run last) adds real shards decoded on the
# CPU and on the GPU next to the model-only rate. torch.compile (default mode) is measured at batch
# 256 next to eager: artdate gets a --compile option only if this shows it pays.
#   bash bench/gpu.sh [resnet152] [224]
set -euo pipefail
cd "$(dirname "$0")/.."
python - "${1:-resnet152}" "${2:-224}" <<'PY'
import sys, time, torch
from artdate.model import build_model
backbone, size = sys.argv[1], int(sys.argv[2])
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this benchmark needs a GPU")
torch.backends.cudnn.benchmark = True
device = torch.device("cuda")
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {backbone} at {size} px")

def measure(batch, dtype, train, steps=20, compiled=False):
    model = build_model(backbone, 1, weights="none").to(device, memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randn(batch, device=device)
    model.train(train)
    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32), torch.set_grad_enabled(train):
            out = model(x).float().squeeze(1)
        if train:
            loss = torch.nn.functional.mse_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started), torch.cuda.max_memory_allocated() / 2**30

rows = []
for train in (True, False):
    base, _ = measure(64, torch.float32, train)
    rows.append((("train" if train else "eval"), "fp32", 64, base, 1.0, float("nan")))
    batch = 64
    while batch <= 4096:
        try:
            torch.cuda.reset_peak_memory_stats()
            rate, memory = measure(batch, torch.bfloat16, train)
            rows.append((("train" if train else "eval"), "bf16", batch, rate, rate / base, memory))
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch *= 2
    eager = next(rate for mode, dtype, batch, rate, _, _ in rows if mode == ("train" if train else "eval") and batch == 256)
    torch.cuda.reset_peak_memory_stats()
    rate, memory = measure(256, torch.bfloat16, train, compiled=True)
    rows.append((("train" if train else "eval"), "bf16+compile", 256, rate, rate / base, memory))
    print(f"torch.compile, {'train' if train else 'eval'} at batch 256: {rate / eager:.2f}x eager bf16", flush=True)
print(f"{'mode':<6}{'dtype':<14}{'batch':>6}{'img/s':>10}{'vs fp32@64':>12}{'peak GiB':>10}")
for mode, dtype, batch, rate, ratio, memory in rows:
    print(f"{mode:<6}{dtype:<14}{batch:>6}{rate:>10.0f}{ratio:>12.2f}{memory:>10.1f}")
PY
# The same model fed from real shards: CPU decode vs nvJPEG decode on the device vs tensors alone.
python bench/gpu_input.py --backbone "${1:-resnet152}" --image-size "${2:-224}"
