"""Ray Train on a real local Ray: two CPU workers (gloo DDP), shards and checkpoints in SeaweedFS."""

import dataclasses
import json
import os
import subprocess
import threading

import pytest
import torch

from artdate.core import store
from artdate.core.config import TrainConfig
from artdate.core.placement import ClusterTooSmall
from artdate.data import partition, pipeline, shards
from artdate.model import ranges
from artdate.model.checkpoints import (
    CHECKPOINT_FILE,
    RUN_FILE,
    TRAINING_FILE,
    load_checkpoint,
    registered_checkpoints,
    run_checkpoints,
    unregistered_checkpoints,
)
from artdate.model.network import load_tensors
from artdate.train.loop import CURVE, evaluate, make_scheduler
from artdate.train.rank_checkpointing import UNVALIDATED_MAE
from artdate.train.run import run_training
from tests.support.helpers import (
    LOADER_PROCESS,
    ROOT,
    alive_actors,
    artdate_command,
    flags,
    pack_sample,
    tiny_training,
    trained_in_epoch,
    wait_for_registered,
)
from tests.support.servers import kill_session

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def small(shards_url, storage, **overrides):
    settings = tiny_training(shards_url, storage, epochs=2, lr=2e-3, warmup_epochs=0.5, keep_checkpoints=10)
    return TrainConfig(**{**settings, **overrides})


def epoch_metrics(storage):
    """metrics.json of every checkpoint kept in `storage`, by epoch."""
    return {metrics["epoch"]: metrics for metrics in run_checkpoints(storage).values()}


def assert_resumed_after_epoch_0(storage, epochs=3):
    """Each epoch checkpointed exactly once (a restart from scratch would write epoch 0 twice),
    and every epoch after the fault began from epoch 0's checkpoint, not from scratch."""
    checkpoints = run_checkpoints(storage)
    assert sorted(m["epoch"] for m in checkpoints.values()) == list(range(epochs))
    assert [epoch_metrics(storage)[e]["start_epoch"] for e in range(epochs)] == [0] + [1] * (epochs - 1)
    # The learning curve went on from the checkpoint: epoch 0 as the first attempt measured it.
    last = epoch_metrics(storage)[epochs - 1]["history"]
    assert [h["epoch"] for h in last] == list(range(epochs))
    assert last[0] == {name: epoch_metrics(storage)[0][name] for name in CURVE}


