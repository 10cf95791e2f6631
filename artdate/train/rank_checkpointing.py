"""A rank's checkpoints: where a run starts (a fresh run, or the checkpoint Ray Train hands a
restarted or resumed one), when a checkpoint is due inside an epoch (a preemption notice, or
--checkpoint-every), and writing one (rank 0) while every rank reports to Ray Train.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time

import torch

from artdate.data import partition
from artdate.data.partition import Slice
from artdate.model import ranges
from artdate.model.checkpoints import CHECKPOINT_FILE, TRAINING_FILE, load_tensors, save_checkpoint
from artdate.train import tracking
from artdate.train.rank_state import EpochProgress, Position, RankState


def distributed() -> bool:
    """Whether this process is a rank of a DDP process group (not the plain loop)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather(value):
    """Every rank's `value`, in rank order (just [value] outside DDP)."""
    if not distributed():
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def resume(worker: RankState) -> Position:
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
    worker.model.load_state_dict(state["model"])
    worker.optimizer.load_state_dict(training_state["optimizer"])
    worker.history = state["metrics"]["history"]
    worker.calibration = ranges.RangeCalibration.from_dict(state["calibration"])
    inside = training_state.get("inside_epoch")  # a mid-epoch checkpoint: {step, plan, global_batch}
    if inside is None:
        position = Position(state["epoch"] + 1)
    else:
        plan = [Slice(*piece) for piece in inside["plan"]]
        step = inside["step"]
        if inside["global_batch"] != worker.global_batch:  # resumed with another --batch-size: count anew
            step = max(0, worker.steps_per_epoch - sum(piece.samples for piece in plan) // worker.global_batch)
        position = Position(state["epoch"], step, plan)
    worker.tell("resume", epoch=position.epoch, step=position.step, steps=worker.steps_per_epoch, path=checkpoint.path)
    return position


# How long past a noticed preemption's deadline a rank that failed waits for Ray Train to restart
# the group (which kills the rank) before its error ends the run.
PREEMPTION_RESTART_WAIT_S = 60.0


def wait_for_preemption_restart(worker: RankState, problem: Exception) -> None:
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


def checkpoint_due(worker: RankState) -> str:
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


def save_inside_epoch(worker: RankState, progress: EpochProgress, step: int, reason: str, scheduler) -> None:
    """A checkpoint at `step` of the epoch: the weights, and what of the epoch's plan is left (every
    rank's unread slices), so a resume on any number of ranks trains each remaining sample once."""
    left = gather([[s.url, s.start, s.stop] for s in partition.unread(progress.mine, progress.read)])
    metrics = {
        "epoch": progress.epoch,
        "step": step,
        "val_mae": UNVALIDATED_MAE,  # never the run's best checkpoint
        "lr": scheduler.get_last_lr()[0],
    }
    plan = [piece for rank in left for piece in rank]
    checkpoint_and_report(
        worker, metrics, reason, inside_epoch={"step": step, "plan": plan, "global_batch": worker.global_batch}
    )


def checkpoint_and_report(worker: RankState, metrics: dict, reason: str, inside_epoch: dict | None = None) -> None:
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
            save_checkpoint(directory, worker.spec, worker.model, metrics, worker.calibration, training_state)
            saved = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=saved)
    worker.last_checkpoint = time.monotonic()
    if reason != "epoch":
        worker.tell(
            "checkpoint", epoch=metrics["epoch"], step=metrics["step"], steps=worker.steps_per_epoch, reason=reason
        )
        return
    if worker.rank == 0 and worker.cfg.mlflow:
        tracking.log_epoch(worker.cfg.mlflow, worker.mlflow_run, metrics)
    shown = ("epoch", "train_loss", "val_mae", "range_level", "val_range_width", "images_per_second")
    worker.tell("epoch", **{name: metrics[name] for name in shown})


# The val_mae of a checkpoint inside an epoch, which is not validated: worse than any real one, and
# finite (Ray's checkpoint snapshot writes inf as null, and then cannot rank the checkpoints).
UNVALIDATED_MAE = 1e12
