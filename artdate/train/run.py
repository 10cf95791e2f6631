"""`artdate train`: fine-tune a backbone on the shards with DistributedDataParallel on Ray Train.

This is the driver: it checks the settings against the store, claims the run's storage, and starts
a TorchTrainer whose workers each run worker.train_func (the plain loop of loop.py on one rank).
Its last word is the URL of the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

from artdate.core import placement, store
from artdate.core.config import TrainConfig
from artdate.core.console import TrainingConsole
from artdate.core.options import with_absolute_storage
from artdate.core.raycluster import connect, resolve_gpus
from artdate.data import partition, shards
from artdate.model.checkpoints import (
    checkpoint_url,
    claim_run,
    delete_folder,
    registered_checkpoints,
    run_checkpoints,
    run_identity,
    unregistered_checkpoints,
)
from artdate.model.network import ModelSpec, build_model
from artdate.train import gpu_memory, tracking
from artdate.train.loop import for_device, gpu_batch, label_encoding
from artdate.train.worker import train_func


def run_training(cfg: TrainConfig, progress: bool = True, verbose: bool = False) -> str:
    """Train; return the URL of the best checkpoint (by validation MAE). The console shows a bar
    per epoch (unless not `progress`) and a line per epoch; `verbose` adds Ray's own output."""
    cfg = with_absolute_urls(cfg)
    storage = cfg.storage.rstrip("/")
    manifest = shards.read_manifest(cfg.shards)
    check_settings(cfg, manifest, storage)
    spec = model_spec(cfg, manifest)
    # A wrong backbone name or weights file fails here, before run.json claims the storage for it,
    # not in every worker. ImageNet weights are fetched by the workers only: the driver (often a CPU
    # head node) has no use for them.
    build_model(cfg.backbone, spec.encoding.num_outputs, "none" if cfg.weights == "imagenet" else cfg.weights)
    claim_run(storage, run_identity(spec, manifest, cfg.seed))

    connect(verbose=verbose)  # before importing ray.train: ray reads its network settings on import
    import ray
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    gpus = resolve_gpus(cfg.gpus_per_worker, worker_range(cfg.workers)[1], "worker", cfg.backbone)
    wait_for_workers(cfg, gpus)
    cfg = resolve_batch(cfg, spec, gpus)
    steps, global_batch = batch_plan(cfg, manifest)
    if cfg.resume:
        announce_resume(storage)
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
        scaling_config=scaling_config(cfg, gpus),
        run_config=ray_run_config(cfg, storage, verbose),
    )
    print(
        f"training {cfg.backbone} on {manifest['splits']['train']['samples']} works with {cfg.workers} worker(s), "
        f"{cfg.epochs} epochs of {steps} steps of {global_batch} images (lr {cfg.lr:.3g}) -> {storage}",
        file=sys.stderr,
        flush=True,
    )
    best_url = None
    try:
        with TrainingConsole(events, cfg.epochs, progress):
            result = fit_in_a_thread(trainer)
        best = result.get_best_checkpoint(metric="val_mae", mode="min") if result.best_checkpoints else None
        if best is None:
            raise RuntimeError(f"training ended without a checkpoint in {storage}")
        best_url = checkpoint_url(storage, best.path)
    finally:
        if mlflow_run:
            tracking.finish_run(cfg.mlflow, mlflow_run, best_url)
    return best_url


def resolve_batch(cfg: TrainConfig, spec: ModelSpec, gpus: float) -> TrainConfig:
    """cfg with --batch-size 0 resolved for the workers' device: on GPUs from the memory of the card
    they will get, measured there for this backbone and image size (gpu_memory.py), and said."""
    if cfg.batch_size or gpus <= 0:
        return for_device(cfg, gpus > 0)
    print(
        f"sizing the batch: measuring {cfg.backbone} at {cfg.image_size} px on a GPU the workers will get",
        file=sys.stderr,
        flush=True,
    )
    card = gpu_memory.card_for_workers(
        cfg.backbone, spec.encoding.num_outputs, cfg.image_size, gpus, timeout=cfg.start_timeout
    )
    share = min(1.0, gpus)
    resolved = for_device(cfg, True, card, share)
    most = gpu_batch(cfg.image_size)
    print(gpu_memory.describe(card, resolved.batch_size, cfg.image_size, share, most), file=sys.stderr, flush=True)
    return resolved