def test_two_workers_from_s3_to_s3(s3_url):
    shards_url = s3_url
    manifest = pack_sample(shards_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/first"
    best = run_training(small(shards_url, storage, epochs=3, flip_averaging=True, **LOADER_PROCESS))

    assert best.startswith(storage + "/checkpoint_") and store.exists(store.join(best, CHECKPOINT_FILE))
    metrics = epoch_metrics(storage)
    assert sorted(metrics) == [0, 1, 2]
    assert metrics[2]["train_loss"] < metrics[0]["train_loss"]
    # Every checkpoint carries the learning curve up to its epoch.
    assert metrics[2]["history"] == [{name: metrics[e][name] for name in CURVE} for e in range(3)]
    train_samples = sorted(
        (s.url, i) for s in partition.manifest_shards(shards_url, manifest, "train") for i in range(s.samples)
    )
    for epoch in metrics.values():
        ranks = [
            [(url, i) for url, start, stop in rank for i in range(start, stop)] for rank in epoch["slices_per_rank"]
        ]
        assert len(ranks) == 2 and abs(len(ranks[0]) - len(ranks[1])) <= 1  # balanced by sample
        assert sorted(ranks[0] + ranks[1]) == train_samples  # every training sample once per epoch
        assert epoch["val_n"] == manifest["splits"]["val"]["samples"]  # the whole val split, across ranks
    assert metrics[0]["slices_per_rank"] != metrics[1]["slices_per_rank"]  # dealt anew each epoch

    # score/predict need nothing but the URL: the storage URL resolves to the best checkpoint.
    model, spec, state = load_checkpoint(storage)
    assert state["url"] == best and spec.flip_averaging  # score and predict read the model as validation did
    assert state["metrics"]["val_mae"] == min(m["val_mae"] for m in metrics.values())
    # Validation across both ranks evaluated exactly the weights that were saved (both ranks use
    # rank 0's BatchNorm statistics), so one process evaluating the checkpoint finds the same MAE.
    loader = pipeline.make_loader(
        partition.store_slices(shards_url, manifest, "val"),
        pipeline.eval_transform(spec.image_size),
        8,
        loader_workers=0,
    )
    predictions, years, _ = evaluate(model, spec, loader, torch.device("cpu"))
    assert (predictions.year - years).abs().mean().item() == pytest.approx(state["metrics"]["val_mae"], abs=1e-2)
    plain, _, _ = evaluate(model, dataclasses.replace(spec, flip_averaging=False), loader, torch.device("cpu"))
    assert (plain.year - years).abs().mean().item() != pytest.approx(state["metrics"]["val_mae"], abs=1e-2)
    # The checkpoint's year ranges were calibrated on those same validation works, read mirrored
    # too, by the rule.
    calibration = state["calibration"]
    assert (calibration.level, calibration.n) == (0.8, len(years))
    assert calibration.margin == pytest.approx(
        ranges.conformal_margin(years, predictions.low, predictions.high, 0.8), abs=1e-2
    )
    # Inference reads the weights alone; the optimizer state is in a file of its own.
    assert "optimizer" not in load_tensors(store.join(best, CHECKPOINT_FILE))
    assert "optimizer" in load_tensors(store.join(best, TRAINING_FILE))


def assert_one_mlflow_run(uri, storage, metrics, best):
    """One MLflow run for the artdate run: its settings, every epoch's metrics at its step, the best checkpoint."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("artdate").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["artdate.storage"] == storage
    assert run.data.tags["artdate.best_checkpoint"] == best
    assert run.data.params["backbone"] == "efficientnet_lite0" and run.data.params["epochs"] == "1"  # as first run
    for name in ("train_loss", "val_mae", "val_range_width"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(logged) == [(epoch, pytest.approx(metrics[epoch][name])) for epoch in sorted(metrics)]


def test_resume_continues_the_optimizer_and_schedule_and_refuses_other_settings(tmp_path, sample_store):
    storage = str(tmp_path / "run")
    tracked = f"sqlite:///{tmp_path}/mlflow.db"  # a real MLflow store; the run is tracked across the resume
    run_training(small(sample_store, storage, epochs=1, mlflow=tracked))
    with pytest.raises(ValueError, match="already holds a run .* pass --resume"):
        run_training(small(sample_store, storage, epochs=2))
    # What would make the checkpoint mean something else is refused, naming what differs.
    with pytest.raises(ValueError, match="image_size 64 then, 96 now"):
        run_training(small(sample_store, storage, epochs=2, resume=True, image_size=96))
    with pytest.raises(ValueError, match="loss mse then, l1 now"):
        run_training(small(sample_store, storage, epochs=2, resume=True, loss="l1"))
    other_pack = str(tmp_path / "other")
    pack_sample(other_pack, samples_per_shard=40)
    with pytest.raises(ValueError, match="shards_fingerprint"):
        run_training(small(other_pack, storage, epochs=2, resume=True))

    # Another worker count is fine: the schedule continues from the epoch, not a saved step count.
    best = run_training(small(sample_store, storage, epochs=2, resume=True, workers=1, mlflow=tracked))
    assert sorted(epoch_metrics(storage)) == [0, 1] and best.startswith(storage + "/checkpoint_")
    assert_one_mlflow_run(tracked, storage, epoch_metrics(storage), best)

    manifest = shards.read_manifest(sample_store)
    train_shards = partition.manifest_shards(sample_store, manifest, "train")
    # --batch-size is per worker: a global batch of 32 on 2 workers, of 16 on 1.
    steps_2, steps_1 = partition.steps_per_epoch(train_shards, 32), partition.steps_per_epoch(train_shards, 16)
    latest = next(name for name, metrics in run_checkpoints(storage).items() if metrics["epoch"] == 1)
    state = torch.load(os.path.join(storage, latest, TRAINING_FILE), weights_only=True)
    assert state["epoch"] == 1
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {steps_2 + steps_1}  # epoch 1 continued epoch 0's optimizer, not a fresh one
    cfg = small(sample_store, storage, epochs=2)
    reference = make_scheduler(torch.optim.SGD([torch.zeros(1)], lr=cfg.lr), cfg, steps_1, start_epoch=1)
    for _ in range(steps_1):
        reference.optimizer.step()
        reference.step()
    assert epoch_metrics(storage)[1]["lr"] == pytest.approx(reference.get_last_lr()[0])  # where a 2-epoch run ends


def test_a_killed_worker_is_replaced_and_the_run_finishes(tmp_path, sample_store):
    storage = str(tmp_path / "run")
    outcome = {}

    def train():
        try:
            outcome["best"] = run_training(small(sample_store, storage, epochs=3, max_failures=2))
        except Exception as problem:  # reported by the assertion below
            outcome["error"] = problem

    thread = threading.Thread(target=train)
    thread.start()
    wait_for_registered(storage, '"epoch":0', thread.is_alive)  # then kill a worker mid-epoch 1
    workers = alive_actors("RayTrainWorker")
    assert len(workers) == 2
    os.kill(workers[-1], 9)
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert_resumed_after_epoch_0(storage)


def test_key_log_reading_counts_a_restart_from_the_epoch_start_as_lost(tmp_path):
    """Two attempts of epoch 1 on 2 ranks both start from step 0 (a loss without a checkpoint in
    the epoch); a third resumes from the second's step 3: what the first trained is lost, what the
    second trained after step 3 too, and each kept step is the last attempt's."""

    def attempt(started, first, last, pid):
        for rank in (0, 1):
            with open(tmp_path / f"epoch1-from{first}-rank{rank}-{pid + rank}.jsonl", "w") as log:
                for step in range(first + 1, last + 1):
                    entry = {"epoch": 1, "step": step, "rank": rank, "world": 2, "time": started + step}
                    log.write(json.dumps({**entry, "keys": [f"{pid}-{rank}-{step}"]}) + "\n")

    attempt(1000.0, 0, 5, pid=10)
    attempt(2000.0, 0, 4, pid=20)
    attempt(3000.0, 3, 6, pid=30)
    kept, lost = trained_in_epoch(str(tmp_path), 1)
    assert lost == 5 + 1  # the first attempt's five steps, the second's step 4
    assert sorted(kept) == sorted(
        [f"20-{r}-{s}" for r in (0, 1) for s in (1, 2, 3)] + [f"30-{r}-{s}" for r in (0, 1) for s in (4, 5, 6)]
    )


def test_a_run_killed_inside_an_epoch_resumes_there_on_another_number_of_workers(tmp_path, sample_store):
    """--checkpoint-every: a whole run SIGKILLed mid-epoch (no notice) continues from its last
    checkpoint inside the epoch, on 1 worker instead of 2, and every sample of that epoch trains
    once: none twice, none left out but the last < a global batch, as in an epoch run whole."""
    storage, keys = str(tmp_path / "run"), str(tmp_path / "keys")
    settings = tiny_training(
        sample_store,
        storage,
        epochs=2,
        batch_size=8,
        keep_checkpoints=10,
        checkpoint_every=0.01,
        preemption_poll_steps=2,
        key_log=keys,
        **LOADER_PROCESS,
    )
    command = artdate_command("train", *flags(settings))
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    wait_for_registered(storage, '"reason":"interval"', lambda: process.poll() is None)
    kill_session(process)
    inside = [m for m in run_checkpoints(storage).values() if m["reason"] == "interval"]
    assert inside and all(m["epoch"] == 0 and m["world_size"] == 2 and m["step"] > 0 for m in inside)
    assert all(m["val_mae"] == UNVALIDATED_MAE for m in inside)  # never taken for the run's best

    run_training(
        small(sample_store, storage, epochs=2, batch_size=16, workers=1, resume=True, key_log=keys, **LOADER_PROCESS)
    )
    ends = {m["epoch"]: m for m in run_checkpoints(storage).values() if m["reason"] == "epoch"}
    assert sorted(ends) == [0, 1] and [ends[e]["world_size"] for e in (0, 1)] == [1, 1]
    resumed_at = ends[0]["start_step"]
    assert resumed_at in {m["step"] for m in inside}  # from a checkpoint inside epoch 0, not its start
    steps = partition.steps_per_epoch(
        partition.manifest_shards(sample_store, shards.read_manifest(sample_store), "train"), 16
    )
    for epoch in (0, 1):
        kept, lost = trained_in_epoch(keys, epoch)
        assert len(kept) == len(set(kept)) == steps * 16, epoch
    assert trained_in_epoch(keys, 0)[1] < steps - resumed_at  # the kill lost steps, not the epoch


def test_more_ranks_than_shards_train_and_validate_everything(tmp_path):
    one_shard = str(tmp_path / "one")
    manifest = pack_sample(one_shard, samples_per_shard=1000)  # one train and one validation shard
    run_training(small(one_shard, str(tmp_path / "r1"), epochs=1))  # 2 ranks share each shard
    (metrics,) = epoch_metrics(str(tmp_path / "r1")).values()
    assert metrics["val_n"] == manifest["splits"]["val"]["samples"]
    assert [len(rank) for rank in metrics["slices_per_rank"]] == [1, 1]


def test_no_val_split_is_a_clear_error(tmp_path):
    from artdate.core.config import PackConfig
    from artdate.pack.run import run_pack
    from tests.support.helpers import SAMPLE_CSV, SHARED_SAMPLE

    no_val = str(tmp_path / "noval")
    run_pack(
        PackConfig(
            metadata=(SAMPLE_CSV,),
            images=SHARED_SAMPLE,
            out=no_val,
            size=64,
            val_fraction=0.0,
            samples_per_shard=50,
            year_min=-1000,
            year_max=2100,
            jobs=1,
        ),
        progress=False,
    )
    with pytest.raises(ValueError, match="has no validation shards"):
        run_training(small(no_val, str(tmp_path / "r2")))


def test_a_rank_that_fails_after_a_preemption_notice_waits_for_the_restart(monkeypatch, capsys):
    """Ray Train counts an error as the preemption only if it sees the preempted worker's death in
    the same poll; a rank failing after a notice holds its error for the restart (which kills it)."""
    import time
    from types import SimpleNamespace

    from artdate.train import rank_checkpointing

    monkeypatch.setattr(rank_checkpointing, "PREEMPTION_RESTART_WAIT_S", 1.0)
    problem = RuntimeError("Connection closed by peer")
    started = time.monotonic()
    rank_checkpointing.wait_for_preemption_restart(SimpleNamespace(rank=1, preemption_deadline=None), problem)
    assert time.monotonic() - started < 0.5  # no notice: the error is a failure at once
    assert capsys.readouterr().err == ""

    started = time.monotonic()
    rank_checkpointing.wait_for_preemption_restart(
        SimpleNamespace(rank=1, preemption_deadline=time.time() + 1.0), problem
    )
    assert time.monotonic() - started >= 1.9  # the deadline, then the wait past it
    assert "rank 1: RuntimeError after a preemption notice" in capsys.readouterr().err


def test_what_the_local_ray_can_never_give_is_refused_at_once_naming_both(tmp_path, sample_store, local_ray):
    """The embedded Ray cannot grow: more workers than its CPUs, a GPU share on a machine without
    one, used to wait forever in silence (Ray Train retries the worker group every minute)."""
    import time

    cpus = int(local_ray.cluster_resources()["CPU"])
    storage = str(tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(
        ClusterTooSmall,
        match=rf"asked for {cpus + 1} training worker\(s\) x 1 CPU, but the local Ray "
        rf"that artdate started .* has {cpus} CPU and no GPU on 1 node\(s\): {cpus} fit; lower --workers",
    ) as never:
        run_training(small(sample_store, storage, workers=cpus + 1))
    assert never.value.exit_code == 2
    with pytest.raises(
        ClusterTooSmall, match=r"x 1 CPU \+ 0.5 GPU, but .* no GPU on 1 node\(s\): 0 fit.* --gpus-per-worker 0 for CPU"
    ):
        run_training(small(sample_store, storage, gpus_per_worker=0.5))
    with pytest.raises(ValueError, match="--cpus-per-worker 0 with no GPU per worker reserves nothing"):
        run_training(small(sample_store, storage, cpus_per_worker=0, gpus_per_worker=0))
    assert time.monotonic() - started < 60  # no waiting for what never comes

    # A setting that fails leaves nothing behind: before, run.json claimed the storage for
    # backbone nosuchnet and refused every later run, --resume included.
    with pytest.raises(ValueError, match="unknown backbone 'nosuchnet'"):
        run_training(small(sample_store, str(tmp_path / "other"), backbone="nosuchnet"))
    assert not os.path.exists(tmp_path / "other")


def test_a_run_stopped_by_ctrl_c_sigterm_or_a_kill_resumes_where_it_stopped(tmp_path, sample_store, capfd):
    """Ctrl-C exits 130, SIGTERM 143, each with the line that says to resume; each resume says
    what it continues from. Then the whole run SIGKILLed after a checkpoint (its own session: the
    driver, its Ray and the workers, as a lost machine would) goes on with --resume too; a
    checkpoint folder Ray never registered is removed, not left behind. Each epoch trains once."""
    import shutil
    import signal

    storage = str(tmp_path / "run")
    settings = tiny_training(sample_store, storage, epochs=4, lr=2e-3, warmup_epochs=0.5, keep_checkpoints=10)

    def stop_after(epoch, how, *extra):
        errors = tmp_path / f"stderr-{how}"
        with open(errors, "w") as stderr:
            process = subprocess.Popen(artdate_command("train", *flags(settings), *extra), cwd=ROOT, stderr=stderr)
            wait_for_registered(storage, f'"epoch":{epoch}', lambda: process.poll() is None)
            process.send_signal(how)
            code = process.wait(60)
        return code, errors.read_text().strip().splitlines()

    code, lines = stop_after(0, signal.SIGINT)
    assert code == 130 and lines[-1] == (
        "artdate train: interrupted; rerun the same command with --resume to continue from the last checkpoint"
    )
    code, lines = stop_after(1, signal.SIGTERM, "--resume")
    assert code == 143 and lines[-1].startswith("artdate train: terminated; rerun the same command with --resume")
    assert any(line.startswith(f"resuming after epoch 1 from {storage}/checkpoint_") for line in lines)
    registered, latest = registered_checkpoints(storage)
    assert latest in registered and unregistered_checkpoints(storage, registered) == []  # a stop cleans up

    killed = subprocess.Popen(
        artdate_command("train", *flags(settings), "--resume"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_registered(storage, '"epoch":2', lambda: killed.poll() is None)
    kill_session(killed)
    before_the_kill = dict(run_checkpoints(storage))
    assert sorted(m["epoch"] for m in before_the_kill.values()) == [0, 1, 2]

    # A folder as a run stopped while uploading a checkpoint leaves it: never registered.
    registered, latest = registered_checkpoints(storage)
    shutil.copytree(os.path.join(storage, latest), os.path.join(storage, "checkpoint_2099-01-01_00-00-00.000000"))
    capfd.readouterr()
    run_training(small(sample_store, storage, epochs=4, resume=True))
    err = capfd.readouterr().err
    assert "removed checkpoint_2099-01-01_00-00-00.000000: a checkpoint the stopped run was still writing" in err
    assert f"resuming after epoch 3 from {storage}/{latest}" in err
    assert unregistered_checkpoints(storage, registered_checkpoints(storage)[0]) == []
    assert sorted(m["epoch"] for m in run_checkpoints(storage).values()) == [0, 1, 2, 3]  # each epoch once
    assert [epoch_metrics(storage)[e]["start_epoch"] for e in range(4)] == [0, 1, 2, 3]
    assert set(before_the_kill) <= set(run_checkpoints(storage))  # the checkpoints the killed run wrote are kept
    # The learning curve went on from the checkpoint: epoch 0 as the first run measured it.
    history = epoch_metrics(storage)[3]["history"]
    assert [h["epoch"] for h in history] == list(range(4))
    assert history[0] == {name: epoch_metrics(storage)[0][name] for name in CURVE}


def test_a_resume_with_no_registered_checkpoint_says_so(tmp_path, capfd):
    """Stopped before its first checkpoint was registered: --resume says it starts from the
    beginning, and removes the folder that checkpoint was being written to."""
    from artdate.train.run import announce_resume

    storage = tmp_path / "run"
    (storage / "checkpoint_2026-12-07_10-00-00.000000").mkdir(parents=True)
    (storage / "checkpoint_2026-12-07_10-00-00.000000" / "metrics.json").write_text("{}")
    (storage / RUN_FILE).write_text("{}")
    announce_resume(str(storage))
    assert os.listdir(storage) == [RUN_FILE]
    err = capfd.readouterr().err
    assert "removed checkpoint_2026-12-07_10-00-00.000000" in err
    assert f"--resume: {storage} holds no finished checkpoint (the run stopped before its first one" in err
