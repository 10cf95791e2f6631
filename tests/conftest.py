import os
import shutil
import signal
import sys
import uuid

import pytest

from tests.support.helpers import pack_sample, tiny_training
from tests.support.servers import SeaweedS3

EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def s3_server():
    """One real SeaweedFS for the session; the AWS variables point every client in this process
    (and the processes it starts) at it."""
    server = SeaweedS3().start()
    saved = {name: os.environ.get(name) for name in server.environment()}
    os.environ.update(server.environment())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_url(s3_server):
    """A fresh, empty s3:// prefix in a fresh bucket."""
    bucket = s3_server.make_bucket(f"t-{uuid.uuid4().hex[:12]}")
    return f"s3://{bucket}/store"


@pytest.fixture
def api():
    """The museums' APIs and an image host on loopback, answering with their recorded payloads, with
    the sample's first four images (ids aic_866, aic_874, ...) behind them."""
    from tests.support.museums import MuseumApi, sample_images

    server = MuseumApi(sample_images(4), slow_seconds=2.0).start()
    yield server
    server.stop()


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> str:
    """`build(folder)` run once for the whole test session: under xdist the first worker to take the
    lock builds it in the workers' shared temporary folder and the others wait for it and read it
    (as pytest-xdist's docs advise for session fixtures), instead of each worker training its own."""
    from filelock import FileLock

    if worker_id == "master":  # one process (-n 0)
        folder = tmp_path_factory.mktemp(name)
        build(str(folder))
        return str(folder)
    folder = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(str(folder))
            (folder / ".built").touch()
    return str(folder)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, worker_id):
    """The 300-image sample packed once, small (96 px, 32 per shard: 9 train + 2 val shards)."""
    folder = built_once(tmp_path_factory, worker_id, "sample", lambda folder: pack_sample(f"{folder}/shards"))
    return f"{folder}/shards"


@pytest.fixture(scope="session")
def tiny_checkpoint(sample_store, tmp_path_factory, worker_id):
    """A checkpoint from a tiny plain training run (two passes over two shards, 64 px), validated
    after each epoch as artdate train does: its learning curve."""
    folder = built_once(tmp_path_factory, worker_id, "run", lambda folder: train_tiny_checkpoint(sample_store, folder))
    return f"{folder}/checkpoint_tiny"


def train_tiny_checkpoint(sample_store: str, folder: str) -> None:
    import torch

    from artdate.core.config import TrainConfig
    from artdate.data import partition, pipeline, shards
    from artdate.model.checkpoints import save_checkpoint
    from artdate.model.network import ModelSpec, build_model
    from artdate.train.loop import fit, label_encoding, shard_batches

    torch.manual_seed(0)
    manifest = shards.read_manifest(sample_store)
    spec = ModelSpec(
        "efficientnet_lite0",
        64,
        label_encoding(manifest, "bins", 50),
        pack_size=manifest["settings"]["size"],
        pack_quality=manifest["settings"]["quality"],
    )
    model = build_model(spec.backbone, spec.encoding.num_outputs, "imagenet")
    cfg = TrainConfig(**tiny_training("", "", epochs=2, warmup_epochs=0, loader_workers=0, shuffle_buffer=0))
    two_shards = partition.store_slices(sample_store, manifest, "train")[:2]
    val_slices = partition.store_slices(sample_store, manifest, "val")
    fitted = fit(
        model,
        spec,
        cfg,
        shard_batches(two_shards, pipeline.train_transform(64), cfg),
        partition.steps_per_epoch(partition.manifest_shards(sample_store, manifest, "train")[:2], cfg.batch_size),
        validation=lambda: pipeline.make_loader(val_slices, pipeline.eval_transform(64), 32, loader_workers=0),
    )
    directory = os.path.join(folder, "checkpoint_tiny")
    os.mkdir(directory)
    metrics = {**fitted.metrics, "history": fitted.history}
    save_checkpoint(directory, spec, model, metrics, fitted.calibration, {"epoch": 1})


