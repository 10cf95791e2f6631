"""Training across two Ray nodes on 127.0.0.2 and 127.0.0.3, shards and checkpoints in SeaweedFS."""

import json
import os
import subprocess
import sys

import pytest

from artdate.model import run_checkpoints
from conftest import ROOT, pack_sample
from servers import RayNodes

pytestmark = pytest.mark.slow

DRIVER = """
import json, sys, ray
from artdate.config import TrainConfig
from artdate.train import run_training
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
print(run_training(TrainConfig(**json.loads(sys.argv[3]))))
"""


@pytest.fixture(scope="module")
def ray_nodes():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    nodes = RayNodes().start()
    yield nodes
    nodes.stop()


def test_training_spans_two_nodes(ray_nodes, s3_url):
    pack_sample(s3_url)
    storage = s3_url.rsplit("/", 1)[0] + "/runs/two-nodes"
    settings = dict(shards=s3_url, storage=storage, backbone="efficientnet_lite0", epochs=1, batch_size=16,
                    image_size=64, workers=2, cpus_per_worker=2, loader_workers=1, log_every=0)
    done = subprocess.run([sys.executable, "-c", DRIVER, ray_nodes.address, ray_nodes.head_ip, json.dumps(settings)],
                          env=ray_nodes.environment(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(storage + "/checkpoint_")  # stdout is the result alone
    (metrics,) = run_checkpoints(storage).values()
    # cpus_per_worker=2 on 2-CPU nodes: one rank per node, and DDP across them over loopback.
    assert sorted(metrics["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]
    assert metrics["val_n"] == 35
