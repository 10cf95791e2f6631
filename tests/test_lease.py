"""The lease that lets one run at a time write an output, locally (flock) and on a real S3 server."""

import json
import socket
import subprocess
import sys
import time

import pytest

from artdate.core import lease, store
from artdate.core.lease import Lease, LeaseHeld

HOLD = """
import sys, time
from artdate.core.lease import Lease
held = Lease(sys.argv[1], "the test output").acquire()  # kept: the lock lives as long as the object
print("held", flush=True)
time.sleep(600)
"""


def test_local_lease_is_exclusive_and_freed_when_its_holder_is_killed(tmp_path):
    url = str(tmp_path / "out.parts" / "_lease")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=rf"another run \(pid {holder.pid} on .*\) is writing the test output"):
            Lease(url, "the test output").acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up ran, the OS dropped the lock
        holder.wait()
    mine = Lease(url, "the test output").acquire()
    mine.release()
    Lease(url, "the test output").acquire().release()


def test_s3_lease_is_exclusive_renewed_and_taken_over_only_when_stale(s3_url, monkeypatch):
    url = store.join(s3_url, "out.parts", "_lease")
    first = Lease(url, "--out x").acquire()
    with pytest.raises(LeaseHeld, match=r"another run \(pid \d+ on .*\) is writing --out x"):
        Lease(url, "--out x").acquire()
    monkeypatch.setattr(lease, "RENEW_SECONDS", 0.0)
    before = json.loads(store.read_bytes(url))["expires"]
    time.sleep(0.05)
    first.renew()
    assert json.loads(store.read_bytes(url))["expires"] > before

    # A holder that stopped renewing (a lost machine) is taken over once its lease expires ...
    bucket, key = store.split_s3(url)
    stale = {"owner": "x", "host": "another-host", "pid": 1, "expires": time.time() - 1}
    store.s3_client().put_object(Bucket=bucket, Key=key, Body=json.dumps(stale).encode())
    taken = Lease(url, "--out x").acquire()
    assert json.loads(store.read_bytes(url))["owner"] == taken.record["owner"]
    # ... and a holder on this machine whose process is gone, at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = {"owner": "y", "host": socket.gethostname(), "pid": int(dead.stdout), "expires": time.time() + 300}
    store.s3_client().put_object(Bucket=bucket, Key=key, Body=json.dumps(gone).encode())
    Lease(url, "--out x").acquire().release()
    assert not store.exists(url)