def assert_grouped(request, fixture: str, group: str, within: str = "") -> None:
    """Under `--dist loadgroup`, that every test using `fixture` (whose nodeid starts with `within`)
    is in xdist group `group`, its nodeid's `@group` suffix: a test outside it would go to either
    worker, and each worker would start its own copy of the fixture's Ray."""
    if getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        strays = [
            item.nodeid
            for item in request.session.items
            if fixture in item.fixturenames and item.nodeid.startswith(within) and not item.nodeid.endswith(f"@{group}")
        ]
        assert not strays, f"not in xdist group {group}: {strays}"


@pytest.fixture(scope="module")
def local_ray(request):
    """The embedded local Ray that artdate starts (on 127.0.0.1), shut down after the module."""
    from artdate.core.raycluster import connect

    assert_grouped(request, "local_ray", request.module.__name__, within=request.node.nodeid)

    connect()
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_nodes(s3_server, request):
    """A two-node Ray cluster on 127.0.0.2 and 127.0.0.3 whose nodes see the test's S3 settings
    in their environment (as cluster nodes would hold their own credentials)."""
    import ray

    from tests.support.servers import RayNodes

    assert_grouped(request, "ray_nodes", TWO_NODE_CLUSTER)

    if ray.is_initialized():
        ray.shutdown()
    nodes = RayNodes().start()
    yield nodes
    nodes.stop()
    shutil.rmtree(nodes.directory, ignore_errors=True)  # the nodes' logs and sockets


def pytest_configure(config):
    """OpenMP threads wait for work passively, in every process the suite starts (torch reads the
    setting when it loads, after this). The suite runs two xdist workers on two cores, so nearly
    every torch process shares its cores with another, and OpenMP's default spin-waiting burned
    them: three bench smokes side by side took 4-6x the CPU time of the same three with passive
    waiting (bench/RESULTS.md). A user's own setting is kept.

    Let the commands under test hear Ctrl-C. A suite started in the background by a
    non-interactive shell (`pytest &`, nohup) inherits SIGINT ignored, and an ignored signal stays
    ignored across exec: the Ctrl-C tests' commands then ran to the end (exit 0, results written)
    instead of stopping. A handler, unlike SIG_IGN, is reset to the default in a child."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Tests that start a two-node Ray cluster on 127.0.0.2-3 (test_jobs, test_multinode) run one module
# after the other on one xdist worker: the nodes' fixed addresses take one cluster at a time.
TWO_NODE_CLUSTER = "two-node-cluster"


def run_order(item) -> int:
    """Longest first: the two-node cluster's tests (about 12 minutes on one worker), the modules
    that share a local Ray, the other slow tests, then the quick ones, which fill the two workers'
    last minutes so that they end together (file order within each: a stable sort)."""
    if "ray_nodes" in item.fixturenames:
        return 0
    if "local_ray" in item.fixturenames:
        return 1
    return 2 if item.get_closest_marker("slow") else 3


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """The suite runs on two xdist workers (`-n 2 --dist loadgroup --no-loadscope-reorder`,
    pyproject.toml), which take the tests in the order run_order puts them. A module whose tests
    share a Ray it starts (local_ray, ray_nodes: module-scoped) stays on one worker, so each such
    Ray starts once; every other test goes to whichever worker is free. xdist reads the groups in
    its own hook, which turns each into a nodeid suffix (`...@two-node-cluster`): this one runs
    first, or the groups come too late and are ignored (as they were: both workers started both
    two-node clusters and their own local Rays)."""
    for item in items:
        if "ray_nodes" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group(TWO_NODE_CLUSTER))
        elif "local_ray" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=run_order)


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process here, with the session's exit status, once pytest has written its
    report: the interpreter's own teardown of the native libraries loaded in-process (Ray's
    driver, torch, pyarrow, grpc) crashed with SIGSEGV in one CI run out of four after every
    test had passed (exit 139). The commands under test run in their own processes and their
    exit codes are asserted, so nothing of artdate's is skipped by this."""
    if EXIT_STATUS in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[EXIT_STATUS])
