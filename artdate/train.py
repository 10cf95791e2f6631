"""`artdate train`: fine-tune a backbone on the shards with DistributedDataParallel on Ray Train.

`train_one_epoch` and `evaluate` are plain PyTorch; `train_func` is the only part that knows about
Ray (one copy runs per worker), and `run_training` sets up the TorchTrainer and its storage.
Rank 0 writes a checkpoint after every epoch, and inside an epoch on a preemption notice or every
--checkpoint-every minutes. A restarted worker group, or a rerun with --resume, continues from the
latest one: an epoch's data order depends only on (seed, epoch), and a checkpoint inside an epoch
keeps what of it no rank has read, so the run goes on at that position on any number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import data, ranges, shards, store, tracking
from .checkpoints import (
    CHECKPOINT_FILE,
    TRAINING_FILE,
    checkpoint_url,
    claim_run,
    load_tensors,
    run_checkpoints,
    run_identity,
    save_checkpoint,
)
from .config import TrainConfig
from .console import TrainingConsole
from .model import (
    LabelEncoding,
    ModelSpec,
    build_model,
    head_and_backbone_parameters,
    model_inputs,
    predict_years,
)
from .raycluster import connect, resolve_gpus
from .works import derive_seed


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
    images, skipped, started = 0, 0, time.perf_counter()
    step = 0
    for batch in batches:
        if device_transform is not None:
            batch = data.decode_on_device(batch, device_transform, device)
        skipped += len(batch.skipped)
        if batch.image is None:  # every sample of it was unreadable
            continue
        step += 1
        inputs = model_inputs(batch.image, spec, device)
        targets = encoding.targets(batch.year.to(device), batch.year_start.to(device), batch.year_end.to(device))
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
    return {"loss": mean_loss, "images": images, "seconds": seconds, "skipped": skipped}


def _finite_loss(total_loss, images: int, epoch: int, step: int) -> float:
    mean = float(total_loss) / max(images, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"the loss is {mean} by epoch {epoch} step {step}: lower --lr")
    return mean


def evaluate(
    model, spec: ModelSpec, batches, device, device_transform=None
) -> tuple[ranges.Predictions, torch.Tensor, int]:
    """(predictions with raw ranges, true years, skipped samples) for every sample in `batches`."""
    model.eval()
    predictions, years, skipped = [], [], 0
    for batch in batches:
        if device_transform is not None:
            batch = data.decode_on_device(batch, device_transform, device)
        skipped += len(batch.skipped)
        if batch.image is not None:
            predictions.append(predict_years(model, spec, batch.image, device))
            years.append(batch.year.float())
    if not predictions:
        empty = torch.zeros(0)
        return ranges.Predictions(empty, empty, empty), empty, skipped
    return ranges.Predictions.concat(predictions), torch.cat(years), skipped


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
    predictions: ranges.Predictions, years: torch.Tensor, spec: ModelSpec
) -> tuple[dict, ranges.RangeCalibration]:
    """The error figures of the validation predictions, and the calibration of the year ranges
    measured on them (validation works were not trained on: conformal calibration needs that)."""
    encoding = spec.encoding
    calibration = ranges.calibrate(years, predictions.low, predictions.high, spec.range_level)
    calibrated = ranges.apply_calibration(predictions, calibration, encoding.year_min, encoding.year_max)
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


def _gather(value):
    """Every rank's `value`, in rank order (just [value] outside DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


@dataclass
class Worker:
    """What the steps of one Ray Train worker share (train_func)."""

    cfg: TrainConfig
    spec: ModelSpec
    manifest: dict
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # DDP-wrapped when there are several ranks
    plain_model: torch.nn.Module  # the model itself: what is saved and validated
    optimizer: torch.optim.Optimizer
    global_batch: int  # images per step over all ranks, whatever the number of ranks
    batch: int  # this rank's share of it
    steps: int  # per epoch, the same for any number of ranks
    train_shards: list[data.Shard]
    my_val: list[data.Slice]  # this rank's share of the validation split, the same every epoch
    train_tf: Any
    eval_tf: Any
    on_device: bool  # the loaders pass encoded JPEGs and the step decodes them (--decode-on device)
    events: Any  # rank 0's line to the driver's console (artdate/console.py); None on the other ranks
    mlflow_run: str
    calibration: ranges.RangeCalibration  # the latest epoch's: mid-epoch checkpoints carry it on
    history: list[dict] = dataclasses.field(default_factory=list)  # the learning curve so far
    preemption_deadline: float | None = None  # UNIX seconds of a noticed preemption (one checkpoint answers it)
    last_checkpoint: float = dataclasses.field(default_factory=time.monotonic)

    def tell(self, event: str, **fields) -> None:
        """Best effort: the console is never a reason for training to stop."""
        if self.events is None:
            return
        import ray.exceptions

        try:
            self.events.put_nowait({"event": event, **fields})
        except ray.exceptions.RayError as problem:
            print(f"the driver's console is gone ({type(problem).__name__}); training goes on", file=sys.stderr)
            self.events = None


