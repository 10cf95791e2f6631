"""Whether the cluster can give a run the workers or actors it asks for, and waiting for it.

A run that asks for more than the cluster has would otherwise wait in silence: Ray Train retries
its worker group every minute without end, and actors wait to be placed. So train and score ask
here first. A cluster that cannot grow (the local Ray artdate started in this process, or an
autoscaling cluster whose largest size is too small) fails at once; one that can grow (nodes may
join, the autoscaler may add some) is waited for, saying what for, up to --start-timeout.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

# How often a wait says it still waits (the shipped --start-timeout is 30 such intervals).
REPORT_SECONDS = 30.0


class ClusterTooSmall(RuntimeError):
    """The cluster cannot place what a run asks for: never (exit 2: the settings ask too much of
    it), or not before the deadline (exit 1: the cluster did not grow in time)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Ask:
    """`count` units (training workers, scoring actors), each reserving `cpus` CPUs and `gpus` GPUs."""

    count: int
    cpus: float
    gpus: float
    unit: str
    options: str  # the flags that set the ask, for the advice: "--workers, --cpus-per-worker"

    def __str__(self) -> str:
        each = f"{self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
        return f"{self.count} {self.unit}(s) x {each}"

    def bundle(self) -> dict[str, float]:
        return {name: amount for name, amount in (("CPU", self.cpus), ("GPU", self.gpus)) if amount > 0}


def cluster_has(nodes: list[dict]) -> str:
    """'2 CPU and no GPU on 1 node' from ray.nodes()'s live nodes' resources."""
    cpus = sum(node.get("CPU", 0.0) for node in nodes)
    gpus = sum(node.get("GPU", 0.0) for node in nodes)
    return f"{cpus:g} CPU and {f'{gpus:g} GPU' if gpus else 'no GPU'} on {len(nodes)} node(s)"


def fitting(ask: Ask, nodes: list[dict]) -> int:
    """How many of the ask's units the nodes can hold at most, each unit on one node."""
    bundle = ask.bundle()
    return sum(
        min(math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in bundle.items()) for node in nodes
    )


def _live_nodes() -> list[dict]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _largest_cluster() -> dict[str, float]:
    """The most resources the autoscaler may grow the cluster to (empty: no autoscaler)."""
    from ray._private.state import state

    try:
        return dict(state.get_max_resources_from_cluster_config() or {})
    except Exception:  # noqa: BLE001 -- no autoscaler, or an older GCS: nothing to grow to
        return {}


def _started_here() -> bool:
    """Whether this process started the Ray it uses (the embedded local Ray: no node can join it)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False))


def never_fits(ask: Ask) -> str:
    """Why the cluster can never place `ask` (empty when it can, or may once it grows)."""
    if not ask.bundle():  # an actor that reserves nothing fits anywhere
        return ""
    nodes = _live_nodes()
    if fitting(ask, nodes) >= ask.count:
        return ""
    largest = _largest_cluster()
    if _started_here():
        where = "the local Ray that artdate started on this machine (it cannot grow)"
    elif largest:
        if all(largest.get(name, 0.0) >= amount * ask.count for name, amount in ask.bundle().items()):
            return ""
        where = f"the cluster, even at its autoscaler's largest ({cluster_has([largest])})"
    else:
        return ""  # nodes may join
    return (
        f"asked for {ask}, but {where} has {cluster_has(nodes)}: {fitting(ask, nodes)} fit; "
        f"lower {ask.options}, or run on a cluster that has them (docs/cluster.md)"
    )


def deadline_passed(ask: Ask, waited: float) -> ClusterTooSmall:
    return ClusterTooSmall(
        f"the cluster could not place {ask} within {waited:g} s (--start-timeout): it has "
        f"{cluster_has(_live_nodes())}; lower {ask.options}, or add nodes",
        exit_code=1,
    )


def waiting_line(ask: Ask, left: float) -> str:
    return (
        f"waiting for the cluster to place {ask} (it has {cluster_has(_live_nodes())}; "
        f"nodes may join or the autoscaler add some); giving up in {left:.0f} s (--start-timeout)"
    )


def wait_for_room(ask: Ask, start_timeout: float) -> None:
    """Return once the cluster can place all of `ask` at once (a placement group of its bundles,
    released at once); fail at once if it never can, or after `start_timeout` seconds."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    why = never_fits(ask)
    if why:
        raise ClusterTooSmall(why, exit_code=2)
    group = placement_group([ask.bundle()] * ask.count, strategy="PACK")
    started = time.monotonic()
    report_every = min(REPORT_SECONDS, start_timeout / 30)
    try:
        while not ray.wait([group.ready()], timeout=report_every)[0]:
            waited = time.monotonic() - started
            if waited >= start_timeout:
                raise deadline_passed(ask, start_timeout)
            print(waiting_line(ask, start_timeout - waited), file=sys.stderr, flush=True)
    finally:
        remove_placement_group(group)
