"""artdate's stages driven on the loopback Ray cluster (servers.RayNodes) from a driver process of
their own, as a user's script on a cluster node would: for tests and benchmarks to fault them."""

import json
import subprocess
import sys

from tests.support.helpers import ROOT, tiny_training

DRIVER = """
import json, sys, ray
from artdate.core import config
from artdate.score import run as score
from artdate.train import run as train
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
settings = json.loads(sys.argv[4])
if sys.argv[3] == "train":
    print(train.run_training(config.TrainConfig(**settings)))
else:
    print(json.dumps(score.run_scoring(config.ScoreConfig(**settings), progress=False)))
"""


def two_node_training(shards_url, storage, **overrides):
    """Settings of a small run with one rank per node (2 CPUs each on 2-CPU nodes)."""
    return tiny_training(shards_url, storage, **{"epochs": 1, "cpus_per_worker": 2, **overrides})


def start_training(nodes, settings):
    """A driver process training on the cluster, for a test to fault while it runs."""
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, nodes.address, nodes.head_ip, "train", json.dumps(settings)],
        env=nodes.environment(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
