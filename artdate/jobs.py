"""Submitting artdate commands to a Ray cluster through the Jobs API (used by launch.py).

The job runs `python launch.py <command> ...` on the cluster with this checkout as its working
directory. Logs stream to the terminal and the exit code is the job's. Exit codes of our own:
2 for a command that cannot work on that cluster (checked before submitting), 3 when the
cluster cannot be reached, 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a job needs of this checkout, as gitignore patterns for Ray's `excludes`: everything is left
# out except the code and the bundled metadata, so data, outputs (./shards, ./runs, results files)
# and secrets (.env) never travel, whatever their names.
UPLOADED = ["artdate", "launch.py", "pyproject.toml", "metadata"]
NEVER_UPLOADED = ["__pycache__", "*.pyc", "*.egg-info", ".env", ".env.*", "*.env"]
KEYWORDS = {"weights": ("imagenet", "none")}  # storage options that also take a word
SHARED_SCHEMES = ("s3://", "http://", "https://")
UNREACHABLE, NOT_SHARED, INTERRUPTED = 3, 2, 130


class ClusterUnreachable(Exception):
    pass


def parsed_command(argv: list[str]):
    """(config class, parsed arguments) of an artdate command line; argparse exits 2 on a bad one."""
    from artdate.cli import COMMANDS, build_parser

    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][0], args


def local_storage(argv: list[str]) -> list[str]:
    """'--option value' for each storage option of the command (defaults included) that names a
    local path rather than a URL every node can reach."""
    from artdate.core.options import storage_fields

    config_class, args = parsed_command(argv)
    found = []
    for field in storage_fields(config_class):
        value = getattr(args, field.name) or ""
        for path in value if isinstance(value, (list, tuple)) else [value]:  # nargs="+" gives a list
            if path and not path.startswith(SHARED_SCHEMES) and path not in KEYWORDS.get(field.name, ()):
                label = field.name if field.metadata.get("positional") else "--" + field.name.replace("_", "-")
                found.append(f"{label} {path}")
    return found


def upload_excludes(argv: list[str]) -> list[str]:
    """Ray `excludes` patterns for the job's working directory: only UPLOADED, plus the files a
    `pack` names in this checkout (its metadata CSVs and image folder), which its driver reads."""
    inputs = []
    if argv and argv[0] == "pack":
        _, args = parsed_command(argv)
        for path in [*args.metadata, args.images.split("{")[0]]:
            full = os.path.abspath(path) if path else ""
            if full.startswith(ROOT + os.sep):
                inputs.append(os.path.relpath(full, ROOT).rstrip("/"))
    # "/*" would match the root itself (".") too, and Ray would upload nothing: "!/." keeps it.
    return ["/*", "!/.", *[f"!/{path}" for path in UPLOADED + inputs], *NEVER_UPLOADED]


def upload_size(root: str, excludes: list[str]) -> tuple[int, int]:
    """(files, bytes) that Ray uploads for `root` with `excludes` (it may leave out more: it also
    honours .gitignore files). Walks the tree the way Ray does: an excluded folder is not entered."""
    from ray._private.thirdparty.pathspec import PathSpec  # the matcher Ray applies to `excludes`

    spec = PathSpec.from_lines("gitwildmatch", excludes)
    files = size = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if spec.match_file(os.path.relpath(entry.path, root)):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file():
                    files, size = files + 1, size + entry.stat().st_size
    return files, size


def connect_client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as problem:  # ConnectionError, timeouts, HTTP errors: all mean "not reachable"
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address}: {str(problem).splitlines()[0][:300]}"
        ) from None


def alive_nodes(address: str) -> int:
    from ray.util.state import list_nodes

    try:
        return len(list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False))
    except Exception as problem:
        raise ClusterUnreachable(f"cannot list the nodes of {address}: {str(problem).splitlines()[0][:300]}") from None


def pip_requirements() -> list[str]:
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def submit(address: str, argv: list[str], wait: bool = True, install: bool = False) -> int:
    """Submit `argv` (an artdate command line) as a job; follow it unless wait is False."""
    try:
        client = connect_client(address)
        local = local_storage(argv)
        if local and alive_nodes(address) > 1:
            print(
                f"launch: the cluster at {address} has several nodes, so storage must be shared (s3://); "
                f"local paths: {', '.join(local)}",
                file=sys.stderr,
            )
            return NOT_SHARED
    except ClusterUnreachable as problem:
        print(f"launch: {problem}", file=sys.stderr)
        return UNREACHABLE
    excludes = upload_excludes(argv)
    files, size = upload_size(ROOT, excludes)
    print(
        f"launch: uploading {files} files, {size / 1e6:.1f} MB of {ROOT} as the job's working directory "
        f"({', '.join(UPLOADED)}; data, outputs and .env files stay here)",
        file=sys.stderr,
    )
    runtime_env = {"working_dir": ROOT, "excludes": excludes}
    if install:
        runtime_env["pip"] = pip_requirements()
    job_id = submit_when_ready(
        client,
        entrypoint="python launch.py " + shlex.join(argv),
        runtime_env=runtime_env,
        metadata={"artdate_command": argv[0] if argv else ""},
    )
    print(f"submitted {job_id} to {address}", file=sys.stderr)
    if not wait:
        print(job_id)
        return 0
    return follow(client, address, job_id)


AGENT_WAIT_S = 60.0  # how long a cluster that has just started gets to ready its job agent


def submit_when_ready(client, **job) -> str:
    """client.submit_job, waiting while the head answers that no job agent is available yet (a
    cluster that has just started: `ray up`, a fresh KubeRay head) rather than failing at once."""
    deadline, delay = time.monotonic() + AGENT_WAIT_S, 1.0
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as problem:
            if "No available agent" not in str(problem) or time.monotonic() > deadline:
                raise
            print(f"launch: the cluster's job agent is not ready yet; retrying in {delay:g} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(2 * delay, 8.0)


def follow(client, address: str, job_id: str) -> int:
    """Stream the job's logs until it ends; return its exit code. Ctrl-C offers to stop it."""

    async def stream():
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        return _interrupted(client, address, job_id)
    return exit_code(client, job_id)


