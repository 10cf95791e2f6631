"""Connecting to Ray: the embedded local instance (on loopback) or a running cluster."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading


def prepare_environment() -> None:
    """Settings Ray reads when it is first imported, so this runs before any `import ray`.

    Usage reporting is off. Without a cluster address, a local node binds 127.0.0.1 only (by
    default Ray binds the machine's public interface); worker processes inherit the setting.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(address: str = "", verbose: bool = False) -> None:
    """Join the cluster at `address` or RAY_ADDRESS, else start the embedded local Ray.

    The embedded Ray runs no dashboard: it lives as long as the one command that started it, the
    command prints its own progress, and the dashboard's processes cost every local command about
    3 CPU seconds to start (bench/speed/shared_cores.py). A cluster (`ray start --head`, docs/cluster.md) keeps
    its own; `include_dashboard` applies only to a Ray that ray.init starts.

    Unless `verbose`, the workers' and actors' output stays in the Ray session's log files (the
    driver prints what a run shows: artdate/core/console.py) and so do Ray's own warnings about itself
    (token authentication, internal actors): a user can act on neither."""
    if address:
        os.environ["RAY_ADDRESS"] = address
    prepare_environment()
    import ray

    if not ray.is_initialized():
        # ray.init installs its own SIGTERM handler (it aborts the driver: exit -6, a stack dump);
        # the command's own (cli.py: stop as Ctrl-C does, exit 143) is put back.
        on_sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(
            address=address or None,
            include_dashboard=False,
            logging_level=logging.INFO if verbose else logging.ERROR,
            log_to_driver=verbose,
        )
        if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)


# Backbones that train at a usable speed on CPU (the demo's and the tests'); anything else on CPU
# without an explicit --gpus-per-worker 0 gets a loud warning.
CPU_FRIENDLY_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18")


def gpus_the_cluster_can_have() -> tuple[float, float]:
    """(GPUs in the cluster now, the most GPUs its autoscaler may add up to). The second comes
    from the node types the autoscaler reports to the GCS (ray up, KubeRay); Ray Train reads the
    same figure to refuse worker groups that could never be placed."""
    import ray
    from ray._private.state import state

    now = ray.cluster_resources().get("GPU", 0.0)
    try:
        most = (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0)
    except Exception:  # noqa: BLE001 -- no autoscaler, or an older GCS: only what is there counts
        most = 0
    return now, float(most)


def resolve_gpus(requested: float, count: int, unit: str, backbone: str) -> float:
    """GPUs per worker/actor. -1 means 1 when the cluster has GPUs or its autoscaler can add
    them, else 0. Prints the device line that starts every run, and warns when a large backbone
    falls back to CPU without being asked to."""
    now, most = gpus_the_cluster_can_have()
    gpus = requested if requested >= 0 else (1.0 if max(now, most) >= 1 else 0.0)
    if gpus > 0:
        where = f"{now:g} GPU(s) in the cluster now" + (f", up to {most:g} with autoscaling" if most > now else "")
        print(f"device: GPU, {count} {unit}(s) x {gpus:g} GPU ({where})", file=sys.stderr, flush=True)
    else:
        why = (
            "as asked (--gpus-per-* 0)" if requested == 0 else "the cluster has no GPUs and its autoscaler can add none"
        )
        print(f"device: CPU, {count} {unit}(s), {why}", file=sys.stderr, flush=True)
        if requested < 0 and backbone not in CPU_FRIENDLY_BACKBONES:
            print(
                f"WARNING: {backbone} on CPU runs at a few images per second per core (bench/RESULTS.md): a full "
                "corpus would take weeks. Start GPU nodes, or pass --gpus-per-worker 0 / --gpus-per-actor 0 "
                "to choose CPU deliberately.",
                file=sys.stderr,
                flush=True,
            )
    return gpus
