"""The plain PyTorch training loop, with no Ray: one epoch of training (`train_one_epoch`), a pass
of validation (`evaluate`, `validation_metrics`), the optimizer and its schedule, and `fit()`,
which puts them together in one process for the tests and benchmarks. worker.py runs the same
pieces on every rank of a Ray Train run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from artdate.core.config import TrainConfig
from artdate.core.works import derive_seed
from artdate.data import device_decode, pipeline
from artdate.data.partition import Slice
from artdate.model import ranges
from artdate.model.network import (
    LabelEncoding,
    ModelSpec,
    compiled,
    head_and_backbone_parameters,
    model_inputs,
    predict_years,
)
from artdate.train.gpu_memory import GIB, Card, fitting_batch

CPU = torch.device("cpu")
CPU_BATCH = 32  # per worker on CPU: the batch --lr is given for
# Per GPU at 224 px, where the card's memory allows: ResNet152 in bf16 trains at 2,199 img/s at 256
# on an H200 against 646 at 64, and 2,357 at 512 for twice the memory (bench/RESULTS.md, 2026-12-04):
# smaller batches leave the GPU idle, larger ones gain little.
GPU_BATCH_AT_224 = 256
# Per epoch in each checkpoint's metrics["history"]: what `artdate report --run` draws.
CURVE = ("epoch", "train_loss", "val_mae", "val_median_ae", "val_range_width")


def train_one_epoch(
    model,
    spec: ModelSpec,
    optimizer,
    scheduler,
    batches,
    device,
    epoch: int,
    *,
    grad_clip: float = 1.0,
    autocast_dtype=None,
    report_every: int = 0,
    on_progress: Callable[[int, float, float], None] | None = None,
    device_transform=None,
    loss_weight: float = 1.0,
    after_step: Callable[[int], None] | None = None,
) -> dict:
    """One pass over `batches`; returns the mean loss, images, seconds and skipped samples. With a
    `device_transform`, the batches hold encoded JPEGs, decoded and transformed on the device.
    Every `report_every` steps `on_progress(step, mean loss, images per second)` is called, and
    `after_step(step)` after every step. The gradient is `loss_weight` times the batch's mean loss
    (a DDP rank's share of an uneven global batch: world size x its images / the global batch)."""
    model.train()
    encoding = spec.encoding
    total_loss: torch.Tensor | float = 0.0
    images, started = 0, time.perf_counter()
    skipped: list[pipeline.Skip] = []
    step = 0
    for batch in device_decode.decoded_batches(batches, skipped, device, device_transform):
        step += 1
        inputs = model_inputs(batch.image, spec, device)
        # Non-blocking copies of the (pinned) labels: a blocking copy waits for the GPU every step.
        labels = (batch.year, batch.year_start, batch.year_end)
        targets = encoding.targets(*(label.to(device, non_blocking=True) for label in labels))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(inputs)
        loss = encoding.loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        (loss * loss_weight if loss_weight != 1.0 else loss).backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        # Summed on the device: reading a value each step (.item(), isfinite) would make the host
        # wait for the GPU every step. It is read at log intervals and at the end of the epoch.
        total_loss = total_loss + loss.detach() * len(inputs)
        images += len(inputs)
        if on_progress is not None and report_every and step % report_every == 0:
            on_progress(step, _finite_loss(total_loss, images, epoch, step), images / (time.perf_counter() - started))
        if after_step is not None:
            after_step(step)
    mean_loss = _finite_loss(total_loss, images, epoch, step)
    seconds = time.perf_counter() - started
    return {"loss": mean_loss, "images": images, "seconds": seconds, "skipped": len(skipped)}


def _finite_loss(total_loss, images: int, epoch: int, step: int) -> float:
    mean = float(total_loss) / max(images, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"the loss is {mean} by epoch {epoch} step {step}: lower --lr")
    return mean


def evaluate(
    model, spec: ModelSpec, batches, device, device_transform=None, museums: list[str] | None = None
) -> tuple[ranges.Predictions, torch.Tensor, int]:
    """(predictions with raw ranges, true years, skipped samples) for every sample in `batches`;
    each sample's museum is appended to `museums` when given (the calibration is per museum)."""
    model.eval()
    predictions, years = [], []
    skipped: list[pipeline.Skip] = []
    for batch in device_decode.decoded_batches(batches, skipped, device, device_transform):
        predictions.append(predict_years(model, spec, batch.image, device))
        years.append(batch.year.float())
        if museums is not None:
            museums += batch.museum
    if not predictions:
        empty = torch.zeros(0)
        return ranges.Predictions(empty, empty, empty), empty, len(skipped)
    return ranges.Predictions.concat(predictions), torch.cat(years), len(skipped)


def error_metrics(errors: torch.Tensor) -> dict:
    """MAE, median AE and share within 50 years, over every validation sample."""
    if len(errors) == 0:
        return {"val_n": 0, "val_mae": math.inf, "val_median_ae": math.inf, "val_within_50": 0.0}
    return {
        "val_n": len(errors),
        "val_mae": errors.mean().item(),
        "val_median_ae": errors.median().item() if len(errors) % 2 else errors.quantile(0.5).item(),
        "val_within_50": (errors <= 50).float().mean().item(),
    }


def validation_metrics(
    predictions: ranges.Predictions, years: torch.Tensor, spec: ModelSpec, museums: list[str] | None = None
) -> tuple[dict, ranges.RangeCalibration]:
    """The error figures of the validation predictions, and the calibration of the year ranges
    measured on them (validation works were not trained on: conformal calibration needs that),
    per museum when each work's is given."""
    encoding = spec.encoding
    calibration = ranges.calibrate(years, predictions.low, predictions.high, spec.range_level, museums)
    calibrated = ranges.apply_calibration(predictions, calibration, encoding.year_min, encoding.year_max, museums)
    width = (calibrated.high - calibrated.low).mean().item() if len(years) else math.inf
    metrics = {
        **error_metrics((predictions.year - years).abs()),
        "range_level": calibration.level,
        "range_margin": calibration.margin,
        "val_range_width": width,
    }
    return metrics, calibration


def label_encoding(manifest: dict, loss: str, bin_width: int, label_sigma: float = 0.0) -> LabelEncoding:
    labels = manifest["labels"]["train"]
    window = manifest["settings"]
    return LabelEncoding(
        loss=loss,
        mean=float(labels["mean"]),
        std=float(labels["std"]) or 1.0,
        year_min=int(window["year_min"]),
        year_max=int(window["year_max"]),
        bin_width=bin_width,
        label_sigma=label_sigma,
    )


def gpu_batch(image_size: int) -> int:
    """A batch that fills a GPU at `image_size`: 256 at 224 px, and at other sizes the power of
    two nearest as many pixels, from 32 to 1,024."""
    pixels = GPU_BATCH_AT_224 * (224 / image_size) ** 2
    return int(min(1024, max(32, 2 ** round(math.log2(pixels)))))


def for_device(cfg: TrainConfig, on_gpu: bool, card: Card | None = None, share: float = 1.0) -> TrainConfig:
    """--batch-size 0 resolved for the workers' device: 32 per worker on CPU; on GPUs the largest
    power of two up to gpu_batch(--image-size) that fits `share` of the `card` (gpu_memory.py),
    with --lr scaled by the square root of that batch over 32 (the square-root rule of Adam-type
    optimizers: Malladi et al., 2022, "On the SDEs and scaling rules for adaptive gradient
    algorithms"). A --batch-size given is used as given, with --lr as given."""
    if cfg.batch_size:
        return cfg
    if not on_gpu:
        return dataclasses.replace(cfg, batch_size=CPU_BATCH)
    if card is None:
        raise ValueError(
            "--batch-size 0 on GPUs is sized from the card: measure it first (gpu_memory.card_for_workers)"
        )
    batch = fitting_batch(card.memory, card.total * share, cfg.image_size, gpu_batch(cfg.image_size))
    if batch == 0:
        raise ValueError(
            f"{cfg.backbone} at {cfg.image_size} px does not train even one image per step in {share:g} of the "
            f"{card.name}'s {card.total / GIB:.1f} GiB: use a smaller --image-size or --backbone, or more GPU a worker"
        )
    return dataclasses.replace(cfg, batch_size=batch, lr=cfg.lr * math.sqrt(batch / CPU_BATCH))


def make_optimizer(model, cfg: TrainConfig):
    """AdamW with a lower rate for the pretrained backbone."""
    head, backbone = head_and_backbone_parameters(model)
    return torch.optim.AdamW(
        [{"params": head, "lr": cfg.lr}, {"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale}],
        weight_decay=cfg.weight_decay,
    )


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int, start_epoch: int = 0, start_step: int = 0):
    """Linear warm-up, then cosine decay, positioned at step `start_step` of `start_epoch`. The
    steps of an epoch do not depend on the number of workers (the global batch is fixed), so a
    run resumed on another number of workers continues at the same point of the schedule.
    During the first `freeze_epochs` the backbone (the groups after the head's) does not learn: the
    fresh head settles first, so its early, large gradients do not disturb the pretrained features."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
    offset = start_epoch * steps_per_epoch + start_step
    frozen = cfg.freeze_epochs * steps_per_epoch

    def factor(step: int) -> float:
        step += offset
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def backbone_factor(step: int) -> float:
        return 0.0 if step + offset < frozen else factor(step)

    factors: list = [factor] + [backbone_factor] * (len(optimizer.param_groups) - 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


@dataclass
class Fitted:
    """What fit() did: each epoch's training figures (with its validation metrics when it
    validated), the learning curve, and the last validation's calibration of the year ranges."""

    epochs: list[dict]
    history: list[dict]
    calibration: ranges.RangeCalibration | None

    @property
    def metrics(self) -> dict:
        return self.epochs[-1]


def fit(
    model,
    spec: ModelSpec,
    cfg: TrainConfig,
    epoch_batches: Callable[[int], Iterable[pipeline.Batch]],
    steps_per_epoch: int,
    *,
    device: torch.device = CPU,
    validation: Callable[[], Iterable[pipeline.Batch]] | None = None,
    through: torch.nn.Module | None = None,
    device_transform=None,
) -> Fitted:
    """The plain training loop in one process: cfg's optimizer and warm-up + cosine schedule, then
    cfg.epochs passes of train_one_epoch over epoch_batches(epoch), each validated on
    validation() when given, as artdate train does after every epoch (bf16 autocast on CUDA, as it
    trains there; cfg.compile compiles the model). `through`: the module the batches go through
    when it wraps `model` (bench/quality/recipes.py emulates DDP ranks so); `device_transform` as in
    train_one_epoch."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    forward = compiled(through or model, cfg.compile)
    epochs: list[dict] = []
    history: list[dict] = []
    calibration = None
    for epoch in range(cfg.epochs):
        trained = train_one_epoch(
            forward,
            spec,
            optimizer,
            scheduler,
            epoch_batches(epoch),
            device,
            epoch,
            grad_clip=cfg.grad_clip,
            autocast_dtype=autocast,
            device_transform=device_transform,
        )
        figures = {"epoch": epoch, "train_loss": trained["loss"], **trained}
        if validation is not None:
            museums: list[str] = []
            predictions, years, _ = evaluate(forward, spec, validation(), device, device_transform, museums)
            metrics, calibration = validation_metrics(predictions, years, spec, museums)
            figures.update(metrics)
            history.append({name: figures[name] for name in CURVE})
        epochs.append(figures)
    model.eval()
    return Fitted(epochs, history, calibration)


def shard_batches(slices: list[Slice], transform, cfg: TrainConfig) -> Callable[[int], Iterable[pipeline.Batch]]:
    """Each epoch's training batches from `slices`, read as a rank of artdate train reads its own
    (`cfg` with its batch size resolved: for_device)."""
    if not cfg.batch_size:
        raise ValueError("--batch-size 0 is resolved for the device first (loop.for_device)")
    return lambda epoch: pipeline.make_loader(
        slices,
        transform,
        cfg.batch_size,
        loader_workers=cfg.loader_workers,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=derive_seed(cfg.seed, "train", epoch),
        drop_last=True,
    )
