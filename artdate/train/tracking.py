"""Opt-in experiment tracking in MLflow (`artdate train --mlflow URI`): one MLflow run per artdate run.

The driver finds or creates the MLflow run, tagged with the run's --storage URL so that a restart
or a --resume continues the same MLflow run, and logs the settings once. Rank 0 logs each epoch's
metrics under the names metrics.json uses, the epoch as MLflow's step (Ray Train V2's advice:
log from rank 0 into a run whose id outlives worker restarts). The driver records the best
checkpoint's URL at the end.
"""

from __future__ import annotations

import logging
import os
import time

EXPERIMENT = "artdate"
STORAGE_TAG = "artdate.storage"
BEST_TAG = "artdate.best_checkpoint"
LOGGED = ("train_loss", "val_mae", "val_median_ae", "val_within_50", "val_range_width", "images_per_second", "lr")


def absolute_uri(uri: str) -> str:
    """The workers run in other folders: a relative sqlite:///mlflow.db or ./mlruns must mean this one."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///") :])
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_run(uri: str, storage: str, params: dict, verbose: bool = False) -> str:
    """The id of the MLflow run of the artdate run in `storage`, created (with `params`) if new."""
    if "'" in storage:
        raise ValueError(f"--mlflow: the --storage URL {storage} has a quote, which MLflow's run search cannot match")
    if not verbose:  # MLflow's notes on creating its tables and the like
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = _client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{STORAGE_TAG}` = '{storage}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=storage.rstrip("/").rsplit("/", 1)[-1], tags={STORAGE_TAG: storage})
    client.log_batch(run.info.run_id, params=[Param(name, str(value)) for name, value in params.items()])
    return run.info.run_id


def log_epoch(uri: str, run_id: str, metrics: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    logged = [Metric(name, float(metrics[name]), now, metrics["epoch"]) for name in LOGGED if name in metrics]
    _client(uri).log_batch(run_id, metrics=logged)


def finish_run(uri: str, run_id: str, best_checkpoint: str | None) -> None:
    """FINISHED with the best checkpoint's URL, or FAILED without one."""
    client = _client(uri)
    if best_checkpoint:
        client.set_tag(run_id, BEST_TAG, best_checkpoint)
    client.set_terminated(run_id, status="FINISHED" if best_checkpoint else "FAILED")
