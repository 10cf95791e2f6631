"""Checkpoints on disk and in a store: writing, finding and reading them, and what makes a run the same run.

A training run's --storage holds `run.json` (the run's identity, claimed when it starts: a
--resume must match it) and one `checkpoint_*/` directory per kept epoch with `checkpoint.pt`
(weights, spec, metrics, range calibration: all inference reads), `training_state.pt` (the
optimizer, for a resume) and `metrics.json`.
"""

from __future__ import annotations

import json
import math
import os

import torch
from torch import nn

from artdate.core import store
from artdate.model import ranges
from artdate.model.network import ModelSpec, build_model, load_tensors, state_mismatch

CHECKPOINT_FILE = "checkpoint.pt"  # what inference needs: weights, spec, metrics
TRAINING_FILE = "training_state.pt"  # what only a resumed run needs: optimizer state (2x the weights with AdamW)
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"  # in the run's storage: what a resumed run must share with it (run_identity)
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered
CHECKPOINT_FORMAT = "artdate-checkpoint/2"  # 2: a range calibration and the learning curve in every checkpoint


def save_checkpoint(
    directory: str,
    spec: ModelSpec,
    model: nn.Module,
    metrics: dict,
    calibration: ranges.RangeCalibration,
    training_state: dict | None = None,
) -> None:
    """Write checkpoint.pt, metrics.json and, for training runs, training_state.pt into a local
    `directory`. Scoring reads checkpoint.pt alone: the weights, not the optimizer, and the
    calibration of the year ranges measured on the validation split."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "model": model.state_dict(),
        "metrics": metrics,
        "epoch": metrics.get("epoch"),
        "calibration": calibration.to_dict(),
    }
    torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
    if training_state is not None:
        torch.save(training_state, os.path.join(directory, TRAINING_FILE))
    with open(os.path.join(directory, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=1)


def run_checkpoints(run_url: str) -> dict[str, dict]:
    """The checkpoints of a training run: directory name -> its metrics."""
    found = {}
    for name in store.list_names(run_url):
        metrics_url = store.join(run_url, name, METRICS_FILE)
        # Both files: a run killed while Ray copied a checkpoint leaves a directory holding some of them.
        if (
            name.startswith("checkpoint_")
            and not name.endswith(".json")
            and store.exists(metrics_url)
            and store.exists(store.join(run_url, name, CHECKPOINT_FILE))
        ):
            found[name] = json.loads(store.read_bytes(metrics_url))
    return found


def resolve_checkpoint(url: str) -> str:
    """The checkpoint a URL names: a checkpoint directory, a checkpoint file under any name (a copy
    saved as model.pt, say), or a run's storage URL (then its best checkpoint by val_mae)."""
    if url.endswith(CHECKPOINT_FILE):
        url = url[: -len(CHECKPOINT_FILE)].rstrip("/")
    if store.exists(store.join(url, CHECKPOINT_FILE)) or _is_file(url):
        return url
    candidates = run_checkpoints(url)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {url}: give a checkpoint URL or a training run's --storage URL")
    return store.join(url, min(candidates, key=lambda name: candidates[name].get("val_mae", math.inf)))


def load_checkpoint(url: str) -> tuple[nn.Module, ModelSpec, dict]:
    """(model in eval mode on CPU, spec, {metrics, epoch, url, calibration}) from a checkpoint or
    run URL."""
    directory = resolve_checkpoint(url)
    path = directory if _is_file(directory) else store.join(directory, CHECKPOINT_FILE)
    state = load_tensors(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an artdate checkpoint (format {CHECKPOINT_FORMAT})")
    try:
        spec = ModelSpec.from_dict(state["spec"])
    except (KeyError, TypeError, ValueError) as problem:
        raise ValueError(f"{path} has no usable model spec: {type(problem).__name__} {problem}") from None
    model = build_model(spec.backbone, spec.encoding.num_outputs, weights="none")
    mismatch = state_mismatch(model.state_dict(), state.get("model"))
    if mismatch:
        raise ValueError(f"{path} does not fit backbone {spec.backbone}: {mismatch}")
    model.load_state_dict(state["model"])
    try:
        calibration = ranges.RangeCalibration.from_dict(state["calibration"])
    except (KeyError, TypeError) as problem:
        raise ValueError(f"{path} has an unusable range calibration: {problem}") from None
    return (
        model.eval(),
        spec,
        {
            "metrics": state.get("metrics", {}),
            "epoch": state.get("epoch"),
            "url": directory,
            "calibration": calibration,
        },
    )


def _is_file(url: str) -> bool:
    """An object or a file, not a folder (an S3 prefix is no object)."""
    return store.exists(url) and (store.is_s3(url) or os.path.isfile(url))


def run_identity(spec: ModelSpec, manifest: dict, seed: int) -> dict:
    """What a resumed run must share with the run it continues."""
    encoding = spec.encoding
    return {
        "backbone": spec.backbone,
        "image_size": spec.image_size,
        "loss": encoding.loss,
        "bin_width": encoding.bin_width,
        "label_sigma": encoding.label_sigma,
        "year_window": [encoding.year_min, encoding.year_max],
        "label_mean": encoding.mean,
        "label_std": encoding.std,
        "normalisation": [list(spec.mean), list(spec.std)],
        "shards_fingerprint": manifest["fingerprint"],
        "seed": seed,
    }


def claim_run(storage: str, identity: dict) -> None:
    """Claim `storage` for this run, or refuse when it belongs to a run whose model, label encoding,
    data or seed differ: a resumed checkpoint's weights would silently mean something else."""
    differences = store.claim(store.join(storage, RUN_FILE), identity)
    if differences:
        raise ValueError(
            f"the run in {storage} differs from this command: "
            + "; ".join(f"{name} {then} then, {now} now" for name, (then, now) in differences.items())
            + ". Repeat the run's settings, or train into another --storage"
        )


def checkpoint_url(storage: str, checkpoint_path: str) -> str:
    """The store URL of a checkpoint Ray wrote (Ray's path has no scheme on S3)."""
    return f"s3://{checkpoint_path}" if store.is_s3(storage) else checkpoint_path


def registered_checkpoints(storage: str) -> tuple[set[str], str | None]:
    """(names of the checkpoint folders Ray Train registered in a run's storage, the latest of them:
    what a --resume continues from, None when there is none)."""
    url = store.join(storage, RAY_SNAPSHOT_FILE)
    if not store.exists(url):
        return set(), None
    snapshot = json.loads(store.read_bytes(url))
    results = snapshot.get("checkpoint_results", []) + snapshot.get("pending_training_results", [])
    latest = (snapshot.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    return {r["checkpoint_dir_name"] for r in results} | ({latest} if latest else set()), latest


def unregistered_checkpoints(storage: str, registered: set[str]) -> list[str]:
    """Checkpoint folders in `storage` that Ray Train never registered: written by a run that
    stopped before registering them, or registered out and not yet deleted."""
    return [
        name
        for name in store.list_names(storage)
        if name.startswith("checkpoint_") and not name.endswith(".json") and name not in registered
    ]


def delete_folder(url: str) -> None:
    filesystem, path = store.pyarrow_filesystem(url)
    if filesystem is None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        filesystem.delete_dir(path)
