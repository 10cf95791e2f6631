"""How many images a GPU trains on at once: `--batch-size 0` on GPUs, from the memory the card has.

A training step's peak memory is close to a line in the batch: a fixed part (weights, gradients,
AdamW's two moments, DDP's gradient buckets, the CUDA context) and a part per image (the
activations, which grow with the pixels). Before a run, one task on a GPU the workers will get
measures that line for the run's backbone and image size on the card itself (two short steps at
small batches, bf16 autocast and channels_last as training runs), and the batch is the largest
power of two whose predicted peak fits within HEADROOM of the card, up to the batch where the
GPU's throughput levels off (loop.gpu_batch). ResNet152's line as measured on an H200 is kept here
as the reference the probe is checked against (tests/test_gpu.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30
# Of the card's memory, what the predicted peak may use: the rest is for what two probe steps do
# not show (the allocator's fragmentation over an epoch, cuDNN's autotuned workspaces, JPEGs
# decoded on the device, another process's CUDA context).
HEADROOM = 0.85
PROBE_BATCHES = (16, 32)


@dataclass(frozen=True)
class TrainingMemory:
    """Peak GPU memory of one training step, in bytes: `fixed` + `per_image` x the batch, with
    `per_image` measured at `image_size` px (it grows with the pixels)."""

    fixed: float
    per_image: float
    image_size: int

    def peak(self, batch: int, image_size: int) -> float:
        return self.fixed + self.per_image * batch * (image_size / self.image_size) ** 2


# ResNet152 in bf16 with channels_last, batches of 128 to 1,024 at 224 px, on an H200 (bench/
# RESULTS.md, 2026-12-04: 11.9, 22.6, 44.2 and 87.2 GiB): a straight line of 1.14 GiB + 0.0840 GiB
# an image, within 0.1 GiB of each reading.
RESNET152_AT_224 = TrainingMemory(fixed=1.143 * GIB, per_image=0.08404 * GIB, image_size=224)


@dataclass(frozen=True)
class Card:
    """A GPU as the workers will have it: its name, its memory, and the training line measured
    on it for the run's backbone."""

    name: str
    total: float  # bytes
    memory: TrainingMemory


def fitting_batch(memory: TrainingMemory, usable: float, image_size: int, most: int) -> int:
    """The largest power of two up to `most` whose predicted peak fits within HEADROOM of
    `usable` bytes; 0 when not even one image does."""
    batch = 2 ** int(math.log2(most))
    while batch >= 1 and memory.peak(batch, image_size) > HEADROOM * usable:
        batch //= 2
    return batch


def measure(backbone: str, num_outputs: int, image_size: int) -> TrainingMemory:
    """The training line of `backbone` on this process's GPU: the peak of one bf16 step at each of
    PROBE_BATCHES (after one unmeasured step, so cuDNN's autotuning and AdamW's state are in),
    plus the size of DDP's gradient buckets, which a single process does not allocate."""
    import torch

    from artdate.model.network import build_model, on_device

    device = torch.device("cuda")
    model = on_device(build_model(backbone, num_outputs, weights="none"), device)
    optimizer = torch.optim.AdamW(model.parameters())
    peaks = []
    for batch in PROBE_BATCHES:
        inputs = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(
            memory_format=torch.channels_last
        )
        for measured in (False, True):
            if measured:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(inputs).float().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device))
    small, large = PROBE_BATCHES
    per_image = max(0.0, (peaks[1] - peaks[0]) / (large - small))
    buckets = sum(p.numel() * p.element_size() for p in model.parameters())
    free, total = torch.cuda.mem_get_info(device)
    context = max(0, total - free - torch.cuda.memory_reserved(device))  # CUDA's own, outside the allocator
    fixed = peaks[0] - per_image * small + buckets + context
    return TrainingMemory(fixed=fixed, per_image=per_image, image_size=image_size)


def probe_card(backbone: str, num_outputs: int, image_size: int) -> Card:
    """The card this process was given (a Ray task with the workers' GPU ask) and the training
    line measured on it."""
    import torch

    properties = torch.cuda.get_device_properties(0)
    return Card(properties.name, float(properties.total_memory), measure(backbone, num_outputs, image_size))


def card_for_workers(backbone: str, num_outputs: int, image_size: int, gpus: float, timeout: float) -> Card:
    """probe_card run once where a training worker would run (a task asking for the workers' `gpus`);
    its process exits after, so the probe's CUDA context does not stay on the card."""
    import ray

    probe = ray.remote(num_gpus=gpus, num_cpus=0, max_calls=1)(probe_card)
    reference = probe.remote(backbone, num_outputs, image_size)
    try:
        return ray.get(reference, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(reference, force=True)
        raise RuntimeError(
            f"no GPU ({gpus:g} per worker) could be had within {timeout:g} s to size the batch for the card: "
            "the cluster lacks GPUs; add GPU nodes, or pass --batch-size to skip the probe"
        ) from None


def describe(card: Card, batch: int, image_size: int, share: float, most: int) -> str:
    """The line that says which batch was chosen, and why."""
    usable = card.total * share
    peak = card.memory.peak(batch, image_size) / GIB
    where = f"{share:g} of the {card.name}'s" if share < 1 else f"the {card.name}'s"
    if batch >= most:
        why = f"the batch where the GPU's throughput levels off at {image_size} px"
    else:
        larger = card.memory.peak(batch * 2, image_size) / GIB
        why = f"{batch * 2} would need {larger:.1f} GiB, over {HEADROOM:.0%} of the card"
    return (
        f"batch: {batch} images per GPU (--batch-size 0), a step of {peak:.1f} GiB in {where} "
        f"{usable / GIB:.1f} GiB: {why}"
    )
