"""Connecting to Ray: the embedded local instance (on loopback) or a running cluster."""

from __future__ import annotations

import os


def prepare_environment() -> None:
    """Settings Ray reads when it is first imported, so this runs before any `import ray`.

    Usage reporting is off. Without a cluster address, a local node binds 127.0.0.1 only (by
    default Ray binds the machine's public interface); worker processes inherit the setting.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(address: str = "") -> None:
    """Join the cluster at `address` or RAY_ADDRESS, else start the embedded local Ray."""
    if address:
        os.environ["RAY_ADDRESS"] = address
    prepare_environment()
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, dashboard_host="127.0.0.1", logging_level="WARNING")
