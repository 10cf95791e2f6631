"""ResNet152 on one CUDA device, model only (synthetic inputs already on the device).

    python bench/gpu_model.py sweep [--backbone resnet152] [--image-size 224]
    python bench/gpu_model.py compile

`sweep`: train and eval img/s in bf16 autocast with channels_last at batch 64, 128, ... up to
`--max-batch` or out-of-memory, each against fp32 at batch 64 measured in the same run. `compile`:
torch.compile (default mode) at batch 256 against eager bf16 at batch 256 in the same run; artdate
gets a --compile option only if this shows it pays. Each row is printed as soon as it is measured,
so a run cut short by a device lease keeps what it measured.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from artdate.model import build_model  # noqa: E402

STEPS, WARMUP = 20, 5


def measure(backbone: str, size: int, batch: int, dtype, train: bool, compiled: bool = False) -> tuple[float, float]:
    """(images per second, peak GiB) of `STEPS` steps after `WARMUP` ones."""
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
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

    for _ in range(WARMUP):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    return batch * STEPS / (time.perf_counter() - started), torch.cuda.max_memory_allocated() / 2**30


def row(mode: str, dtype: str, batch: int, rate: float, ratio: float, memory: float) -> None:
    print(f"{mode:<6}{dtype:<14}{batch:>6}{rate:>10.0f}{ratio:>10.2f}{memory:>10.1f}", flush=True)


def sweep(backbone: str, size: int, max_batch: int, modes: list[str]) -> None:
    for mode in modes:
        train = mode == "train"
        base, memory = measure(backbone, size, 64, torch.float32, train)
        row(mode, "fp32 (base)", 64, base, 1.0, memory)
        batch = 64
        while batch <= max_batch:
            try:
                rate, memory = measure(backbone, size, batch, torch.bfloat16, train)
            except torch.OutOfMemoryError:
                print(f"{mode:<6}{'bf16':<14}{batch:>6}  out of memory", flush=True)
                break
            finally:
                torch.cuda.empty_cache()
            row(mode, "bf16", batch, rate, rate / base, memory)
            batch *= 2


def compile_vs_eager(backbone: str, size: int) -> None:
    for train in (True, False):
        mode = "train" if train else "eval"
        eager, memory = measure(backbone, size, 256, torch.bfloat16, train)
        row(mode, "bf16 (base)", 256, eager, 1.0, memory)
        started = time.perf_counter()
        rate, memory = measure(backbone, size, 256, torch.bfloat16, train, compiled=True)
        row(mode, "bf16+compile", 256, rate, rate / eager, memory)
        print(f"  ({mode}: compiling and the timed steps took {time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["sweep", "compile"])
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-batch", type=int, default=1024, help="sweep: the largest batch tried")
    parser.add_argument("--modes", default="train,eval", help="sweep: train, eval or both")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.backbone} at {args.image_size} px")
    print(f"{'mode':<6}{'dtype':<14}{'batch':>6}{'img/s':>10}{'vs base':>10}{'peak GiB':>10}", flush=True)
    if args.what == "sweep":
        sweep(args.backbone, args.image_size, args.max_batch, args.modes.split(","))
    else:
        compile_vs_eager(args.backbone, args.image_size)


if __name__ == "__main__":
    main()
