"""S3 faults for real: a SeaweedFS server of this module's own, killed and restarted mid-read."""

import hashlib
import io
import json
import os
import pickle
import subprocess
import tarfile
import threading
import time

import pytest

from artdate.core.s3stream import ResumableObject
from tests.support.helpers import (
    LOADER_PROCESS,
    SAMPLE_CSV,
    SHARED_SAMPLE,
    artdate_command,
    flags,
    tiny_training,
    wait_for_count,
)
from tests.support.servers import SeaweedS3, kill_session


@pytest.fixture
def own_server():
    server = SeaweedS3().start()
    yield server
    server.stop()


def test_a_stream_resumes_at_its_offset_across_a_server_crash(own_server):
    client = own_server.client()
    bucket = own_server.make_bucket("faults")
    payload = os.urandom(32 * 2**20)
    client.put_object(Bucket=bucket, Key="big.tar", Body=payload)
    stream = io.BufferedReader(ResumableObject(client, bucket, "big.tar"), buffer_size=2**20)
    first = stream.read(2**20)
    own_server.kill()  # SIGKILL mid-stream: the connection drops, then nothing answers for ~3 s
    restart = threading.Timer(3.0, own_server.restart)
    restart.start()
    rest = stream.read()
    restart.join()
    assert len(first) + len(rest) == len(payload) and first + rest == payload


def test_a_ray_train_write_started_while_s3_is_down_lands_once_it_is_back(own_server, monkeypatch):
    # Ray Train writes its checkpoint registry (checkpoint_manager_snapshot.json) and uploads
    # checkpoints through this pyarrow filesystem; with pyarrow's 3 attempts a run died when S3
    # restarted at that moment ("Could not connect to server"). Ray pickles the filesystem to the
    # TrainController's process, and pyarrow's own pickling drops the retry strategy: test the copy.
    from artdate.core.store import pyarrow_filesystem

    for name, value in own_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = own_server.make_bucket("snapshots")
    filesystem, path = pyarrow_filesystem(f"s3://{bucket}/runs/r")
    filesystem = pickle.loads(pickle.dumps(filesystem))
    own_server.kill()
    restart = threading.Timer(3.0, own_server.restart)
    restart.start()
    try:
        with filesystem.open_output_stream(f"{path}/checkpoint_manager_snapshot.json") as out:
            out.write(b'{"epoch": 0}')
    finally:
        restart.join()
    body = own_server.client().get_object(Bucket=bucket, Key="runs/r/checkpoint_manager_snapshot.json")["Body"].read()
    assert body == b'{"epoch": 0}'


def test_a_replaced_object_is_never_spliced_onto_the_old_one(own_server):
    client = own_server.client()
    bucket = own_server.make_bucket("replaced")
    client.put_object(Bucket=bucket, Key="shard.tar", Body=b"a" * 2**20)
    raw = ResumableObject(client, bucket, "shard.tar", resume_seconds=5)
    head = raw.read(1000)
    raw._close_body()  # as if the connection broke here ...
    client.put_object(Bucket=bucket, Key="shard.tar", Body=b"b" * 2**20)  # ... and the object was replaced
    with pytest.raises(Exception, match="PreconditionFailed|412"):
        raw.read()
    assert head == b"a" * 1000


def pack_command(out: str) -> list[str]:
    settings = dict(metadata=SAMPLE_CSV, images=SHARED_SAMPLE, out=out, size=48, samples_per_shard=8, year_min=-1000)
    return artdate_command("pack", *flags({**settings, "year_max": 2100, "jobs": 1, "quiet": True}))


def wait_for_objects(server, bucket: str, prefix: str, suffix: str, count: int, process, timeout: float = 180) -> int:
    """Until at least `count` objects under `prefix` end in `suffix` (asserting the command still
    runs); returns how many there are."""

    def found() -> int:
        listed = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return sum(o["Key"].endswith(suffix) for o in listed)

    return wait_for_count(found, count, lambda: process.poll() is None, timeout)


def wait_for_records(server, bucket: str, prefix: str, count: int, process) -> None:
    """Until pack has finished `count` shards."""
    wait_for_objects(server, bucket, f"{prefix}/_pack/", ".tar.json", count, process, timeout=120)


def assert_complete_store(server, bucket: str, prefix: str) -> None:
    """The manifest lists every sample work once, and each shard's bytes match its sha256."""
    client = server.client()
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["packed"] == 300
    keys = []
    for shard in manifest["shards"]:
        data = client.get_object(Bucket=bucket, Key=f"{prefix}/{shard['name']}")["Body"].read()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            keys += [name for name in tar.getnames() if name.endswith(".jpg")]
    assert len(keys) == len(set(keys)) == 300


