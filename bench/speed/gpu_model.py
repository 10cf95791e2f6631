"""ResNet152 on one CUDA device, model only (synthetic inputs already on the device).

    python -m bench.speed.gpu_model sweep [--backbone resnet152] [--image-size 224]
    python -m bench.speed.gpu_model compile

`sweep`: train and eval img/s in bf16 autocast with channels_last at batch 64, 128, ... up to
`--max-batch` or out-of-memory, each against fp32 at batch 64 measured in the same run. `compile`:
torch.compile (default mode) at batch 256 against eager bf16 at batch 256 in the same run; artdate
gets a --compile option only if this shows it pays. Each row is printed as soon as it is measured,
so a run cut short by a device lease keeps what it measured.
"""

import argparse
import sys
import time

import torch

from artdate.model.network import build_model
from bench.common import per_second

STEPS, WARMUP = 20, 5  # timed steps after the warm-up ones


def measure(
    device: torch.device,
    backbone: str,
    size: int,
    batch: int,
    dtype,
    train: bool,
    compiled: bool = False,
    steps: int = STEPS,
) -> tuple[float, float]:
    """(images per second, peak GiB on CUDA) of `steps` steps after up to WARMUP ones."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_model(backbone, 1, weights="none").to(device, memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randn(batch, device=device)
    model.train(train)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), torch.set_grad_enabled(train):
            out = model(x).float().squeeze(1)
        if train:
            loss = torch.nn.functional.mse_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    for _ in range(min(WARMUP, steps)):
        step()

    def timed() -> int:
        for _ in range(steps):
            step()
        return batch * steps

    return per_second(timed), torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def row(mode: str, dtype: str, batch: int, rate: float, ratio: float, memory: float) -> None:
    print(f"{mode:<6}{dtype:<14}{batch:>6}{rate:>10.0f}{ratio:>10.2f}{memory:>10.1f}", flush=True)


def sweep(device: torch.device, backbone: str, size: int, max_batch: int, modes: list[str], steps: int) -> None:
    for mode in modes:
        train = mode == "train"
        base, memory = measure(device, backbone, size, 64, torch.float32, train, steps=steps)
        row(mode, "fp32 (base)", 64, base, 1.0, memory)
        batch = 64
        while batch <= max_batch:
            try:
                rate, memory = measure(device, backbone, size, batch, torch.bfloat16, train, steps=steps)
            except torch.OutOfMemoryError:
                print(f"{mode:<6}{'bf16':<14}{batch:>6}  out of memory", flush=True)
                break
            finally:
                torch.cuda.empty_cache()
            row(mode, "bf16", batch, rate, rate / base, memory)
            batch *= 2


def compile_vs_eager(device: torch.device, backbone: str, size: int) -> None:
    for train in (True, False):
        mode = "train" if train else "eval"
        eager, memory = measure(device, backbone, size, 256, torch.bfloat16, train)
        row(mode, "bf16 (base)", 256, eager, 1.0, memory)
        started = time.perf_counter()
        rate, memory = measure(device, backbone, size, 256, torch.bfloat16, train, compiled=True)
        row(mode, "bf16+compile", 256, rate, rate / eager, memory)
        print(f"  ({mode}: compiling and the timed steps took {time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["sweep", "compile"])
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-batch", type=int, default=1024, help="sweep: the largest batch tried")
    parser.add_argument("--modes", default="train,eval", help="sweep: train, eval or both")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run (the figures mean nothing there)")
    parser.add_argument("--steps", type=int, default=STEPS, help="timed steps per figure")
    args = parser.parse_args()
    device = torch.device(args.device)  # cpu: a smoke run, to see that the script still works
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.backbone} at {args.image_size} px")
    print(f"{'mode':<6}{'dtype':<14}{'batch':>6}{'img/s':>10}{'vs base':>10}{'peak GiB':>10}", flush=True)
    if args.what == "sweep":
        sweep(device, args.backbone, args.image_size, args.max_batch, args.modes.split(","), args.steps)
    else:
        compile_vs_eager(device, args.backbone, args.image_size)


if __name__ == "__main__":
    main()