@dataclass
class Position:
    """Where training starts: an epoch, the steps of it already done, and what of its plan is left
    to train (None: the whole epoch)."""

    epoch: int = 0
    step: int = 0
    plan: list[data.Slice] | None = None


@dataclass
class EpochProgress:
    """This rank's part of an epoch in this attempt: its slices and the samples it has read."""

    epoch: int
    first_step: int  # steps of the epoch done before this attempt
    mine: list[data.Slice]
    read: set[tuple[str, int]] = dataclasses.field(default_factory=set)

    def record(self, batch: data.Batch) -> None:
        self.read.update(zip(batch.shard, batch.index))
        self.read.update((skip.shard, skip.index) for skip in batch.skipped)


def train_func(config: dict) -> None:
    """Runs on every Ray Train worker: resume, then per epoch train, validate, checkpoint."""
    worker = start_worker(config)
    try:
        train_epochs(worker)
    except Exception as problem:
        wait_for_preemption_restart(worker, problem)
        raise


# How long past a noticed preemption's deadline a rank that failed waits for Ray Train to restart
# the group (which kills the rank) before its error ends the run.
PREEMPTION_RESTART_WAIT_S = 60.0


def wait_for_preemption_restart(worker: Worker, problem: Exception) -> None:
    """After a preemption notice, a rank's collectives and loaders break as the node goes. Ray Train
    counts an error as the preemption only when it sees the preempted worker's death in the same
    poll: a survivor's broken collective, or the preempted rank's own error in the moment before
    it is killed, seen first ends the run as a failure. So a rank that fails after a notice waits
    for the restart, and its error counts only if none came by `PREEMPTION_RESTART_WAIT_S` past
    the deadline."""
    if worker.preemption_deadline is None:
        return
    print(
        f"rank {worker.rank}: {type(problem).__name__} after a preemption notice; waiting for Ray Train to restart",
        file=sys.stderr,
        flush=True,
    )
    time.sleep(max(0.0, worker.preemption_deadline - time.time()) + PREEMPTION_RESTART_WAIT_S)


def train_epochs(worker: Worker) -> None:
    """Resume, then per epoch train, validate, checkpoint."""
    position = resume(worker)
    scheduler = make_scheduler(worker.optimizer, worker.cfg, worker.steps, position.epoch, position.step)
    for epoch in range(position.epoch, worker.cfg.epochs):
        left = position.plan if epoch == position.epoch else None  # resumed inside this epoch
        plan = left if left is not None else data.epoch_plan(worker.train_shards, epoch, worker.cfg.seed)
        first_step = position.step if left is not None else 0
        mine, stats = train_epoch(worker, scheduler, EpochProgress(epoch, first_step, []), plan)
        metrics, calibration = validate(worker, epoch, mine, stats)
        metrics["start_epoch"] = position.epoch  # where this attempt began: a resume and a restart differ here
        metrics["start_step"] = position.step
        metrics["lr"] = scheduler.get_last_lr()[0]
        # The learning curve so far rides in every checkpoint: Ray deletes all but the best few.
        worker.history = worker.history + [{name: metrics[name] for name in CURVE}]
        worker.calibration = calibration
        report(worker, {**metrics, "step": worker.steps}, "epoch")


