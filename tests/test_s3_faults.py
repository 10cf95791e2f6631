"""S3 faults for real: a SeaweedFS server of this module's own, killed and restarted mid-read."""

import io
import os
import threading

import pytest

from artdate.s3stream import ResumableObject
from servers import SeaweedS3


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
