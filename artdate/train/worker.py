"""What runs on every rank of a Ray Train run (`train_func`): resume, then per epoch train,
validate and checkpoint, with the plain loop of loop.py and the checkpoints of rank_checkpointing.py.

Rank 0 writes a checkpoint after every epoch, and inside an epoch on a preemption notice or every
--checkpoint-every minutes. A restarted worker group, or a rerun with --resume, continues from the
latest one: an epoch's data order depends only on (seed, epoch), and a checkpoint inside an epoch
keeps what of it no rank has read, so the run goes on at that position on any number of workers.
"""

from __future__ import annotations

import json
import os
import time

import torch

from artdate.core.config import TrainConfig
from artdate.core.works import derive_seed
from artdate.data import partition, pipeline
from artdate.data.partition import Slice
from artdate.model import ranges
from artdate.model.network import ModelSpec, build_model, compiled, on_device
from artdate.train.loop import CURVE, evaluate, make_optimizer, make_scheduler, train_one_epoch, validation_metrics
from artdate.train.rank_checkpointing import (
    checkpoint_and_report,
    checkpoint_due,
    distributed,
    gather,
    resume,
    save_inside_epoch,
    wait_for_preemption_restart,
)
from artdate.train.rank_state import EpochProgress, RankState


def train_func(config: dict) -> None:
    """Runs on every Ray Train worker: resume, then per epoch train, validate, checkpoint."""
    worker = start_worker(config)
    try:
        train_epochs(worker)
    except Exception as problem:
        wait_for_preemption_restart(worker, problem)
        raise


def train_epochs(worker: RankState) -> None:
    """Resume, then per epoch train, validate, checkpoint."""
    position = resume(worker)
    scheduler = make_scheduler(worker.optimizer, worker.cfg, worker.steps_per_epoch, position.epoch, position.step)
    for epoch in range(position.epoch, worker.cfg.epochs):
        left = position.plan if epoch == position.epoch else None  # resumed inside this epoch
        plan = left if left is not None else partition.epoch_plan(worker.train_shards, epoch, worker.cfg.seed)
        first_step = position.step if left is not None else 0
        mine, stats = train_epoch(worker, scheduler, EpochProgress(epoch, first_step, []), plan)
        metrics, calibration = validate(worker, epoch, mine, stats)
        metrics["start_epoch"] = position.epoch  # where this attempt began: a resume and a restart differ here
        metrics["start_step"] = position.step
        metrics["lr"] = scheduler.get_last_lr()[0]
        # The learning curve so far rides in every checkpoint: Ray deletes all but the best few.
        worker.history = worker.history + [{name: metrics[name] for name in CURVE}]
        worker.calibration = calibration
        checkpoint_and_report(worker, {**metrics, "step": worker.steps_per_epoch}, "epoch")