def start_worker(config: dict) -> Worker:
    """This rank's device, model (DDP through Ray Train) and optimizer."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config["train"])
    manifest, spec = config["manifest"], ModelSpec.from_dict(config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)  # the same fresh head on every rank (DDP also broadcasts rank 0's)
    model = build_model(spec.backbone, spec.encoding.num_outputs, cfg.weights)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    plain_model: torch.nn.Module = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
    train_shards = data.manifest_shards(cfg.shards, manifest, "train")
    val_shards = data.manifest_shards(cfg.shards, manifest, "val")
    global_batch = config["global_batch"]
    return Worker(
        cfg=cfg,
        spec=spec,
        manifest=manifest,
        rank=rank,
        world=world,
        device=device,
        model=model,
        plain_model=plain_model,
        optimizer=make_optimizer(plain_model, cfg),
        global_batch=global_batch,
        batch=data.rank_batches(global_batch, world)[rank],
        steps=data.steps_per_epoch(train_shards, global_batch),
        train_shards=train_shards,
        my_val=data.assign_val(val_shards, world)[rank],
        train_tf=data.train_transform(spec.image_size),
        eval_tf=data.eval_transform(spec.image_size),
        on_device=cfg.decode_on == "device",
        events=config["events"] if rank == 0 else None,
        mlflow_run=config["mlflow_run"],
        calibration=ranges.RangeCalibration(level=cfg.range_level, margin=0.0, n=0),
    )


def resume(worker: Worker) -> Position:
    """Where to start, from the checkpoint Ray Train hands a restarted or resumed run (whose
    weights, optimizer state, calibration and learning curve it loads); the start for a new run."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return Position()
    # A directory of this rank's own: as_directory's is shared by the ranks of a machine, and a rank
    # arriving after the first one's download downloads again over the files it reads (Ray issue
    # 48726: a truncated training_state.pt in the preemption test, two nodes on one machine).
    with tempfile.TemporaryDirectory(prefix="artdate-resume-") as directory:
        checkpoint.to_directory(directory)
        state = load_tensors(os.path.join(directory, CHECKPOINT_FILE))
        training_state = load_tensors(os.path.join(directory, TRAINING_FILE))
    worker.plain_model.load_state_dict(state["model"])
    worker.optimizer.load_state_dict(training_state["optimizer"])
    worker.history = state["metrics"]["history"]
    worker.calibration = ranges.RangeCalibration.from_dict(state["calibration"])
    inside = training_state.get("inside_epoch")  # a mid-epoch checkpoint: {step, plan, global_batch}
    if inside is None:
        position = Position(state["epoch"] + 1)
    else:
        plan = [data.Slice(*piece) for piece in inside["plan"]]
        step = inside["step"]
        if inside["global_batch"] != worker.global_batch:  # resumed with another --batch-size: count anew
            step = max(0, worker.steps - sum(piece.samples for piece in plan) // worker.global_batch)
        position = Position(state["epoch"], step, plan)
    worker.tell("resume", epoch=position.epoch, step=position.step, steps=worker.steps, path=checkpoint.path)
    return position


def train_epoch(
    worker: Worker, scheduler, progress: EpochProgress, plan: list[data.Slice]
) -> tuple[list[data.Slice], dict]:
    """Train what is left of an epoch's `plan`; (this rank's slices of it, its training statistics)."""
    cfg, rank, on_device, epoch = worker.cfg, worker.rank, worker.on_device, progress.epoch
    progress.mine = data.assign_train(plan, worker.global_batch, worker.world)[rank]
    steps = min(worker.steps - progress.first_step, sum(s.samples for s in plan) // worker.global_batch)
    # Random streams of their own per epoch and rank, and per resumed position inside an epoch.
    where = (epoch, rank, progress.first_step) if progress.first_step else (epoch, rank)
    if on_device:  # crops and flips are drawn in this process
        torch.manual_seed(derive_seed(cfg.seed, "device-augment", *where))
    # One loader per epoch; its worker processes persist across the wrap-around passes.
    loader = data.make_loader(
        progress.mine,
        None if on_device else worker.train_tf,
        worker.batch,
        loader_workers=cfg.loader_workers,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=derive_seed(cfg.seed, "train", *where),
        drop_last=True,
        persistent=True,
    )
    worker.tell("start", epoch=epoch, steps=worker.steps, step=progress.first_step)
    batches = _recorded(data.take_steps(loader.__iter__, steps) if steps > 0 else iter(()), progress, worker)

    def after_step(step: int) -> None:
        if step % cfg.preemption_poll_steps == 0:
            reason = checkpoint_due(worker)
            if reason:
                save_inside_epoch(worker, progress, progress.first_step + step, reason, scheduler)

    stats = train_one_epoch(
        worker.model,
        worker.spec,
        worker.optimizer,
        scheduler,
        batches,
        worker.device,
        epoch,
        grad_clip=cfg.grad_clip,
        autocast_dtype=torch.bfloat16 if worker.device.type == "cuda" else None,
        report_every=cfg.log_every,
        on_progress=lambda step, loss, rate: worker.tell(
            "step", step=progress.first_step + step, loss=loss, images_per_second=rate
        ),
        device_transform=worker.train_tf if on_device else None,
        loss_weight=worker.world * worker.batch / worker.global_batch,
        after_step=after_step,
    )
    del loader  # its worker processes end here
    return progress.mine, stats


def _recorded(batches, progress: EpochProgress, worker: Worker):
    """Pass the batches on, noting the samples each one read (and, with --key-log, its keys)."""
    log = None
    if worker.cfg.key_log:
        os.makedirs(worker.cfg.key_log, exist_ok=True)
        name = f"epoch{progress.epoch}-from{progress.first_step}-rank{worker.rank}-{os.getpid()}.jsonl"
        log = open(os.path.join(worker.cfg.key_log, name), "a")
    try:
        step = progress.first_step
        for batch in batches:
            progress.record(batch)
            if batch.image is not None:
                step += 1
                if log is not None:
                    entry = {"epoch": progress.epoch, "step": step, "rank": worker.rank, "world": worker.world}
                    # time: when the step's batch was read (bench/preempt.py times a resume by it)
                    log.write(json.dumps({**entry, "time": time.time(), "keys": batch.key}) + "\n")
                    log.flush()
            yield batch
    finally:
        if log is not None:
            log.close()


def validate(worker: Worker, epoch: int, mine: list[data.Slice], stats: dict) -> tuple[dict, ranges.RangeCalibration]:
    """The epoch's metrics over every rank (each validates its share of the split with rank 0's
    BatchNorm statistics) and the range calibration measured on the whole validation split."""
    import ray

    share_rank0_buffers(worker.model)
    eval_tf, on_device = worker.eval_tf, worker.on_device
    loader = data.make_loader(
        worker.my_val, None if on_device else eval_tf, worker.cfg.batch_size, loader_workers=worker.cfg.loader_workers
    )
    predictions, years, val_skipped = evaluate(
        worker.plain_model, worker.spec, loader, worker.device, eval_tf if on_device else None
    )
    everyone = _gather(
        {
            "predictions": predictions,
            "years": years,
            "train": stats,
            "val_skipped": val_skipped,
            "slices": [[s.url, s.start, s.stop] for s in mine],
            "node": ray.util.get_node_ip_address(),
        }
    )
    validation, calibration = validation_metrics(
        ranges.Predictions.concat([r["predictions"] for r in everyone]),
        torch.cat([r["years"] for r in everyone]),
        worker.spec,
    )
    metrics = {
        "epoch": epoch,
        "train_loss": sum(r["train"]["loss"] for r in everyone) / worker.world,
        "images_per_second": sum(r["train"]["images"] / max(r["train"]["seconds"], 1e-9) for r in everyone),
        "skipped": sum(r["train"]["skipped"] + r["val_skipped"] for r in everyone),
        "val_skipped": sum(r["val_skipped"] for r in everyone),
        "slices_per_rank": [r["slices"] for r in everyone],
        "node_per_rank": [r["node"] for r in everyone],
        **validation,
    }
    return metrics, calibration


def checkpoint_due(worker: Worker) -> str:
    """Why a checkpoint is due at this step ("preemption", "interval") or "". Every rank calls it
    at the same steps: Ray's preemption check and the broadcast of rank 0's clock are collectives."""
    import ray.train
    import ray.train.collective

    notice = ray.train.get_preemption_info()
    if notice is not None and worker.preemption_deadline is None:
        worker.preemption_deadline = notice.deadline_ms / 1000 if notice.deadline_ms else time.time()
        return "preemption"
    every = worker.cfg.checkpoint_every * 60
    if every <= 0:  # the same settings on every rank: no broadcast needed to agree
        return ""
    due = time.monotonic() - worker.last_checkpoint >= every
    return "interval" if ray.train.collective.broadcast_from_rank_zero(due) else ""


def save_inside_epoch(worker: Worker, progress: EpochProgress, step: int, reason: str, scheduler) -> None:
    """A checkpoint at `step` of the epoch: the weights, and what of the epoch's plan is left (every
    rank's unread slices), so a resume on any number of ranks trains each remaining sample once."""
    left = _gather([[s.url, s.start, s.stop] for s in data.unread(progress.mine, progress.read)])
    metrics = {
        "epoch": progress.epoch,
        "step": step,
        "val_mae": UNVALIDATED_MAE,  # never the run's best checkpoint
        "lr": scheduler.get_last_lr()[0],
    }
    plan = [piece for rank in left for piece in rank]
    report(worker, metrics, reason, inside_epoch={"step": step, "plan": plan, "global_batch": worker.global_batch})


def report(worker: Worker, metrics: dict, reason: str, inside_epoch: dict | None = None) -> None:
    """Rank 0 writes the checkpoint; every rank reports to Ray Train; rank 0 tells MLflow and the
    console. `reason`: epoch, preemption or interval (the last two inside an epoch)."""
    import ray.train

    metrics = {**metrics, "reason": reason, "world_size": worker.world, "history": worker.history}
    with tempfile.TemporaryDirectory() as directory:
        saved = None
        if worker.rank == 0:
            training_state = {
                "optimizer": worker.optimizer.state_dict(),
                "epoch": metrics["epoch"],
                "inside_epoch": inside_epoch,
                "train_config": dataclasses.asdict(worker.cfg),
            }
            save_checkpoint(directory, worker.spec, worker.plain_model, metrics, worker.calibration, training_state)
            saved = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=saved)
    worker.last_checkpoint = time.monotonic()
    if reason != "epoch":
        worker.tell("checkpoint", epoch=metrics["epoch"], step=metrics["step"], steps=worker.steps, reason=reason)
        return
    if worker.rank == 0 and worker.cfg.mlflow:
        tracking.log_epoch(worker.cfg.mlflow, worker.mlflow_run, metrics)
    shown = ("epoch", "train_loss", "val_mae", "range_level", "val_range_width", "images_per_second")
    worker.tell("epoch", **{name: metrics[name] for name in shown})


# The val_mae of a checkpoint inside an epoch, which is not validated: worse than any real one, and
# finite (Ray's checkpoint snapshot writes inf as null, and then cannot rank the checkpoints).
UNVALIDATED_MAE = 1e12

# Per epoch in each checkpoint's metrics["history"]: what `artdate report --run` draws.
CURVE = ("epoch", "train_loss", "val_mae", "val_median_ae", "val_range_width")


def share_rank0_buffers(model) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics). DDP broadcasts them before each
    forward, but each rank then updates its own copy with its own batch, so after the last step
    they differ; rank 0's are the ones saved, and validation must evaluate the saved weights."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def run_training(cfg: TrainConfig, progress: bool = True, verbose: bool = False) -> str:
    """Train; return the URL of the best checkpoint (by validation MAE). The console shows a bar
    per epoch (unless not `progress`) and a line per epoch; `verbose` adds Ray's own output."""
    cfg = with_absolute_urls(cfg)
    storage = cfg.storage.rstrip("/")
    manifest = shards.read_manifest(cfg.shards)
    steps, global_batch = check_settings(cfg, manifest, storage)
    fewest, most = worker_range(cfg.workers)
    spec = model_spec(cfg, manifest)
    claim_run(storage, run_identity(spec, manifest, cfg.seed))
    # A wrong backbone name or weights file fails here, not in every worker. ImageNet weights are
    # fetched by the workers only: the driver (often a CPU head node) has no use for them.
    build_model(cfg.backbone, spec.encoding.num_outputs, "none" if cfg.weights == "imagenet" else cfg.weights)

    connect(verbose=verbose)  # before importing ray.train: ray reads its network settings on import
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    gpus = resolve_gpus(cfg.gpus_per_worker, most, "worker", cfg.backbone)
    num_workers: Any = fewest if fewest == most else (fewest, most)  # a range: elastic
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})}
    # Rank 0 -> this console. On this driver's node, so a lost worker node does not take it along.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    mlflow_run = tracking.start_run(cfg.mlflow, storage, dataclasses.asdict(cfg), verbose) if cfg.mlflow else ""
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "train": dataclasses.asdict(cfg),
            "manifest": manifest,
            "spec": spec.to_dict(),
            "events": events,
            "mlflow_run": mlflow_run,
            "global_batch": global_batch,
        },
        scaling_config=ray.train.ScalingConfig(  # type: ignore[call-arg]  # Ray Train v2's (the stubs: v1)
            num_workers=num_workers,
            use_gpu=gpus > 0,
            resources_per_worker=resources,
            elastic_resize_monitor_interval_s=cfg.resize_check,
        ),
        run_config=ray_run_config(cfg, storage, verbose),
    )
    print(
        f"training {cfg.backbone} on {manifest['splits']['train']['samples']} works with {cfg.workers} worker(s), "
        f"{cfg.epochs} epochs of {steps} steps of {global_batch} images -> {storage}",
        file=sys.stderr,
        flush=True,
    )
    best_url = None
    try:
        with TrainingConsole(events, cfg.epochs, progress):
            result = trainer.fit()
        best = result.get_best_checkpoint(metric="val_mae", mode="min") if result.best_checkpoints else None
        if best is None:
            raise RuntimeError(f"training ended without a checkpoint in {storage}")
        best_url = checkpoint_url(storage, best.path)
    finally:
        if mlflow_run:
            tracking.finish_run(cfg.mlflow, mlflow_run, best_url)
    return best_url