def _interrupted(client, address: str, job_id: str) -> int:
    answer = ""
    if sys.stdin.isatty():
        try:
            answer = input(f"\nstop job {job_id} on the cluster? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = ""
    if answer in ("y", "yes"):
        client.stop_job(job_id)
        print(f"stopping {job_id}", file=sys.stderr)
    else:
        print(
            f"\n{job_id} goes on; follow it with: python launch.py --address {address} logs {job_id}", file=sys.stderr
        )
    return INTERRUPTED


def exit_code(client, job_id: str, timeout: float = 30.0) -> int:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    info = client.get_job_info(job_id)
    while not info.status.is_terminal() and time.monotonic() < deadline:  # logs can end just before the status
        time.sleep(0.5)
        info = client.get_job_info(job_id)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    print(f"job {job_id} {info.status.value}: {info.message or ''}".rstrip(), file=sys.stderr)
    if info.driver_exit_code not in (None, 0):
        return info.driver_exit_code
    return INTERRUPTED if info.status == JobStatus.STOPPED else 1


def job_verb(address: str, verb: str, job_id: str) -> int:
    """`status`, `logs` (follows) or `stop` of an earlier submission."""
    try:
        client = connect_client(address)
    except ClusterUnreachable as problem:
        print(f"launch: {problem}", file=sys.stderr)
        return UNREACHABLE
    if verb == "status":
        info = client.get_job_info(job_id)
        print(f"{job_id} {info.status.value} {info.message or ''}".rstrip())
        return 0
    if verb == "logs":
        return follow(client, address, job_id)
    stopped = client.stop_job(job_id)
    print(f"{job_id} {'stopping' if stopped else 'had already ended'}")
    return 0