def start_worker(config: dict) -> RankState:
    """This rank's device, model (DDP through Ray Train) and optimizer."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config["train"])
    manifest, spec = config["manifest"], ModelSpec.from_dict(config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # the same fresh head on every rank (DDP also broadcasts rank 0's)
    model = on_device(build_model(spec.backbone, spec.encoding.num_outputs, cfg.weights), device)
    model = ray.train.torch.prepare_model(model)
    plain_model: torch.nn.Module = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
    train_shards = partition.manifest_shards(cfg.shards, manifest, "train")
    val_shards = partition.manifest_shards(cfg.shards, manifest, "val")
    global_batch = config["global_batch"]
    return RankState(
        cfg=cfg,
        spec=spec,
        rank=rank,
        world=world,
        device=device,
        ddp_model=compiled(model, cfg.compile),
        model=plain_model,
        optimizer=make_optimizer(plain_model, cfg),
        global_batch=global_batch,
        rank_batch=partition.rank_batches(global_batch, world)[rank],
        steps_per_epoch=partition.steps_per_epoch(train_shards, global_batch),
        train_shards=train_shards,
        val_slices=partition.assign_val(val_shards, world)[rank],
        train_transform=pipeline.train_transform(spec.image_size),
        eval_transform=pipeline.eval_transform(spec.image_size),
        decode_on_device=cfg.decode_on == "device",
        console=config["events"] if rank == 0 else None,
        mlflow_run=config["mlflow_run"],
        calibration=ranges.RangeCalibration(level=cfg.range_level, margin=0.0, n=0),
    )


def train_epoch(worker: RankState, scheduler, progress: EpochProgress, plan: list[Slice]) -> tuple[list[Slice], dict]:
    """Train what is left of an epoch's `plan`; (this rank's slices of it, its training statistics)."""
    cfg, rank, on_device, epoch = worker.cfg, worker.rank, worker.decode_on_device, progress.epoch
    progress.mine = partition.assign_train(plan, worker.global_batch, worker.world)[rank]
    steps = min(worker.steps_per_epoch - progress.first_step, sum(s.samples for s in plan) // worker.global_batch)
    # Random streams of their own per epoch and rank, and per resumed position inside an epoch.
    where = (epoch, rank, progress.first_step) if progress.first_step else (epoch, rank)
    if on_device:  # crops and flips are drawn in this process
        torch.manual_seed(derive_seed(cfg.seed, "device-augment", *where))
    # One loader per epoch; its worker processes persist across the wrap-around passes.
    loader = pipeline.make_loader(
        progress.mine,
        None if on_device else worker.train_transform,
        worker.rank_batch,
        loader_workers=cfg.loader_workers,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=derive_seed(cfg.seed, "train", *where),
        drop_last=True,
        persistent=True,
        pin_memory=worker.device.type == "cuda",
    )
    worker.tell("start", epoch=epoch, steps=worker.steps_per_epoch, step=progress.first_step)
    batches = _recorded(pipeline.take_steps(loader.__iter__, steps) if steps > 0 else iter(()), progress, worker)

    def after_step(step: int) -> None:
        if step % cfg.preemption_poll_steps == 0:
            reason = checkpoint_due(worker)
            if reason:
                save_inside_epoch(worker, progress, progress.first_step + step, reason, scheduler)

    stats = train_one_epoch(
        worker.ddp_model,
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
        device_transform=worker.train_transform if on_device else None,
        loss_weight=worker.world * worker.rank_batch / worker.global_batch,
        after_step=after_step,
    )
    del loader  # its worker processes end here
    return progress.mine, stats


def _recorded(batches, progress: EpochProgress, worker: RankState):
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
                    # time: when the step's batch was read (bench/scale/preempt.py times a resume by it)
                    log.write(json.dumps({**entry, "time": time.time(), "keys": batch.key}) + "\n")
                    log.flush()
            yield batch
    finally:
        if log is not None:
            log.close()


def validate(worker: RankState, epoch: int, mine: list[Slice], stats: dict) -> tuple[dict, ranges.RangeCalibration]:
    """The epoch's metrics over every rank (each validates its share of the split with rank 0's
    BatchNorm statistics) and the range calibration measured on the whole validation split."""
    import ray

    share_rank0_buffers(worker.ddp_model)
    eval_tf, on_device = worker.eval_transform, worker.decode_on_device
    loader = pipeline.make_loader(
        worker.val_slices,
        None if on_device else eval_tf,
        worker.cfg.batch_size,
        loader_workers=worker.cfg.loader_workers,
        pin_memory=worker.device.type == "cuda",
    )
    museums: list[str] = []
    predictions, years, val_skipped = evaluate(
        worker.model, worker.spec, loader, worker.device, eval_tf if on_device else None, museums
    )
    everyone = gather(
        {
            "predictions": predictions,
            "years": years,
            "museums": museums,
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
        [museum for r in everyone for museum in r["museums"]],
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


def share_rank0_buffers(model) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics). DDP broadcasts them before each
    forward, but each rank then updates its own copy with its own batch, so after the last step
    they differ; rank 0's are the ones saved, and validation must evaluate the saved weights."""
    if distributed():
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