def with_absolute_urls(cfg: TrainConfig) -> TrainConfig:
    """Paths as the workers must read them: they run in other folders."""
    weights = cfg.weights if cfg.weights in ("imagenet", "none") else store.absolute(cfg.weights)
    return dataclasses.replace(
        cfg,
        shards=store.absolute(cfg.shards),
        storage=store.absolute(cfg.storage),
        weights=weights,
        mlflow=tracking.absolute_uri(cfg.mlflow) if cfg.mlflow else "",
    )


def worker_range(workers: int | str) -> tuple[int, int]:
    """--workers N or MIN-MAX -> (fewest, most)."""
    text = str(workers)
    low, _, high = text.partition("-")
    try:
        fewest, most = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"--workers {text!r}: expected a number N or a range MIN-MAX") from None
    if not 1 <= fewest <= most:
        raise ValueError(f"--workers {text!r}: needs 1 <= MIN <= MAX")
    return fewest, most


def check_settings(cfg: TrainConfig, manifest: dict, storage: str) -> tuple[int, int]:
    """Refuse, before anything starts, what could not train; return (steps per epoch, global
    batch). The global batch is --batch-size x the fewest workers, and stays so whatever number of
    workers the run has at a time: each worker trains its share of it."""
    fewest, most = worker_range(cfg.workers)
    if not data.manifest_shards(cfg.shards, manifest, "val"):
        raise ValueError(f"{cfg.shards} has no validation shards: pack with --val-fraction above 0")
    global_batch = cfg.batch_size * fewest
    data.rank_batches(global_batch, most)  # every worker gets at least one image a step
    steps = data.steps_per_epoch(data.manifest_shards(cfg.shards, manifest, "train"), global_batch)
    existing = run_checkpoints(storage)
    if existing and not cfg.resume:
        raise ValueError(
            f"{storage} already holds a run ({len(existing)} checkpoints): pass --resume to continue it, "
            "or use another --storage"
        )
    return steps, global_batch


