"""Train, then score, across two Ray nodes on 127.0.0.2 and 127.0.0.3, data in SeaweedFS."""

import csv
import io
import json
import subprocess
import sys
import time

import pytest
from helpers import ROOT, pack_sample
from test_train import wait_for_epoch_0

from artdate import store
from artdate.checkpoints import run_checkpoints

pytestmark = pytest.mark.slow

DRIVER = """
import json, sys, ray
from artdate import config, score, train
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
settings = json.loads(sys.argv[4])
if sys.argv[3] == "train":
    print(train.run_training(config.TrainConfig(**settings)))
else:
    print(json.dumps(score.run_scoring(config.ScoreConfig(**settings), progress=False)))
"""


def drive(nodes, stage, settings):
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, nodes.address, nodes.head_ip, stage, json.dumps(settings)],
        env=nodes.environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_train_then_score_across_two_nodes(ray_nodes, s3_url):
    manifest = pack_sample(s3_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/two-nodes"
    best = drive(
        ray_nodes,
        "train",
        dict(
            shards=s3_url,
            storage=storage,
            backbone="efficientnet_lite0",
            epochs=1,
            batch_size=16,
            image_size=64,
            workers=2,
            cpus_per_worker=2,
            loader_workers=1,
            log_every=0,
        ),
    )
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


def test_a_lost_node_is_replaced_and_training_resumes_from_the_checkpoint(ray_nodes, s3_url):
    pack_sample(s3_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/lost-node"
    settings = dict(
        shards=s3_url,
        storage=storage,
        backbone="efficientnet_lite0",
        epochs=3,
        batch_size=16,
        image_size=64,
        workers=2,
        cpus_per_worker=2,
        loader_workers=1,
        log_every=0,
        keep_checkpoints=10,
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, ray_nodes.address, ray_nodes.head_ip, "train", json.dumps(settings)],
        env=ray_nodes.environment(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_epoch_0(storage, lambda: driver.poll() is None, timeout=300)
    ray_nodes.kill_worker()  # one rank per node (2 CPUs each): the run loses a rank mid-epoch 1
    time.sleep(3)
    ray_nodes.start_worker()  # the replacement node joins; the run resumes on it
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    by_epoch = sorted(run_checkpoints(storage).values(), key=lambda m: m["epoch"])
    assert [m["epoch"] for m in by_epoch] == [0, 1, 2]  # each once: not restarted from scratch
    assert [m["start_epoch"] for m in by_epoch] == [0, 1, 1]
    assert sorted(by_epoch[2]["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]