def fit_in_a_thread(trainer):
    """trainer.fit() in a thread of its own. In the main thread Ray Train installs a SIGINT handler
    that aborts the run and ends the process with exit 1 and no word; this way Ctrl-C reaches the
    main thread as KeyboardInterrupt (the CLI: exit 130 and how to resume), and leaving the process
    ends the run's controller and workers with it."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as problem:  # noqa: BLE001 -- handed to the main thread as it is
            outcome["error"] = problem

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)  # a short wait, so a signal is handled at once
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def wait_for_workers(cfg: TrainConfig, gpus: float) -> None:
    """Fail now, naming what the run asks for and what the cluster has, when the cluster can never
    place --workers (the fewest of MIN-MAX); else wait for room up to --start-timeout, saying so:
    Ray Train itself would wait without end and without a word."""
    if cfg.cpus_per_worker == 0 and gpus == 0:
        raise ValueError(
            "--cpus-per-worker 0 with no GPU per worker reserves nothing for a worker, and Ray Train "
            "places each worker on what it reserves: give a share of a CPU, such as --cpus-per-worker 0.1"
        )
    fewest = worker_range(cfg.workers)[0]
    options = "--workers, --cpus-per-worker" + (", --gpus-per-worker" if gpus else "")
    if gpus and cfg.gpus_per_worker > 0:
        options += " (or --gpus-per-worker 0 for CPU training)"
    placement.wait_for_room(
        placement.Ask(fewest, cfg.cpus_per_worker, gpus, "training worker", options), cfg.start_timeout
    )


def announce_resume(storage: str) -> None:
    """--resume: remove the checkpoint folders Ray Train never registered (written as an interrupted
    run stopped: a resume would not use them, and they would be taken for the run's), and say when
    there is no checkpoint to continue from. Which checkpoint it continues from, rank 0 says."""
    registered, latest = registered_checkpoints(storage)
    for name in unregistered_checkpoints(storage, registered):
        delete_folder(store.join(storage, name))
        print(f"removed {name}: a checkpoint the stopped run was still writing (never registered)", file=sys.stderr)
    if latest is None:
        print(
            f"--resume: {storage} holds no finished checkpoint (the run stopped before its first one was "
            "registered): training from the start",
            file=sys.stderr,
            flush=True,
        )


def with_absolute_urls(cfg: TrainConfig) -> TrainConfig:
    """Paths as the workers must read them: they run in other folders."""
    cfg = with_absolute_storage(cfg, words=("imagenet", "none"))
    return dataclasses.replace(cfg, mlflow=tracking.absolute_uri(cfg.mlflow) if cfg.mlflow else "")


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


def check_settings(cfg: TrainConfig, manifest: dict, storage: str) -> None:
    """Refuse, before anything starts, what could not train (the batch as on CPU when --batch-size
    is left to the device: batch_plan checks it again once the device is known)."""
    if not partition.manifest_shards(cfg.shards, manifest, "val"):
        raise ValueError(f"{cfg.shards} has no validation shards: pack with --val-fraction above 0")
    batch_plan(for_device(cfg, on_gpu=False), manifest)
    existing = run_checkpoints(storage)
    if existing and not cfg.resume:
        raise ValueError(
            f"{storage} already holds a run ({len(existing)} checkpoints): pass --resume to continue it, "
            "or use another --storage"
        )


def batch_plan(cfg: TrainConfig, manifest: dict) -> tuple[int, int]:
    """(steps per epoch, global batch). The global batch is --batch-size x the fewest workers, and
    stays so whatever number of workers the run has at a time: each worker trains its share of it."""
    fewest, most = worker_range(cfg.workers)
    global_batch = cfg.batch_size * fewest
    partition.rank_batches(global_batch, most)  # every worker gets at least one image a step
    steps = partition.steps_per_epoch(partition.manifest_shards(cfg.shards, manifest, "train"), global_batch)
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


def scaling_config(cfg: TrainConfig, gpus: float):
    """The workers: --workers N, or MIN-MAX (elastic), each with its CPUs and `gpus` GPUs."""
    import ray.train

    fewest, most = worker_range(cfg.workers)
    workers: Any = fewest if fewest == most else (fewest, most)  # a range: elastic (Ray Train v2; the stubs: v1)
    return ray.train.ScalingConfig(  # type: ignore[call-arg]
        num_workers=workers,
        use_gpu=gpus > 0,
        resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})},
        elastic_resize_monitor_interval_s=cfg.resize_check,
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