@pytest.mark.slow
def test_pack_rides_out_a_short_s3_outage_and_a_rerun_finishes_after_a_long_one(own_server):
    bucket = own_server.make_bucket("pack")
    env = {**os.environ, **own_server.environment()}
    # A few seconds down: the retries with backoff carry the pack through.
    process = subprocess.Popen(pack_command(f"s3://{bucket}/short"), env=env, stderr=subprocess.PIPE, text=True)
    wait_for_records(own_server, bucket, "short", 3, process)
    own_server.kill()
    time.sleep(2)
    own_server.restart()
    assert process.wait(300) == 0, process.stderr.read()[-2000:]
    assert_complete_store(own_server, bucket, "short")

    # Down for longer than the retries last: the pack stops with one line naming the endpoint, and
    # the rerun packs only what is missing.
    process = subprocess.Popen(pack_command(f"s3://{bucket}/long"), env=env, stderr=subprocess.PIPE, text=True)
    wait_for_records(own_server, bucket, "long", 3, process)
    own_server.kill()
    code, error = process.wait(300), process.stderr.read().strip()
    own_server.restart()
    assert code == 1 and "Traceback" not in error and own_server.endpoint in error, error
    assert error.splitlines()[-1].startswith("artdate pack: error:")
    before = own_server.client().list_objects_v2(Bucket=bucket, Prefix="long/_pack/")["KeyCount"]
    rerun = subprocess.run(pack_command(f"s3://{bucket}/long"), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_complete_store(own_server, bucket, "long")
    assert before >= 4  # the plan and the shards finished before the outage were kept, not redone


def score_command(bucket: str, checkpoint: str, batch_size: int = 64) -> list[str]:
    settings = dict(shards=f"s3://{bucket}/shards", checkpoint=checkpoint, out=f"s3://{bucket}/results.csv")
    return artdate_command("score", *flags({**settings, "actors": 2, "batch_size": batch_size, "quiet": True}))


def wait_for_kept_parts(server, bucket: str, count: int, process) -> int:
    """Until score has kept the parts of `count` shards; returns how many it has kept."""
    return wait_for_objects(server, bucket, "results.csv.parts/", ".tar.csv", count, process)


def assert_every_work_once(server, bucket: str) -> None:
    client = server.client()
    text = client.get_object(Bucket=bucket, Key="results.csv")["Body"].read().decode()
    keys = [line.rsplit(",", 1)[1] for line in text.splitlines()[1:]]
    assert len(keys) == len(set(keys)) == 300
    assert client.list_objects_v2(Bucket=bucket, Prefix="results.csv.parts/")["KeyCount"] == 0


def scoring_actors(driver_group: int) -> list[int]:
    """Process ids of the scoring actors of the Ray that a driver (in its own process group) started:
    the children of that group's raylet."""
    table = [
        line.split(None, 3)
        for line in subprocess.run(
            ["ps", "-e", "-o", "pid=,pgid=,ppid=,args="], capture_output=True, text=True
        ).stdout.splitlines()
    ]
    group = {int(pid) for pid, pgid, _, _ in table if int(pgid) == driver_group}
    return [int(pid) for pid, _, ppid, args in table if int(ppid) in group and args.startswith("ray::Scorer")]


@pytest.fixture
def packed(own_server):
    bucket = own_server.make_bucket("score")
    env = {**os.environ, **own_server.environment()}
    subprocess.run(pack_command(f"s3://{bucket}/shards"), env=env, check=True, timeout=300)
    return bucket, env


@pytest.mark.slow
def test_scoring_rides_out_an_s3_restart(own_server, packed, tiny_checkpoint):
    bucket, env = packed
    process = subprocess.Popen(
        score_command(bucket, tiny_checkpoint, batch_size=1), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_kept_parts(own_server, bucket, 3, process)
        own_server.kill()
        time.sleep(2)
        own_server.restart()
        assert process.wait(300) == 0, process.stderr.read()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert_every_work_once(own_server, bucket)


@pytest.mark.slow
def test_an_actor_killed_s3_restarted_and_the_driver_killed_in_one_run_then_a_rerun(
    own_server, packed, tiny_checkpoint
):
    bucket, env = packed
    # Its own session: SIGKILL to every process in it takes the driver and the Ray it started, as a lost machine would.
    # One image per batch keeps the tiny model busy long enough for every fault to land mid-run.
    process = subprocess.Popen(
        score_command(bucket, tiny_checkpoint, batch_size=1),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        before = wait_for_kept_parts(own_server, bucket, 2, process)
        os.kill(scoring_actors(process.pid)[0], 9)  # an actor dies ...
        own_server.kill()  # ... S3 crashes ...
        time.sleep(2)
        own_server.restart()
        wait_for_kept_parts(own_server, bucket, before + 2, process)  # scoring went on after both faults
    finally:
        kill_session(process)  # ... and the machine running the driver is lost, with its Ray
    client = own_server.client()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="results.csv", Delimiter="/")  # no final file
    rerun = subprocess.run(score_command(bucket, tiny_checkpoint), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_every_work_once(own_server, bucket)


@pytest.mark.slow
def test_training_rides_out_an_s3_restart_without_losing_a_sample(own_server, packed):
    bucket, env = packed
    storage = f"s3://{bucket}/runs/outage"
    command = artdate_command(
        "train",
        *flags(
            tiny_training(
                f"s3://{bucket}/shards", storage, epochs=3, image_size=48, keep_checkpoints=10, **LOADER_PROCESS
            )
        ),
    )
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    client = own_server.client()
    try:
        deadline = time.monotonic() + 300
        while "checkpoint_" not in str(client.list_objects_v2(Bucket=bucket, Prefix="runs/outage/").get("Contents")):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
            time.sleep(0.2)
        own_server.kill()  # mid-epoch 1: shard streams break, and the next checkpoint upload meets a dead server
        time.sleep(3)
        own_server.restart()
        out, err = process.communicate(timeout=600)
    finally:
        kill_session(process)
    assert process.returncode == 0, err[-3000:]
    metrics = []
    for item in client.list_objects_v2(Bucket=bucket, Prefix="runs/outage/")["Contents"]:
        if item["Key"].endswith("/metrics.json"):
            metrics.append(json.loads(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))
    assert {m["epoch"] for m in metrics} == {0, 1, 2}
    assert all(m["skipped"] == 0 for m in metrics)  # the broken streams resumed: no sample was dropped
    manifest = json.loads(client.get_object(Bucket=bucket, Key="shards/manifest.json")["Body"].read())
    assert max(metrics, key=lambda m: m["epoch"])["val_n"] == manifest["splits"]["val"]["samples"]
