"""Train, then score, across two Ray nodes on 127.0.0.2 and 127.0.0.3, data in SeaweedFS."""

import csv
import io
import json
import subprocess
import sys
import time

import pytest

from artdate.core import store
from artdate.model.checkpoints import run_checkpoints
from bench.scale import preempt
from tests.support.cluster_runs import DRIVER, drive, start_training, two_node_training
from tests.support.helpers import LOADER_PROCESS, ROOT, pack_sample, trained_in_epoch, wait_for_registered

pytestmark = pytest.mark.slow


def test_train_then_score_across_two_nodes(ray_nodes, s3_url):
    manifest = pack_sample(s3_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/two-nodes"
    # More ranks than the nodes hold: nodes may join this cluster, so the run waits, saying what
    # for, then gives up at --start-timeout (3 s here: its reports at the shipped 1/30 of it).
    waited = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            ray_nodes.address,
            ray_nodes.head_ip,
            "train",
            json.dumps(two_node_training(s3_url, storage + "-never", workers=3, start_timeout=3)),
        ],
        env=ray_nodes.environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert waited.returncode != 0
    assert "waiting for the cluster to place 3 training worker(s) x 2 CPU (it has 4 CPU and no GPU on 2 node(s)" in (
        waited.stderr
    )
    assert (
        waited.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "the cluster could not place 3 training worker(s) x 2 CPU within 3 s (--start-timeout): it has 4 CPU and "
            "no GPU on 2 node(s); lower --workers, --cpus-per-worker, or add nodes"
        )
    )
    best = drive(ray_nodes, "train", two_node_training(s3_url, storage))
    assert best.startswith(storage + "/checkpoint_")  # stdout is the result alone
    (metrics,) = run_checkpoints(storage).values()
    # cpus_per_worker=2 on 2-CPU nodes: one rank per node, and DDP across them over loopback.
    assert sorted(metrics["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]
    assert metrics["val_n"] == manifest["splits"]["val"]["samples"]

    results = s3_url.rsplit("/", 1)[0] + "/results.csv"
    # Two actors of 2 CPUs each can only run one per node: the pool spans both nodes.
    summary = json.loads(
        drive(ray_nodes, "score", dict(shards=s3_url, checkpoint=storage, out=results, actors=2, cpus_per_actor=2))
    )
    assert summary["checkpoint"] == best
    rows = list(csv.DictReader(io.StringIO(store.read_bytes(results).decode())))
    assert len(rows) == len({r["key"] for r in rows}) == manifest["packed"]


def test_a_lost_node_is_replaced_and_training_resumes_from_the_checkpoint(ray_nodes, s3_url, tmp_path):
    """bench/scale/preempt.py's run without a notice, at its smallest, on this module's cluster: the
    worker node SIGKILLed at rank 0's step 2 of epoch 1, a replacement joins, the run resumes from
    the checkpoint at the end of epoch 0."""
    pack_sample(s3_url)
    row = preempt.one_run(ray_nodes, s3_url, "none", 2, str(tmp_path), 16)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/none"
    by_epoch = sorted(run_checkpoints(storage).values(), key=lambda m: m["epoch"])
    assert [m["epoch"] for m in by_epoch] == [0, 1]  # each once: not restarted from scratch
    assert [m["start_epoch"] for m in by_epoch] == [0, 1]  # epoch 1 ran in the resumed run
    assert sorted(by_epoch[1]["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]
    assert row["resumed_at_step"] == 0 and row["lost_samples"] > 0  # the steps of epoch 1 before the loss
    assert "| none | " in preempt.table([row], 2, 16)


def test_a_preemption_notice_checkpoints_at_that_step_and_the_epoch_trains_each_sample_once(
    ray_nodes, s3_url, tmp_path
):
    """`ray drain-node ... PREEMPTION` on the worker node inside epoch 1: a checkpoint at that step
    before the deadline; at the deadline the node goes (SIGKILL, as the cloud reclaims it) and a
    replacement joins; the run resumes at that step. --max-failures 0: a preemption is not counted as a failure."""

    pack_sample(s3_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/preempted"
    keys = str(tmp_path / "keys")
    settings = two_node_training(
        s3_url,
        storage,
        epochs=2,
        batch_size=4,  # 32 steps an epoch: the deadline below must end inside epoch 1 on an idle machine too
        workers="2",
        keep_checkpoints=10,
        max_failures=0,
        max_preemptions=2,
        preemption_poll_steps=1,
        key_log=keys,
        **LOADER_PROCESS,
    )
    node = ray_nodes.worker_node_id()  # asked before the run: the drain follows epoch 0 at once
    driver = start_training(ray_nodes, settings)
    wait_for_registered(storage, '"epoch":0', lambda: driver.poll() is None)
    # Short enough to end inside epoch 1 (32 steps of half a second or more) after the checkpoint at its
    # first steps: the run trains on until the deadline, and a checkpoint at the epoch's end would
    # be the one resumed from.
    deadline_s = 8
    noticed = time.monotonic()
    ray_nodes.drain_worker(node, deadline_s, "spot reclaim (test)")
    wait_for_registered(storage, '"reason":"preemption"', lambda: driver.poll() is None, timeout=deadline_s)
    # The cloud takes the node back at the deadline. Ray Train restarts the group then (a
    # preemption); a node lost before its deadline is recorded as an unexpected death, a failure.
    time.sleep(max(0.0, noticed + deadline_s + 3 - time.monotonic()))
    ray_nodes.kill_worker()
    ray_nodes.start_worker()  # and a replacement joins
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]

    (preempted,) = [m for m in run_checkpoints(storage).values() if m["reason"] == "preemption"]
    assert preempted["epoch"] == 1 and preempted["world_size"] == 2 and preempted["step"] > 0
    ends = {m["epoch"]: m for m in run_checkpoints(storage).values() if m["reason"] == "epoch"}
    assert sorted(ends) == [0, 1]
    assert (ends[1]["start_epoch"], ends[1]["start_step"]) == (1, preempted["step"])  # resumed at that step
    assert sorted(ends[1]["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]
    manifest = store.read_bytes(store.join(s3_url, "manifest.json"))
    train_samples = json.loads(manifest)["splits"]["train"]["samples"]
    kept, _ = trained_in_epoch(keys, 1)
    assert len(kept) == len(set(kept)) == train_samples // 8 * 8  # each sample of the epoch once (global batch 8)


def test_elastic_workers_grow_when_a_node_joins_and_shrink_when_it_is_lost(ray_nodes, s3_url):
    """--workers 1-2 with one rank per node: started on the head alone, the run grows to 2 workers
    when the second node joins, goes on with 1 when that node is SIGKILLed, and finishes."""
    pack_sample(s3_url, works=150)  # half the sample: the epochs after the shrink are what the test waits for
    storage = s3_url.rsplit("/", 1)[0] + "/runs/elastic"
    ray_nodes.kill_worker()
    ray_nodes.wait_until_worker_is_gone()  # so the run starts on the head's CPUs alone
    # Each resize takes the controller 20-25 s (the node's start, then a new worker group from the
    # last checkpoint), while the run trains on: on a fast machine about 5 epochs of this small run
    # go by before the shrink. 12 epochs leave room for both resizes before the end (6 of twice
    # the works did not: the run grew only in its last epoch).
    epochs = 12
    settings = two_node_training(
        s3_url, storage, epochs=epochs, batch_size=16, workers="1-2", keep_checkpoints=2 * epochs, resize_check=2.0
    )
    driver = start_training(ray_nodes, settings)

    try:
        wait_for_registered(storage, '"world_size":1', lambda: driver.poll() is None)
        ray_nodes.start_worker()
        wait_for_registered(storage, '"world_size":2', lambda: driver.poll() is None)
        ray_nodes.kill_worker()
        out, err = driver.communicate(timeout=600)
    finally:
        if len(ray_nodes.processes) < 2:
            ray_nodes.start_worker()  # the module's other tests run on both nodes
    assert driver.returncode == 0, err[-3000:]
    ends = sorted((m for m in run_checkpoints(storage).values() if m["reason"] == "epoch"), key=lambda m: m["epoch"])
    sizes = [m["world_size"] for m in ends]
    assert [m["epoch"] for m in ends] == list(range(epochs))
    assert sizes[0] == 1 and 2 in sizes and sizes[-1] == 1  # grew, then shrank back
    # The global batch stayed 16 whatever the size: the same steps in every epoch.
    assert len({m["step"] for m in ends}) == 1