def model_spec(cfg: TrainConfig, manifest: dict) -> ModelSpec:
    """The model the settings ask for, with the label encoding of the pack's years."""
    settings = manifest.get("settings", {})
    return ModelSpec(
        backbone=cfg.backbone,
        image_size=cfg.image_size,
        encoding=label_encoding(manifest, cfg.loss, cfg.bin_width, cfg.label_sigma),
        pack_size=settings.get("size", 0),
        pack_quality=settings.get("quality", 90),
        range_level=cfg.range_level,
        flip_averaging=cfg.flip_averaging,
    )


def ray_run_config(cfg: TrainConfig, storage: str, verbose: bool):
    """Where Ray Train keeps the checkpoints (the best --keep-checkpoints by val MAE, and the
    latest), how often a run restarts, and how much of its own logging it shows."""
    import ray.train

    filesystem, path = store.pyarrow_filesystem(storage)
    parent, name = path.rsplit("/", 1)
    return ray.train.RunConfig(
        name=name,
        storage_path=parent,
        storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=cfg.keep_checkpoints,
            checkpoint_score_attribute="val_mae",
            checkpoint_score_order="min",
        ),
        failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]  # Ray Train v2's
            max_failures=cfg.max_failures, max_preemption_failures=cfg.max_preemptions
        ),
        # Ray Train's per-report and worker-group messages, unless asked for.
        logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING"),  # type: ignore[call-arg]
    )
